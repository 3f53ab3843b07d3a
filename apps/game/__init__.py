"""HTTP and WebSocket front of the game server (service 1), under ``/game``.

Modules: ``routes`` (HTTP: maps, characters, rooms, seats, gold, trades, the
matchmaker; and the browser client's files under ``static/``), ``ws`` (the
WebSocket: ``Hub``, ``RoomLink``, ``Connection``). ``build(settings)`` is
the Serve application.
"""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from actors.game.client import GameClient
from actors.game.settings import GameSettings
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.game import routes, ws

DESCRIPTION = """A small multiplayer RPG: characters, rooms (zone instances, one actor each)
with an authoritative tick loop, delta patches over a WebSocket (`/game/ws`), gold in
the ledger, a matchmaker. The browser client is at `/game/`.

Every route needs a signed-in user or an API key with a `game:` scope
(`Authorization: Bearer`; the WebSocket takes a ticket from `POST /auth/ticket` as
`?ticket=`). The protocol, the tick and patch model, reconnection and limits are in
docs/game.md.
"""


def make_app(client: GameClient, settings: Settings) -> FastAPI:
    config = GameSettings.of(settings)
    app = service_app(
        "game",
        description="\n\n".join([DESCRIPTION, ws.__doc__ or ""]),
        settings=settings,
    )
    app.include_router(routes.router(client, config))
    app.include_router(ws.router(client, config))
    app.include_router(routes.client_router())
    return app


@serve.deployment
@serve.ingress()
class GameIngress(ClientIngress):
    make_client = staticmethod(GameClient)
    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(GameIngress, settings, streams=True)
