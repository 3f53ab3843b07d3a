"""A minimal durable actor for proving the journal: it records items in order."""

from __future__ import annotations

import os
from typing import Any

import ray

from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.store import open_store
from actors.runtime.supervision import Restart, remote_actor, report_start


class Tally(Durable):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        self.items: list[Any] = []
        store = open_store(settings, f"tally:{name}")
        await self.open(
            store,
            f"tally:{name}",
            snapshot_every=settings.snapshot_every,
            max_batch=settings.group_commit_max,
        )
        self.restarts = await report_start(store, name)

    def snapshot_state(self) -> list[Any]:
        return list(self.items)

    def restore_state(self, state: list[Any]) -> None:
        self.items = list(state)

    def apply_add(self, item: Any) -> int:
        self.items.append(item)
        return len(self.items)

    async def add(self, item: Any, key: str) -> int:
        return await self.execute("add", key=key, item=item)

    async def contents(self) -> list[Any]:
        return self.items

    async def info(self) -> dict[str, Any]:
        journal = self.journal
        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "restarts": self.restarts,
            "commits": journal.commits,
            "records": journal.records,
        }


TallyActor = remote_actor(Tally, restart=Restart.PERMANENT)
