"""The game's HTTP routes (docs/game.md, "Protocol"), and the browser client's files.

Every route needs a principal: a signed-in user, or an API key holding the
route's scope (``game:read``, ``game:play``, ``game:trade``). Characters,
seats and tickets belong to their user; another user's, and a private room
without its code, are 404s.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Response
from pydantic import BaseModel, Field

from actors.auth.client import Principal
from actors.chat.client import MAX_DURATION_S
from actors.game import content, world
from actors.game.client import GameClient, zone_of
from actors.game.settings import GameSettings
from apps.models import Body
from apps.signin import AdminUser, Scope

Reader = Annotated[Principal, Scope("game:read")]
Player = Annotated[Principal, Scope("game:play")]
Trader = Annotated[Principal, Scope("game:trade")]
RoomId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
CharacterId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
ZoneName = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$")]
IdempotencyKey = Annotated[str | None, Header(max_length=64)]
ClassName = Literal["warrior", "archer", "mage"]
assert set(ClassName.__args__) == set(content.CLASSES)  # type: ignore[attr-defined]
Short = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9 _.:-]+$")]
STATIC_DIR = FilePath(__file__).resolve().parent / "static"
#: The browser client's pages: scripts and styles from this origin only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class CharacterIn(Body):
    name: str = Field(..., min_length=2, max_length=20, pattern=r"^[A-Za-z0-9_-]+$")
    # ``class`` is a Python keyword: the field is ``cls``, named ``class`` in JSON.
    cls: ClassName = Field(..., alias="class")


class CharacterOut(BaseModel):
    model_config = {"populate_by_name": True}

    id: str
    name: str
    cls: str = Field(..., alias="class", serialization_alias="class")
    level: int
    xp: int
    kills: int
    deaths: int
    items: list[str] = []
    weapon: str = ""
    armour: str = ""
    created_at: float


class Characters(BaseModel):
    characters: list[dict[str, Any]]


class RoomIn(Body):
    zone: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$")]
    mode: Short = "world"
    label: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9 _.:-]*$")] = ""
    private: bool = False
    max_players: Annotated[int, Field(ge=1, le=1_000)] | None = None


class RoomOut(BaseModel):
    id: str
    zone: str
    mode: str
    label: str
    private: bool
    players: int
    max_players: int
    code: str | None = None


class Rooms(BaseModel):
    rooms: list[RoomOut]


class JoinIn(Body):
    character: Annotated[str, Field(min_length=1, max_length=32)]
    code: Annotated[str, Field(min_length=1, max_length=32)] | None = None


class PlayIn(Body):
    character: Annotated[str, Field(min_length=1, max_length=32)]
    zone: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$")]


UserIdField = Annotated[str, Field(min_length=1, max_length=64)]


class SeatIn(Body):
    user_id: UserIdField
    character: Annotated[str, Field(min_length=1, max_length=32)]


class MuteIn(Body):
    user_id: UserIdField
    duration_s: Annotated[float, Field(gt=0, le=MAX_DURATION_S)] | None = Field(
        None, description="Null: until lifted."
    )


class Reservation(BaseModel):
    room: str
    seat: str
    zone: str
    expires_in_s: float


class GoldOut(BaseModel):
    account: str
    balance: int


class TradeIn(Body):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
    to_character: Annotated[str, Field(min_length=1, max_length=32)]
    gold: Annotated[int, Field(ge=1, le=1_000_000_000)]


class TradeOut(BaseModel):
    id: str
    gold: int
    fee: int
    balance: int


Condition = str | int | dict[str, Any]


class TicketIn(Body):
    character: Annotated[str, Field(min_length=1, max_length=32)]
    mode: Annotated[str, Field(max_length=32)] = ""
    region: Annotated[str, Field(max_length=32)] = ""
    query: Annotated[dict[str, Condition], Field(max_length=3)] = Field(default_factory=dict)
    min_count: Annotated[int, Field(ge=1, le=1_000)] = 2
    max_count: Annotated[int, Field(ge=1, le=1_000)] = 2
    party: Annotated[str, Field(min_length=1, max_length=32)] | None = None


class TicketOut(BaseModel):
    id: str
    state: str
    players: int
    waited_s: float
    room: str | None = None
    seat: str | None = None


class PartyIn(Body):
    character: Annotated[str, Field(min_length=1, max_length=32)]


class PartyJoinIn(Body):
    character: Annotated[str, Field(min_length=1, max_length=32)]
    code: Annotated[str, Field(min_length=1, max_length=32)]


class PartyOut(BaseModel):
    id: str
    members: int
    code: str | None = None


class Zones(BaseModel):
    zones: list[dict[str, Any]]


def router(client: GameClient, config: GameSettings) -> APIRouter:
    routes = APIRouter()

    @routes.get("/maps")
    async def maps(user: Reader) -> Zones:
        return Zones(zones=[world.load(name).summary() for name in world.zones()])

    @routes.get("/maps/{zone}")
    async def map_file(zone: ZoneName, user: Reader) -> dict[str, Any]:
        return zone_of(zone).raw

    @routes.get("/classes")
    async def classes(user: Reader) -> dict[str, dict[str, int]]:
        return content.classes_table()

    @routes.get("/items")
    async def items(user: Reader) -> dict[str, dict[str, str | int]]:
        return content.items_table()

    @routes.post("/characters", status_code=201)
    async def create_character(
        body: CharacterIn, user: Player, idempotency_key: IdempotencyKey = None
    ) -> CharacterOut:
        key = f"{user.user_id}:{idempotency_key}" if idempotency_key else None
        made = await client.create_character(user.user_id, body.name, body.cls, key=key)
        return CharacterOut(**made)

    @routes.get("/characters")
    async def list_characters(user: Reader) -> Characters:
        return Characters(characters=await client.characters_of(user.user_id))

    @routes.get("/characters/{character}")
    async def get_character(character: CharacterId, user: Reader) -> CharacterOut:
        return CharacterOut(**await client.character(user.user_id, character))

    @routes.get("/rooms")
    async def list_rooms(
        user: Reader,
        zone: Annotated[str | None, Query(max_length=32)] = None,
        mode: Annotated[str | None, Query(max_length=32)] = None,
        label: Annotated[str | None, Query(max_length=64)] = None,
        open: bool = False,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Rooms:
        found = await client.list_rooms(
            zone=zone, mode=mode, label=label, open_only=open, limit=limit
        )
        return Rooms(rooms=[RoomOut(**room) for room in found])

    @routes.post("/rooms", status_code=201)
    async def create_room(body: RoomIn, user: Player) -> RoomOut:
        made = await client.create_room(
            user.user_id, zone=body.zone, mode=body.mode, label=body.label,
            private=body.private, max_players=body.max_players,
        )  # fmt: skip
        return RoomOut(**made)

    @routes.get("/rooms/{room}")
    async def get_room(room: RoomId, user: Reader) -> RoomOut:
        return RoomOut(**await client.visible_room(user.user_id, room))

    @routes.post("/rooms/{room}/join")
    async def join(room: RoomId, body: JoinIn, user: Player) -> Reservation:
        return Reservation(**await client.join(user.user_id, room, body.character, code=body.code))

    @routes.post("/play")
    async def play(body: PlayIn, user: Player) -> Reservation:
        return Reservation(**await client.play(user.user_id, body.character, body.zone))

    @routes.delete("/rooms/{room}/seat", status_code=204)
    async def leave(room: RoomId, user: Player) -> Response:
        await client.leave(user.user_id, room)
        return Response(status_code=204)

    @routes.get("/rooms/{room}/stats")
    async def stats(
        room: RoomId,
        user: Reader,
        since_tick: Annotated[int, Query(ge=0, le=2**53)] = 0,
        samples: bool = False,
    ) -> dict[str, Any]:
        return await client.stats(
            user.user_id, room, admin=user.is_admin, since_tick=since_tick, samples=samples
        )

    @routes.post("/rooms/{room}/chat/mutes")
    async def mute(room: RoomId, body: MuteIn, user: Player) -> dict[str, Any]:
        """Stop a player sending to the room's chat, for ``duration_s`` or until lifted:
        the owner of a room a user made, or the admin."""
        return await client.mute(
            user.user_id, room, body.user_id, body.duration_s, admin=user.is_admin
        )

    @routes.delete("/rooms/{room}/chat/mutes/{user_id}", status_code=204)
    async def unmute(
        room: RoomId, user_id: Annotated[str, Path(max_length=64)], user: Player
    ) -> Response:
        await client.unmute(user.user_id, room, user_id, admin=user.is_admin)
        return Response(status_code=204)

    @routes.post("/rooms/{room}/seats")
    async def add_player(room: RoomId, body: SeatIn, admin: AdminUser) -> Reservation:
        return Reservation(**await client.add_player(room, body.user_id, body.character))

    @routes.get("/gold")
    async def gold(user: Reader) -> GoldOut:
        from actors.game.gold import account_of

        return GoldOut(account=account_of(user.user_id), balance=await client.balance(user.user_id))

    @routes.post("/trades")
    async def trade(body: TradeIn, user: Trader) -> TradeOut:
        return TradeOut(**await client.trade(user.user_id, body.id, body.to_character, body.gold))

    @routes.post("/matchmaker/tickets", status_code=201)
    async def ticket(body: TicketIn, user: Player) -> TicketOut:
        made = await client.ticket(
            user.user_id, body.character, region=body.region, mode=body.mode, query=body.query,
            min_count=body.min_count, max_count=body.max_count, party=body.party,
        )  # fmt: skip
        return TicketOut(**made)

    @routes.get("/matchmaker/tickets/{ticket}")
    async def ticket_of(ticket: RoomId, user: Reader) -> TicketOut:
        return TicketOut(**await client.ticket_of(user.user_id, ticket))

    @routes.delete("/matchmaker/tickets/{ticket}", status_code=204)
    async def withdraw(ticket: RoomId, user: Player) -> Response:
        await client.withdraw(user.user_id, ticket)
        return Response(status_code=204)

    @routes.post("/parties", status_code=201)
    async def party(body: PartyIn, user: Player) -> PartyOut:
        return PartyOut(**await client.party(user.user_id, body.character))

    @routes.post("/parties/{party}/join")
    async def join_party(party: RoomId, body: PartyJoinIn, user: Player) -> PartyOut:
        return PartyOut(**await client.join_party(user.user_id, party, body.code, body.character))

    return routes


#: The browser client's files: path under ``/game/`` -> (file, media type). Routes of
#: their own (not a mount at the root), so that any other path answers as the API's
#: routes do (404, or 405 with ``Allow`` for a known path and another method).
CLIENT_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/game.js": ("game.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


def client_router() -> APIRouter:
    """The browser client's files, with a strict Content-Security-Policy."""
    files = APIRouter(include_in_schema=False)
    headers = {
        "content-security-policy": CSP,
        "x-content-type-options": "nosniff",
        "cache-control": "no-cache",
    }
    for path, (name, media_type) in CLIENT_FILES.items():
        body = (STATIC_DIR / name).read_bytes()
        files.add_api_route(path, _file_route(body, media_type, headers))
    return files


def _file_route(body: bytes, media_type: str, headers: dict[str, str]) -> Any:
    """A route answering ``body`` (it takes no parameter from the request)."""

    async def serve() -> Response:
        return Response(body, media_type=media_type, headers=headers)

    return serve
