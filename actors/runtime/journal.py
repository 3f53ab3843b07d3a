"""The durable path: a journal with group commit, and event-sourced actor state.

``Journal`` appends records to a stream of the ``Store``. Records that arrive
while a commit is under way are committed together in the next one (group
commit), so a burst of writes costs a few store round trips, not one each.

``Durable`` is the base of every actor whose state must survive a crash. Its
state is a fold of its journal: a mutation is a named operation applied by an
``apply_<op>`` method, appended to the journal, and acknowledged only once the
journal has it. ``open`` (called from the actor's ``__init__``) rebuilds the
state from the latest snapshot plus the records after it. Each operation may
carry an idempotency key: a repeat of a key, for instance a call Ray retries
after a restart, gets the first answer and changes nothing.

Between being applied and being committed, an operation's effect is visible to
reads in the same actor; it is never acknowledged to its caller before commit.
If a commit fails, the actor cannot know how far its memory is ahead of the
store, so it fails the waiting calls and crashes on purpose: Ray restarts it
and it recovers from the store (let it crash).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from actors.runtime.errors import RealmError, StoreUnavailable
from actors.runtime.store import Store

log = logging.getLogger(__name__)

#: Idempotency keys remembered per actor; older keys are forgotten first.
IDEMPOTENCY_KEYS_KEPT = 100_000
#: How long recovery keeps trying a store that does not answer before giving up.
RECOVERY_PATIENCE_S = 60.0


def crash_process(error: BaseException) -> None:
    """Default reaction to a failed commit: die, so that Ray restarts the actor."""
    log.error("journal commit failed, restarting to recover from the store: %r", error)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, os._exit, 1)


class Journal:
    """An ordered log of one stream with group commit."""

    def __init__(
        self,
        store: Store,
        stream: str,
        *,
        max_batch: int = 1_000,
        on_failure: Callable[[BaseException], None] = crash_process,
    ) -> None:
        self.store = store
        self.stream = stream
        self.max_batch = max_batch
        self._on_failure = on_failure
        self.committed = 0  #: last record number the store has
        self.assigned = 0  #: last record number handed out
        self._pending: list[tuple[bytes, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._broken: BaseException | None = None
        self.commits = 0  #: store round trips so far
        self.records = 0  #: records committed so far

    def start_at(self, head: int) -> None:
        self.committed = self.assigned = head

    def append(self, record: bytes) -> tuple[int, asyncio.Future[int]]:
        """Number ``record`` now; the future resolves once the store has it."""
        if self._broken is not None:
            raise StoreUnavailable("journal is broken; the actor is restarting")
        self.assigned += 1
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return self.assigned, future

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                self.committed = await self.store.append(
                    self.stream, self.committed, [record for record, _ in batch]
                )
            except BaseException as error:
                self._fail(error, batch)
                return
            self.commits += 1
            self.records += len(batch)
            first = self.committed - len(batch) + 1
            for offset, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(first + offset)

    def _fail(self, error: BaseException, batch: list[tuple[bytes, asyncio.Future[int]]]) -> None:
        self._broken = error
        failure = error if isinstance(error, RealmError) else StoreUnavailable(str(error))
        for _, future in [*batch, *self._pending]:
            if not future.done():
                future.set_exception(failure)
        self._pending.clear()
        self._on_failure(error)

    async def drain(self) -> None:
        """Wait until everything appended so far is committed (or failed)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    def __repr__(self) -> str:
        return (
            f"<Journal {self.stream} committed={self.committed} assigned={self.assigned} "
            f"commits={self.commits} records={self.records}>"
        )


class Durable:
    """Base of actors whose state is rebuilt from snapshot + journal.

    Subclasses implement ``apply_<op>(**args)`` methods (deterministic; they
    validate before they change anything, and raise a ``RealmError`` to refuse),
    plus ``snapshot_state``/``restore_state``. Mutations go through
    ``execute(op, key=..., **args)``.
    """

    journal: Journal
    snapshot_every: int = 10_000

    async def open(
        self,
        store: Store,
        stream: str,
        *,
        snapshot_every: int = 10_000,
        max_batch: int = 1_000,
        on_failure: Callable[[BaseException], None] = crash_process,
    ) -> None:
        """Recover state from the store; call once, from ``__init__``."""
        self.journal = Journal(store, stream, max_batch=max_batch, on_failure=on_failure)
        self.snapshot_every = snapshot_every
        self._replies: OrderedDict[str, Any] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._snapshot_seq = 0
        self._snapshot_task: asyncio.Task[None] | None = None
        snapshot, records = await _with_patience(lambda: _load(store, stream))
        if snapshot is not None:
            self._snapshot_seq, data = snapshot
            state, replies = pickle.loads(data)
            self.restore_state(state)
            self._replies = OrderedDict(replies)
        head = self._snapshot_seq
        for seq, record in records:
            op, args, key = pickle.loads(record)
            self._apply(op, args, key)
            head = seq
        self.journal.start_at(max(head, await _with_patience(lambda: store.head(stream))))

    def snapshot_state(self) -> Any:
        raise NotImplementedError

    def state_size(self) -> int:
        """Roughly how many items a snapshot pickles. Snapshots are taken at most
        once per that many records (and ``snapshot_every``), so their cost stays
        O(1) per record however large the state grows."""
        return 0

    def restore_state(self, state: Any) -> None:
        raise NotImplementedError

    def _apply(self, op: str, args: dict[str, Any], key: str | None) -> Any:
        result = getattr(self, f"apply_{op}")(**args)
        if key is not None:
            self._replies[key] = result
            if len(self._replies) > IDEMPOTENCY_KEYS_KEPT:
                self._replies.popitem(last=False)
        return result

    async def execute(self, op: str, *, key: str | None = None, **args: Any) -> Any:
        """Apply ``op`` now, answer once the journal has it; a repeated key answers again."""
        if key is not None:
            if key in self._replies:
                return self._replies[key]
            if key in self._inflight:
                return await asyncio.shield(self._inflight[key])
        result, committed = self.record(op, key=key, **args)
        if key is not None:
            self._inflight[key] = committed
        try:
            await committed
        finally:
            if key is not None:
                self._inflight.pop(key, None)
        return result

    def record(
        self, op: str, *, key: str | None = None, **args: Any
    ) -> tuple[Any, asyncio.Future[int]]:
        """Apply ``op`` now and journal it; the result, and a future that resolves
        once the store has it. For operations nobody waits on, or that may be
        answered before they are durable because something else already is (a
        failed commit still crashes the actor, so nothing after it is answered)."""
        result = self._apply(op, args, key)  # raises (and changes nothing) to refuse
        seq, committed = self.journal.append(pickle.dumps((op, args, key), protocol=5))
        if seq - self._snapshot_seq >= max(self.snapshot_every, self.state_size()):
            self._take_snapshot(seq)
        return result, committed

    def _take_snapshot(self, seq: int) -> None:
        """Serialize the state as of ``seq`` now; store it once ``seq`` is committed."""
        data = pickle.dumps((self.snapshot_state(), list(self._replies.items())), protocol=5)
        self._snapshot_seq = seq
        previous = self._snapshot_task

        async def write() -> None:
            if previous is not None:
                await previous
            await self.journal.drain()
            if self.journal.committed >= seq:
                await self.journal.store.write_snapshot(self.journal.stream, seq, data)

        self._snapshot_task = asyncio.create_task(write())


async def _load(store: Store, stream: str) -> tuple[tuple[int, bytes] | None, list]:
    snapshot = await store.read_snapshot(stream)
    records = await store.read(stream, after=snapshot[0] if snapshot else 0)
    return snapshot, records


async def _with_patience(fn: Callable[[], Any]) -> Any:
    """Retry a store read while the store is unavailable, up to RECOVERY_PATIENCE_S."""
    delay, waited = 0.1, 0.0
    while True:
        try:
            return await fn()
        except StoreUnavailable:
            if waited >= RECOVERY_PATIENCE_S:
                raise
            log.warning("store unavailable during recovery; retrying in %.1fs", delay)
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)


__all__ = ["Durable", "Journal", "crash_process"]
