"""The task queue's vocabulary: job states, the job record and the enqueue spec
that makes one, the checks an enqueue request goes through, the backoff
schedule, and handler resolution.

Shared by the queue (``actors.queue.jobqueue``), its dispatcher and workers,
and its clients, without importing Ray. ``Job`` and ``JobSpec`` are msgspec
Structs encoded as arrays: a queue's records and snapshots hold them by the
thousand, and a flat array is the fastest and smallest form of them.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

import msgspec
import orjson

from actors.queue.errors import JobArgsTooLarge, UnknownHandler
from actors.queue.settings import QueueSettings
from actors.runtime.errors import InvalidInput

QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
#: Longest unique or idempotency key.
MAX_KEY_CHARS = 256
#: Longest handler path.
MAX_HANDLER_CHARS = 256

F = TypeVar("F", bound=Callable[..., Any])


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


#: Internal actors of the queue service are named ``queue-<what>``; a user's queue is
#: ``queue/<owner>/<name>/<incarnation>``. A queue name cannot contain '/', so no queue a
#: user names can ever be called like an internal actor (``queue-slots``, ``queue-directory``).
INTERNAL_PREFIX = "queue-"
USER_PREFIX = "queue/"
#: Largest per-queue limits a caller may set (``configure``).
MAX_CONCURRENCY = 10_000
MAX_RATE_PER_S = 1_000_000.0
MAX_RATE_BURST = 1_000_000


def queue_actor_name(owner: str, queue: str, incarnation: str) -> str:
    """The actor (and journal stream) of ``owner``'s queue ``queue``; ``incarnation`` is
    new each time the queue is created, so a queue made again after a delete never meets
    what is left of the old one."""
    return f"{USER_PREFIX}{owner}/{queue}/{incarnation}"


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


#: The attribute ``job_handler`` sets on a function it marks.
HANDLER_MARK = "__realm_job_handler__"


def job_handler(fn: F) -> F:
    """Mark ``fn`` as a job handler of the module that holds it, though it was defined
    elsewhere (re-exported on purpose). Without the mark, only functions defined in
    the module a job names may run."""
    setattr(fn, HANDLER_MARK, True)
    return fn


def resolve_handler(path: str, allowed_modules: tuple[str, ...]) -> Handler:
    """Import ``package.module:function``: a public function defined in that module (or
    marked with ``job_handler``), the module one of the allowed ones or under one.

    A name the module merely imported (``from os import system``, ``import subprocess``
    then ``subprocess.run`` is no attribute path a job can name, but ``run`` imported
    by name is) is refused: an allowed module lends only its own functions.
    """
    if not isinstance(path, str) or path.count(":") != 1 or len(path) > MAX_HANDLER_CHARS:
        raise UnknownHandler("a handler is 'package.module:function'", handler=str(path)[:200])
    module_name, _, attr = path.partition(":")
    if not any(module_name == m or module_name.startswith(m + ".") for m in allowed_modules):
        raise UnknownHandler(
            "the handler's module is not allowed (REALM_QUEUE_HANDLER_MODULES)",
            handler=path,
            allowed=list(allowed_modules),
        )
    if not attr.isidentifier() or attr.startswith("_"):
        raise UnknownHandler("the handler is not a public function", handler=path)
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        raise UnknownHandler("the handler does not import", handler=path) from None
    own = inspect.isfunction(fn) and getattr(fn, "__module__", None) == module_name
    if not (own or (callable(fn) and getattr(fn, HANDLER_MARK, False) is True)):
        raise UnknownHandler(
            "the handler is not a function defined in its module (nor marked a handler)",
            handler=path,
        )
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


# --- records ------------------------------------------------------------------


class JobFields(msgspec.Struct, array_like=True):
    """What an enqueue decides about a job: a ``JobSpec`` carries it, a ``Job`` keeps it."""

    id: str
    queue: str
    handler: str
    args: dict[str, Any]
    priority: int
    max_attempts: int
    timeout_s: float
    run_at: float  #: when it is (or was) due: enqueue, delay, or the retry's backoff
    unique_key: str | None
    idempotency_key: str | None


#: How many leading fields a ``Job`` shares with a ``JobSpec``.
_SHARED = len(JobFields.__struct_fields__)


class Job(JobFields):
    """One job as the queue keeps it (and its snapshots store it)."""

    enqueued_at: float
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
        doc = msgspec.structs.asdict(self)
        doc["state"] = self.state.value
        return doc


class JobSpec(JobFields):
    """A checked enqueue request (``prepare``): what an ``enqueue`` record carries per job."""

    unique_for_s: float

    def job(self, enqueued_at: float) -> Job:
        # The shared fields lead both structs, in the same order: pass them as they stand.
        return Job(*msgspec.structs.astuple(self)[:_SHARED], enqueued_at)  # type: ignore[call-arg]


def prepare(
    spec: dict[str, Any], *, queue: str, now: float, config: QueueSettings, handlers: HandlerCache
) -> JobSpec:
    """Check one enqueue request (a ``job_spec`` dict) and make it a ``JobSpec``."""
    handler = spec.get("handler")
    handlers.get(handler)  # type: ignore[arg-type]
    args = spec.get("args") or {}
    if not isinstance(args, dict):
        raise InvalidInput("args must be a JSON object", type=type(args).__name__)
    try:
        encoded = orjson.dumps(args)
    except (TypeError, orjson.JSONEncodeError) as error:
        raise InvalidInput("args must be JSON", error=str(error)) from None
    if len(encoded) > config.max_args_bytes:
        raise JobArgsTooLarge(size=len(encoded), limit=config.max_args_bytes)
    priority = spec.get("priority", 5)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 9:
        raise InvalidInput("priority must be an integer 0-9", priority=priority)
    delay_s, run_at = spec.get("delay_s"), spec.get("run_at")
    if delay_s is not None and run_at is not None:
        raise InvalidInput("give delay_s or run_at, not both")
    horizon = config.max_delay_s
    if delay_s is not None:
        if not _number(delay_s) or not 0 <= delay_s <= horizon:
            raise InvalidInput(f"delay_s must be a number from 0 to {horizon:g}", delay_s=delay_s)
        run_at = now + delay_s
    elif run_at is not None and (not _number(run_at) or run_at > now + horizon):
        raise InvalidInput(
            f"run_at must be a Unix time in seconds, at most {horizon:g} s ahead", run_at=run_at
        )
    max_attempts = _default(spec.get("max_attempts"), config.max_attempts)
    if (
        not isinstance(max_attempts, int)
        or isinstance(max_attempts, bool)
        or not 1 <= max_attempts <= 1_000
    ):
        raise InvalidInput("max_attempts must be an integer 1-1000", value=max_attempts)
    timeout_s = spec.get("timeout_s")
    if timeout_s is None:
        timeout_s = min(config.job_timeout_s, config.max_job_timeout_s)
    unique_for_s = spec.get("unique_for_s")
    if unique_for_s is None:
        unique_for_s = min(config.unique_for_s, horizon)
    for name, value, most in (
        ("timeout_s", timeout_s, config.max_job_timeout_s),
        ("unique_for_s", unique_for_s, horizon),
    ):
        if not _number(value) or not 0 < value <= most:
            raise InvalidInput(f"{name} must be a number > 0 and at most {most:g}", value=value)
    unique_key, idempotency_key = spec.get("unique_key"), spec.get("idempotency_key")
    for name, value in (("unique_key", unique_key), ("idempotency_key", idempotency_key)):
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidInput(f"{name} must be a non-empty string", value=value)
        if value is not None and len(value) > MAX_KEY_CHARS:
            raise InvalidInput(f"{name} is longer than {MAX_KEY_CHARS} characters")
    return JobSpec(
        id=uuid.uuid4().hex,
        queue=queue,
        handler=handler,  # type: ignore[arg-type]
        # as JSON reads it back, so that the job holds what its journal replays
        args=orjson.loads(encoded) if args else args,
        priority=priority,
        max_attempts=max_attempts,
        timeout_s=float(timeout_s),
        run_at=float(run_at if run_at is not None else now),
        unique_key=unique_key,
        idempotency_key=idempotency_key,
        unique_for_s=float(unique_for_s),
    )


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


__all__ = [
    "FINISHED",
    "INTERNAL_PREFIX",
    "MAX_CONCURRENCY",
    "MAX_RATE_BURST",
    "MAX_RATE_PER_S",
    "USER_PREFIX",
    "WAITING",
    "Handler",
    "HandlerCache",
    "Job",
    "JobFields",
    "JobSpec",
    "JobState",
    "Outcome",
    "Work",
    "backoff_s",
    "check_queue_name",
    "job_handler",
    "prepare",
    "queue_actor_name",
    "resolve_handler",
]
