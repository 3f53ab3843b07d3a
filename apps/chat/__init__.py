"""HTTP, WebSocket and SSE front of chat (service 3), under ``/chat``.

Modules: ``routes`` (HTTP: rooms, membership, moderation, messages, history,
search, presence), ``ws`` (the WebSocket protocol; ``Connection``), ``sse``
(a room as Server-Sent Events, for read-only clients), ``frames`` (what
clients receive, rendered once per replica). ``build(settings)`` is the Serve
application.
"""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from actors.chat.client import ChatClient
from actors.chat.settings import ChatSettings
from actors.runtime.settings import Settings
from apps.chat import frames, routes, sse, ws
from apps.common import ClientIngress, ingress_application, service_app

DESCRIPTION = """Rooms (public, private, direct), messages with history, edits, deletions,
replies, reactions and mentions, presence, typing and read receipts, over HTTP, WebSocket
(`/chat/ws`) and Server-Sent Events (`/chat/rooms/{room}/sse`).

Every route needs a signed-in user or an API key with a `chat:` scope
(`Authorization: Bearer`; WebSocket and SSE clients that cannot set headers
pass a ticket from `POST /auth/ticket` as `?ticket=`). The full protocol,
delivery semantics and limits are in docs/chat.md.

Each replica holds one `ChatClient`: it follows every chat shard once, and
fans each room's events out to its own connections, so an event crosses the
cluster once per replica whatever the number of members connected.
"""


def make_client(settings: Settings) -> ChatClient:
    return ChatClient(settings, render=frames.post_json)


def make_app(client: ChatClient, settings: Settings) -> FastAPI:
    config = ChatSettings.of(settings)
    app = service_app(
        "chat",
        description="\n\n".join([DESCRIPTION, ws.__doc__ or "", sse.__doc__ or ""]),
        settings=settings,
    )
    for module in (routes, ws, sse):
        app.include_router(module.router(client, config))
    return app


@serve.deployment
@serve.ingress()
class ChatIngress(ClientIngress):
    make_client = staticmethod(make_client)
    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(ChatIngress, settings, streams=True)
