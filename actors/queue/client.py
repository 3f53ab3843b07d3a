"""The task queue's Python API, for the HTTP ingress and for other services.

Queues belong to owners (a user id: the HTTP front passes the caller's): every
call names the ``owner``, and a queue is found by owner and name, so one
owner's ``emails`` is never another's. A queue is created explicitly
(``create``, within the owner's quota) and deleted explicitly (``delete``);
any other call on a queue that does not exist for that owner raises
``QueueNotFound`` and starts nothing. The queue directory
(``actors.queue.directory``) knows the queues and starts their actors; this
client keeps the actors it was told of, and asks again when one died (it may
have been deleted).

Single enqueues that arrive together are coalesced into batched actor calls
(one in flight per queue; the next carries everything that queued
meanwhile), so a burst of ``enqueue`` calls costs a few actor calls, not one
each. Every call that changes jobs carries a fresh call key, so Ray's retry
of a call in flight when the queue actor restarted applies once (and answers
as the first did, not with "already cancelled"). Pause, resume and configure
are idempotent by themselves.

    queue = QueueClient(settings)
    await queue.start()
    await queue.create("emails", owner=user_id)
    job = await queue.enqueue("emails", "actors.queue.handlers:echo", {"to": "ada"}, owner=user_id)
    done = await queue.wait("emails", job["id"], owner=user_id, timeout_s=10)

It also offers what other services need of the queue's rules, so they check a
job as the queue would: ``QueueSettings`` (its section of the settings),
``resolve_handler`` and ``JobState``, and the errors ``JobArgsTooLarge``,
``UnknownHandler`` and ``QueueNotFound``.
"""

from __future__ import annotations

import asyncio
import builtins
import uuid
from collections import OrderedDict
from typing import Any

from ray.exceptions import ActorDiedError

from actors.queue.directory import DIRECTORY_NAME, QueueDirectoryActor, check_owner
from actors.queue.errors import JobArgsTooLarge, QueueNotFound, UnknownHandler
from actors.queue.jobqueue import check_limits
from actors.queue.model import FINISHED, JobState, check_queue_name, resolve_handler
from actors.queue.settings import QueueSettings
from actors.runtime.batching import Coalescer
from actors.runtime.errors import InvalidInput, RealmError
from actors.runtime.settings import Settings
from actors.runtime.supervision import ActorRef, call

#: Longest a single ``wait`` call holds the queue actor; ``wait`` loops for longer waits.
WAIT_SLICE_S = 30.0
#: Queues whose actor (and enqueue coalescer) one client keeps at most; the least
#: recently used is dropped (and asked for again when next used).
QUEUES_REMEMBERED = 10_000


class _Queue:
    """One owner's queue as this client knows it: its actor and its enqueue coalescer."""

    def __init__(self, client: QueueClient, owner: str, name: str) -> None:
        self.client, self.owner, self.name = client, owner, name
        self.handle: Any = None
        self.enqueuer: Coalescer[dict[str, Any], Any] = Coalescer(
            self._send, max_batch=client.config.max_batch_jobs
        )

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the queue's actor; ``QueueNotFound`` once the queue is gone."""
        stale = False
        for _ in range(3):
            if self.handle is None or stale:
                self.handle = await self.client.directory.call(
                    "lookup", self.owner, self.name, stale=stale
                )
            try:
                return await call(self.handle, method, *args, **kwargs)
            except ActorDiedError:  # deleted, or killed for good: ask the directory again
                stale = True
        raise QueueNotFound(queue=self.name)

    async def _send(self, specs: list[dict[str, Any]]) -> list[Any]:
        answers: list[Any] = await self.call("enqueue", specs, key=uuid.uuid4().hex, atomic=False)
        return answers


class QueueClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = QueueSettings.of(settings)
        self.directory = ActorRef(
            QueueDirectoryActor, DIRECTORY_NAME, settings, namespace=settings.namespace
        )
        self._queues: OrderedDict[tuple[str, str], _Queue] = OrderedDict()

    async def start(self) -> None:
        """Start (or find) the queue directory; queue actors start when first used."""
        await self.directory.call("ping")

    async def close(self) -> None:
        self._queues.clear()

    def _queue(self, queue: str, owner: str) -> _Queue:
        found = self._queues.get((owner, queue))
        if found is None:
            check_owner(owner)
            check_queue_name(queue)
            found = self._queues[(owner, queue)] = _Queue(self, owner, queue)
            while len(self._queues) > QUEUES_REMEMBERED:
                self._queues.popitem(last=False)
        else:
            self._queues.move_to_end((owner, queue))
        return found

    # --- queues --------------------------------------------------------------

    async def create(
        self,
        queue: str,
        *,
        owner: str,
        concurrency: int | None = None,
        rate_limit_per_s: float | None = None,
        rate_burst: int | None = None,
    ) -> dict[str, Any]:
        """Create ``owner``'s queue (or find it, and then set these limits if given).

        Answers the queue's ``info`` and ``created`` (whether it is new). Refused with
        ``LimitReached`` when the owner already holds ``max_queues_per_owner`` queues.
        """
        check_owner(owner)
        check_queue_name(queue)
        configured = (concurrency, rate_limit_per_s, rate_burst) != (None, None, None)
        if configured:
            check_limits(concurrency, rate_limit_per_s, rate_burst)
        entry, created = await self.directory.call("create", owner, queue, key=uuid.uuid4().hex)
        if configured:
            limits = await self.configure(
                queue,
                owner=owner,
                concurrency=concurrency,
                rate_limit_per_s=rate_limit_per_s,
                rate_burst=rate_burst,
            )
        elif created:  # a new queue has the defaults; its actor starts when first used
            limits = {
                "queue": queue,
                "paused": False,
                "concurrency": self.config.concurrency,
                "rate_limit_per_s": None,
                "rate_burst": None,
            }
        else:
            limits = await self._queue(queue, owner).call("info")
        return {**limits, "created_at": entry["created_at"], "created": created}

    async def info(self, queue: str, *, owner: str) -> dict[str, Any]:
        """The queue's limits and when it was created; ``QueueNotFound`` if it does not exist."""
        entry = await self.directory.call("get", owner, queue)
        limits: dict[str, Any] = await self._queue(queue, owner).call("info")
        return {**limits, "created_at": entry["created_at"]}

    async def exists(self, queue: str, *, owner: str) -> bool:
        try:
            await self.directory.call("get", owner, queue)
        except QueueNotFound:
            return False
        return True

    async def list_queues(self, *, owner: str) -> builtins.list[dict[str, Any]]:
        """``owner``'s queues by name: ``{"queue", "created_at"}`` each."""
        entries = await self.directory.call("list_queues", owner)
        return [{"queue": e["queue"], "created_at": e["created_at"]} for e in entries]

    async def delete(self, queue: str, *, owner: str) -> bool:
        """Delete ``owner``'s queue and every job in it (running ones are stopped);
        ``QueueNotFound`` if it does not exist. Frees a place in the owner's quota."""
        check_owner(owner)
        check_queue_name(queue)
        deleted = bool(await self.directory.call("delete", owner, queue, key=uuid.uuid4().hex))
        self._queues.pop((owner, queue), None)
        return deleted

    async def actor_name(self, queue: str, *, owner: str) -> str:
        """The name of the queue's actor (for operators and tests)."""
        entry = await self.directory.call("get", owner, queue)
        return str(entry["actor"])

    # --- jobs ----------------------------------------------------------------

    async def enqueue(
        self,
        queue: str,
        handler: str,
        args: dict[str, Any] | None = None,
        *,
        owner: str,
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
        [answer] = await self._queue(queue, owner).enqueuer.submit([spec])
        if isinstance(answer, RealmError):
            raise answer
        job: dict[str, Any] = answer
        return job

    async def enqueue_many(
        self, queue: str, jobs: builtins.list[dict[str, Any]], *, owner: str
    ) -> builtins.list[dict[str, Any]]:
        """Enqueue a batch, all or nothing: each item has ``handler`` and the keyword
        arguments of ``enqueue``. A refusal names the ``index`` of the bad item."""
        if not isinstance(jobs, list):
            raise InvalidInput("jobs must be a list")
        answers: builtins.list[dict[str, Any]] = await self._queue(queue, owner).call(
            "enqueue", jobs, key=uuid.uuid4().hex, atomic=True
        )
        return answers

    async def get(self, queue: str, job_id: str, *, owner: str) -> dict[str, Any]:
        job: dict[str, Any] = await self._queue(queue, owner).call("get", job_id)
        return job

    async def list(
        self,
        queue: str,
        state: str | None = None,
        *,
        owner: str,
        offset: int = 0,
        limit: int = 100,
    ) -> dict[str, Any]:
        """A page of jobs: ``{"jobs", "total", "next_offset"}`` (null on the last page)."""
        page: dict[str, Any] = await self._queue(queue, owner).call(
            "list_jobs", state, offset=offset, limit=limit
        )
        return page

    async def cancel(self, queue: str, job_id: str, *, owner: str) -> dict[str, Any]:
        """Cancel a job that has not finished (a running one is stopped if it can be)."""
        job: dict[str, Any] = await self._queue(queue, owner).call(
            "cancel", job_id, key=uuid.uuid4().hex
        )
        return job

    async def retry(self, queue: str, job_id: str, *, owner: str) -> dict[str, Any]:
        """Run a dead job again, with fresh attempts."""
        await self._queue(queue, owner).call("retry", [job_id], key=uuid.uuid4().hex)
        return await self.get(queue, job_id, owner=owner)

    async def retry_dead(
        self, queue: str, job_ids: builtins.list[str] | None = None, *, owner: str
    ) -> builtins.list[str]:
        """Retry these dead jobs (all or none), or every dead job; answers their ids."""
        retried: builtins.list[str] = await self._queue(queue, owner).call(
            "retry", job_ids, key=uuid.uuid4().hex
        )
        return retried

    async def discard_dead(
        self, queue: str, job_ids: builtins.list[str] | None = None, *, owner: str
    ) -> builtins.list[str]:
        """Forget these dead jobs (all or none), or every dead job; answers their ids."""
        discarded: builtins.list[str] = await self._queue(queue, owner).call(
            "discard", job_ids, key=uuid.uuid4().hex
        )
        return discarded

    async def stats(self, queue: str, *, owner: str) -> dict[str, Any]:
        stats: dict[str, Any] = await self._queue(queue, owner).call("stats")
        return stats

    async def pause(self, queue: str, *, owner: str) -> dict[str, Any]:
        """Stop handing out jobs (running ones finish; enqueues are still taken)."""
        limits: dict[str, Any] = await self._queue(queue, owner).call("pause")
        return limits

    async def resume(self, queue: str, *, owner: str) -> dict[str, Any]:
        limits: dict[str, Any] = await self._queue(queue, owner).call("resume")
        return limits

    async def configure(
        self,
        queue: str,
        *,
        owner: str,
        concurrency: int | None = None,
        rate_limit_per_s: float | None = None,
        rate_burst: int | None = None,
    ) -> dict[str, Any]:
        """Set the queue's concurrency (None keeps it) and rate limit (None removes it)."""
        check_limits(concurrency, rate_limit_per_s, rate_burst)
        limits: dict[str, Any] = await self._queue(queue, owner).call(
            "configure",
            concurrency=concurrency,
            rate_limit_per_s=rate_limit_per_s,
            rate_burst=rate_burst,
        )
        return limits

    async def wait(
        self, queue: str, job_id: str, *, owner: str, timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """The job once finished (succeeded, dead or cancelled), or as it is after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        ref = self._queue(queue, owner)
        while True:
            left = deadline - loop.time()
            job: dict[str, Any] = await ref.call(
                "wait", job_id, timeout_s=max(0.0, min(left, WAIT_SLICE_S))
            )
            if JobState(job["state"]) in FINISHED or loop.time() >= deadline:
                return job

    async def result(self, queue: str, job_id: str, *, owner: str, timeout_s: float = 30.0) -> Any:
        """The job's result once it succeeded; raises if it did not (in time)."""
        job = await self.wait(queue, job_id, owner=owner, timeout_s=timeout_s)
        if job["state"] != JobState.SUCCEEDED.value:
            raise JobDidNotSucceed(job)
        return job["result"]

    def __repr__(self) -> str:
        return f"<QueueClient queues={len(self._queues)}>"


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
    "QueueNotFound",
    "QueueSettings",
    "UnknownHandler",
    "job_spec",
    "resolve_handler",
]
