"""Ledger (service 8): two-phase commit across shards, run by ``TxCoordinator``s.

A unit of transfers (one transfer, or a linked chain) whose accounts live on
more than one shard goes to the coordinator its first transfer id hashes to.
The coordinator keeps a durable decision log (its journal) and runs:

1. note the unit in memory under a fresh transaction id ``<unit>#<nonce>``;
2. ``prepare`` every involved shard in parallel (each reserves its legs durably);
3. if every shard prepared, log the commit decision (with the unit) and wait
   until it is durable; otherwise decide abort, with the first refusal, which
   is what the client is told (an abort is not logged);
4. tell every involved shard to ``commit`` or ``abort``, retrying until each
   answers, and answer the client (for a commit, the transfers with the
   balances each shard answered); 5. log ``finish`` (the answer, which a
   repeat of the unit gets back) without making anyone wait for it.

Recovery rules (presumed abort: only commit decisions are logged, so a
transaction the log does not know was never committed). A coordinator that
restarts asks every shard which transactions of its own are prepared there
and aborts those its log has no commit for, then drives every logged commit
that has not finished to its end again. A periodic sweep re-drives any
transaction whose driver stopped (a shard unreachable for a while). A shard
that holds a prepared transaction for long asks the coordinator
(``resolve``): commit once the decision is durable, abort for an unknown or
superseded transaction id, and "pending" while it is being decided.

Presumed abort holds only if no shard can be in doubt about a commit the log
has forgotten. A shard answers ``commit`` once its commit is in its store:
that answer is its acknowledgement, and a transaction is finished only when
every shard involved has acknowledged it. Until then its decision is kept,
however old (and a snapshot keeps it too); only finished ones are ever
forgotten (beyond the latest ``FINISHED_KEPT``; snapshots hold none), and
none of their shards can ask about them again.

Exactly once: a unit is identified by its first transfer id. A repeat with the
same body answers the result of a committed unit the coordinator still holds,
waits for one under way, and starts a new attempt (new transaction id) only
once an earlier attempt has been aborted on every shard. A repeat of a
finished unit it has forgotten is a new attempt whose prepares find every
leg committed already: each shard answers its legs' first answers
(``Books.repeat_of``), which are the result, and nothing changes. A
different body is ``id_conflict``, and so is a unit only part of which exists.
Refusals (``insufficient_funds``...) are not final, as in TigerBeetle: a later
repeat is tried again.

Pending transfers that span shards and have a timeout are expired here: once
the timeout has passed the coordinator that created them runs a void of them
through the same 2PC (a post racing it fails on one side and aborts).

A user's accounts are created here too, by the coordinator the owner hashes
to (``create_accounts``): an owner's accounts live on every shard, so this is
where their number is counted against the owner's quota, one creation of
theirs at a time.

``TxCoordinator`` reaches shards through ``ShardPort``s it is given (in the
actor, ``RemoteShard``s over the shard actors: ``actors.ledger.actors`` wires
them), so it imports no shard. The Ray actor is ``TxCoordinatorActor`` there.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import Any, Protocol

from actors.ledger.errors import IdConflict, PendingTransferClosed, PendingTransferNotFound
from actors.ledger.model import (
    BOTH,
    CREDIT,
    DEBIT,
    AccountSpec,
    AnswerRecord,
    BalancesRecord,
    Kind,
    Leg,
    TransferSpec,
    UnitResult,
    error_result,
)
from actors.runtime import metrics
from actors.runtime.backoff import retry_call
from actors.runtime.batching import Coalescer
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import LimitReached, RealmError, Unavailable
from actors.runtime.journal import Durable
from actors.runtime.supervision import ActorRef

log = logging.getLogger(__name__)

#: Finished transactions (every shard acknowledged) kept in memory to answer
#: repeats of their units at once; older ones are forgotten (their shards still
#: answer a repeat), and no snapshot holds them. Unfinished ones are always kept.
FINISHED_KEPT = 20_000
#: Attempts at telling one shard a decision before the driver gives up for now
#: (the sweep picks the transaction up again).
TELL_ATTEMPTS = 6


class TxState(str, Enum):
    #: Prepares under way (in memory only: a restart forgets it, which is an abort).
    PREPARING = "preparing"
    #: Commit decided and logged; shards are being told.
    COMMITTING = "committing"
    #: Abort decided (not logged); shards are being told.
    ABORTING = "aborting"
    #: Every shard committed; the result answers repeats.
    COMMITTED = "committed"
    #: Every shard released (in memory only); a repeat starts a new attempt.
    ABORTED = "aborted"


FINAL = (TxState.COMMITTED, TxState.ABORTED)


@dataclass
class Entry:
    unit: list[TransferSpec]
    txid: str
    state: TxState
    began_at: float
    #: (index in the unit, error) of the refusal that aborted it.
    error: tuple[int, RealmError] | None = None
    #: Once committed: the answer per transfer, as the finish record keeps it.
    result: list[AnswerRecord] | None = None
    #: The commit decision is on disk (only then may anyone be told "commit").
    durable: bool = False
    #: Why the last driver stopped short of the end (a shard away too long).
    stalled: RealmError | None = None


@dataclass(slots=True)
class Decision:
    """A transaction whose commit decision is logged, as a snapshot keeps it
    (nothing else outlives a restart: presumed abort)."""

    unit: list[TransferSpec]
    txid: str
    state: TxState  #: committing, or committed
    began_at: float
    result: list[AnswerRecord] | None


@dataclass(slots=True)
class CoordinatorState:
    """A coordinator as a snapshot keeps it."""

    #: Oldest first (finished ones are forgotten in that order).
    decided: list[Decision]
    expiring: dict[str, tuple[float, TransferSpec]]


class _Lockstep:
    """A one-use barrier: ``wait`` returns once ``parties`` callers reached it."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self._arrived = 0
        self._all = asyncio.Event()

    async def wait(self) -> None:
        self._arrived += 1
        if self._arrived >= self.parties:
            self._all.set()
        await self._all.wait()


class ShardPort(Protocol):
    async def prepare(self, items: list[tuple[str, str, list[Leg]]]) -> list[Any]: ...
    async def commit(self, txids: list[str]) -> list[Any]: ...
    async def abort(self, txids: list[str]) -> list[Any]: ...
    async def in_doubt(self, older_than_s: float = 0.0) -> list[tuple[str, str]]: ...
    async def census(self, owner: str, ids: list[str]) -> tuple[int, int]: ...
    async def create_accounts(self, specs: list[AccountSpec]) -> list[Any]: ...


#: The 2PC phase a transaction in each state is in, for ``realm_ledger_2pc_total``.
_PHASE_OF = {
    TxState.PREPARING: "prepare",
    TxState.COMMITTING: "commit",
    TxState.ABORTING: "abort",
}


def _phase_done(phase: str, started: float, outcome: str) -> None:
    """Export one finished 2PC phase: its outcome and, if it went through, its time."""
    metrics.LEDGER_2PC.inc(phase=phase, outcome=outcome)
    if outcome == "ok":
        metrics.LEDGER_2PC_SECONDS.observe(time.perf_counter() - started, phase=phase)


def legs_of(unit: list[TransferSpec], route: Callable[[str], int]) -> dict[int, list[Leg]]:
    """The unit's legs per shard: a transfer is one leg where both accounts share
    a shard, else a debit leg and a credit leg."""
    legs: dict[int, list[Leg]] = {}
    for index, spec in enumerate(unit):
        debit, credit = route(spec.debit_account_id), route(spec.credit_account_id)
        if debit == credit:
            legs.setdefault(debit, []).append((index, spec, BOTH))
        else:
            legs.setdefault(debit, []).append((index, spec, (DEBIT,)))
            legs.setdefault(credit, []).append((index, spec, (CREDIT,)))
    return legs


def sort_prepares(
    unit: list[TransferSpec], answers: list[Any]
) -> tuple[list[tuple[int, RealmError]], list[dict[str, Any]] | None]:
    """The shards' answers to a prepare: the refusals, first in the unit first;
    and the shards' answers if every shard answered a repeat (the unit was
    committed by an earlier attempt). Some repeats beside fresh prepares are
    a refusal, at the first transfer that exists already."""
    refusals = sorted(((a[1], a[2]) for a in answers if a is not None and a[0] == "error"),
                      key=lambda r: r[0])  # fmt: skip
    repeats = [a[1] for a in answers if a is not None and a[0] == "repeat"]
    if refusals or not repeats:
        return refusals, None
    if len(repeats) < len(answers):
        index = min(i for i, spec in enumerate(unit) if any(spec.id in r for r in repeats))
        error = IdConflict("part of this linked chain exists already", id=unit[index].id)
        return [(index, error)], None
    return [], repeats


def merge_answers(unit: list[TransferSpec], parts: list[dict[str, Any]]) -> list[AnswerRecord]:
    """One answer per transfer from the shards' answers (each knows its own sides),
    as the finish record keeps it."""
    merged = []
    for spec in unit:
        transfer: dict[str, Any] = {}
        debit = credit = None
        for part in parts:
            got = part.get(spec.id)
            if got is None:
                continue
            if not transfer or got["debit_account"] is not None:
                transfer = got["transfer"]
            debit = debit or got["debit_account"]
            credit = credit or got["credit_account"]
        merged.append(
            AnswerRecord(
                transfer,
                None if debit is None else BalancesRecord.of(debit),
                None if credit is None else BalancesRecord.of(credit),
            )
        )
    return merged


class TxCoordinator(Durable):
    """The decision log and the 2PC driver; see the module docstring."""

    def __init__(
        self,
        name: str,
        shards: Sequence[ShardPort],
        route: Callable[[str], int],
        *,
        clock: Clock | None = None,
        finished_kept: int = FINISHED_KEPT,
    ) -> None:
        self.name = name
        self.shards = list(shards)
        self.route = route
        self.clock = clock or SystemClock()
        self.finished_kept = finished_kept
        #: unit id (its first transfer id) -> entry; finished ones oldest first.
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        #: unit ids of finished entries, in the order they are forgotten
        self._finished: OrderedDict[str, None] = OrderedDict()
        #: owner -> (lock serializing its account creations, callers holding or awaiting it)
        self._owner_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        #: cross-shard pending transfers with a timeout: id -> (expires at, the pending transfer)
        self.expiring: dict[str, tuple[float, TransferSpec]] = {}
        self._drivers: dict[str, asyncio.Task[None]] = {}
        self.committed = self.aborted = 0  #: by this incarnation
        #: Seconds spent up to the end of each phase, summed over committed transactions.
        self.phase_s = {"prepare": 0.0, "decide": 0.0, "commit": 0.0}

    # --- the log ---------------------------------------------------------------

    def snapshot_state(self) -> CoordinatorState:
        # Finished ones stay out: their shards answer a repeat (``Books.repeat_of``).
        decided = [
            Decision(e.unit, e.txid, e.state, e.began_at, e.result)
            for e in self.entries.values()
            if e.state is TxState.COMMITTING
        ]
        return CoordinatorState(decided, self.expiring)

    def state_size(self) -> int:
        return len(self.entries) - len(self._finished) + len(self.expiring)

    def restore_state(self, state: CoordinatorState) -> None:
        self.entries = OrderedDict(
            (d.unit[0].id, Entry(d.unit, d.txid, d.state, d.began_at, result=d.result))
            for d in state.decided
        )
        self._finished = OrderedDict(
            (uid, None) for uid, e in self.entries.items() if e.state is TxState.COMMITTED
        )
        self.expiring = state.expiring

    def apply_decide(self, uid: str, txid: str, unit: list[TransferSpec], at: float) -> None:
        """The commit decision (the one record a transaction must have on disk)."""
        entry = self.entries.get(uid)
        if entry is not None and entry.txid == txid:
            entry.state = TxState.COMMITTING
        else:  # replaying: the attempt was only in memory until now
            self.entries[uid] = Entry(unit, txid, TxState.COMMITTING, at)

    def apply_finish(self, uid: str, txid: str, result: list[AnswerRecord], at: float) -> None:
        """Every shard acknowledged the commit: the transaction is finished."""
        entry = self.entries.get(uid)
        if entry is None or entry.txid != txid:
            return
        entry.state, entry.result = TxState.COMMITTED, result
        for spec in entry.unit:
            cross = self.route(spec.debit_account_id) != self.route(spec.credit_account_id)
            if spec.kind is Kind.PENDING and spec.timeout_s and cross:
                self.expiring.setdefault(spec.id, (at + spec.timeout_s, spec))
        self._retire(uid)

    def _retire(self, uid: str) -> None:
        """Move a finished entry to the young end; forget the oldest finished ones
        (an unfinished one is never forgotten, nor holds the others back)."""
        self.entries.move_to_end(uid)
        self._finished[uid] = None
        self._finished.move_to_end(uid)
        while len(self._finished) > self.finished_kept:
            oldest = next(iter(self._finished))
            entry = self.entries.get(oldest)
            if entry is not None and entry.state in FINAL:
                del self.entries[oldest]
            del self._finished[oldest]  # (one begun again since is no longer finished)

    def apply_expired(self, pending_id: str) -> None:
        self.expiring.pop(pending_id, None)

    # --- running units ---------------------------------------------------------

    async def run(self, units: list[list[TransferSpec]]) -> list[UnitResult]:
        """Run each unit through 2PC; per unit ``("ok", answers)`` or
        ``("error", index, error)``.

        The new units of one call move through the phases in lockstep, so each
        phase costs one batched call per shard and one store write, whatever
        the number of units."""
        fresh: dict[str, str] = {}
        for unit in units:
            uid = unit[0].id
            entry = self.entries.get(uid)
            if uid not in fresh and (entry is None or entry.state is TxState.ABORTED):
                fresh[uid] = self._begin(unit)
        lockstep = (_Lockstep(len(fresh)), _Lockstep(len(fresh))) if len(fresh) > 1 else None
        for uid in fresh:
            self._driver(uid, lockstep)
        return list(
            await asyncio.gather(*(self._run_unit(u, fresh.pop(u[0].id, None)) for u in units))
        )

    def _begin(self, unit: list[TransferSpec]) -> str:
        uid, txid = unit[0].id, f"{unit[0].id}#{uuid.uuid4().hex[:16]}"
        self.entries[uid] = Entry(unit, txid, TxState.PREPARING, self.clock.time())
        self.entries.move_to_end(uid)
        return txid

    async def _run_unit(self, unit: list[TransferSpec], mine: str | None = None) -> UnitResult:
        uid = unit[0].id
        while True:
            entry = self.entries.get(uid)
            answer = None if entry is None else self._answer(entry, unit, mine)
            if answer is not None:
                return answer
            if entry is None or entry.state is TxState.ABORTED:
                mine = self._begin(unit)
                entry = self.entries[uid]
            # (the entry, not the map, from here on: its driver may forget it once finished)
            await asyncio.shield(self._driver(uid))
            if entry.state not in FINAL:
                # The decision could not reach every shard yet: the outcome is
                # unknown to the caller (the sweep will finish it).
                stalled = entry.stalled or Unavailable("the transaction has not finished yet")
                return ("error", 0, stalled)
            if entry.state is TxState.ABORTED and mine is None:
                assert entry.error is not None
                if isinstance(entry.error[1], Unavailable):
                    continue  # aborted by a fault, not refused: try it ourselves
                mine = entry.txid  # a refusal of the same unit answers us too
            answer = self._answer(entry, unit, mine)
            if answer is not None:
                return answer

    @staticmethod
    def _answer(entry: Entry, unit: list[TransferSpec], mine: str | None) -> UnitResult | None:
        """What a caller of ``unit`` is answered from ``entry``, or None if its
        outcome is not for this caller yet (under way, or aborted by a fault)."""
        if entry.unit != unit and entry.state is not TxState.ABORTED:
            return error_result(0, IdConflict("the transfer id is already used", id=unit[0].id),
                                unit)  # fmt: skip
        if entry.state is TxState.COMMITTED:
            assert entry.result is not None
            return ("ok", [answer.public() for answer in entry.result])
        if entry.state is TxState.ABORTED and entry.txid == mine:
            # our own attempt was refused
            assert entry.error is not None
            index, error = entry.error
            return error_result(index, error, unit)
        return None

    def _driver(self, uid: str, lockstep: Any = None) -> asyncio.Task[None]:
        task = self._drivers.get(uid)
        if task is None or task.done():
            task = self._drivers[uid] = asyncio.ensure_future(self._drive(uid, lockstep))
            task.add_done_callback(partial(self._forget_driver, uid))
        return task

    def _forget_driver(self, uid: str, task: asyncio.Task[None]) -> None:
        if self._drivers.get(uid) is task:
            del self._drivers[uid]
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s: transaction %s stalled: %r", self.name, uid, task.exception())

    async def _drive(self, uid: str, lockstep: tuple[_Lockstep, _Lockstep] | None) -> None:
        try:
            await self._drive_phases(uid, lockstep)
        except RealmError as error:
            phase = _PHASE_OF.get(self.entries[uid].state, "prepare")
            metrics.LEDGER_2PC.inc(phase=phase, outcome="stalled")
            self.entries[uid].stalled = error
            log.warning("%s: transaction %s stalled: %r", self.name, uid, error)

    async def _drive_phases(self, uid: str, lockstep: tuple[_Lockstep, _Lockstep] | None) -> None:
        entry = self.entries[uid]
        txid = entry.txid
        legs = legs_of(entry.unit, self.route)
        started = time.perf_counter()
        if entry.state is TxState.PREPARING:
            answers = await asyncio.gather(
                *(self._prepare_on(shard, txid, shard_legs) for shard, shard_legs in legs.items())
            )
            refusals, repeated = sort_prepares(entry.unit, answers)
            _phase_done("prepare", started, "refused" if refusals else "ok")
            if lockstep is not None:
                await lockstep[0].wait()  # decide together: one store write
            if refusals:
                entry.state, entry.error = TxState.ABORTING, refusals[0]
            elif repeated is not None:
                # An earlier attempt committed it everywhere and was forgotten
                # since: the shards' answers are its result; nothing to log.
                entry.state, entry.result = TxState.COMMITTED, merge_answers(entry.unit, repeated)
                self._retire(uid)
            else:
                self.phase_s["prepare"] += time.perf_counter() - started
                deciding = time.perf_counter()
                at = self.clock.time()
                await self.execute("decide", uid=uid, txid=txid, unit=entry.unit, at=at)
                entry.durable = True
                self.phase_s["decide"] += time.perf_counter() - started
                _phase_done("decide", deciding, "ok")
            if lockstep is not None:
                await lockstep[1].wait()  # tell together: one call per shard
        if entry.state is TxState.COMMITTING:
            telling = time.perf_counter()
            parts = await asyncio.gather(*(self._tell(shard, "commit", txid) for shard in legs))
            self.phase_s["commit"] += time.perf_counter() - started
            _phase_done("commit", telling, "ok")
            result = merge_answers(entry.unit, parts)
            # Answer now; the finish record only saves repeats a round of commits.
            self.record("finish", uid=uid, txid=txid, result=result, at=self.clock.time())
            self.committed += 1
        elif entry.state is TxState.ABORTING:
            telling = time.perf_counter()
            await asyncio.gather(*(self._tell(shard, "abort", txid) for shard in legs))
            _phase_done("abort", telling, "ok")
            entry.state = TxState.ABORTED
            self._retire(uid)
            self.aborted += 1

    async def _prepare_on(self, shard: int, txid: str, legs: list[Leg]) -> Any:
        try:
            answers = await self.shards[shard].prepare([(txid, self.name, legs)])
        except RealmError as error:
            return ("error", legs[0][0], error)
        except Exception as error:  # the shard is away: abort
            return ("error", legs[0][0], Unavailable("a ledger shard did not answer", shard=shard,
                                                      cause=repr(error)))  # fmt: skip
        return answers[0]

    async def _tell(self, shard: int, method: str, txid: str) -> Any:
        """Tell one shard the decision, retrying with backoff on this clock; after
        ``TELL_ATTEMPTS`` the transaction is left to the sweep."""
        tell = partial(getattr(self.shards[shard], method), [txid])
        try:
            answers = await retry_call(
                tell, on=Exception, attempts=TELL_ATTEMPTS, sleep=self.clock.sleep
            )
        except Exception as error:
            raise Unavailable(
                "a ledger shard has not taken the decision yet; it will",
                shard=shard, txid=txid, cause=repr(error),
            ) from None  # fmt: skip
        answer = answers[0]
        if isinstance(answer, RealmError):
            raise answer
        return answer

    # --- recovery ----------------------------------------------------------------

    async def recover(self) -> int:
        """After a restart (call once the log is open, before serving): abort on
        every shard what this coordinator prepared and its log has no commit for
        (presumed abort), then drive every logged, unfinished commit to its end.
        Returns how many transactions it resolved or re-drove."""
        for entry in self.entries.values():  # the log holds decided ones only
            entry.durable = entry.state in (TxState.COMMITTING, TxState.COMMITTED)
        committed = {e.txid for e in self.entries.values() if e.durable}

        async def abort_strays(shard: int) -> int:
            try:
                doubtful = await self.shards[shard].in_doubt(0.0)
                strays = [t for t, c in doubtful if c == self.name and t not in committed]
                if strays:
                    await self.shards[shard].abort(strays)
                return len(strays)
            except Exception as error:  # the shard will ask us itself later
                log.warning("%s: could not check shard %d on recovery: %r", self.name, shard, error)
                return 0

        aborted = await asyncio.gather(*(abort_strays(i) for i in range(len(self.shards))))
        return sum(aborted) + self.sweep()

    def sweep(self) -> int:
        """Start a driver for every unfinished transaction that has none."""
        started = 0
        for uid, entry in list(self.entries.items()):
            if entry.state not in FINAL and uid not in self._drivers:
                self._driver(uid)
                started += 1
        return started

    async def resolve(self, txids: list[str]) -> list[str]:
        """How each transaction ended, for a shard in doubt: "commit", "abort" or
        "pending" (still being decided)."""
        outcomes = []
        for txid in txids:
            uid = txid.rpartition("#")[0]
            entry = self.entries.get(uid)
            if entry is None or entry.txid != txid:
                outcomes.append("abort")  # never begun here, or an attempt since replaced
            elif entry.state in (TxState.COMMITTING, TxState.COMMITTED) and entry.durable:
                outcomes.append("commit")
            elif entry.state in (TxState.ABORTING, TxState.ABORTED):
                outcomes.append("abort")
            else:
                outcomes.append("pending")
        return outcomes

    # --- an owner's accounts --------------------------------------------------

    async def create_accounts(self, owner: str, specs: list[AccountSpec], limit: int) -> list[Any]:
        """Create ``owner``'s accounts (their shards hold them) unless that would take
        the owner over ``limit`` accounts: then ``LimitReached``, and none is made.

        Per account its answer or its error (``IdConflict``: the id is taken, by
        the owner with another body or by anyone else). Creations of one owner
        run one at a time here, so two cannot both pass the count."""
        lock, users = self._owner_locks.get(owner) or (asyncio.Lock(), 0)
        self._owner_locks[owner] = (lock, users + 1)
        try:
            async with lock:
                return await self._create_accounts(owner, specs, limit)
        finally:
            lock, users = self._owner_locks[owner]
            if users == 1:
                del self._owner_locks[owner]
            else:
                self._owner_locks[owner] = (lock, users - 1)

    async def _create_accounts(self, owner: str, specs: list[AccountSpec], limit: int) -> list[Any]:
        by_shard: dict[int, list[int]] = {}
        for position, spec in enumerate(specs):
            by_shard.setdefault(self.route(spec.id), []).append(position)
        shards = list(range(len(self.shards)))
        census = await asyncio.gather(
            *(self.shards[i].census(owner, [specs[p].id for p in by_shard.get(i, [])])
              for i in shards)
        )  # fmt: skip
        held, free = sum(c[0] for c in census), sum(c[1] for c in census)
        if held + free > limit:
            raise LimitReached(
                f"an owner may have at most {limit} ledger accounts",
                limit=limit, held=held, asked=free,
            )  # fmt: skip
        answers: list[Any] = [None] * len(specs)

        async def create(shard: int, positions: list[int]) -> None:
            got = await self.shards[shard].create_accounts([specs[p] for p in positions])
            for position, answer in zip(positions, got, strict=True):
                answers[position] = answer

        await asyncio.gather(*(create(shard, positions) for shard, positions in by_shard.items()))
        return answers

    # --- pending timeouts of cross-shard pending transfers --------------------

    async def expire_due(self) -> list[str]:
        """Void the cross-shard pending transfers created here whose timeout passed."""
        now = self.clock.time()
        due = [(pid, spec) for pid, (at, spec) in self.expiring.items() if at <= now]
        expired = []
        for pid, spec in due:
            void = TransferSpec(
                id=f"{pid}.expiry", debit_account_id=spec.debit_account_id,
                credit_account_id=spec.credit_account_id, amount=spec.amount,
                ledger=spec.ledger, kind=Kind.VOID, pending_id=pid, expiry=True,
            )  # fmt: skip
            result = await self._run_unit([void])
            if result[0] == "ok" or isinstance(
                result[2], PendingTransferClosed | PendingTransferNotFound
            ):
                await self.execute("expired", pending_id=pid)
                expired.append(pid)
        return expired

    def __repr__(self) -> str:
        live = sum(e.state not in FINAL for e in self.entries.values())
        return (
            f"<TxCoordinator {self.name} entries={len(self.entries)} live={live} "
            f"committed={self.committed} aborted={self.aborted}>"
        )


#: Batched calls in flight to one shard per phase, from one coordinator.
SHARD_CALLS_IN_FLIGHT = 2


class RemoteShard:
    """A shard actor seen through coalescers: concurrent prepares (commits,
    aborts) to it become one batched call each. What arrives in one event-loop
    turn goes together (``per_turn``): the units of one ``run`` reach each phase
    in the same turn, and sending the first alone would split every batch in two."""

    def __init__(self, ref: ActorRef, *, max_batch: int) -> None:
        self.ref = ref
        options = {"max_batch": max_batch, "max_in_flight": SHARD_CALLS_IN_FLIGHT}
        self._prepare = Coalescer(partial(ref.call, "prepare"), per_turn=True, **options)
        self._commit = Coalescer(partial(ref.call, "commit"), per_turn=True, **options)
        self._abort = Coalescer(partial(ref.call, "abort"), per_turn=True, **options)

    async def prepare(self, items: list[tuple[str, str, list[Leg]]]) -> list[Any]:
        return await self._prepare.submit(items)

    async def commit(self, txids: list[str]) -> list[Any]:
        return await self._commit.submit(txids)

    async def abort(self, txids: list[str]) -> list[Any]:
        return await self._abort.submit(txids)

    async def in_doubt(self, older_than_s: float = 0.0) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = await self.ref.call("in_doubt", older_than_s)
        return found

    async def census(self, owner: str, ids: list[str]) -> tuple[int, int]:
        held, free = await self.ref.call("census", owner, ids)
        return held, free

    async def create_accounts(self, specs: list[AccountSpec]) -> list[Any]:
        answers: list[Any] = await self.ref.call("create_accounts", specs)
        return answers

    def calls(self) -> dict[str, tuple[int, int]]:
        """Per phase: (batched calls sent, requests they carried)."""
        coalescers = {"prepare": self._prepare, "commit": self._commit, "abort": self._abort}
        return {phase: (c.calls, c.requests) for phase, c in coalescers.items()}


__all__ = [
    "CoordinatorState",
    "Decision",
    "Entry",
    "RemoteShard",
    "ShardPort",
    "TxCoordinator",
    "TxState",
    "legs_of",
    "merge_answers",
]
