"""A queue's dispatcher: it hands ready jobs to workers and journals what comes back.

Each ``JobQueue`` owns one ``Dispatcher``. A turn (``dispatch``) promotes the
jobs that came due, expires the leases that ran out, prunes finished jobs
whose time is up, and hands ready jobs, best priority first, to the
``WorkerPool`` in batches while the queue's concurrency, its share of the
global slots (``Slots``) and its rate limit (``TokenBucket``) allow.
``start`` runs a turn after every event (an enqueue, an outcome, a grant) or
when the next timer is due, for as long as the actor lives; tests call
``dispatch`` by hand.

What a turn decides goes to the queue's journal through ``Durable.record``
(lease, finish, expire, prune): applied at once and committed with the next
group commit, and nobody waits on it (a failed commit crashes the actor).
Delivery is at least once: a job is leased for ``visibility_timeout_s``,
workers renew the leases of the jobs they run (``heartbeat``), and a job
whose worker died (the pool's call fails) or whose lease ran out (the queue
restarted, or the worker hung) counts a failed attempt and runs again after
its backoff. Renewals are kept in memory only: a restarted queue knows the
leases as they were journaled, which is at worst early, never late.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from actors.queue.model import Job, JobState, Outcome, Work
from actors.runtime.fanout import first_of

if TYPE_CHECKING:
    from actors.queue.jobqueue import JobQueue

log = logging.getLogger(__name__)

#: How often a turn looks for expired leases and prunable jobs.
LEASE_SCAN_S = 0.5
PRUNE_EVERY_S = 5.0
#: Global slots: a short grant is asked again after SLOT_RETRY_S, a surplus is
#: given back after SLOT_HOLD_S, a steady grant renewed every SLOT_REFRESH_S.
SLOT_RETRY_S = 0.25
SLOT_HOLD_S = 2.0
SLOT_REFRESH_S = 1.0
#: The pause after a turn that failed (it is logged), so a failing turn does not spin.
FAILED_TURN_PAUSE_S = 1.0
#: Longest wait while jobs are ready but no room is free (an outcome wakes it sooner).
NO_ROOM_WAIT_S = 0.5


class WorkerPool(Protocol):
    size: int  #: workers; a dispatch turn sends each at most one batch

    def available(self) -> int:
        """How many more jobs the pool can take now (0 while every worker is down)."""

    async def run(self, batch: list[Work]) -> list[Outcome]:
        """Run a batch on one worker; raises if the worker was lost."""

    def cancel(self, job_ids: list[str]) -> None:
        """Ask the workers running these jobs to stop them (best effort)."""


class Slots(Protocol):
    async def set_demand(self, holder: str, want: int) -> int:
        """Ask for ``want`` slots of the global concurrency; returns the grant."""


class TokenBucket:
    """The rate limit: ``rate`` jobs per second on average, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, max(1, burst)
        self.tokens, self.last = float(self.burst), now

    def available(self, now: float) -> int:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        return int(self.tokens)

    def take(self, n: int) -> None:
        self.tokens -= n

    def wait_s(self) -> float:
        return max(0.0, (1.0 - self.tokens) / self.rate)


class Dispatcher:
    """Runs one queue's jobs on a ``WorkerPool``, within the queue's limits."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.clock = queue.clock
        self.pool: WorkerPool | None = None
        self.handed_out: dict[str, int] = {}  #: job id -> attempt handed to a worker
        self._slots: Slots | None = None
        self._allowance = math.inf
        self._asking_slots = False
        self._next_slot_ask = 0.0
        self._slots_short = False
        self._surplus_since: float | None = None
        self._bucket: TokenBucket | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._next_lease_scan = 0.0
        self._next_prune = 0.0
        self._turns: asyncio.Task[None] | None = None

    def attach(self, pool: WorkerPool, slots: Slots | None = None) -> None:
        """Hand jobs to ``pool`` on each ``dispatch()`` (tests call it by hand)."""
        self.pool, self._slots = pool, slots
        self._allowance = 0 if slots is not None else math.inf

    def start(self, pool: WorkerPool, slots: Slots | None = None) -> None:
        """Attach and dispatch for as long as the actor lives (after the queue's ``open``)."""
        self.attach(pool, slots)
        self._turns = asyncio.create_task(self._run_turns())

    def wake(self) -> None:
        """Something changed (jobs, limits, workers): take a turn soon."""
        self._wake.set()

    def rate_changed(self) -> None:
        """The rate limit was configured: the next turn starts a full bucket."""
        self._bucket = None

    def stop(self, job_ids: list[str]) -> None:
        """Ask the workers to stop these jobs (cancelled while running)."""
        if self.pool is not None:
            self.pool.cancel(job_ids)

    def heartbeat(self, job_ids: list[str]) -> list[str]:
        """Renew the leases of running jobs; answers the ones the worker should drop."""
        lease_until = self.clock.time() + self.queue.config.visibility_timeout_s
        dropped = []
        for job_id in job_ids:
            job = self.queue.table.jobs.get(job_id)
            if job is None or job.state is not JobState.RUNNING:
                dropped.append(job_id)
            else:
                job.lease_until = lease_until
        return dropped

    async def _run_turns(self) -> None:
        while True:
            try:
                delay = self.dispatch()
            except Exception:
                log.exception("queue %s: dispatch failed", self.queue.name)
                delay = FAILED_TURN_PAUSE_S
            if not self._wake.is_set():
                await first_of(self.clock.sleep(delay), self._wake.wait())
            self._wake.clear()
            await asyncio.sleep(0)  # let arriving calls pile up into the next batch

    def dispatch(self) -> float:
        """One turn: promote, expire, prune, hand out what the limits allow.
        Answers how long until the next turn is needed (sooner on any event)."""
        queue, table = self.queue, self.queue.table
        now, mono = self.clock.time(), self.clock.now()
        table.promote(now)
        if now >= self._next_lease_scan:
            self._next_lease_scan = now + LEASE_SCAN_S
            self._expire_leases(now)
        keep, max_bytes = queue.config.max_finished_jobs, queue.config.max_finished_bytes
        if now >= self._next_prune or table.over(keep, max_bytes):
            self._next_prune = now + PRUNE_EVERY_S
            if table.prunable(now, keep, max_bytes):
                self._record("prune", at=now, keep=keep, max_bytes=max_bytes)
        next_turn = min(self._next_lease_scan, self._next_prune) - now
        due = table.next_due()
        if due is not None:
            next_turn = min(next_turn, due - now)
        ready = table.count(JobState.QUEUED)
        if self.pool is None or queue.paused or not ready:
            self._ask_slots(0, mono)
            return max(next_turn, 0.0)
        self._ask_slots(min(queue.concurrency, len(self.handed_out) + ready), mono)
        room = min(queue.concurrency, self._allowance) - len(self.handed_out)
        room = min(room, self.pool.available(), ready)
        if queue.rate_limit_per_s is not None:
            if self._bucket is None:
                burst = queue.rate_burst or max(1, math.ceil(queue.rate_limit_per_s))
                self._bucket = TokenBucket(queue.rate_limit_per_s, burst, mono)
            room = min(room, self._bucket.available(mono))
            if room <= 0:
                next_turn = min(next_turn, self._bucket.wait_s())
        if room <= 0:
            return max(min(next_turn, NO_ROOM_WAIT_S), 0.0)
        self._launch(table.take_ready(int(room)), now)
        return max(next_turn, 0.0)

    def _record(self, op: str, **args: Any) -> None:
        """Apply and journal an operation that nobody waits on."""
        _, committed = self.queue.record(op, **args)
        committed.add_done_callback(lambda f: f.exception())  # failure crashes the actor

    def _launch(self, jobs: list[Job], now: float) -> None:
        if not jobs or self.pool is None:
            return
        if self._bucket is not None:
            self._bucket.take(len(jobs))
        self._record(
            "lease",
            leases=[(job.id, job.attempts + 1) for job in jobs],
            at=now,
            lease_s=self.queue.config.visibility_timeout_s,
        )
        work = [
            (j.id, j.attempts, j.handler, j.args, j.timeout_s, j.idempotency_key or j.id, j.queue)
            for j in jobs
        ]
        for job in jobs:
            self.handed_out[job.id] = job.attempts
        # One batch per worker (fewer calls), unless that is over batch_max.
        size = max(1, min(self.queue.config.batch_max, math.ceil(len(work) / self.pool.size)))
        for start in range(0, len(work), size):
            self._spawn(self._run(work[start : start + size]))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)  # held so that it is not collected while it runs
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[Work]) -> None:
        assert self.pool is not None
        try:
            outcomes = await self.pool.run(batch)
        except Exception as error:  # the worker died or vanished: a failed attempt each
            now = self.clock.time()
            log.warning("queue %s: worker lost with %d jobs: %r", self.queue.name, len(batch),
                        error)  # fmt: skip
            # The job's error names the kind of loss only: the exception's text
            # (node addresses, process ids) is for the log above.
            reason = f"worker lost: {type(error).__name__}"
            outcomes = [(w[0], w[1], False, None, reason, now, now) for w in batch]
        finally:
            for work in batch:  # unless a later attempt of the job was handed out since
                if self.handed_out.get(work[0]) == work[1]:
                    del self.handed_out[work[0]]
        self._record("finish", outcomes=outcomes, at=self.clock.time())
        self._wake.set()

    def _expire_leases(self, now: float) -> None:
        jobs = self.queue.table.jobs
        expired = []
        for job_id in self.queue.table.by_state[JobState.RUNNING]:
            job = jobs[job_id]
            if job.lease_until is not None and job.lease_until <= now:
                expired.append((job_id, job.attempts))
        if expired:
            self._record("expire", leases=expired, at=now)
            for job_id, attempt in expired:  # a hung worker does not keep the capacity
                if self.handed_out.get(job_id) == attempt:
                    del self.handed_out[job_id]
            self.stop([job_id for job_id, _ in expired])

    def _ask_slots(self, want: int, mono: float) -> None:
        """Keep the global-slot grant near what the queue can use (one request at a time).

        More is asked for at once, unless the last grant fell short (then every
        ``SLOT_RETRY_S``); a surplus is given back after ``SLOT_HOLD_S``, so a
        queue between bursts keeps its slots; a steady grant is renewed every
        ``SLOT_REFRESH_S``, so it shrinks to a fair share when others wait.
        """
        if self._slots is None or self._asking_slots:
            return
        if want > self._allowance:
            self._surplus_since = None
            if self._slots_short and mono < self._next_slot_ask:
                return
        elif want < self._allowance:
            if self._surplus_since is None:
                self._surplus_since = mono
            if mono - self._surplus_since < SLOT_HOLD_S:
                return
        elif want == 0 or mono < self._next_slot_ask + SLOT_REFRESH_S:
            return
        self._asking_slots = True
        self._spawn(self._ask(self._slots, want))

    async def _ask(self, slots: Slots, want: int) -> None:
        try:
            self._allowance = await slots.set_demand(self.queue.holder, want)
            self._slots_short = self._allowance < want
            self._surplus_since = None
        except Exception as error:
            log.warning("queue %s: slot request failed: %r", self.queue.name, error)
            self._slots_short = True
        finally:
            self._asking_slots = False
            self._next_slot_ask = self.clock.now() + SLOT_RETRY_S
            self._wake.set()

    def __repr__(self) -> str:
        return (
            f"<Dispatcher {self.queue.name} in_flight={len(self.handed_out)} "
            f"allowance={self._allowance} tasks={len(self._tasks)}>"
        )


__all__ = ["Dispatcher", "Slots", "TokenBucket", "WorkerPool"]
