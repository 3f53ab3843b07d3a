"""The durable path: a journal with group commit, and event-sourced actor state.

``Journal`` appends records to a stream of the ``Store``. Records that arrive
while a commit is under way are committed together in the next one (group
commit), so a burst of writes costs a few store round trips, not one each.

``Durable`` is the base of every actor whose state must survive a crash. Its
state is a fold of its journal: a mutation is a named operation applied by an
``apply_<op>`` method, appended to the journal, and acknowledged only once the
journal has it. Records and snapshots are data (``actors.runtime.codec``), typed
again on replay from the annotations of ``apply_<op>`` and ``restore_state``,
and versioned by the class's ``schema_version``. ``open`` (called from the
actor's ``__init__``) rebuilds the state from the latest snapshot plus the
records after it. Each operation may carry an idempotency key: a repeat of a
key, for instance a call Ray retries after a restart, gets the first answer
and changes nothing. A repeat that arrives while the first one's record is
still on its way to the store waits for that commit, and fails as the first
one does if it fails: a repeat never acknowledges a write the store lost.

Between being applied and being committed, an operation's effect is visible to
reads in the same actor; it is never acknowledged to its caller before commit.
A read that must not show what could still be lost answers through
``after_commit``. If a commit fails, the actor cannot know how far its memory
is ahead of the store, so it fails the waiting calls and crashes on purpose:
Ray restarts it and it recovers from the store (let it crash).

Snapshots are written in the background, each once its records are committed.
A snapshot that fails to be written is logged and skipped: the journal keeps
the records it would have dropped, and the next snapshot, taken at the usual
pace, covers them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import reprlib
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Literal, TypeVar

from actors.runtime import codec, metrics
from actors.runtime.backoff import RECONNECT, retry_call
from actors.runtime.errors import RealmError, RecordUndecodable, StoreUnavailable
from actors.runtime.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Idempotency keys remembered per actor; older keys are forgotten first.
IDEMPOTENCY_KEYS_KEPT = 100_000
#: How long recovery keeps trying a store that does not answer before giving up.
RECOVERY_PATIENCE_S = 60.0
#: Tests set REALM_CHECK_ROUND_TRIP=1: every record and snapshot is then decoded
#: again as it is written and must equal what was applied, so a value that
#: would replay differently (a tuple typed as a list, an object without
#: equality) fails where it is written, not at some later restart.
CHECK_ROUND_TRIP = os.environ.get("REALM_CHECK_ROUND_TRIP") == "1"


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
        actor: str = "other",
    ) -> None:
        self.store = store
        self.stream = stream
        self.max_batch = max_batch
        self.actor = actor  #: the label of this journal's metrics (an actor class)
        self._on_failure = on_failure
        self.committed = 0  #: last record number the store has
        self.assigned = 0  #: last record number handed out
        self._pending: list[tuple[bytes, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._broken: BaseException | None = None
        #: (record number, tie-breaker, future) of ``synced`` calls, soonest first
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tickets = itertools.count()
        self.commits = 0  #: store round trips so far
        self.records = 0  #: records committed so far

    def start_at(self, head: int) -> None:
        self.committed = self.assigned = head

    @property
    def broken(self) -> bool:
        """A commit failed: nothing more is appended (the actor is restarting)."""
        return self._broken is not None

    def check(self) -> None:
        """Raise ``StoreUnavailable`` if a commit failed (nothing may be applied then)."""
        if self._broken is not None:
            raise StoreUnavailable("journal is broken; the actor is restarting")

    def append(self, record: bytes) -> tuple[int, asyncio.Future[int]]:
        """Number ``record`` now; the future resolves once the store has it."""
        self.check()
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
            started = time.perf_counter()
            try:
                self.committed = await self.store.append(
                    self.stream, self.committed, [record for record, _ in batch]
                )
            except BaseException as error:
                self._fail(error, batch)
                return
            took_s = time.perf_counter() - started
            self.commits += 1
            self.records += len(batch)
            first = self.committed - len(batch) + 1
            for offset, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(first + offset)
            while self._waiters and self._waiters[0][0] <= self.committed:
                waiter = heapq.heappop(self._waiters)[2]
                if not waiter.done():
                    waiter.set_result(None)
            metrics.JOURNAL_COMMIT_SECONDS.observe(took_s, actor=self.actor)
            metrics.JOURNAL_BATCH_RECORDS.observe(len(batch), actor=self.actor)

    def _fail(self, error: BaseException, batch: list[tuple[bytes, asyncio.Future[int]]]) -> None:
        self._broken = error
        failure = self._failure()
        for _, future in [*batch, *self._pending]:
            if not future.done():
                future.set_exception(failure)
        for _, _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(failure)
        self._pending.clear()
        self._waiters.clear()
        self._on_failure(error)

    def _failure(self) -> RealmError:
        error = self._broken
        return error if isinstance(error, RealmError) else StoreUnavailable(str(error))

    async def synced(self, seq: int | None = None) -> None:
        """Return once the store has every record up to ``seq`` (by default, every
        record appended so far); raise the commit's failure if one failed first."""
        seq = self.assigned if seq is None else seq
        if self._broken is not None:
            raise self._failure()
        if seq <= self.committed:
            return
        if seq > self.assigned:
            raise ValueError(f"record {seq} was never appended (last is {self.assigned})")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._tickets), waiter))
        await asyncio.shield(waiter)

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
    ``execute(op, key=..., **args)``, or ``record`` for one that is answered
    before it is durable.

    What goes into the store is data: an operation's arguments, its answer
    (kept for idempotency keys) and the snapshot are encoded by
    ``actors.runtime.codec`` and typed again on the way back from the
    annotations of ``apply_<op>`` (parameters and return) and of
    ``restore_state``'s ``state``. Annotate them precisely: a ``tuple`` comes
    back as a tuple only if it says so.
    """

    journal: Journal
    snapshot_every: int = 10_000
    #: Version of the shape of this class's records and snapshots. Bump it when
    #: an ``apply_<op>``'s arguments or the snapshot change shape, and teach
    #: ``upgrade_record``/``upgrade_state`` to read the older ones.
    schema_version: ClassVar[int] = 1

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
        self.journal = Journal(
            store, stream, max_batch=max_batch, on_failure=on_failure, actor=metrics.kind_of(self)
        )
        self.snapshot_every = snapshot_every
        self._replies: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        #: Commit of the record of each key whose reply is not known to be durable yet.
        self._inflight: dict[str, asyncio.Future[int]] = {}
        self._snapshot_seq = 0
        self._snapshot_task: asyncio.Task[None] | None = None
        self.snapshot_failures = 0  #: snapshots that could not be written
        snapshot, records = await _with_patience(lambda: _load(store, stream))
        if snapshot is not None:
            self._snapshot_seq, data = snapshot
            with _undecodable(stream, self._snapshot_seq, "snapshot"):
                self._restore(codec.decode(data))
        head = self._snapshot_seq
        for seq, data in records:
            with _undecodable(stream, seq, "record"):
                op, args, key = self._decode_record(codec.decode(data))
            self._apply(op, args, key)
            head = seq
        self.journal.start_at(max(head, await _with_patience(lambda: store.head(stream))))

    def snapshot_state(self) -> Any:
        raise NotImplementedError

    def state_size(self) -> int:
        """Roughly how many items a snapshot encodes. Snapshots are taken at most
        once per that many records (and ``snapshot_every``), so their cost stays
        O(1) per record however large the state grows."""
        return 0

    def restore_state(self, state: Any) -> None:
        raise NotImplementedError

    def upgrade_record(
        self, version: int, op: str, args: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """A record written by ``schema_version`` ``version`` as one this code applies."""
        raise ValueError(f"written by schema version {version}; this code reads "
                         f"{self.schema_version} and has no upgrade from it")  # fmt: skip

    def upgrade_state(self, version: int, state: Any) -> Any:
        """A snapshot's state written by ``schema_version`` ``version``, as this code's."""
        raise ValueError(f"written by schema version {version}; this code reads "
                         f"{self.schema_version} and has no upgrade from it")  # fmt: skip

    def _apply(self, op: str, args: dict[str, Any], key: str | None) -> Any:
        result = getattr(self, f"apply_{op}")(**args)
        if key is not None:
            self._replies[key] = (op, result)
            if len(self._replies) > IDEMPOTENCY_KEYS_KEPT:
                self._replies.popitem(last=False)
        return result

    def reply(self, key: str) -> tuple[str, Any] | None:
        """The operation and answer remembered for idempotency key ``key``, once
        its record is committed; None before (see ``committed_reply``)."""
        found = self._replies.get(key)
        if found is None or not _settled(self._inflight.get(key)):
            return None
        return found

    def knows(self, key: str) -> bool:
        """Whether a call with ``key`` was applied here (its record may still be on
        its way to the store: ``committed_reply`` waits for it)."""
        return key in self._replies

    async def committed_reply(self, key: str) -> tuple[str, Any] | None:
        """The operation and answer remembered for ``key``, if any, once its record
        is committed: waits for a commit under way, and raises its failure."""
        found = self._replies.get(key)
        if found is not None:
            await self._committed(key)
        return found

    async def _committed(self, key: str) -> None:
        pending = self._inflight.get(key)
        if pending is not None:
            await asyncio.shield(pending)

    async def execute(self, op: str, *, key: str | None = None, **args: Any) -> Any:
        """Apply ``op`` now, answer once the journal has it. A repeated key answers
        the first call's answer, once the first call's record is committed (and
        fails as it did if that commit fails), and changes nothing."""
        if key is not None and key in self._replies:
            answer = self._replies[key][1]
            await self._committed(key)
            return answer
        result, committed = self.record(op, key=key, **args)
        await committed
        return result

    async def after_commit(self, value: T) -> T:
        """``value`` (read from this actor's state just now), once every change it
        may show is committed: a read that never shows what a crash could undo."""
        await self.journal.synced()
        return value

    def record(
        self, op: str, *, key: str | None = None, **args: Any
    ) -> tuple[Any, asyncio.Future[int]]:
        """Apply ``op`` now and journal it with the next commit: the result, and a
        future that resolves once the store has it.

        For operations nobody waits on, or that may be answered before they
        are durable because something else already is. Records commit in
        order, so whatever is recorded after this commits after it, and a
        failed commit crashes the actor, so nothing after it is answered."""
        self.journal.check()  # nothing is applied once the journal is broken
        result = self._apply(op, args, key)  # raises (and changes nothing) to refuse
        data = codec.encode([self.schema_version, op, args, key])
        if CHECK_ROUND_TRIP:
            _check_round_trip(f"apply_{op}", args, self._decode_record(codec.decode(data))[1])
        seq, committed = self.journal.append(data)
        if key is not None:
            self._inflight[key] = committed
            committed.add_done_callback(partial(self._settle, key))
        if seq - self._snapshot_seq >= max(self.snapshot_every, self.state_size()):
            self._take_snapshot(seq)
        return result, committed

    def _settle(self, key: str, committed: asyncio.Future[int]) -> None:
        """Forget a key's commit once it succeeded (a failed one stays: its reply is lost)."""
        if _settled(committed) and self._inflight.get(key) is committed:
            del self._inflight[key]

    def _decode_record(self, record: Any) -> tuple[str, dict[str, Any], str | None]:
        version, op, args, key = record
        if version != self.schema_version:
            op, args = self.upgrade_record(version, op, args)
        types = codec.parameter_types(getattr(type(self), f"apply_{op}"))
        unknown = set(args) - set(types)
        if unknown:
            raise ValueError(f"apply_{op} takes no {sorted(unknown)}")
        return op, {name: codec.convert(value, types[name]) for name, value in args.items()}, key

    def _snapshot(self) -> dict[str, Any]:
        replies = [[key, op, result] for key, (op, result) in self._replies.items()]
        return {"version": self.schema_version, "state": self.snapshot_state(), "replies": replies}

    def _restore(self, snapshot: dict[str, Any]) -> None:
        version, state = snapshot["version"], snapshot["state"]
        if version != self.schema_version:
            state = self.upgrade_state(version, state)
        self.restore_state(codec.convert(state, _state_type(type(self))))
        self._replies = OrderedDict(
            (key, (op, codec.convert(result, _result_type(type(self), op))))
            for key, op, result in snapshot["replies"]
        )

    def _take_snapshot(self, seq: int) -> None:
        """Encode the state as of ``seq`` now; store it once ``seq`` is committed."""
        snapshot = self._snapshot()
        data = codec.encode(snapshot)
        if CHECK_ROUND_TRIP:
            state_type = _state_type(type(self))
            decoded = codec.convert(codec.decode(data)["state"], state_type)
            _check_round_trip("restore_state", {"state": snapshot["state"]}, {"state": decoded})
        self._snapshot_seq = seq
        previous = self._snapshot_task

        async def write() -> None:
            if previous is not None:  # in order; its own failure does not stop this one
                await asyncio.wait({previous})
            try:
                await self.journal.synced(seq)
                await self.journal.store.write_snapshot(self.journal.stream, seq, data)
            except Exception as error:
                self.snapshot_failures += 1
                log.warning(
                    "%s: snapshot at record %d not written (%r); the journal keeps its "
                    "records until the next one", self.journal.stream, seq, error,
                )  # fmt: skip

        self._snapshot_task = asyncio.create_task(write())


def _settled(committed: asyncio.Future[int] | None) -> bool:
    """No commit to wait for, or one that succeeded."""
    if committed is None:
        return True
    return committed.done() and not committed.cancelled() and committed.exception() is None


def _state_type(cls: type[Durable]) -> Any:
    return codec.parameter_types(cls.restore_state).get("state", Any)


def _result_type(cls: type[Durable], op: str) -> Any:
    return codec.return_type(getattr(cls, f"apply_{op}"))


def _check_round_trip(where: str, applied: dict[str, Any], decoded: dict[str, Any]) -> None:
    for name, value in applied.items():
        if decoded.get(name) != value:
            difference = _difference(value, decoded.get(name))
            raise TypeError(
                f"{where}: {name!r} does not survive the store: {difference}; "
                "annotate it precisely or store plain data"
            )


def _difference(applied: Any, decoded: Any, path: str = "") -> str:
    """Where ``decoded`` first differs from ``applied``, briefly."""
    if isinstance(applied, dict) and isinstance(decoded, dict) and applied.keys() == decoded.keys():
        for key, value in applied.items():
            if decoded[key] != value:
                return _difference(value, decoded[key], f"{path}[{key!r}]")
    if hasattr(applied, "__dataclass_fields__") and type(applied) is type(decoded):
        for key in applied.__dataclass_fields__:
            if getattr(applied, key) != getattr(decoded, key):
                return _difference(getattr(applied, key), getattr(decoded, key), f"{path}.{key}")
    brief = reprlib.Repr()
    brief.maxstring = brief.maxother = 60
    return f"{path or 'it'} is {brief.repr(applied)} but comes back as {brief.repr(decoded)}"


class _undecodable:
    """Turns any failure to decode a stored record into ``RecordUndecodable``."""

    def __init__(self, stream: str, seq: int, what: str) -> None:
        self.stream, self.seq, self.what = stream, seq, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, _: Any) -> Literal[False]:
        if error is not None and not isinstance(error, RealmError):
            raise RecordUndecodable(
                f"{self.what} {self.seq} of stream {self.stream} does not decode: {error}",
                stream=self.stream, seq=self.seq,
            ) from error  # fmt: skip
        return False


async def _load(store: Store, stream: str) -> tuple[tuple[int, bytes] | None, list[Any]]:
    snapshot = await store.read_snapshot(stream)
    records = await store.read(stream, after=snapshot[0] if snapshot else 0)
    return snapshot, records


async def _with_patience(fn: Callable[[], Any]) -> Any:
    """Retry a store read while the store is unavailable, up to RECOVERY_PATIENCE_S."""
    return await retry_call(
        fn, on=StoreUnavailable, backoff=RECONNECT, patience_s=RECOVERY_PATIENCE_S,
        log=log, what="store read during recovery",
    )  # fmt: skip


__all__ = ["Durable", "Journal", "crash_process"]
