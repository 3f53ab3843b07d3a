"""The scheduler's Python API, for the HTTP front and other services.

Schedules are spread over ``REALM_SCHEDULER_PARTITIONS`` partition actors
(``scheduler-<i>``) by rendezvous hashing of the schedule id, which the client
makes, so a schedule's owner is known before it exists. Mutations carry
idempotency keys: a call Ray retries after a partition restart applies once.

``owner`` scopes every call to one user's schedules (the HTTP front passes the
caller's user id); ``None`` is unscoped, for trusted Python callers.
"""

from __future__ import annotations

import uuid
from typing import Any

from actors.runtime.settings import Settings
from actors.runtime.shards import Shards
from actors.runtime.supervision import ActorRef
from actors.scheduler.errors import ScheduleNotFound
from actors.scheduler.model import MAX_ID_CHARS
from actors.scheduler.partition import PARTITIONS, SchedulerPartitionActor
from actors.scheduler.settings import SchedulerSettings


class SchedulerClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = SchedulerSettings.of(settings)
        self.partitions = Shards(
            SchedulerPartitionActor, PARTITIONS, self.config.partitions, settings
        )

    async def start(self) -> None:
        """Start (or find) every partition; they recover and arm their timers."""
        await self.partitions.start()

    async def close(self) -> None:
        return None

    def _partition(self, schedule_id: str) -> ActorRef:
        if not isinstance(schedule_id, str) or not 1 <= len(schedule_id) <= MAX_ID_CHARS:
            raise ScheduleNotFound(schedule_id=str(schedule_id)[:MAX_ID_CHARS])
        return self.partitions.owner(schedule_id)

    async def create(self, spec: dict[str, Any], *, owner: str | None = None) -> dict[str, Any]:
        """Create a schedule from ``spec`` (see ``model.normalize``); its view."""
        schedule_id = uuid.uuid4().hex
        view: dict[str, Any] = await self._partition(schedule_id).call(
            "create", schedule_id, owner, spec, key=f"create:{schedule_id}"
        )
        return view

    async def get(self, schedule_id: str, *, owner: str | None = None) -> dict[str, Any]:
        view: dict[str, Any] = await self._partition(schedule_id).call("get", schedule_id, owner)
        return view

    async def list_schedules(self, *, owner: str | None = None) -> list[dict[str, Any]]:
        """Every schedule (of ``owner``), oldest first."""
        parts = await self.partitions.call_all("list_schedules", owner)
        return sorted((v for part in parts for v in part), key=lambda v: (v["created_at"], v["id"]))

    async def update(
        self, schedule_id: str, changes: dict[str, Any], *, owner: str | None = None
    ) -> dict[str, Any]:
        view: dict[str, Any] = await self._partition(schedule_id).call(
            "update", schedule_id, owner, changes, key=uuid.uuid4().hex
        )
        return view

    async def delete(self, schedule_id: str, *, owner: str | None = None) -> bool:
        return bool(
            await self._partition(schedule_id).call(
                "delete", schedule_id, owner, key=uuid.uuid4().hex
            )
        )

    async def pause(self, schedule_id: str, *, owner: str | None = None) -> dict[str, Any]:
        view: dict[str, Any] = await self._partition(schedule_id).call(
            "pause", schedule_id, owner, key=uuid.uuid4().hex
        )
        return view

    async def resume(self, schedule_id: str, *, owner: str | None = None) -> dict[str, Any]:
        view: dict[str, Any] = await self._partition(schedule_id).call(
            "resume", schedule_id, owner, key=uuid.uuid4().hex
        )
        return view

    async def upcoming(
        self, schedule_id: str, count: int = 10, *, owner: str | None = None
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._partition(schedule_id).call(
            "upcoming", schedule_id, owner, count
        )
        return found

    async def history(
        self, schedule_id: str, limit: int = 100, *, owner: str | None = None
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._partition(schedule_id).call(
            "history", schedule_id, owner, limit
        )
        return found

    async def stats(self) -> list[dict[str, int]]:
        """Per partition: schedules, pending firings, timer events, hand-offs, late decisions."""
        return await self.partitions.call_all("stats")

    def __repr__(self) -> str:
        return f"<SchedulerClient partitions={len(self.partitions)}>"
