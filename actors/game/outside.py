"""What a room actor reaches outside itself: gold (ledger), characters, the rooms list,
and its chat room (the chat service)."""

from __future__ import annotations

import contextlib
from typing import Any

from actors.chat.client import ChatClient
from actors.game.characters import SHARD_PREFIX, CharacterShardActor
from actors.game.directory import DIRECTORY_NAME, DirectoryActor
from actors.game.gold import Gold
from actors.game.room import chat_owner
from actors.game.settings import GameSettings
from actors.ledger.client import LedgerClient
from actors.runtime.errors import Conflict
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards
from actors.runtime.supervision import ActorRef


class RayOutside:
    """``actors.game.room.Outside`` over the deployment's actors."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        config = GameSettings.of(settings)
        self.characters = Shards(
            CharacterShardActor, SHARD_PREFIX, config.character_shards, settings
        )
        self.directory = ActorRef(
            DirectoryActor, DIRECTORY_NAME, settings, DIRECTORY_NAME, namespace=settings.namespace
        )
        self._gold: Gold | None = None
        self._chat: ChatClient | None = None
        self.config = config

    @property
    def chat(self) -> ChatClient:
        if self._chat is None:
            self._chat = ChatClient(self.settings)
        return self._chat

    @property
    def gold(self) -> Gold:
        if self._gold is None:
            self._gold = Gold(LedgerClient(self.settings), self.config)
        return self._gold

    async def credit_gold(self, user: str, amount: int, transfer_id: str) -> int:
        return await self.gold.credit(user, amount, transfer_id)

    async def save_progress(self, user: str, progress: list[dict[str, Any]]) -> None:
        await self.characters.owner(user).call("progress", user, progress)

    async def report(self, room: str, players: int) -> None:
        await self.directory.call("report", room, players)

    async def closed(self, room: str) -> None:
        await self.directory.call("close_room", room)

    async def chat_room(self, room: str) -> str:
        made = await self.chat.create_room(
            chat_owner(room),
            "game",
            kind="private",
            name=f"Game room {room}",
            topic="the players seated in the game room",
            key=room,
        )
        return str(made["id"])

    async def chat_admit(self, chat: str, room: str, user: str, name: str) -> None:
        # An invitation first, so that the join is let in at once, under ``name``.
        with contextlib.suppress(Conflict):  # a member already (or banned: the join says)
            await self.chat.invite(chat, chat_owner(room), user)
        await self.chat.join(chat, user, name)

    async def chat_leave(self, chat: str, room: str, user: str) -> None:
        await self.chat.leave(chat, user)

    async def chat_close(self, chat: str, room: str) -> None:
        await self.chat.delete_room(chat, chat_owner(room))
