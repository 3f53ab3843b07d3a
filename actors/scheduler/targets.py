"""Where a schedule's firings go: pluggable targets.

A target has a ``kind`` (the ``type`` field of a schedule's target spec) and
four jobs: ``validate`` a spec when a schedule is created or changed (refuse
bad input with a ``RealmError``, so nothing is created), ``authorize`` it for
the schedule's owner (then too: a schedule can do only what its owner may),
``fire`` one firing, on the owner's behalf, and, if it can, tell the
``status`` of an earlier firing (the overlap policy asks whether the previous
run is still going).

A firing acts for the schedule's owner, never with more rights than they
have: its principal (``owner_principal``) is the owner's user id, with no
roles and only the target's scope. The owner's rights are checked when the
schedule is created or changed and again at every firing, so a right lost
since (a queue deleted, an ACL hook that now says no) stops the firings,
each recorded as failed.

``fire`` gets an idempotency key made from the schedule id and the due time:
a firing handed over again after a crash must land once. Targets are made per
partition actor by the factories in ``TARGETS``; ``register_target`` adds one.

- ``queue``: enqueues a job on one of the owner's queues of the task queue
  (service 2) with the key as the job's ``idempotency_key``; its status is the
  job's state. A queue the owner does not have (someone else's included) is
  refused as absent (404).
- ``pubsub``: publishes the payload (JSON) to a topic (service 5) with the key,
  so a repeated hand-off publishes once; no status. The topic must pass the
  pub/sub ACL for the owner (``Acl.check_publish``): another user's private
  topics (``user.<id>.``) are refused (403).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import orjson

from actors.auth.client import Principal
from actors.pubsub.client import Acl, PubSubClient, check_topic, load_hook
from actors.queue.client import (
    JobArgsTooLarge,
    JobState,
    QueueClient,
    QueueNotFound,
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
#: A firing's session id, as an ACL hook sees it.
FIRING_SESSION = "scheduler"


class Target(Protocol):
    kind: ClassVar[str]
    #: The scope an API key needs to make a schedule fire here (besides ``scheduler:write``).
    scope: ClassVar[str]
    #: Whether ``status`` can tell that a firing's run is still going.
    tracks_runs: ClassVar[bool]

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The spec normalized (with ``type``); raises a RealmError to refuse it."""

    async def authorize(self, spec: dict[str, Any], owner: str | None) -> None:
        """Raise a RealmError if ``owner`` may not have a schedule fire ``spec``
        (a normalized spec); checked when a schedule is created or changed."""

    async def fire(self, spec: dict[str, Any], *, key: str, owner: str | None) -> dict[str, Any]:
        """Hand one firing over, as ``owner``; answers a reference to what it made (e.g. a
        job id). Raises a RealmError below 500 if the owner may not (any more)."""

    async def status(
        self, spec: dict[str, Any], ref: dict[str, Any], *, owner: str | None
    ) -> str | None:
        """The state of an earlier firing's run, or None if unknown."""

    async def close(self) -> None: ...


def owner_principal(owner: str | None, scope: str) -> Principal:
    """Who a firing acts as: the schedule's owner, with no roles and only ``scope``
    (a schedule without an owner, made by a trusted caller, is nobody: no user id)."""
    return Principal(
        user_id=owner or "",
        username="",
        roles=(),
        session_id=FIRING_SESSION,
        scopes=frozenset({scope}),
    )


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
    scope: ClassVar[str] = "queue:enqueue"
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
        limits = (
            ("max_attempts", int, 1_000),
            ("timeout_s", (int, float), self.queue_config.max_job_timeout_s),
        )
        for field, kind, most in limits:
            value = spec.get(field)
            if value is not None:
                positive = isinstance(value, kind) and 0 < value <= most < math.inf
                if isinstance(value, bool) or not positive:
                    raise InvalidInput(f"target.{field} must be a positive number up to {most:g}")
                out[field] = value
        return out

    async def authorize(self, spec: dict[str, Any], owner: str | None) -> None:
        """The owner must have the queue (a queue of someone else's is absent to them)."""
        if owner is None:
            raise QueueNotFound(queue=spec["queue"])
        client = await self._queue()
        if not await client.exists(spec["queue"], owner=owner):
            raise QueueNotFound(queue=spec["queue"])

    async def _queue(self) -> QueueClient:
        if self._client is None:
            client = QueueClient(self.settings)
            await client.start()
            self._client = client
        return self._client

    async def fire(self, spec: dict[str, Any], *, key: str, owner: str | None) -> dict[str, Any]:
        if owner is None:
            raise QueueNotFound(queue=spec["queue"])
        client = await self._queue()
        # On the owner's queue only: another user's queue of that name is not theirs.
        job = await client.enqueue(
            spec["queue"],
            spec["handler"],
            spec["args"],
            owner=owner,
            priority=spec["priority"],
            idempotency_key=key,
            max_attempts=spec.get("max_attempts"),
            timeout_s=spec.get("timeout_s"),
        )
        return {"queue": job["queue"], "job_id": job["id"], "state": job["state"]}

    async def status(
        self, spec: dict[str, Any], ref: dict[str, Any], *, owner: str | None
    ) -> str | None:
        if owner is None:
            return None
        client = await self._queue()
        job = await client.get(ref["queue"], ref["job_id"], owner=owner)
        return str(job["state"])

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class PubSubTarget:
    """Publish a JSON payload to a pub/sub topic (service 5)."""

    kind: ClassVar[str] = "pubsub"
    scope: ClassVar[str] = "pubsub:publish"
    tracks_runs: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = SchedulerSettings.of(settings)
        self._client: PubSubClient | None = None
        # Pub/sub's own rules and hook (``REALM_PUBSUB_ACL_HOOK``), read as pub/sub reads them.
        pubsub = settings.sections.get("pubsub")
        self.acl = Acl(load_hook(getattr(pubsub, "acl_hook", "")))

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        if extra := set(spec) - {"type", "topic", "payload"}:
            raise InvalidInput("unknown fields in a pubsub target", fields=sorted(extra))
        topic = _name(spec, "topic")
        check_topic(topic)
        limit = (self.config.max_payload_bytes, TooLarge)
        payload = _json(spec.get("payload"), "target.payload", limit)
        return {"type": self.kind, "topic": topic, "payload": payload}

    def _check(self, spec: dict[str, Any], owner: str | None) -> None:
        self.acl.check_publish(owner_principal(owner, self.scope), spec["topic"])

    async def authorize(self, spec: dict[str, Any], owner: str | None) -> None:
        """The owner must be allowed to publish to the topic (pub/sub's ACL)."""
        self._check(spec, owner)

    async def fire(self, spec: dict[str, Any], *, key: str, owner: str | None) -> dict[str, Any]:
        self._check(spec, owner)  # again: a hook may say no now
        if self._client is None:
            client = PubSubClient(self.settings)
            await client.start()
            self._client = client
        # The key makes a repeated hand-off publish once.
        seq, _ = await self._client.publish(
            spec["topic"], orjson.dumps(spec["payload"]), key=f"sched:{key}"
        )
        return {"topic": spec["topic"], "seq": seq}

    async def status(
        self, spec: dict[str, Any], ref: dict[str, Any], *, owner: str | None
    ) -> str | None:
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


def target_scope(kind: object) -> str | None:
    """The scope a key needs to have schedules fire into targets of ``kind`` (None: unknown)."""
    factory = TARGETS.get(kind) if isinstance(kind, str) else None
    scope = getattr(factory, "scope", None)
    return scope if isinstance(scope, str) else None


def make_targets(settings: Settings) -> dict[str, Target]:
    return {kind: factory(settings) for kind, factory in TARGETS.items()}


async def run_going(
    target: Target, spec: dict[str, Any], ref: dict[str, Any], *, owner: str | None
) -> bool:
    """Whether the run ``ref`` names (an earlier firing's) is still going, as ``target``
    tells; False when it cannot tell, so that a target away holds no schedule back."""
    try:
        state = await target.status(spec, ref, owner=owner)
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
    "owner_principal",
    "register_target",
    "run_going",
    "target_scope",
    "validate_target",
]
