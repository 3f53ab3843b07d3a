"""The scheduler's Python API, for the HTTP front and other services.

Schedules are spread over ``REALM_SCHEDULER_PARTITIONS`` partition actors
(``scheduler-<i>``) by rendezvous hashing, so a schedule's partition is known
before it exists. The key hashed is the part of the schedule id before its
``-`` (the whole id if it has none): the client makes ids as
``<owner tag>-<random>``, the tag a hash of the owner, so that every schedule
of one owner lives on one partition, which holds them to
``REALM_SCHEDULER_MAX_SCHEDULES_PER_OWNER`` exactly. Mutations carry
idempotency keys: a call Ray retries after a partition restart applies once.

``owner`` scopes every call to one user's schedules (the HTTP front passes the
caller's user id). A schedule is created for an owner, whose rights its
firings have (the pub/sub ACL, their own queues); ``None`` on the other calls
is unscoped, for trusted Python callers.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from actors.runtime.errors import InvalidInput
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
        return self.partitions.owner(routing_key(schedule_id))

    async def create(self, spec: dict[str, Any], *, owner: str) -> dict[str, Any]:
        """Create a schedule of ``owner`` from ``spec`` (see ``model.normalize``); its view.

        Refused if ``owner`` may not use its target (the pub/sub ACL; a queue that is not
        theirs is absent), or holds ``max_schedules_per_owner`` schedules already."""
        if not isinstance(owner, str) or not 1 <= len(owner) <= MAX_OWNER_CHARS:
            raise InvalidInput(f"a schedule's owner is a user id of 1 to {MAX_OWNER_CHARS} chars")
        schedule_id = f"{owner_tag(owner)}-{uuid.uuid4().hex}"
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


#: Longest owner id (a user id).
MAX_OWNER_CHARS = 128


def owner_tag(owner: str) -> str:
    """The first part of every schedule id of ``owner``: what places it."""
    return hashlib.blake2b(owner.encode(), digest_size=6).hexdigest()


def routing_key(schedule_id: str) -> str:
    """What is hashed to find a schedule's partition: its owner tag (the whole id for
    ids made before owner tags)."""
    tag, dash, _ = schedule_id.partition("-")
    return tag if dash else schedule_id
