"""Where a schedule's firings go: pluggable targets.

A target has a ``kind`` (the ``type`` field of a schedule's target spec) and
three jobs: ``validate`` a spec when a schedule is created or changed (refuse
bad input with a ``RealmError``, so nothing is created), ``fire`` one firing,
and, if it can, tell the ``status`` of an earlier firing (the overlap policy
asks whether the previous run is still going).

``fire`` gets an idempotency key made from the schedule id and the due time:
a firing handed over again after a crash must land once. Targets are made per
partition actor by the factories in ``TARGETS``; ``register_target`` adds one.

- ``queue``: enqueues a job on a named queue of the task queue (service 2)
  with the key as the job's ``idempotency_key``; its status is the job's state.
- ``pubsub``: publishes the payload (JSON) to a topic (service 5) with the key,
  so a repeated hand-off publishes once; no status.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import orjson

from actors.pubsub.client import PubSubClient, check_topic
from actors.queue.client import (
    JobArgsTooLarge,
    JobState,
    QueueClient,
    QueueSettings,
    resolve_handler,
)
from actors.runtime.errors import InvalidInput, TooLarge
from actors.runtime.settings import Settings
from actors.scheduler.errors import UnknownTarget
from actors.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)

#: Job states of the task queue in which a run is still going (overlap policy).
ACTIVE_JOB_STATES = frozenset(
    state.value for state in (JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING)
)
MAX_NAME_CHARS = 128


class Target(Protocol):
    kind: ClassVar[str]
    #: Whether ``status`` can tell that a firing's run is still going.
    tracks_runs: ClassVar[bool]

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The spec normalized (with ``type``); raises a RealmError to refuse it."""

    async def fire(self, spec: dict[str, Any], *, key: str) -> dict[str, Any]:
        """Hand one firing over; answers a reference to what it made (e.g. a job id)."""

    async def status(self, spec: dict[str, Any], ref: dict[str, Any]) -> str | None:
        """The state of an earlier firing's run, or None if unknown."""

    async def close(self) -> None: ...


def _name(spec: dict[str, Any], field: str) -> str:
    value = spec.get(field)
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise InvalidInput(f"target.{field} must be a name of 1 to {MAX_NAME_CHARS} characters")
    return value


def _json(value: Any, what: str, *limits: tuple[int, type[TooLarge]]) -> Any:
    """``value`` as JSON gives it back (lists for tuples, None for NaN), so that it is
    stored, answered and handed over as the same data; refused if it is not JSON or
    is larger than a limit."""
    try:
        data = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        raise InvalidInput(f"{what} must be JSON") from None
    for limit, error in limits:
        if len(data) > limit:
            raise error(f"{what} is over the size limit", size=len(data), limit=limit)
    return orjson.loads(data)


def check_handler(handler: object, allowed: str) -> str:
    """``package.module:function`` in an allowed module, importable and callable (the
    task queue's own check, so a schedule names only handlers the queue would run)."""
    resolve_handler(handler, tuple(m.strip() for m in allowed.split(",") if m.strip()))  # type: ignore[arg-type]
    return str(handler)


class QueueTarget:
    """Enqueue a job on a named queue of the task queue (service 2)."""

    kind: ClassVar[str] = "queue"
    tracks_runs: ClassVar[bool] = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = SchedulerSettings.of(settings)
        #: The queue's own settings: a job is checked against its limits and handler modules.
        self.queue_config = QueueSettings.of(settings)
        self._client: QueueClient | None = None

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        known = {"type", "queue", "handler", "args", "priority", "max_attempts", "timeout_s"}
        if extra := set(spec) - known:
            raise InvalidInput("unknown fields in a queue target", fields=sorted(extra))
        args = spec.get("args") or {}
        if not isinstance(args, dict):
            raise InvalidInput("target.args must be a JSON object")
        args = _json(
            args, "target.args", (self.queue_config.max_args_bytes, JobArgsTooLarge),
            (self.config.max_payload_bytes, TooLarge),
        )  # fmt: skip
        priority = spec.get("priority", 5)
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
            raise InvalidInput("target.priority must be an integer from 0 to 9")
        out = {
            "type": self.kind,
            "queue": _name(spec, "queue"),
            "handler": check_handler(spec.get("handler"), self.queue_config.handler_modules),
            "args": args,
            "priority": priority,
        }
        for field, kind in (("max_attempts", int), ("timeout_s", (int, float))):
            value = spec.get(field)
            if value is not None:
                positive = isinstance(value, kind) and 0 < value < math.inf
                if isinstance(value, bool) or not positive:
                    raise InvalidInput(f"target.{field} must be a positive number")
                out[field] = value
        return out

    async def _queue(self) -> QueueClient:
        if self._client is None:
            client = QueueClient(self.settings)
            await client.start()
            self._client = client
        return self._client

    async def fire(self, spec: dict[str, Any], *, key: str) -> dict[str, Any]:
        client = await self._queue()
        job = await client.enqueue(
            spec["queue"],
            spec["handler"],
            spec["args"],
            priority=spec["priority"],
            idempotency_key=key,
            max_attempts=spec.get("max_attempts"),
            timeout_s=spec.get("timeout_s"),
        )
        return {"queue": job["queue"], "job_id": job["id"], "state": job["state"]}

    async def status(self, spec: dict[str, Any], ref: dict[str, Any]) -> str | None:
        client = await self._queue()
        job = await client.get(ref["queue"], ref["job_id"])
        return str(job["state"])

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class PubSubTarget:
    """Publish a JSON payload to a pub/sub topic (service 5)."""

    kind: ClassVar[str] = "pubsub"
    tracks_runs: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = SchedulerSettings.of(settings)
        self._client: PubSubClient | None = None

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        if extra := set(spec) - {"type", "topic", "payload"}:
            raise InvalidInput("unknown fields in a pubsub target", fields=sorted(extra))
        topic = _name(spec, "topic")
        check_topic(topic)
        limit = (self.config.max_payload_bytes, TooLarge)
        payload = _json(spec.get("payload"), "target.payload", limit)
        return {"type": self.kind, "topic": topic, "payload": payload}

    async def fire(self, spec: dict[str, Any], *, key: str) -> dict[str, Any]:
        if self._client is None:
            client = PubSubClient(self.settings)
            await client.start()
            self._client = client
        # The key makes a repeated hand-off publish once.
        seq, _ = await self._client.publish(
            spec["topic"], orjson.dumps(spec["payload"]), key=f"sched:{key}"
        )
        return {"topic": spec["topic"], "seq": seq}

    async def status(self, spec: dict[str, Any], ref: dict[str, Any]) -> str | None:
        return None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


#: Target factories by kind; a partition actor makes one target of each.
TARGETS: dict[str, Callable[[Settings], Target]] = {
    QueueTarget.kind: QueueTarget,
    PubSubTarget.kind: PubSubTarget,
}


def register_target(kind: str, factory: Callable[[Settings], Target]) -> None:
    TARGETS[kind] = factory


def make_targets(settings: Settings) -> dict[str, Target]:
    return {kind: factory(settings) for kind, factory in TARGETS.items()}


async def run_going(target: Target, spec: dict[str, Any], ref: dict[str, Any]) -> bool:
    """Whether the run ``ref`` names (an earlier firing's) is still going, as ``target``
    tells; False when it cannot tell, so that a target away holds no schedule back."""
    try:
        state = await target.status(spec, ref)
    except Exception as error:
        log.warning("status of %r at its %s target failed: %r", ref, target.kind, error)
        return False
    return state in ACTIVE_JOB_STATES


def validate_target(targets: dict[str, Target], spec: object) -> dict[str, Any]:
    """The target spec normalized by its target; ``UnknownTarget`` if no target has its type."""
    if not isinstance(spec, dict):
        raise InvalidInput("target must be an object with a 'type'")
    target = targets.get(spec.get("type"))  # type: ignore[arg-type]
    if target is None:
        raise UnknownTarget(type=str(spec.get("type"))[:64], known=sorted(targets))
    return target.validate(spec)


__all__ = [
    "ACTIVE_JOB_STATES",
    "TARGETS",
    "PubSubTarget",
    "QueueTarget",
    "Target",
    "check_handler",
    "make_targets",
    "register_target",
    "run_going",
    "validate_target",
]
