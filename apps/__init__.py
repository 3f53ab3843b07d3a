"""Realm's HTTP fronts: shared pieces, and one module per service.

Shared
    common          ``service_app`` (FastAPI factory), ``ClientIngress`` (ingress base),
                    ``ingress_application`` (replica options)
    errors          ``install_error_handlers``: one error envelope for every failure
    limits          ``BodyLimit``: request body size limit answered in the envelope
    auth_dependency ``CurrentUser``, ``AdminUser``: require a user (bearer token)

Services (each has ``build(settings) -> serve Application``)
    cache   ``/cache`` (service 4)
    auth    ``/auth`` (service 6)
"""
