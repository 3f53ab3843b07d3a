"""Task queue (service 2): one named queue's jobs, as a plain class, and its actor.

A ``JobQueue`` owns the jobs of one queue. Every change of a job is an
operation of its journal (``Durable``): enqueue, lease (handed to a worker),
finish (a batch of outcomes), expire (a lease ran out), cancel, retry,
discard, pause, configure, prune. Operations carry their timestamps and
random draws as arguments, so a restarted queue replays to the same state; the
jitter of a retry's backoff is derived from the job id and attempt, not drawn.

The dispatcher (``start``) runs inside the actor: it hands ready jobs, best
priority first, to a ``WorkerPool`` in batches while the queue's concurrency,
the global slot allowance and the rate limit allow, and journals the outcomes
that come back, also in batches. Delivery is at least once: a job is leased
for ``visibility_timeout_s``, workers renew the leases of the jobs they run,
and a job whose worker died (the pool's call fails) or whose lease ran out
(the queue restarted, or the worker hung) counts a failed attempt and runs
again after its backoff; after ``max_attempts`` it is dead. Heartbeats and
progress are kept in memory only: a restarted queue knows the leases as they
were journaled, which is at worst early, never late.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import uuid
from collections import deque
from typing import Any

import orjson

from actors.queue.errors import JobArgsTooLarge, JobNotFound, JobStateConflict
from actors.queue.model import (
    FINISHED,
    WAITING,
    HandlerCache,
    Job,
    JobState,
    Outcome,
    QueueConfig,
    Slots,
    TokenBucket,
    Work,
    WorkerPool,
    backoff_s,
    check_queue_name,
    queue_actor_name,
)
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import InvalidInput, RealmError
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, remote_actor

log = logging.getLogger(__name__)

#: Wait and run time samples kept for the percentiles in stats.
SAMPLES_KEPT = 10_000
#: Seconds of completions the throughput figure averages over.
THROUGHPUT_WINDOW_S = 60
#: How often the dispatcher looks for expired leases and prunable jobs.
LEASE_SCAN_S = 0.5
PRUNE_EVERY_S = 5.0
#: Global slots: a short grant is asked again after SLOT_RETRY_S, a surplus is
#: given back after SLOT_HOLD_S, a steady grant renewed every SLOT_REFRESH_S.
SLOT_RETRY_S = 0.25
SLOT_HOLD_S = 2.0
SLOT_REFRESH_S = 1.0
#: Longest error text kept per job.
MAX_ERROR_CHARS = 2_000
MAX_KEY_CHARS = 256
COUNTERS = (
    "enqueued",  #: jobs added (duplicates not counted)
    "duplicates",  #: enqueues answered with an existing job (idempotency or unique key)
    "succeeded",
    "failed",  #: failed attempts, including expired leases and lost workers
    "dead",
    "cancelled",
    "retried",  #: dead jobs retried by hand
    "expired",  #: leases that ran out
    "discarded",
    "pruned",
    "stale_outcomes",  #: outcomes of attempts that no longer count (cancelled, re-leased)
)


def _percentiles(samples: deque[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p99": None}
    ordered = sorted(samples)
    at = [ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] for q in (50, 99)]
    return {"p50": round(at[0], 6), "p99": round(at[1], 6)}


# --- the queue ----------------------------------------------------------------


class JobQueue(Durable):
    """One named queue: durable jobs, their states and indexes, and the dispatcher."""

    def __init__(self, name: str, config: QueueConfig, *, clock: Clock | None = None) -> None:
        self.name = check_queue_name(name)
        self.config = config
        self.clock = clock or SystemClock()
        self.handlers = HandlerCache(config.handler_modules)
        # durable state (journaled, snapshotted)
        self.jobs: dict[str, Job] = {}
        self.by_state: dict[JobState, dict[str, None]] = {s: {} for s in JobState}
        self.ready: list[tuple[int, int, str]] = []  #: heap of (-priority, ready_seq, id)
        self.waiting: list[tuple[float, int, str]] = []  #: heap of (run_at, ready_seq, id)
        self.finished: list[tuple[float, str]] = []  #: heap of (expires_at, id)
        self.unique: dict[str, tuple[str, float]] = {}  #: unique key -> (job id, until)
        self.idempotent: dict[str, str] = {}  #: idempotency key -> job id
        self.paused = False
        self.concurrency = config.concurrency
        self.rate_limit_per_s = config.rate_limit_per_s
        self.rate_burst = config.rate_burst
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.wait_samples: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.run_samples: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.done_per_s: deque[list[int]] = deque()  #: [second, completions]
        self._seq = 0
        # live state (this incarnation only)
        self._pool: WorkerPool | None = None
        self._slots: Slots | None = None
        self._allowance = math.inf
        self._asking_slots = False
        self._next_slot_ask = 0.0
        self._slots_short = False
        self._surplus_since: float | None = None
        self._bucket: TokenBucket | None = None
        self._handed_out: dict[str, int] = {}  #: job id -> attempt handed to a worker
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._next_lease_scan = 0.0
        self._next_prune = 0.0
        self._dispatcher: asyncio.Task[None] | None = None

    # --- durable state -------------------------------------------------------

    _PERSISTED = (
        "jobs", "by_state", "ready", "waiting", "finished", "unique", "idempotent", "paused",
        "concurrency", "rate_limit_per_s", "rate_burst", "counters", "wait_samples",
        "run_samples", "done_per_s", "_seq",
    )  # fmt: skip

    def state_size(self) -> int:
        return len(self.jobs)  # a snapshot pickles every job

    def snapshot_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._PERSISTED}

    def restore_state(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def _move(self, job: Job, state: JobState) -> None:
        del self.by_state[job.state][job.id]
        self.by_state[state][job.id] = None
        job.state = state

    def _make_due(self, job: Job, at: float) -> None:
        """Queue ``job`` now if it is due at ``at``, else schedule it for ``job.run_at``."""
        self._seq += 1
        job.ready_seq = self._seq
        if job.run_at <= at:
            self._move(job, JobState.QUEUED)
            heapq.heappush(self.ready, (-job.priority, job.ready_seq, job.id))
        else:
            if job.state is not JobState.FAILED:
                self._move(job, JobState.SCHEDULED)
            heapq.heappush(self.waiting, (job.run_at, job.ready_seq, job.id))

    def _finish(self, job: Job, state: JobState, at: float, ttl_s: float) -> None:
        self._move(job, state)
        job.finished_at, job.lease_until = at, None
        job.expires_at = at + ttl_s
        heapq.heappush(self.finished, (job.expires_at, job.id))
        for waiter in self._waiters.pop(job.id, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _forget(self, job: Job) -> None:
        del self.jobs[job.id]
        del self.by_state[job.state][job.id]
        if job.idempotency_key is not None and self.idempotent.get(job.idempotency_key) == job.id:
            del self.idempotent[job.idempotency_key]
        if job.unique_key is not None and self.unique.get(job.unique_key, ("",))[0] == job.id:
            del self.unique[job.unique_key]

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(queue=self.name, job_id=job_id)
        return job

    def apply_enqueue(self, jobs: list[dict[str, Any]], at: float) -> list[tuple[str, bool]]:
        """Add jobs (checked by ``prepare``); a repeated idempotency or live unique key
        answers the existing job. Answers ``(job id, duplicate)`` per job."""
        answers = []
        for spec in jobs:
            existing = None
            if spec["idempotency_key"] is not None:
                existing = self.idempotent.get(spec["idempotency_key"])
            if existing is None and spec["unique_key"] is not None:
                held = self.unique.get(spec["unique_key"])
                if held is not None and held[1] > at and held[0] in self.jobs:
                    existing = held[0]
            if existing is not None:
                self.counters["duplicates"] += 1
                answers.append((existing, True))
                continue
            unique_for_s = spec["unique_for_s"]
            job = Job(**{k: v for k, v in spec.items() if k != "unique_for_s"}, enqueued_at=at)
            job.state = JobState.QUEUED
            self.jobs[job.id] = job
            self.by_state[JobState.QUEUED][job.id] = None
            self._make_due(job, at)
            if job.idempotency_key is not None:
                self.idempotent[job.idempotency_key] = job.id
            if job.unique_key is not None:
                self.unique[job.unique_key] = (job.id, at + unique_for_s)
            self.counters["enqueued"] += 1
            answers.append((job.id, False))
        return answers

    def apply_lease(self, leases: list[tuple[str, int]], at: float, lease_s: float) -> None:
        for job_id, attempt in leases:
            job = self.jobs.get(job_id)
            if job is None or attempt != job.attempts + 1:
                continue
            if job.state is JobState.QUEUED or (job.state in WAITING and job.run_at <= at):
                job.attempts = attempt
                self._move(job, JobState.RUNNING)
                job.started_at, job.lease_until, job.progress = at, at + lease_s, None

    def apply_finish(self, outcomes: list[Outcome], at: float) -> None:
        second = int(at)
        done = 0
        for job_id, attempt, ok, result, error, started_at, finished_at in outcomes:
            job = self.jobs.get(job_id)
            if job is None or job.state is not JobState.RUNNING or job.attempts != attempt:
                self.counters["stale_outcomes"] += 1
                continue
            self.wait_samples.append(max(0.0, started_at - job.run_at))
            self.run_samples.append(max(0.0, finished_at - started_at))
            job.started_at = started_at
            if ok:
                job.result, job.error = result, None
                self._finish(job, JobState.SUCCEEDED, at, self.config.result_ttl_s)
                self.counters["succeeded"] += 1
                done += 1
            else:
                self._fail(job, error or "failed", at)
        if done:
            if self.done_per_s and self.done_per_s[-1][0] == second:
                self.done_per_s[-1][1] += done
            else:
                self.done_per_s.append([second, done])
            while self.done_per_s[0][0] <= second - THROUGHPUT_WINDOW_S:
                self.done_per_s.popleft()

    def _fail(self, job: Job, error: str, at: float) -> None:
        job.error = error[:MAX_ERROR_CHARS]
        self.counters["failed"] += 1
        if job.attempts >= job.max_attempts:
            self._finish(job, JobState.DEAD, at, self.config.dead_ttl_s)
            self.counters["dead"] += 1
            return
        job.lease_until = None
        job.run_at = at + backoff_s(
            job.id, job.attempts, self.config.backoff_base_s, self.config.backoff_max_s
        )
        self._move(job, JobState.FAILED)
        self._make_due(job, at)

    def apply_expire(self, leases: list[tuple[str, int]], at: float) -> None:
        for job_id, attempt in leases:
            job = self.jobs.get(job_id)
            if job is not None and job.state is JobState.RUNNING and job.attempts == attempt:
                self.counters["expired"] += 1
                self._fail(job, "lease expired: the worker did not report back in time", at)

    def apply_cancel(self, job_id: str, at: float) -> bool:
        """Cancel a job that has not finished; answers whether it was running."""
        job = self._job(job_id)
        if job.state in FINISHED:
            raise JobStateConflict(
                "the job has already finished", job_id=job_id, state=job.state.value
            )
        was_running = job.state is JobState.RUNNING
        self._finish(job, JobState.CANCELLED, at, self.config.result_ttl_s)
        self.counters["cancelled"] += 1
        return was_running

    def _dead(self, job_ids: list[str] | None) -> list[Job]:
        if job_ids is None:
            return [self.jobs[i] for i in self.by_state[JobState.DEAD]]
        jobs = [self._job(i) for i in dict.fromkeys(job_ids)]
        for job in jobs:
            if job.state is not JobState.DEAD:
                raise JobStateConflict("the job is not dead", job_id=job.id, state=job.state.value)
        return jobs

    def apply_retry(self, job_ids: list[str] | None, at: float) -> list[str]:
        """Dead jobs (these, or all) run again with fresh attempts."""
        jobs = self._dead(job_ids)
        for job in jobs:
            job.attempts, job.run_at = 0, at
            job.finished_at = job.expires_at = None
            self._make_due(job, at)
            self.counters["retried"] += 1
        return [job.id for job in jobs]

    def apply_discard(self, job_ids: list[str] | None) -> list[str]:
        """Forget dead jobs (these, or all)."""
        jobs = self._dead(job_ids)
        for job in jobs:
            self._forget(job)
        self.counters["discarded"] += len(jobs)
        return [job.id for job in jobs]

    def apply_prune(self, at: float, keep: int | None = None) -> int:
        """Forget finished jobs (and their results) whose time is up, and the ones
        that expire soonest while more than ``keep`` finished jobs are kept."""
        pruned = 0
        while self.finished and (
            self.finished[0][0] <= at or (keep is not None and self._finished_count() > keep)
        ):
            expires_at, job_id = heapq.heappop(self.finished)
            job = self.jobs.get(job_id)
            if job is not None and job.state in FINISHED and job.expires_at == expires_at:
                self._forget(job)
                pruned += 1
        self.counters["pruned"] += pruned
        return pruned

    def _finished_count(self) -> int:
        return sum(len(self.by_state[state]) for state in FINISHED)

    def apply_pause(self, paused: bool) -> bool:
        self.paused = paused
        return paused

    def apply_configure(
        self, concurrency: int | None, rate_limit_per_s: float | None, rate_burst: int | None
    ) -> dict[str, Any]:
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise InvalidInput("concurrency must be an integer >= 1", concurrency=concurrency)
        if rate_limit_per_s is not None and not rate_limit_per_s > 0:
            raise InvalidInput("rate_limit_per_s must be > 0 or null", value=rate_limit_per_s)
        if rate_burst is not None and (not isinstance(rate_burst, int) or rate_burst < 1):
            raise InvalidInput("rate_burst must be an integer >= 1 or null", value=rate_burst)
        if concurrency is not None:
            self.concurrency = concurrency
        self.rate_limit_per_s, self.rate_burst = rate_limit_per_s, rate_burst
        self._bucket = None
        return self.limits()

    # --- the API -------------------------------------------------------------

    def prepare(self, spec: dict[str, Any], now: float) -> dict[str, Any]:
        """Check one enqueue request and turn it into an ``apply_enqueue`` spec."""
        c = self.config
        handler = spec.get("handler")
        self.handlers.get(handler)  # type: ignore[arg-type]
        args = spec.get("args") or {}
        if not isinstance(args, dict):
            raise InvalidInput("args must be a JSON object", type=type(args).__name__)
        try:
            size = len(orjson.dumps(args))
        except (TypeError, orjson.JSONEncodeError) as error:
            raise InvalidInput("args must be JSON", error=str(error)) from None
        if size > c.max_args_bytes:
            raise JobArgsTooLarge(size=size, limit=c.max_args_bytes)
        priority = spec.get("priority", 5)
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 9:
            raise InvalidInput("priority must be an integer 0-9", priority=priority)
        delay_s, run_at = spec.get("delay_s"), spec.get("run_at")
        if delay_s is not None and run_at is not None:
            raise InvalidInput("give delay_s or run_at, not both")
        if delay_s is not None:
            if not _number(delay_s) or delay_s < 0:
                raise InvalidInput("delay_s must be a number >= 0", delay_s=delay_s)
            run_at = now + delay_s
        elif run_at is not None and not _number(run_at):
            raise InvalidInput("run_at must be a Unix time in seconds", run_at=run_at)
        max_attempts = _default(spec.get("max_attempts"), c.max_attempts)
        if not isinstance(max_attempts, int) or not 1 <= max_attempts <= 1_000:
            raise InvalidInput("max_attempts must be an integer 1-1000", value=max_attempts)
        timeout_s = _default(spec.get("timeout_s"), c.timeout_s)
        unique_for_s = _default(spec.get("unique_for_s"), c.unique_for_s)
        for name, value in (("timeout_s", timeout_s), ("unique_for_s", unique_for_s)):
            if not _number(value) or value <= 0:
                raise InvalidInput(f"{name} must be a number > 0", value=value)
        keys = {k: spec.get(k) for k in ("unique_key", "idempotency_key")}
        for name, value in keys.items():
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInput(f"{name} must be a non-empty string", value=value)
            if value is not None and len(value) > MAX_KEY_CHARS:
                raise InvalidInput(f"{name} is longer than {MAX_KEY_CHARS} characters")
        return {
            "id": uuid.uuid4().hex,
            "queue": self.name,
            "handler": handler,
            "args": args,
            "priority": priority,
            "max_attempts": max_attempts,
            "timeout_s": float(timeout_s),
            "run_at": float(run_at if run_at is not None else now),
            "unique_for_s": float(unique_for_s),
            **keys,
        }

    async def enqueue(
        self, specs: list[dict[str, Any]], *, key: str | None = None, atomic: bool = True
    ) -> list[dict[str, Any] | RealmError]:
        """Enqueue jobs, answered once journaled: the job (with ``duplicate``), or with
        ``atomic=False`` the error of each refused one (``atomic``: all or none)."""
        if not isinstance(specs, list) or len(specs) > self.config.max_batch_jobs:
            limit = self.config.max_batch_jobs
            raise InvalidInput(f"a batch is a list of at most {limit} jobs", limit=limit)
        now = self.clock.time()
        answers: list[dict[str, Any] | RealmError | None] = [None] * len(specs)
        prepared = []
        for i, spec in enumerate(specs):
            try:
                prepared.append((i, self.prepare(spec, now)))
            except RealmError as error:
                if atomic:
                    error.details["index"] = i
                    raise
                answers[i] = error
        if prepared:
            # Dispatch may start as soon as the jobs are applied, before the commit
            # acknowledges them: a job lost with an uncommitted enqueue was never
            # acknowledged, and its lease is journaled after its enqueue.
            self._wake.set()
            ids = await self.execute("enqueue", key=key, jobs=[p for _, p in prepared], at=now)
            for (i, _), (job_id, duplicate) in zip(prepared, ids, strict=True):
                job = self.jobs.get(job_id)
                doc = job.to_dict() if job else {"id": job_id, "queue": self.name, "state": "gone"}
                doc["duplicate"] = duplicate
                answers[i] = doc
        return answers  # type: ignore[return-value]

    async def get(self, job_id: str) -> dict[str, Any]:
        self._promote(self.clock.time())
        return self._job(job_id).to_dict()

    async def list_jobs(
        self, state: str | None = None, *, offset: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        """A page of jobs, oldest first within a state (all states in state order)."""
        self._promote(self.clock.time())
        try:
            states = [JobState(state)] if state is not None else list(JobState)
        except ValueError:
            states_ = [s.value for s in JobState]
            raise InvalidInput("unknown state", state=state, states=states_) from None
        if offset < 0 or not 1 <= limit <= 1_000:
            raise InvalidInput("offset must be >= 0 and limit 1-1000")
        ids = itertools.chain.from_iterable(self.by_state[s] for s in states)
        page = [self.jobs[i].to_dict() for i in itertools.islice(ids, offset, offset + limit)]
        total = sum(len(self.by_state[s]) for s in states)
        more = offset + len(page) < total
        return {"jobs": page, "total": total, "next_offset": offset + len(page) if more else None}

    async def cancel(self, job_id: str, *, key: str | None = None) -> dict[str, Any]:
        """Cancel a job that has not finished; a repeated ``key`` answers again."""
        was_running = await self.execute("cancel", key=key, job_id=job_id, at=self.clock.time())
        if was_running and self._pool is not None:
            self._pool.cancel([job_id])
        return self._job(job_id).to_dict()

    async def retry(self, job_ids: list[str] | None = None, *, key: str | None = None) -> list[str]:
        retried: list[str] = await self.execute(
            "retry", key=key, job_ids=job_ids, at=self.clock.time()
        )
        self._wake.set()
        return retried

    async def discard(
        self, job_ids: list[str] | None = None, *, key: str | None = None
    ) -> list[str]:
        discarded: list[str] = await self.execute("discard", key=key, job_ids=job_ids)
        return discarded

    async def pause(self) -> dict[str, Any]:
        await self.execute("pause", paused=True)
        return self.limits()

    async def resume(self) -> dict[str, Any]:
        await self.execute("pause", paused=False)
        self._wake.set()
        return self.limits()

    async def configure(
        self,
        *,
        concurrency: int | None = None,
        rate_limit_per_s: float | None = None,
        rate_burst: int | None = None,
    ) -> dict[str, Any]:
        limits: dict[str, Any] = await self.execute(
            "configure",
            concurrency=concurrency,
            rate_limit_per_s=rate_limit_per_s,
            rate_burst=rate_burst,
        )
        self._wake.set()
        return limits

    def limits(self) -> dict[str, Any]:
        return {
            "queue": self.name,
            "paused": self.paused,
            "concurrency": self.concurrency,
            "rate_limit_per_s": self.rate_limit_per_s,
            "rate_burst": self.rate_burst,
        }

    async def wait(self, job_id: str, *, timeout_s: float = 30.0) -> dict[str, Any]:
        """The job once it has finished, or as it is after ``timeout_s``."""
        job = self._job(job_id)
        if job.state not in FINISHED:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(job_id, []).append(waiter)
            sleeper = asyncio.ensure_future(self.clock.sleep(timeout_s))
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            sleeper.cancel()
            waiter.cancel()
        return await self.get(job_id)

    async def stats(self) -> dict[str, Any]:
        now = self.clock.time()
        self._promote(now)
        recent = sum(n for second, n in self.done_per_s if second > now - THROUGHPUT_WINDOW_S)
        return {
            **self.limits(),
            "depth": {state.value: len(ids) for state, ids in self.by_state.items()},
            "in_flight": len(self.by_state[JobState.RUNNING]),
            "completed": self.counters["succeeded"],
            "failed": self.counters["failed"],
            "counters": dict(self.counters),
            "throughput_per_s": round(recent / THROUGHPUT_WINDOW_S, 3),
            "wait_s": _percentiles(self.wait_samples),
            "run_s": _percentiles(self.run_samples),
        }

    # --- worker reports (not journaled) ------------------------------------------

    async def heartbeat(self, job_ids: list[str]) -> list[str]:
        """Renew the leases of running jobs; answers the ones the worker should drop."""
        lease_until = self.clock.time() + self.config.visibility_timeout_s
        dropped = []
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is None or job.state is not JobState.RUNNING:
                dropped.append(job_id)
            else:
                job.lease_until = lease_until
        return dropped

    async def progress(self, job_id: str, value: Any) -> bool:
        """A running job's progress (kept in memory; a restart forgets it)."""
        job = self.jobs.get(job_id)
        if job is None or job.state is not JobState.RUNNING:
            return False
        job.progress = value
        return True

    # --- the dispatcher ------------------------------------------------------------

    def attach(self, pool: WorkerPool, slots: Slots | None = None) -> None:
        """Hand jobs to ``pool`` on each ``dispatch()`` (tests call it by hand)."""
        self._pool, self._slots = pool, slots
        self._allowance = 0 if slots is not None else math.inf

    def start(self, pool: WorkerPool, slots: Slots | None = None) -> None:
        """Attach and dispatch for as long as the actor lives (after ``open``)."""
        self.attach(pool, slots)
        self._dispatcher = asyncio.create_task(self._dispatch_forever())

    def wake(self) -> None:
        self._wake.set()

    async def _dispatch_forever(self) -> None:
        while True:
            try:
                delay = self.dispatch()
            except Exception:
                log.exception("queue %s: dispatch failed", self.name)
                delay = 1.0
            if not self._wake.is_set():
                await self._sleep_or_wake(delay)
            self._wake.clear()
            await asyncio.sleep(0)  # let arriving calls pile up into the next batch

    async def _sleep_or_wake(self, delay: float) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    def _promote(self, now: float) -> None:
        """Scheduled and retrying jobs that are due become queued (not journaled:
        a lease of a due job is valid in either state, so replay agrees)."""
        while self.waiting and self.waiting[0][0] <= now:
            _, seq, job_id = heapq.heappop(self.waiting)
            job = self.jobs.get(job_id)
            if job is not None and job.state in WAITING and job.ready_seq == seq:
                self._move(job, JobState.QUEUED)
                heapq.heappush(self.ready, (-job.priority, seq, job_id))

    def _record(self, op: str, **args: Any) -> Any:
        """Apply and journal an internal operation that nobody waits on."""
        result, committed = self.record(op, **args)
        committed.add_done_callback(lambda f: f.exception())  # failure crashes the actor
        return result

    def dispatch(self) -> float:
        """One turn: promote, expire, prune, hand out what the limits allow.
        Answers how long until the next turn is needed (sooner on any event)."""
        now, mono = self.clock.time(), self.clock.now()
        self._promote(now)
        if now >= self._next_lease_scan:
            self._next_lease_scan = now + LEASE_SCAN_S
            self._expire_leases(now)
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_S
            keep = self.config.max_finished_jobs
            if self.finished and (self.finished[0][0] <= now or self._finished_count() > keep):
                self._record("prune", at=now, keep=keep)
        next_turn = min(self._next_lease_scan, self._next_prune) - now
        if self.waiting:
            next_turn = min(next_turn, self.waiting[0][0] - now)
        ready = len(self.by_state[JobState.QUEUED])
        if self._pool is None or self.paused or not ready:
            self._ask_slots(0, mono)
            return max(next_turn, 0.0)
        self._ask_slots(min(self.concurrency, len(self._handed_out) + ready), mono)
        room = min(self.concurrency, self._allowance) - len(self._handed_out)
        room = min(room, self._pool.available(), ready)
        if self.rate_limit_per_s is not None:
            if self._bucket is None:
                burst = self.rate_burst or max(1, math.ceil(self.rate_limit_per_s))
                self._bucket = TokenBucket(self.rate_limit_per_s, burst, mono)
            room = min(room, self._bucket.available(mono))
            if room <= 0:
                next_turn = min(next_turn, self._bucket.wait_s())
        if room <= 0:
            return max(min(next_turn, 0.5), 0.0)
        self._launch(self._take_ready(int(room)), now)
        return max(next_turn, 0.0)

    def _take_ready(self, n: int) -> list[Job]:
        taken: list[Job] = []
        while self.ready and len(taken) < n:
            _, seq, job_id = heapq.heappop(self.ready)
            job = self.jobs.get(job_id)
            if job is not None and job.state is JobState.QUEUED and job.ready_seq == seq:
                taken.append(job)
        return taken

    def _launch(self, jobs: list[Job], now: float) -> None:
        if not jobs or self._pool is None:
            return
        if self._bucket is not None:
            self._bucket.take(len(jobs))
        self._record(
            "lease",
            leases=[(job.id, job.attempts + 1) for job in jobs],
            at=now,
            lease_s=self.config.visibility_timeout_s,
        )
        work = [
            (j.id, j.attempts, j.handler, j.args, j.timeout_s, j.idempotency_key or j.id, j.queue)
            for j in jobs
        ]
        for job in jobs:
            self._handed_out[job.id] = job.attempts
        # One batch per worker (fewer calls), unless that is over batch_max.
        size = max(1, min(self.config.batch_max, math.ceil(len(work) / self._pool.size)))
        for start in range(0, len(work), size):
            task = asyncio.ensure_future(self._run(work[start : start + size]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[Work]) -> None:
        assert self._pool is not None
        try:
            outcomes = await self._pool.run(batch)
        except Exception as error:  # the worker died or vanished: a failed attempt each
            now = self.clock.time()
            log.warning("queue %s: worker lost with %d jobs: %r", self.name, len(batch), error)
            reason = f"worker lost: {type(error).__name__}: {error}"
            outcomes = [(w[0], w[1], False, None, reason, now, now) for w in batch]
        finally:
            for work in batch:  # unless a later attempt of the job was handed out since
                if self._handed_out.get(work[0]) == work[1]:
                    del self._handed_out[work[0]]
        self._record("finish", outcomes=outcomes, at=self.clock.time())
        self._wake.set()

    def _expire_leases(self, now: float) -> None:
        expired = []
        for job_id in self.by_state[JobState.RUNNING]:
            job = self.jobs[job_id]
            if job.lease_until is not None and job.lease_until <= now:
                expired.append((job_id, job.attempts))
        if expired:
            self._record("expire", leases=expired, at=now)
            for job_id, attempt in expired:  # a hung worker does not keep the capacity
                if self._handed_out.get(job_id) == attempt:
                    del self._handed_out[job_id]
            if self._pool is not None:
                self._pool.cancel([job_id for job_id, _ in expired])

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
        slots = self._slots

        async def ask() -> None:
            try:
                self._allowance = await slots.set_demand(self.name, want)
                self._slots_short = self._allowance < want
                self._surplus_since = None
            except Exception as error:
                log.warning("queue %s: slot request failed: %r", self.name, error)
                self._slots_short = True
            finally:
                self._asking_slots = False
                self._next_slot_ask = self.clock.now() + SLOT_RETRY_S
                self._wake.set()

        task = asyncio.ensure_future(ask())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __repr__(self) -> str:
        depth = " ".join(f"{s.value}={len(ids)}" for s, ids in self.by_state.items() if ids)
        return f"<JobQueue {self.name} {depth} in_flight={len(self._handed_out)}>"


# --- the actor ------------------------------------------------------------------


class _JobQueueProcess(JobQueue):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        from actors.queue.workers import RayWorkerPool, SlotsClient, current_actor
        from actors.runtime.supervision import recover

        super().__init__(name, QueueConfig.from_settings(settings))
        self.restarts = await recover(self, settings, queue_actor_name(name))
        self.pool = RayWorkerPool(settings, current_actor(), on_change=self.wake)
        self.start(self.pool, SlotsClient(settings))

    async def ping(self) -> int:
        return len(self.jobs)

    async def workers(self) -> dict[str, Any]:
        """The worker actors, which runs which job, the actor's restarts and node."""
        import ray

        handles = self.pool.handles()
        running = {job_id: self.pool.worker_of(job_id) for job_id in self._handed_out}
        node_id = ray.get_runtime_context().get_node_id()
        return {
            "handles": handles,
            "running": running,
            "restarts": self.restarts,
            "node_id": node_id,
        }


#: Durable jobs; enqueues in flight at a crash are retried (idempotent by key).
JobQueueActor = remote_actor(
    _JobQueueProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD"
)


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


__all__ = ["JobQueue", "JobQueueActor"]
