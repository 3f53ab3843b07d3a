"""The queue directory: which queues exist, whose they are, and which actor runs each.

A queue is created explicitly by its owner (``create``) and belongs to them: a
queue's name is unique per owner, so two users may each have a queue called
``emails`` and neither ever sees the other's. The directory is one durable
actor (``queue-directory``) that journals every create and delete, holds each
owner to ``max_queues_per_owner`` queues, and is the only place a queue actor
is started: ``lookup`` starts (or finds) the actor of a queue it knows, and
answers ``QueueNotFound`` for any other, so a name that does not exist, for
this caller, starts nothing.

A queue's actor is named ``queue/<owner>/<name>/<incarnation>``: a queue name
cannot contain '/', so no user-chosen name can be called like one of the
service's own actors (``queue-slots``, ``queue-directory``), and a queue created
again after a delete is a new actor with a new journal, never what is left of
the old one. ``delete`` stops the queue's actor (its workers go with it), gives
its global slots back, forgets the queue and drops its journal.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from actors.queue.errors import QueueNotFound
from actors.queue.model import check_queue_name, queue_actor_name
from actors.queue.settings import QueueSettings
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import InvalidInput, LimitReached
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, remote_actor

log = logging.getLogger(__name__)

DIRECTORY_NAME = "queue-directory"
#: Longest owner id (a user id).
MAX_OWNER_CHARS = 128


@dataclass(slots=True)
class QueueEntry:
    """One queue as the directory keeps it."""

    owner: str
    name: str
    actor: str  #: its actor's name, which is also its journal's stream
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.name,
            "owner": self.owner,
            "actor": self.actor,
            "created_at": self.created_at,
        }


def check_owner(owner: object) -> str:
    if not isinstance(owner, str) or not 1 <= len(owner) <= MAX_OWNER_CHARS:
        raise InvalidInput(f"a queue's owner is a user id of 1 to {MAX_OWNER_CHARS} characters")
    return owner


class QueueDirectory(Durable):
    """Every queue by owner and name (durable), and the per-owner quota."""

    def __init__(self, config: QueueSettings, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.queues: dict[str, dict[str, QueueEntry]] = {}  #: owner -> name -> entry

    # --- durable state -------------------------------------------------------

    def state_size(self) -> int:
        return sum(len(mine) for mine in self.queues.values())

    def snapshot_state(self) -> list[QueueEntry]:
        return [entry for mine in self.queues.values() for entry in mine.values()]

    def restore_state(self, state: list[QueueEntry]) -> None:
        self.queues = {}
        for entry in state:
            self.queues.setdefault(entry.owner, {})[entry.name] = entry

    def apply_create(self, owner: str, name: str, actor: str, at: float) -> QueueEntry:
        mine = self.queues.setdefault(owner, {})
        entry = mine.get(name)
        if entry is None:
            entry = mine[name] = QueueEntry(owner, name, actor, at)
        return entry

    def apply_delete(self, owner: str, name: str) -> QueueEntry | None:
        mine = self.queues.get(owner)
        if mine is None:
            return None
        entry = mine.pop(name, None)
        if not mine:
            del self.queues[owner]
        return entry

    # --- the API -------------------------------------------------------------

    def find(self, owner: str, name: str) -> QueueEntry:
        entry = self.queues.get(owner, {}).get(name) if isinstance(owner, str) else None
        if entry is None:
            raise QueueNotFound(queue=str(name)[:80])
        return entry

    async def create(
        self, owner: str, name: str, *, key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Create ``owner``'s queue ``name`` (or find it): its entry, and whether it is new.

        Refused with ``LimitReached`` when the owner holds ``max_queues_per_owner``.
        """
        check_owner(owner)
        check_queue_name(name)
        if key is not None and (replied := await self.committed_reply(key)) is not None:
            first: QueueEntry = replied[1]
            return first.to_dict(), True
        existing = self.queues.get(owner, {}).get(name)
        if existing is not None:
            return existing.to_dict(), False
        limit = self.config.max_queues_per_owner
        if len(self.queues.get(owner, {})) >= limit:
            raise LimitReached(
                f"an owner may hold at most {limit} queues; delete one first", limit=limit
            )
        actor = queue_actor_name(owner, name, uuid.uuid4().hex[:12])
        entry: QueueEntry = await self.execute(
            "create", key=key, owner=owner, name=name, actor=actor, at=self.clock.time()
        )
        return entry.to_dict(), True

    async def get(self, owner: str, name: str) -> dict[str, Any]:
        """The entry of ``owner``'s queue ``name``; ``QueueNotFound`` if there is none."""
        return self.find(owner, name).to_dict()

    async def list_queues(self, owner: str) -> list[dict[str, Any]]:
        """``owner``'s queues, by name."""
        mine = self.queues.get(owner, {}) if isinstance(owner, str) else {}
        return [mine[name].to_dict() for name in sorted(mine)]

    async def count(self, owner: str) -> int:
        return len(self.queues.get(owner, {}))

    def __repr__(self) -> str:
        return f"<QueueDirectory owners={len(self.queues)} queues={self.state_size()}>"


# --- the actor ------------------------------------------------------------------


class _QueueDirectoryProcess(QueueDirectory):
    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]
        from actors.runtime.supervision import recover

        super().__init__(QueueSettings.of(settings))
        self.settings = settings
        self._handles: dict[str, Any] = {}
        await recover(self, settings, DIRECTORY_NAME)

    async def ping(self) -> int:
        return self.state_size()

    async def lookup(self, owner: str, name: str, *, stale: bool = False) -> Any:
        """The actor of ``owner``'s queue ``name``, started if it is not running (it
        recovers from its journal); ``QueueNotFound`` if there is no such queue, and
        then nothing is started. ``stale``: the caller found the last handle dead."""
        from actors.queue.jobqueue import JobQueueActor
        from actors.runtime.supervision import get_or_create

        entry = self.find(owner, name)
        handle = None if stale else self._handles.get(entry.actor)
        if handle is None:
            handle = get_or_create(
                JobQueueActor,
                entry.actor,
                self.settings,
                entry.name,
                entry.actor,
                namespace=self.settings.namespace,
            )
            self._handles[entry.actor] = handle
        return handle

    async def delete(self, owner: str, name: str, *, key: str | None = None) -> bool:
        """Delete ``owner``'s queue ``name`` and every job in it; ``QueueNotFound`` if
        there is none (a repeated ``key`` answers True again)."""
        from actors.queue.workers import SlotsClient
        from actors.runtime.store import open_store
        from actors.runtime.supervision import kill_named

        if key is not None and await self.committed_reply(key) is not None:
            return True
        entry = self.find(owner, name)
        # Stopped first: from here its callers see it dead and ask again, and then the
        # queue is gone. A crash before the delete is journaled leaves the queue, whose
        # actor comes back from its journal on the next lookup.
        self._handles.pop(entry.actor, None)
        kill_named(entry.actor, namespace=self.settings.namespace)
        await self.execute("delete", key=key, owner=owner, name=name)
        try:
            await SlotsClient(self.settings).set_demand(entry.actor, 0)
            store = open_store(self.settings, entry.actor)
            try:
                await store.delete_stream(entry.actor)
            finally:
                await store.close()
        except Exception as error:  # the queue is gone either way; only space is lost
            log.warning("queue %s deleted; cleaning up after it failed: %r", entry.actor, error)
        return True


#: Durable; calls in flight at a crash are retried (creates and deletes carry keys).
QueueDirectoryActor = remote_actor(_QueueDirectoryProcess, restart=Restart.PERMANENT)


__all__ = [
    "DIRECTORY_NAME",
    "QueueDirectory",
    "QueueDirectoryActor",
    "QueueEntry",
    "check_owner",
]
