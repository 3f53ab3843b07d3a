"""Task queue (service 2): one named queue's jobs, as a plain class, and its actor.

A ``JobQueue`` owns the jobs of one queue. Every change of a job is an
operation of its journal (``Durable``): enqueue, lease (handed to a worker),
finish (a batch of outcomes), expire (a lease ran out), cancel, retry,
discard, pause, configure, prune. Operations carry their timestamps and
random draws as arguments, so a restarted queue replays to the same state; the
jitter of a retry's backoff is derived from the job id and attempt, not drawn.

Records and snapshots are typed data: an enqueue carries ``JobSpec`` structs,
a finish the workers' ``Outcome`` tuples, and the snapshot (``QueueSnapshot``)
the ``Job`` structs state by state, the keys, the limits and the ``Tally``.
The indexes of the jobs (``JobTable``: by state, heaps, keys) are not
stored as such: ``restore_state`` makes them again from the jobs.

The queue's ``Dispatcher`` (``actors.queue.dispatcher``) hands its ready jobs
to workers and journals what comes back; the queue tells it when something
changed (``wake``).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import orjson

from actors.queue.dispatcher import Dispatcher
from actors.queue.errors import JobNotFound, JobStateConflict
from actors.queue.model import (
    FINISHED,
    MAX_CONCURRENCY,
    MAX_RATE_BURST,
    MAX_RATE_PER_S,
    WAITING,
    HandlerCache,
    Job,
    JobSpec,
    JobState,
    Outcome,
    backoff_s,
    check_queue_name,
    prepare,
)
from actors.queue.settings import QueueSettings
from actors.queue.stats import Tally
from actors.queue.table import JobTable, json_size
from actors.runtime import metrics
from actors.runtime.clock import Clock, SystemClock, every
from actors.runtime.errors import InvalidInput, QueueFull, RealmError
from actors.runtime.fanout import first_of
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, remote_actor

#: Longest error text kept per job.
MAX_ERROR_CHARS = 2_000
#: Seconds between exports of a queue's depth by state (``realm_queue_jobs``).
DEPTH_REPORT_S = 2.0


@dataclass(slots=True)
class QueueSnapshot:
    """A queue's durable state as its snapshot stores it."""

    jobs: list[Job]  #: state by state, each state's jobs in the order they entered it
    unique: dict[str, tuple[str, float]]
    idempotent: dict[str, str]
    seq: int
    paused: bool
    concurrency: int
    rate_limit_per_s: float | None
    rate_burst: int | None
    tally: Tally


class JobQueue(Durable):
    """One named queue: durable jobs, their states and indexes, and its operations."""

    def __init__(
        self,
        name: str,
        config: QueueSettings,
        *,
        clock: Clock | None = None,
        holder: str | None = None,
    ) -> None:
        self.name = check_queue_name(name)
        #: Who this queue is to the global slots (its actor's name: unique, where the
        #: queue's name is unique only per owner).
        self.holder = holder or name
        self.config = config
        self.clock = clock or SystemClock()
        self.handlers = HandlerCache(config.handler_modules)
        # durable state (journaled, snapshotted)
        self.table = JobTable()
        self.paused = False
        self.concurrency = config.concurrency
        self.rate_limit_per_s: float | None = None
        self.rate_burst: int | None = None
        self.tally = Tally()
        # live state (this incarnation only)
        self.dispatcher = Dispatcher(self)
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    # --- durable state -------------------------------------------------------

    def state_size(self) -> int:
        return len(self.table)  # a snapshot encodes every job

    def snapshot_state(self) -> QueueSnapshot:
        table = self.table
        return QueueSnapshot(
            jobs=table.in_order(),
            unique=table.unique,
            idempotent=table.idempotent,
            seq=table.seq,
            paused=self.paused,
            concurrency=self.concurrency,
            rate_limit_per_s=self.rate_limit_per_s,
            rate_burst=self.rate_burst,
            tally=self.tally,
        )

    def restore_state(self, state: QueueSnapshot) -> None:
        self.table = JobTable.rebuild(
            state.jobs, unique=state.unique, idempotent=state.idempotent, seq=state.seq
        )
        self.paused, self.concurrency = state.paused, state.concurrency
        self.rate_limit_per_s, self.rate_burst = state.rate_limit_per_s, state.rate_burst
        self.tally = state.tally

    def _finish(self, job: Job, state: JobState, at: float, ttl_s: float) -> None:
        self.table.finish(job, state, at, ttl_s)
        for waiter in self._waiters.pop(job.id, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _job(self, job_id: str) -> Job:
        job = self.table.jobs.get(job_id)
        if job is None:
            raise JobNotFound(queue=self.name, job_id=job_id)
        return job

    def apply_enqueue(self, jobs: list[JobSpec], at: float) -> list[tuple[str, bool]]:
        """Add jobs (checked by ``prepare``); a repeated idempotency or live unique key
        answers the existing job. Answers ``(job id, duplicate)`` per job."""
        table, counters = self.table, self.tally.counters
        answers = []
        for spec in jobs:
            existing = table.holder(
                idempotency_key=spec.idempotency_key, unique_key=spec.unique_key, at=at
            )
            if existing is not None:
                counters["duplicates"] += 1
                answers.append((existing, True))
                continue
            table.add(spec.job(enqueued_at=at), at, unique_until=at + spec.unique_for_s)
            counters["enqueued"] += 1
            answers.append((spec.id, False))
        return answers

    def apply_lease(self, leases: list[tuple[str, int]], at: float, lease_s: float) -> None:
        table = self.table
        for job_id, attempt in leases:
            job = table.jobs.get(job_id)
            if job is None or attempt != job.attempts + 1:
                continue
            if job.state is JobState.QUEUED or (job.state in WAITING and job.run_at <= at):
                job.attempts = attempt
                table.move(job, JobState.RUNNING)
                job.started_at, job.lease_until, job.progress = at, at + lease_s, None

    def apply_finish(self, outcomes: list[Outcome], at: float) -> None:
        done = 0
        for job_id, attempt, ok, result, error, started_at, finished_at in outcomes:
            job = self.table.jobs.get(job_id)
            if job is None or job.state is not JobState.RUNNING or job.attempts != attempt:
                self.tally.counters["stale_outcomes"] += 1
                continue
            self.tally.ran(started_at - job.run_at, finished_at - started_at)
            job.started_at = started_at
            if ok:
                job.result, job.error = result, None
                self._finish(job, JobState.SUCCEEDED, at, self.config.result_ttl_s)
                self.tally.counters["succeeded"] += 1
                done += 1
            else:
                self._fail(job, error or "failed", at)
        if done:
            self.tally.completed(done, at)

    def _fail(self, job: Job, error: str, at: float) -> None:
        job.error = error[:MAX_ERROR_CHARS]
        self.tally.counters["failed"] += 1
        if job.attempts >= job.max_attempts:
            self._finish(job, JobState.DEAD, at, self.config.dead_ttl_s)
            self.tally.counters["dead"] += 1
            return
        job.lease_until = None
        job.run_at = at + backoff_s(
            job.id, job.attempts, self.config.backoff_base_s, self.config.backoff_max_s
        )
        self.table.move(job, JobState.FAILED)
        self.table.make_due(job, at)

    def apply_expire(self, leases: list[tuple[str, int]], at: float) -> None:
        for job_id, attempt in leases:
            job = self.table.jobs.get(job_id)
            if job is not None and job.state is JobState.RUNNING and job.attempts == attempt:
                self.tally.counters["expired"] += 1
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
        self.tally.counters["cancelled"] += 1
        return was_running

    def _dead(self, job_ids: list[str] | None) -> list[Job]:
        if job_ids is None:
            return [self.table.jobs[i] for i in self.table.by_state[JobState.DEAD]]
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
            self.table.make_due(job, at)
            self.tally.counters["retried"] += 1
        return [job.id for job in jobs]

    def apply_discard(self, job_ids: list[str] | None) -> list[str]:
        """Forget dead jobs (these, or all)."""
        jobs = self._dead(job_ids)
        for job in jobs:
            self.table.forget(job)
        self.tally.counters["discarded"] += len(jobs)
        return [job.id for job in jobs]

    def apply_prune(self, at: float, keep: int | None = None, max_bytes: int | None = None) -> int:
        """Forget finished jobs (and their results) whose time is up, and the ones
        that expire soonest while more than ``keep`` finished jobs are kept or they
        weigh more than ``max_bytes``."""
        pruned = self.table.prune(at, keep, max_bytes)
        self.tally.counters["pruned"] += pruned
        return pruned

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
        self.dispatcher.rate_changed()
        return self.limits()

    # --- the API -------------------------------------------------------------

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
        prepared: list[tuple[int, JobSpec]] = []
        # A call retried after a restart answers as the first did (``execute``), whose
        # jobs already count: it is not refused for want of room.
        repeated = key is not None and self.knows(key)
        room = _Room(self) if not repeated else None
        for i, spec in enumerate(specs):
            try:
                checked = prepare(spec, queue=self.name, now=now, config=self.config,
                                  handlers=self.handlers)  # fmt: skip
                if room is not None:
                    room.take(checked, now)
                prepared.append((i, checked))
            except RealmError as error:
                if atomic:
                    error.details["index"] = i
                    raise
                answers[i] = error
        if prepared:
            # Dispatch may start as soon as the jobs are applied, before the commit
            # acknowledges them: a job lost with an uncommitted enqueue was never
            # acknowledged, and its lease is journaled after its enqueue.
            self.dispatcher.wake()
            ids = await self.execute("enqueue", key=key, jobs=[p for _, p in prepared], at=now)
            for (i, _), (job_id, duplicate) in zip(prepared, ids, strict=True):
                job = self.table.jobs.get(job_id)
                doc = job.to_dict() if job else {"id": job_id, "queue": self.name, "state": "gone"}
                doc["duplicate"] = duplicate
                answers[i] = doc
        return answers  # type: ignore[return-value]

    async def get(self, job_id: str) -> dict[str, Any]:
        self.table.promote(self.clock.time())
        return self._job(job_id).to_dict()

    async def list_jobs(
        self, state: str | None = None, *, offset: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        """A page of jobs, state by state, each in the order its jobs entered it."""
        self.table.promote(self.clock.time())
        try:
            states = [JobState(state)] if state is not None else list(JobState)
        except ValueError:
            states_ = [s.value for s in JobState]
            raise InvalidInput("unknown state", state=state, states=states_) from None
        if offset < 0 or not 1 <= limit <= 1_000:
            raise InvalidInput("offset must be >= 0 and limit 1-1000")
        by_state, jobs = self.table.by_state, self.table.jobs
        ids = itertools.chain.from_iterable(by_state[s] for s in states)
        page = [jobs[i].to_dict() for i in itertools.islice(ids, offset, offset + limit)]
        total = sum(len(by_state[s]) for s in states)
        more = offset + len(page) < total
        return {"jobs": page, "total": total, "next_offset": offset + len(page) if more else None}

    async def cancel(self, job_id: str, *, key: str | None = None) -> dict[str, Any]:
        """Cancel a job that has not finished; a repeated ``key`` answers again."""
        was_running = await self.execute("cancel", key=key, job_id=job_id, at=self.clock.time())
        if was_running:
            self.dispatcher.stop([job_id])
        return self._job(job_id).to_dict()

    async def retry(self, job_ids: list[str] | None = None, *, key: str | None = None) -> list[str]:
        retried: list[str] = await self.execute(
            "retry", key=key, job_ids=job_ids, at=self.clock.time()
        )
        self.dispatcher.wake()
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
        self.dispatcher.wake()
        return self.limits()

    async def configure(
        self,
        *,
        concurrency: int | None = None,
        rate_limit_per_s: float | None = None,
        rate_burst: int | None = None,
    ) -> dict[str, Any]:
        check_limits(concurrency, rate_limit_per_s, rate_burst)
        limits: dict[str, Any] = await self.execute(
            "configure",
            concurrency=concurrency,
            rate_limit_per_s=rate_limit_per_s,
            rate_burst=rate_burst,
        )
        self.dispatcher.wake()
        return limits

    async def info(self) -> dict[str, Any]:
        """The queue's limits (its stats without the figures)."""
        return self.limits()

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
            await first_of(waiter, self.clock.sleep(timeout_s))
            waiters = self._waiters.get(job_id)
            if waiters is not None and waiter in waiters:  # timed out: not kept until it ends
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[job_id]
        return await self.get(job_id)

    async def stats(self) -> dict[str, Any]:
        now = self.clock.time()
        self.table.promote(now)
        return {
            **self.limits(),
            "depth": {state.value: len(ids) for state, ids in self.table.by_state.items()},
            "in_flight": self.table.count(JobState.RUNNING),
            "bytes": {
                "unfinished": self.table.unfinished_bytes,
                "finished": self.table.finished_bytes,
            },
            **self.tally.report(now),
        }

    # --- worker reports (not journaled) ------------------------------------------

    async def heartbeat(self, job_ids: list[str]) -> list[str]:
        """Renew the leases of running jobs; answers the ones the worker should drop."""
        return self.dispatcher.heartbeat(job_ids)

    async def progress(self, job_id: str, value: Any) -> bool:
        """A running job's progress, any JSON value (kept in memory; a restart forgets
        it unless a snapshot caught it)."""
        job = self.table.jobs.get(job_id)
        if job is None or job.state is not JobState.RUNNING:
            return False
        try:  # kept as JSON reads it back, as a snapshot would give it
            job.progress = orjson.loads(orjson.dumps(value))
        except TypeError:
            return False
        return True

    def report_depth(self) -> None:
        """Export how many jobs are in each state (``realm_queue_jobs``, labelled
        with the actor's name: unique, and one process per queue)."""
        for state, ids in self.table.by_state.items():
            metrics.QUEUE_JOBS.set(len(ids), queue=self.holder, state=state.value)

    def __repr__(self) -> str:
        return f"<JobQueue {self.name} {self.table!r} {self.dispatcher!r}>"


class _Room:
    """What one enqueue call may still add: the queue's unfinished jobs are bounded in
    count (``max_jobs_per_queue``) and in the bytes of their arguments
    (``max_queue_bytes``). A job that repeats a held key takes no room."""

    def __init__(self, queue: JobQueue) -> None:
        config, table = queue.config, queue.table
        self.queue = queue
        self.jobs = config.max_jobs_per_queue - table.unfinished()
        self.bytes = config.max_queue_bytes - table.unfinished_bytes

    def take(self, job: JobSpec, now: float) -> None:
        table = self.queue.table
        if table.holder(idempotency_key=job.idempotency_key, unique_key=job.unique_key, at=now):
            return
        size = json_size(job.args)
        if self.jobs < 1 or size > self.bytes:
            config = self.queue.config
            raise QueueFull(
                "the queue holds as many unfinished jobs as it may; retry later",
                queue=self.queue.name,
                max_jobs=config.max_jobs_per_queue,
                max_bytes=config.max_queue_bytes,
            )
        self.jobs -= 1
        self.bytes -= size


def check_limits(
    concurrency: int | None, rate_limit_per_s: float | None, rate_burst: int | None
) -> None:
    """Refuse limits out of bounds (at the door: a journaled limit is never refused on replay)."""
    if concurrency is not None and (
        not isinstance(concurrency, int)
        or isinstance(concurrency, bool)
        or not 1 <= concurrency <= MAX_CONCURRENCY
    ):
        raise InvalidInput(
            f"concurrency must be an integer from 1 to {MAX_CONCURRENCY}", concurrency=concurrency
        )
    if rate_limit_per_s is not None and (
        isinstance(rate_limit_per_s, bool)
        or not isinstance(rate_limit_per_s, int | float)
        or not 0 < rate_limit_per_s <= MAX_RATE_PER_S
    ):
        raise InvalidInput(
            f"rate_limit_per_s must be > 0 and at most {MAX_RATE_PER_S:g}, or null",
            value=rate_limit_per_s,
        )
    if rate_burst is not None and (
        not isinstance(rate_burst, int)
        or isinstance(rate_burst, bool)
        or not 1 <= rate_burst <= MAX_RATE_BURST
    ):
        raise InvalidInput(
            f"rate_burst must be an integer from 1 to {MAX_RATE_BURST}, or null", value=rate_burst
        )


# --- the actor ------------------------------------------------------------------


class _JobQueueProcess(JobQueue):
    async def __init__(self, settings: Settings, name: str, actor_name: str) -> None:  # type: ignore[misc]
        from actors.queue.workers import RayWorkerPool, SlotsClient, current_actor
        from actors.runtime.supervision import recover

        config = QueueSettings.of(settings)
        super().__init__(name, config, holder=actor_name)
        self.restarts = await recover(self, settings, actor_name)
        self.pool = RayWorkerPool(config, current_actor(), on_change=self.dispatcher.wake)
        self.dispatcher.start(self.pool, SlotsClient(settings))
        self.report_depth()
        self._depth_reporter = every(self.clock, DEPTH_REPORT_S, self.report_depth)

    async def ping(self) -> int:
        return len(self.table)

    async def workers(self) -> dict[str, Any]:
        """The worker actors, which runs which job, the actor's restarts and node."""
        import ray

        handles = self.pool.handles()
        running = {job_id: self.pool.worker_of(job_id) for job_id in self.dispatcher.handed_out}
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


__all__ = ["JobQueue", "JobQueueActor", "QueueSnapshot", "check_limits"]
