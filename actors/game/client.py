"""The game service's Python API, for its HTTP/WebSocket front and other services.

    game = GameClient(settings)
    await game.start()
    character = await game.create_character(user, "ana", "warrior")
    seat = await game.play(user, character["id"], "meadow")   # quick join
    room = await game.room(seat["room"])                      # a GameRoom handle

Rooms are opened in the rooms list (``Directory``) before their actor starts;
a room the list does not hold is ``RoomNotFound`` and starts nothing. A
private room is found only by its owner, its seated players, and whoever
gives its code.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from ray.exceptions import ActorDiedError

from actors.chat.client import ChatClient
from actors.game import world
from actors.game.characters import SHARD_PREFIX, CharacterShardActor
from actors.game.directory import BY_USER, DIRECTORY_NAME, DirectoryActor, RoomInfo, new_room_id
from actors.game.errors import CharacterNotFound, RoomChatNotFound, RoomNotFound, ZoneNotFound
from actors.game.gold import Gold
from actors.game.matchmaker import MATCHMAKER_NAME, MatchmakerActor
from actors.game.room import GameRoomActor, chat_owner, stream_of
from actors.game.settings import GameSettings
from actors.game.view import chat_line
from actors.ledger.client import LedgerClient
from actors.runtime.clock import SystemClock
from actors.runtime.errors import Forbidden, InvalidInput
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards
from actors.runtime.supervision import ActorRef, Handle, call, get_or_create


def zone_of(name: str) -> world.Zone:
    try:
        return world.load(name)
    except KeyError:
        raise ZoneNotFound(zone=name) from None


class GameClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = GameSettings.of(settings)
        self.clock = SystemClock()
        self.characters = Shards(
            CharacterShardActor, SHARD_PREFIX, self.config.character_shards, settings
        )
        self.directory = ActorRef(
            DirectoryActor, DIRECTORY_NAME, settings, DIRECTORY_NAME, namespace=settings.namespace
        )
        self.matchmaker = ActorRef(
            MatchmakerActor, MATCHMAKER_NAME, settings, MATCHMAKER_NAME,
            namespace=settings.namespace,
        )  # fmt: skip
        self.ledger = LedgerClient(settings)
        self.gold = Gold(self.ledger, self.config)
        self._rooms: dict[str, Handle] = {}
        self._chat: ChatClient | None = None

    @property
    def chat(self) -> ChatClient:
        """The chat service, where room chat is (made when first used: by a WebSocket)."""
        if self._chat is None:
            self._chat = ChatClient(self.settings, render=chat_line)
        return self._chat

    async def start(self) -> None:
        await asyncio.gather(
            self.characters.start(), self.directory.call("ping"), self.matchmaker.call("ping")
        )

    async def close(self) -> None:
        if self._chat is not None:
            await self._chat.close()

    # --- characters ---------------------------------------------------------

    async def create_character(
        self, user: str, name: str, cls: str, *, key: str | None = None
    ) -> dict[str, Any]:
        shard = self.characters.owner(user)
        made: dict[str, Any] = await shard.call("create", user, name, cls, key=key)
        return made

    async def characters_of(self, user: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.characters.owner(user).call("list_of", user)
        return found

    async def character(self, user: str, character: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.characters.owner(user).call("get", user, character)
        return found

    async def owner_of(self, character: str) -> str:
        """The user whose character this is (``CharacterNotFound`` if none)."""
        found = await self.characters.call_all("find", character)
        for user in found:
            if user:
                return str(user)
        raise CharacterNotFound(character=character)

    # --- rooms --------------------------------------------------------------

    async def create_room(
        self,
        user: str,
        *,
        zone: str,
        mode: str = "world",
        label: str = "",
        private: bool = False,
        max_players: int | None = None,
        made_by: str = BY_USER,
    ) -> dict[str, Any]:
        zone_of(zone)
        limit = self.config.max_players_per_room
        if max_players is not None and not 1 <= max_players <= limit:
            raise InvalidInput(f"max_players is 1 to {limit}", field="max_players")
        code = secrets.token_urlsafe(6) if private else ""
        info = RoomInfo(
            new_room_id(), zone, mode, label, private, code, user,
            max_players or limit, made_by, self.clock.time(),
        )  # fmt: skip
        opened: dict[str, Any] = await self.directory.call("open_room", info)
        await self._start_room(opened)
        shown = RoomInfo(**opened).shown(0, with_code=True)
        return shown

    async def _start_room(self, info: dict[str, Any]) -> Handle:
        handle = self._rooms.get(info["id"])
        if handle is None:
            handle = get_or_create(
                GameRoomActor, stream_of(info["id"]), self.settings, info,
                namespace=self.settings.namespace,
            )  # fmt: skip
            self._rooms[info["id"]] = handle
        return handle

    async def info(self, room: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.directory.call("get", room)
        return found

    async def room(self, room: str) -> Handle:
        """The room's actor; ``RoomNotFound`` when it is not open (nothing is started)."""
        return await self._start_room(await self.info(room))

    async def call_room(self, room: str, method: str, *args: Any) -> Any:
        handle = await self.room(room)
        try:
            return await call(handle, method, *args)
        except ActorDiedError:
            self._rooms.pop(room, None)
            return await call(await self.room(room), method, *args)

    async def visible_room(self, user: str, room: str) -> dict[str, Any]:
        """The room as ``user`` may see it: a private room only to its owner and seats."""
        info = await self.info(room)
        if (
            info["private"]
            and info["owner"] != user
            and not await self.call_room(room, "has_seat", user)
        ):
            raise RoomNotFound(room=room)
        players = await self.directory.call("players_of", room)
        return RoomInfo(**info).shown(players, with_code=info["owner"] == user)

    async def list_rooms(self, **filters: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.directory.call("list", **filters)
        return found

    async def join(
        self, user: str, room: str, character: str, *, code: str | None = None
    ) -> dict[str, Any]:
        """A seat reservation in ``room`` for ``user``'s ``character``."""
        info = await self.info(room)
        if (
            info["private"]
            and info["owner"] != user
            and not await self._may_enter(room, user, code)
        ):
            raise RoomNotFound(room=room)
        chosen = await self.character(user, character)
        answer: dict[str, Any] = await self.call_room(room, "reserve", user, chosen)
        return answer

    async def _may_enter(self, room: str, user: str, code: str | None) -> bool:
        if code is not None and await self.directory.call("check_code", room, code):
            return True
        return bool(await self.call_room(room, "has_seat", user))

    async def play(self, user: str, character: str, zone: str) -> dict[str, Any]:
        """Quick join: a seat in an open public room of ``zone``."""
        zone_of(zone)
        chosen = await self.character(user, character)
        info = await self.directory.call("quick", zone, user)
        await self._start_room(info)
        answer: dict[str, Any] = await self.call_room(info["id"], "reserve", user, chosen)
        return answer

    async def leave(self, user: str, room: str) -> None:
        await self.info(room)
        if not await self.call_room(room, "release", user):
            raise RoomNotFound(room=room)

    async def stats(
        self,
        user: str,
        room: str,
        *,
        admin: bool = False,
        since_tick: int = 0,
        samples: bool = False,
    ) -> dict[str, Any]:
        """A room's tick timing, to its seated players and the admin."""
        if not admin and not await self.call_room(room, "has_seat", user):
            raise RoomNotFound(room=room)
        found: dict[str, Any] = await self.call_room(room, "stats", False, since_tick, samples)
        return found

    # --- room chat moderation --------------------------------------------------

    async def _moderated_chat(self, user: str, room: str, *, admin: bool) -> str:
        """The chat room of ``room``, once ``user`` may moderate it: the owner of a room
        a user made, or the admin (rooms the game made have no owner who moderates)."""
        info = await self.info(room)
        if not admin and not (info["owner"] == user and info["made_by"] == BY_USER):
            await self.visible_room(user, room)  # a private room not yours: 404
            raise Forbidden("only the room's owner (or the admin) moderates its chat", room=room)
        chat: str = await self.call_room(room, "chat_room")
        if not chat:
            raise RoomChatNotFound(room=room)
        return chat

    async def mute(
        self, user: str, room: str, target: str, duration_s: float | None, *, admin: bool = False
    ) -> dict[str, Any]:
        """Mute ``target`` in the room's chat (for ``duration_s``, or until unmuted)."""
        chat = await self._moderated_chat(user, room, admin=admin)
        return await self.chat.mute(chat, chat_owner(room), target, duration_s=duration_s)

    async def unmute(self, user: str, room: str, target: str, *, admin: bool = False) -> None:
        chat = await self._moderated_chat(user, room, admin=admin)
        await self.chat.unmute(chat, chat_owner(room), target)

    async def add_player(self, room: str, user: str, character: str) -> dict[str, Any]:
        """The server seats a player (a reservation in their name)."""
        chosen = await self.character(user, character)
        answer: dict[str, Any] = await self.call_room(room, "reserve", user, chosen)
        return answer

    # --- gold ---------------------------------------------------------------

    async def balance(self, user: str) -> int:
        return await self.gold.balance(user)

    async def trade(self, user: str, trade_id: str, to_character: str, amount: int) -> dict:
        payee = await self.owner_of(to_character)
        if payee == user:
            raise Forbidden("a trade is with another player")
        done = await self.gold.trade(user, payee, amount, f"{user}.{trade_id}")
        return {**done, "id": trade_id}

    # --- matchmaker ---------------------------------------------------------

    async def ticket(
        self,
        user: str,
        character: str,
        *,
        region: str = "",
        mode: str = "",
        query: dict[str, Any] | None = None,
        min_count: int = 2,
        max_count: int = 2,
        party: str | None = None,
    ) -> dict[str, Any]:
        """A matchmaker ticket; its ``level`` is the character's."""
        chosen = await self.character(user, character)
        spec = {
            "props": {"level": chosen["level"], "region": region, "mode": mode},
            "query": query or {}, "min_count": min_count, "max_count": max_count,
            "party": party,
        }  # fmt: skip
        made: dict[str, Any] = await self.matchmaker.call("ticket", user, chosen, spec)
        return made

    async def ticket_of(self, user: str, ticket: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.matchmaker.call("ticket_of", user, ticket)
        return found

    async def withdraw(self, user: str, ticket: str) -> None:
        await self.matchmaker.call("withdraw", user, ticket)

    async def party(self, user: str, character: str) -> dict[str, Any]:
        chosen = await self.character(user, character)
        made: dict[str, Any] = await self.matchmaker.call("party", user, chosen)
        return made

    async def join_party(self, user: str, party: str, code: str, character: str) -> dict:
        chosen = await self.character(user, character)
        joined: dict[str, Any] = await self.matchmaker.call("join", user, party, code, chosen)
        return joined
