"""The task queue's vocabulary: job states, the job record, a queue's config,
the backoff schedule, handler resolution, and what the dispatcher talks to
(a ``WorkerPool``, the global ``Slots``, a ``TokenBucket`` rate limit).

Shared by the queue (``actors.queue.jobqueue``), its workers (``actors.queue.workers``)
and its clients, without importing Ray.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from operator import attrgetter
from typing import Any, Protocol

from actors.queue.errors import UnknownHandler
from actors.runtime.errors import InvalidInput
from actors.runtime.settings import Settings

QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class JobState(str, Enum):
    #: Waiting for its ``run_at``.
    SCHEDULED = "scheduled"
    #: Ready: handed to a worker when concurrency, rate limit and pause allow.
    QUEUED = "queued"
    #: Leased to a worker.
    RUNNING = "running"
    #: Done; its result is kept for ``result_ttl_s``.
    SUCCEEDED = "succeeded"
    #: An attempt failed; it runs again at ``run_at``.
    FAILED = "failed"
    #: Attempts used up: kept for ``dead_ttl_s`` to be retried or discarded by hand.
    DEAD = "dead"
    #: Cancelled before it finished; a running attempt's outcome is ignored.
    CANCELLED = "cancelled"


FINISHED = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})
WAITING = frozenset({JobState.SCHEDULED, JobState.FAILED})

#: What a worker runs: (id, attempt, handler, args, timeout_s, idempotency_key, queue).
Work = tuple[str, int, str, dict[str, Any], float, str, str]
#: What a worker answers per job: (id, attempt, ok, result, error, started_at, finished_at).
Outcome = tuple[str, int, bool, Any, str | None, float, float]


def check_queue_name(name: str) -> str:
    if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
        raise InvalidInput(
            "a queue name is 1-64 letters, digits, '_', '.', ':' or '-', starting with "
            "a letter or digit",
            queue=str(name)[:80],
        )
    return name


def queue_actor_name(queue: str) -> str:
    return f"queue-{queue}"


def backoff_s(job_id: str, attempt: int, base_s: float, max_s: float) -> float:
    """Wait before retry ``attempt + 1``: between half and all of min(base * 2^(attempt-1), max).

    The jitter comes from a hash of the job id and attempt, so replay agrees.
    """
    ceiling = min(max_s, base_s * 2.0 ** min(attempt - 1, 64))
    digest = hashlib.blake2b(f"{job_id}:{attempt}".encode(), digest_size=8).digest()
    return ceiling * (0.5 + 0.5 * int.from_bytes(digest, "big") / 2**64)


# --- handlers ---------------------------------------------------------------


@dataclass(frozen=True)
class Handler:
    fn: Callable[..., Any]
    is_async: bool
    wants_job: bool  #: the function takes a ``job`` keyword: it gets a ``JobContext``


def resolve_handler(path: str, allowed_modules: tuple[str, ...]) -> Handler:
    """Import ``package.module:function``; it must be callable and in an allowed module."""
    if not isinstance(path, str) or path.count(":") != 1:
        raise UnknownHandler("a handler is 'package.module:function'", handler=str(path)[:200])
    module_name, _, attr = path.partition(":")
    if not any(module_name == m or module_name.startswith(m + ".") for m in allowed_modules):
        raise UnknownHandler(
            "the handler's module is not allowed (REALM_QUEUE_HANDLER_MODULES)",
            handler=path,
            allowed=list(allowed_modules),
        )
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise UnknownHandler(
            "the handler does not import", handler=path, error=str(error)
        ) from None
    if not callable(fn) or attr.startswith("_"):
        raise UnknownHandler("the handler is not a public callable", handler=path)
    try:
        wants_job = "job" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        wants_job = False
    return Handler(fn, inspect.iscoroutinefunction(fn), wants_job)


class HandlerCache:
    def __init__(self, allowed_modules: str | tuple[str, ...]) -> None:
        if isinstance(allowed_modules, str):
            allowed_modules = tuple(m.strip() for m in allowed_modules.split(",") if m.strip())
        self.allowed = allowed_modules
        self._found: dict[str, Handler] = {}

    def get(self, path: str) -> Handler:
        handler = self._found.get(path)
        if handler is None:
            handler = self._found[path] = resolve_handler(path, self.allowed)
        return handler


# --- configuration and records ------------------------------------------------


@dataclass
class QueueConfig:
    """A queue's defaults (from ``Settings``); concurrency and rate are per queue at runtime."""

    concurrency: int = 64
    rate_limit_per_s: float | None = None
    rate_burst: int | None = None
    batch_max: int = 256
    visibility_timeout_s: float = 30.0
    max_attempts: int = 5
    timeout_s: float = 300.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    result_ttl_s: float = 3_600.0
    dead_ttl_s: float = 7 * 86_400.0
    unique_for_s: float = 3_600.0
    max_args_bytes: int = 64 * 1024
    max_batch_jobs: int = 1_000
    max_finished_jobs: int = 100_000
    handler_modules: str = "actors.queue.handlers"

    @classmethod
    def from_settings(cls, s: Settings) -> QueueConfig:
        return cls(
            concurrency=s.queue_concurrency,
            batch_max=s.queue_batch_max,
            visibility_timeout_s=s.queue_visibility_timeout_s,
            max_attempts=s.queue_max_attempts,
            timeout_s=s.queue_job_timeout_s,
            backoff_base_s=s.queue_backoff_base_s,
            backoff_max_s=s.queue_backoff_max_s,
            result_ttl_s=s.queue_result_ttl_s,
            dead_ttl_s=s.queue_dead_ttl_s,
            unique_for_s=s.queue_unique_for_s,
            max_args_bytes=s.queue_max_args_bytes,
            max_batch_jobs=s.queue_max_batch_jobs,
            max_finished_jobs=s.queue_max_finished_jobs,
            handler_modules=s.queue_handler_modules,
        )


@dataclass(slots=True)
class Job:
    id: str
    queue: str
    handler: str
    args: dict[str, Any]
    priority: int
    max_attempts: int
    timeout_s: float
    enqueued_at: float
    run_at: float  #: when it is (or was) due: enqueue, delay, or the retry's backoff
    unique_key: str | None
    idempotency_key: str | None
    state: JobState = JobState.QUEUED
    attempts: int = 0
    ready_seq: int = 0  #: FIFO order among equal priorities; stale heap entries differ
    started_at: float | None = None
    finished_at: float | None = None
    lease_until: float | None = None
    result: Any = None
    error: str | None = None
    progress: Any = None
    expires_at: float | None = None  #: when a finished job is pruned

    def to_dict(self) -> dict[str, Any]:
        doc = {name: getattr(self, name) for name in JOB_FIELDS}
        doc["state"] = self.state.value
        return doc

    def __reduce__(self) -> tuple[Any, ...]:
        # A flat tuple pickles in about 60% of the time of a slotted
        # dataclass's default state, and snapshots hold every job.
        return (_rebuild_job, _job_values(self))


JOB_FIELDS = tuple(f.name for f in fields(Job))
_job_values = attrgetter(*JOB_FIELDS)


def _rebuild_job(*values: Any) -> Job:
    job = Job.__new__(Job)
    for name, value in zip(JOB_FIELDS, values, strict=True):
        object.__setattr__(job, name, value)
    return job


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


__all__ = [
    "FINISHED",
    "JOB_FIELDS",
    "WAITING",
    "Handler",
    "HandlerCache",
    "Job",
    "JobState",
    "Outcome",
    "QueueConfig",
    "Slots",
    "TokenBucket",
    "Work",
    "WorkerPool",
    "backoff_s",
    "check_queue_name",
    "queue_actor_name",
    "resolve_handler",
]
