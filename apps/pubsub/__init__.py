"""HTTP, WebSocket and SSE front of pub/sub (service 5), under ``/pubsub``.

Modules: ``routes`` (HTTP: publish, history, request/reply), ``ws`` (the
WebSocket protocol; ``Connection``, its bounded ``Outbox``), ``sse``
(Server-Sent Events and their resume cursors), ``messages`` (messages as
clients see them). Who may publish and read what is ``actors.pubsub.acl``;
a stream's session is checked again while it lasts
(``apps.signin.until_signed_out``). ``build(settings)`` is the Serve
application.
"""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from actors.pubsub.client import Acl, PubSubClient, load_hook
from actors.pubsub.settings import PubSubSettings
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.pubsub import routes, sse, ws
from apps.pubsub.ws import limit_websocket_messages, max_frame_bytes

DESCRIPTION = """Topics with sequence numbers and history, published over HTTP or WebSocket
and subscribed to over WebSocket or Server-Sent Events.

Every route needs a principal (``Authorization: Bearer``: a signed-in user, or
an API key with the scope ``pubsub:publish`` to publish and request, or
``pubsub:subscribe`` to read history and subscribe; WebSocket and SSE clients
that cannot set headers, such as browsers, pass a single-use ``?ticket=``
from ``POST /auth/ticket`` instead). Message data is any JSON document.

Each replica holds one ``PubSubClient``: it follows every broker once, and
fans each message out to its own WebSocket and SSE clients, so a message
crosses the cluster once per replica whatever the number of subscribers.
"""


def make_app(client: PubSubClient, settings: Settings) -> FastAPI:
    config = PubSubSettings.of(settings)
    app = service_app(
        "pubsub",
        title="pub/sub",
        description="\n\n".join([DESCRIPTION, ws.__doc__ or "", sse.__doc__ or ""]),
        settings=settings,
    )
    acl = Acl(load_hook(config.acl_hook))
    for module in (routes, sse, ws):
        app.include_router(module.router(client, acl, config))
    return app


@serve.deployment
@serve.ingress()
class PubSubIngress(ClientIngress):
    make_client = PubSubClient
    make_app = staticmethod(make_app)
    requires_user = True

    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]
        # Before Serve starts this replica's HTTP server (after the constructor).
        limit_websocket_messages(max_frame_bytes(PubSubSettings.of(settings)))
        await super().__init__(settings)


def build(settings: Settings) -> Application:
    return ingress_application(PubSubIngress, settings, streams=True)
