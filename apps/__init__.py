"""Realm's HTTP fronts: shared pieces, and one ingress per registered service.

Shared
    common  ``service_app`` (FastAPI factory), ``ClientIngress`` (ingress base),
            ``ingress_application`` (replica options)
    errors  ``install_error_handlers``: one error envelope for every failure
    limits  ``BodyLimit``: request body size limit answered in the envelope
    signin  ``CurrentUser``, ``AdminUser``, ``StreamUser``, ``sign_in_websocket``:
            the principal of every route (a bearer token)

Services: ``apps.<name>`` for each entry of ``actors.runtime.registry.SERVICES``
(a module, or a package when big, like ``apps.pubsub``), each with
``build(settings) -> serve.Application``.
"""
