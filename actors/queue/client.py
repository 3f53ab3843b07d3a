"""The task queue's Python API, for the HTTP ingress and for other services.

Each named queue is one ``JobQueueActor`` (``queue-<name>``), found or started
on first use. Single enqueues that arrive together are coalesced into batched
actor calls (one in flight per queue; the next carries everything that queued
meanwhile), so a burst of ``enqueue`` calls costs a few actor calls, not one
each. Every call that changes jobs carries a fresh call key, so Ray's retry
of a call in flight when the queue actor restarted applies once (and answers
as the first did, not with "already cancelled"). Pause, resume and configure
are idempotent by themselves.

    queue = QueueClient(settings)
    await queue.start()
    job = await queue.enqueue("emails", "actors.queue.handlers:echo", {"to": "ada"})
    done = await queue.wait("emails", job["id"], timeout_s=10)

It also offers what other services need of the queue's rules, so they check a
job as the queue would: ``QueueSettings`` (its section of the settings),
``resolve_handler`` and ``JobState``, and the errors ``JobArgsTooLarge`` and
``UnknownHandler``.
"""

from __future__ import annotations

import asyncio
import builtins
import uuid
from typing import Any

from actors.queue.errors import JobArgsTooLarge, UnknownHandler
from actors.queue.jobqueue import JobQueueActor
from actors.queue.model import (
    FINISHED,
    JobState,
    check_queue_name,
    queue_actor_name,
    resolve_handler,
)
from actors.queue.settings import QueueSettings
from actors.runtime.batching import Coalescer
from actors.runtime.errors import InvalidInput, RealmError
from actors.runtime.settings import Settings
from actors.runtime.supervision import ActorRef

#: Longest a single ``wait`` call holds the queue actor; ``wait`` loops for longer waits.
WAIT_SLICE_S = 30.0


class QueueClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = QueueSettings.of(settings)
        self._queues: dict[str, ActorRef] = {}
        self._enqueuers: dict[str, Coalescer[dict[str, Any], Any]] = {}

    async def start(self) -> None:
        """Nothing to warm up: queue actors start on first use."""

    async def close(self) -> None:
        self._queues.clear()
        self._enqueuers.clear()

    def _queue(self, queue: str) -> ActorRef:
        ref = self._queues.get(queue)
        if ref is None:
            check_queue_name(queue)
            name = queue_actor_name(queue)
            ref = ActorRef(
                JobQueueActor, name, self.settings, queue, namespace=self.settings.namespace
            )
            self._queues[queue] = ref
        return ref

    def _enqueuer(self, queue: str) -> Coalescer[dict[str, Any], Any]:
        enqueuer = self._enqueuers.get(queue)
        if enqueuer is None:
            ref = self._queue(queue)

            async def send(specs: list[dict[str, Any]]) -> list[Any]:
                answers: list[Any] = await ref.call(
                    "enqueue", specs, key=uuid.uuid4().hex, atomic=False
                )
                return answers

            enqueuer = Coalescer(send, max_batch=self.config.max_batch_jobs)
            self._enqueuers[queue] = enqueuer
        return enqueuer

    async def enqueue(
        self,
        queue: str,
        handler: str,
        args: dict[str, Any] | None = None,
        *,
        priority: int = 5,
        delay_s: float | None = None,
        run_at: float | None = None,
        unique_key: str | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        unique_for_s: float | None = None,
    ) -> dict[str, Any]:
        """Enqueue one job; answers it (``id``, ``queue``, ``state``, ...) once it is durable.

        Priority 9 runs first, 0 last. A repeat of an ``idempotency_key`` (while
        its job is kept), or of a ``unique_key`` within ``unique_for_s``, answers
        the existing job with ``duplicate: true``.
        """
        spec = job_spec(
            handler,
            args,
            priority=priority,
            delay_s=delay_s,
            run_at=run_at,
            unique_key=unique_key,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            unique_for_s=unique_for_s,
        )
        [answer] = await self._enqueuer(queue).submit([spec])
        if isinstance(answer, RealmError):
            raise answer
        job: dict[str, Any] = answer
        return job

    async def enqueue_many(self, queue: str, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Enqueue a batch, all or nothing: each item has ``handler`` and the keyword
        arguments of ``enqueue``. A refusal names the ``index`` of the bad item."""
        if not isinstance(jobs, list):
            raise InvalidInput("jobs must be a list")
        answers: list[dict[str, Any]] = await self._queue(queue).call(
            "enqueue", jobs, key=uuid.uuid4().hex, atomic=True
        )
        return answers

    async def get(self, queue: str, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = await self._queue(queue).call("get", job_id)
        return job

    async def list(
        self, queue: str, state: str | None = None, *, offset: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        """A page of jobs: ``{"jobs", "total", "next_offset"}`` (null on the last page)."""
        page: dict[str, Any] = await self._queue(queue).call(
            "list_jobs", state, offset=offset, limit=limit
        )
        return page

    async def cancel(self, queue: str, job_id: str) -> dict[str, Any]:
        """Cancel a job that has not finished (a running one is stopped if it can be)."""
        job: dict[str, Any] = await self._queue(queue).call("cancel", job_id, key=uuid.uuid4().hex)
        return job

    async def retry(self, queue: str, job_id: str) -> dict[str, Any]:
        """Run a dead job again, with fresh attempts."""
        await self._queue(queue).call("retry", [job_id], key=uuid.uuid4().hex)
        return await self.get(queue, job_id)

    async def retry_dead(
        self, queue: str, job_ids: builtins.list[str] | None = None
    ) -> builtins.list[str]:
        """Retry these dead jobs (all or none), or every dead job; answers their ids."""
        retried: builtins.list[str] = await self._queue(queue).call(
            "retry", job_ids, key=uuid.uuid4().hex
        )
        return retried

    async def discard_dead(
        self, queue: str, job_ids: builtins.list[str] | None = None
    ) -> builtins.list[str]:
        """Forget these dead jobs (all or none), or every dead job; answers their ids."""
        discarded: builtins.list[str] = await self._queue(queue).call(
            "discard", job_ids, key=uuid.uuid4().hex
        )
        return discarded

    async def stats(self, queue: str) -> dict[str, Any]:
        stats: dict[str, Any] = await self._queue(queue).call("stats")
        return stats

    async def pause(self, queue: str) -> dict[str, Any]:
        """Stop handing out jobs (running ones finish; enqueues are still taken)."""
        limits: dict[str, Any] = await self._queue(queue).call("pause")
        return limits

    async def resume(self, queue: str) -> dict[str, Any]:
        limits: dict[str, Any] = await self._queue(queue).call("resume")
        return limits

    async def configure(
        self,
        queue: str,
        *,
        concurrency: int | None = None,
        rate_limit_per_s: float | None = None,
        rate_burst: int | None = None,
    ) -> dict[str, Any]:
        """Set the queue's concurrency (None keeps it) and rate limit (None removes it)."""
        limits: dict[str, Any] = await self._queue(queue).call(
            "configure",
            concurrency=concurrency,
            rate_limit_per_s=rate_limit_per_s,
            rate_burst=rate_burst,
        )
        return limits

    async def wait(self, queue: str, job_id: str, *, timeout_s: float = 30.0) -> dict[str, Any]:
        """The job once finished (succeeded, dead or cancelled), or as it is after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            left = deadline - loop.time()
            job: dict[str, Any] = await self._queue(queue).call(
                "wait", job_id, timeout_s=max(0.0, min(left, WAIT_SLICE_S))
            )
            if JobState(job["state"]) in FINISHED or loop.time() >= deadline:
                return job

    async def result(self, queue: str, job_id: str, *, timeout_s: float = 30.0) -> Any:
        """The job's result once it succeeded; raises if it did not (in time)."""
        job = await self.wait(queue, job_id, timeout_s=timeout_s)
        if job["state"] != JobState.SUCCEEDED.value:
            raise JobDidNotSucceed(job)
        return job["result"]

    def __repr__(self) -> str:
        return f"<QueueClient queues={sorted(self._queues)}>"


class JobDidNotSucceed(Exception):
    """``result`` found the job dead, cancelled, or not finished in time."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__(f"job {job['id']} is {job['state']}: {job.get('error')}")
        self.job = job


def job_spec(handler: str, args: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """An enqueue request as the queue actor takes it (it checks everything)."""
    return {"handler": handler, "args": args, **{k: v for k, v in options.items() if v is not None}}


__all__ = [
    "JobArgsTooLarge",
    "JobDidNotSucceed",
    "JobState",
    "QueueClient",
    "QueueSettings",
    "UnknownHandler",
    "job_spec",
    "resolve_handler",
]
