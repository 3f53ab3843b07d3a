"""Realm's HTTP fronts: shared pieces, and one ingress per registered service.

Shared
    common  ``service_app`` (FastAPI factory), ``ClientIngress`` (ingress base),
            ``ingress_application`` (replica options)
    errors  ``install_error_handlers``: one error envelope for every failure
    limits  ``BodyLimit``: request body size limit answered in the envelope
    signin  ``Scope(...)``, ``CurrentUser``, ``AdminUser``, ``StreamUser``,
            ``sign_in_websocket``: the principal of every route (a session
            token or an API key; a single-use ticket where a URL must carry it)
    models  ``Body``: strict request bodies
    forwarded  ``client_address``: the client's address, as the ingress saw it
    listeners  a Ray worker hook binding replicas' gRPC to the node's address

Services: ``apps.<name>`` for each entry of ``actors.runtime.registry.SERVICES``
(a module, or a package when big, like ``apps.pubsub``), each with
``build(settings) -> serve.Application``.
"""
