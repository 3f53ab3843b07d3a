"""Realm's actors: the shared runtime, and one package per service.

``actors.runtime`` is written once and imports no service. Each service is a
package ``actors.<service>`` holding its actors, model, errors, settings
section and ``client`` (its public face: other services and its ``apps``
module use only that). ``docs/architecture.md`` draws the layers.
"""
