"""What a room actor reaches outside itself: gold (ledger), characters, the rooms list."""

from __future__ import annotations

from typing import Any

from actors.game.characters import SHARD_PREFIX, CharacterShardActor
from actors.game.directory import DIRECTORY_NAME, DirectoryActor
from actors.game.gold import Gold
from actors.game.settings import GameSettings
from actors.ledger.client import LedgerClient
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
        self.config = config

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
