"""The task queue's workers, and the global concurrency slots.

A queue actor owns a ``RayWorkerPool``: ``workers`` ``JobWorker`` actors
that it started itself, so they share its fate (a queue actor that dies takes
its workers with it, and the new incarnation starts fresh ones; the jobs they
ran come back when their leases run out). Ray places them (SPREAD over
nodes). The dispatcher sends a worker a batch of jobs in one call and awaits
the answer, one outcome per job; a worker that dies fails that call
(``RayActorError``), which fails the attempt of every job in the batch. A
worker renews the leases of the jobs it runs every ``heartbeat_s`` and
stops jobs the queue has cancelled. A result is kept as JSON reads it back
(tuples become lists), which is how the queue's journal replays it.

Handlers are called as ``fn(**args)``, plus ``job=JobContext`` when they take a
``job`` parameter. ``async def`` handlers run on the worker's event loop;
plain functions run in a thread, so they cannot be interrupted: a cancelled
or timed-out plain function runs on, and its outcome is ignored.

``JobSlots`` is the global concurrency limit: one small actor that grants
each queue a share of ``global_concurrency`` slots on request (a queue
asks again when its need changes, not per job). Its grants are not durable: a
restarted slot actor learns them again from the queues' next requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import ray
from ray.exceptions import RayActorError

from actors.queue.model import HandlerCache, Outcome, Work
from actors.queue.settings import QueueSettings
from actors.runtime.backoff import ACTOR_RESTART, retry_call
from actors.runtime.clock import SystemClock, every
from actors.runtime.settings import Settings
from actors.runtime.supervision import ActorRef, Restart, call, remote_actor, run_start_hooks

log = logging.getLogger(__name__)

SLOTS_NAME = "queue-slots"


@dataclass
class JobContext:
    """What a handler that takes ``job`` gets: who it is, and a way to report progress."""

    id: str
    queue: str
    attempt: int
    #: The job's idempotency key (its id when none was given): the same on every
    #: attempt, so a handler can make its effects happen once.
    idempotency_key: str
    _queue_handle: Any = None

    def progress(self, value: Any) -> None:
        """Report progress (any JSON value); shown by ``get`` while the job runs."""
        if self._queue_handle is not None:
            self._queue_handle.progress.remote(self.id, value)


class JobWorker:
    """Runs batches of jobs; one of a queue's worker actors."""

    async def __init__(  # type: ignore[misc]
        self,
        queue: Any,
        *,
        handler_modules: str,
        heartbeat_s: float,
        max_result_bytes: int,
        threads: int,
    ) -> None:
        self._queue = queue
        self._handlers = HandlerCache(handler_modules)
        self._max_result_bytes = max_result_bytes
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="job")
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._heartbeat_s = heartbeat_s
        self.ran = 0
        self._heartbeat = every(SystemClock(), heartbeat_s, self.heartbeat)

    async def ping(self) -> int:
        return self.ran

    async def run(self, batch: list[Work]) -> list[Outcome]:
        return list(await asyncio.gather(*(self._run_one(work) for work in batch)))

    def cancel(self, job_ids: list[str]) -> int:
        cancelled = 0
        for job_id in job_ids:
            task = self._running.get(job_id)
            if task is not None:
                task.cancel()
                cancelled += 1
        return cancelled

    async def running(self) -> list[str]:
        return list(self._running)

    def __repr__(self) -> str:
        return f"<JobWorker ran={self.ran} running={len(self._running)}>"

    async def _run_one(self, work: Work) -> Outcome:
        job_id, attempt, path, args, timeout_s, idempotency_key, queue = work
        started = time.time()
        deadline = asyncio.timeout(timeout_s)
        task = asyncio.current_task()
        assert task is not None
        self._running[job_id] = task
        try:
            handler = self._handlers.get(path)
            kwargs = dict(args)
            if handler.wants_job:
                kwargs["job"] = JobContext(job_id, queue, attempt, idempotency_key, self._queue)
            async with deadline:
                if handler.is_async:
                    result = await handler.fn(**kwargs)
                else:
                    loop = asyncio.get_running_loop()
                    result = await loop.run_in_executor(self._threads, lambda: handler.fn(**kwargs))
            if result is not None:
                encoded = orjson.dumps(result)
                if len(encoded) > self._max_result_bytes:
                    raise ValueError(f"the result is {len(encoded)} bytes, over the limit")
                result = orjson.loads(encoded)
            return (job_id, attempt, True, result, None, started, time.time())
        except TimeoutError as error:
            reason = f"timed out after {timeout_s}s" if deadline.expired() else repr(error)
            return (job_id, attempt, False, None, reason, started, time.time())
        except asyncio.CancelledError:
            return (job_id, attempt, False, None, "cancelled", started, time.time())
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            return (job_id, attempt, False, None, reason, started, time.time())
        finally:
            self.ran += 1
            self._running.pop(job_id, None)

    async def heartbeat(self) -> None:
        """Renew the leases of the running jobs; stop the ones the queue dropped.

        A queue that does not answer is tried again until the next heartbeat is
        due; after that this one is dropped (the next carries the same jobs, and
        a lease that runs out meanwhile only makes the job run again).
        """
        if not self._running:
            return
        try:
            dropped = await call(
                self._queue, "heartbeat", list(self._running), patience_s=self._heartbeat_s
            )
        except Exception as error:  # the queue is gone or restarting: it will expire or renew
            log.warning("heartbeat failed: %r", error)
            return
        self.cancel(dropped)


#: A worker that dies is restarted; the call in flight fails to the dispatcher.
JobWorkerActor = remote_actor(JobWorker, restart=Restart.TRANSIENT, scheduling_strategy="SPREAD")


class RayWorkerPool:
    """A queue's worker actors: the least loaded healthy one gets each batch."""

    def __init__(self, config: QueueSettings, queue: Any, *, on_change: Any = None) -> None:
        self.size = config.workers
        self._options = {
            "handler_modules": config.handler_modules,
            "heartbeat_s": config.heartbeat_s,
            "max_result_bytes": config.max_result_bytes,
            "threads": config.concurrency,
        }
        self._queue = queue
        self._per_worker = max(config.concurrency, config.batch_max)
        self._workers: list[Any] = []
        self._load: list[int] = []
        self._healthy: list[bool] = []
        self._where: dict[str, int] = {}
        self._on_change = on_change
        self.lost = 0  #: worker calls that failed
        self._reviving: set[asyncio.Future[None]] = set()

    def _start(self) -> None:
        if not self._workers:
            self._workers = [
                JobWorkerActor.remote(self._queue, **self._options) for _ in range(self.size)
            ]
            self._load = [0] * self.size
            self._healthy = [True] * self.size

    def available(self) -> int:
        self._start()
        return sum(
            max(0, self._per_worker - load)
            for load, healthy in zip(self._load, self._healthy, strict=True)
            if healthy
        )

    async def run(self, batch: list[Work]) -> list[Outcome]:
        self._start()
        index = min((i for i in range(self.size) if self._healthy[i]), key=self._load.__getitem__)
        self._load[index] += len(batch)
        for work in batch:
            self._where[work[0]] = index
        try:
            outcomes: list[Outcome] = await self._workers[index].run.remote(batch)
            return outcomes
        except RayActorError:
            self.lost += 1
            if self._healthy[index]:
                self._healthy[index] = False
                reviving = asyncio.ensure_future(self._revive(index))
                self._reviving.add(reviving)  # held so that it is not collected while it runs
                reviving.add_done_callback(self._reviving.discard)
            raise
        finally:
            self._load[index] -= len(batch)
            for work in batch:
                self._where.pop(work[0], None)

    async def _revive(self, index: int) -> None:
        """Wait until Ray has restarted the worker, then use it again."""
        worker = self._workers[index]
        await retry_call(
            lambda: worker.ping.remote(),
            on=RayActorError,
            backoff=ACTOR_RESTART,
            log=log,
            what=f"worker {index} coming back",
        )
        self._healthy[index] = True
        if self._on_change is not None:
            self._on_change()

    def cancel(self, job_ids: list[str]) -> None:
        by_worker: dict[int, list[str]] = {}
        for job_id in job_ids:
            if job_id in self._where:
                by_worker.setdefault(self._where[job_id], []).append(job_id)
        for index, ids in by_worker.items():
            self._workers[index].cancel.remote(ids)

    def handles(self) -> list[Any]:
        self._start()
        return list(self._workers)

    def worker_of(self, job_id: str) -> int | None:
        return self._where.get(job_id)

    def __repr__(self) -> str:
        return (
            f"<RayWorkerPool size={self.size} load={self._load} healthy={self._healthy} "
            f"lost={self.lost}>"
        )


class JobSlots:
    """Grants shares of the global job concurrency to queues."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: dict[str, int] = {}
        self.wanted: dict[str, int] = {}

    def set_demand(self, holder: str, want: int) -> int:
        """Ask for ``want`` slots in all (0 gives them back); answers the grant.

        A queue gets what is free; while others want more than they hold, no
        queue is granted more than an equal share.
        """
        want = max(0, int(want))
        self.wanted[holder] = want
        others = sum(n for h, n in self.held.items() if h != holder)
        grant = min(want, self.limit - others)
        starved = [h for h, n in self.wanted.items() if n > self.held.get(h, 0) and h != holder]
        if starved:
            share = self.limit // (len(starved) + 1)
            grant = min(grant, max(share, 1)) if want else 0
        self.held[holder] = max(0, grant)
        if not want:
            self.held.pop(holder, None)
            self.wanted.pop(holder, None)
        return self.held.get(holder, 0)

    def snapshot(self) -> dict[str, Any]:
        return {"limit": self.limit, "held": dict(self.held), "wanted": dict(self.wanted)}

    def __repr__(self) -> str:
        return (
            f"<JobSlots limit={self.limit} held={sum(self.held.values())} holders={len(self.held)}>"
        )


class _JobSlotsProcess(JobSlots):
    def __init__(self, settings: Settings) -> None:
        run_start_hooks(settings, "queue", SLOTS_NAME)
        super().__init__(QueueSettings.of(settings).global_concurrency)


#: Not durable: the queues' next requests rebuild its grants after a restart.
JobSlotsActor = remote_actor(_JobSlotsProcess, restart=Restart.PERMANENT)


class SlotsClient:
    def __init__(self, settings: Settings) -> None:
        self._ref = ActorRef(JobSlotsActor, SLOTS_NAME, settings, namespace=settings.namespace)

    async def set_demand(self, holder: str, want: int) -> int:
        granted: int = await self._ref.call("set_demand", holder, want)
        return granted


def current_actor() -> Any:
    return ray.get_runtime_context().current_actor


__all__ = [
    "JobContext",
    "JobSlots",
    "JobSlotsActor",
    "JobWorker",
    "JobWorkerActor",
    "RayWorkerPool",
    "SlotsClient",
]
