"""The schedule model: what a schedule is, how a spec is checked, and the policies.

A caller writes a spec with ``cron``, ``every_s`` or ``at`` (ISO times,
seconds); ``normalize`` checks it, refuses bad input with a ``RealmError``
before anything changes, and answers its stored form, a ``Spec`` (times in
whole milliseconds since the epoch). A ``Schedule`` is a partition's record of
one schedule, a ``Run`` one entry of its history. ``plan`` applies the misfire
policy to the due times that came due; ``jitter_ms`` spreads fire times
deterministically; ``firing_key`` names a firing for its target.

Everything here is data and pure functions. The partition
(``actors.scheduler.partition``) journals and snapshots these types as they
are: ``Durable`` types them again on replay from the annotations of its
``apply_<op>`` methods and ``restore_state``, so every field is annotated
precisely and holds plain values (a target's fields are JSON).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

import xxhash

from actors.runtime.errors import InvalidInput
from actors.scheduler.targets import Target, validate_target
from actors.scheduler.triggers import (
    Cron,
    Every,
    Once,
    Trigger,
    check_cron,
    check_interval_s,
    from_ms,
    parse_at,
    zone,
)

#: Longest schedule id (the client makes them: 32 hex digits).
MAX_ID_CHARS = 64
MAX_NAME_CHARS = 200
#: Most upcoming due times one call answers.
MAX_UPCOMING = 1_000
MAX_JITTER_S = 3_600.0
MAX_GRACE_S = 366 * 86_400.0
#: A run this late (or less) still fires whatever the misfire policy, unless the spec says.
DEFAULT_GRACE_S = 60.0
#: Due times walked in one decision before the rest of a long outage is jumped over.
_WALK_MAX = 10_000
#: A spec has exactly one of these.
TRIGGER_FIELDS = ("cron", "every_s", "at")
SPEC_FIELDS = {
    "name", *TRIGGER_FIELDS, "start_at", "timezone", "target",
    "misfire", "misfire_grace_s", "overlap", "jitter_s", "paused",
}  # fmt: skip


class Misfire(str, Enum):
    """What happens to due times missed by more than the grace time (actor down, paused loop)."""

    #: Missed runs are coalesced into one firing now (the latest missed due time).
    FIRE_ONCE = "fire_once"
    #: Every missed run fires now, oldest first (at most ``max_catchup``; older ones are missed).
    FIRE_ALL = "fire_all"
    #: Missed runs are recorded as missed and not fired.
    SKIP = "skip"


class Overlap(str, Enum):
    """What happens when a run is due while the previous run's job is still going."""

    #: Fire anyway.
    ALLOW = "allow"
    #: Record the run as skipped; needs a target that tracks runs (the queue).
    SKIP = "skip"


class Outcome(str, Enum):
    """What became of a due time, as its schedule's history tells."""

    #: Handed to the target, which made something (``ref``: a job, a message).
    FIRED = "fired"
    #: The target refused it (``error``, a 4xx); retrying would not help.
    FAILED = "failed"
    #: Not fired: the previous run was still going (overlap ``skip``).
    SKIPPED_OVERLAP = "skipped_overlap"
    #: Given up by the misfire policy (``count`` due times from ``due_ms`` to ``last_due_ms``).
    MISSED = "missed"


@dataclass(frozen=True, slots=True)
class Spec:
    """A schedule's spec in stored form: exactly one of ``cron``, ``interval_ms`` and
    ``at_ms``; times in whole ms since the epoch. Frozen: a change is a new spec."""

    name: str
    timezone: str
    target: dict[str, Any]  #: as its target normalized it (JSON values)
    misfire: Misfire
    misfire_grace_s: float
    overlap: Overlap
    jitter_s: float
    cron: str | None = None
    interval_ms: int | None = None
    start_at_ms: int | None = None  #: with ``interval_ms``: the first due time asked for
    at_ms: int | None = None
    #: With ``interval_ms``: the first due time, the others follow it by whole intervals
    #: (set by the partition when the schedule is created or retimed).
    anchor_ms: int | None = None

    def trigger(self) -> Trigger:
        if self.cron is not None:
            return Cron(self.cron, self.timezone)
        if self.interval_ms is not None:
            return Every(self.interval_ms, self.anchor_ms or 0)
        return Once(self.at_ms or 0)

    def timing(self) -> tuple[Any, ...]:
        """What moves the due times: a change of any of it retimes the schedule."""
        return (self.cron, self.interval_ms, self.at_ms, self.start_at_ms, self.timezone,
                self.jitter_s)  # fmt: skip

    def first_due(self, now_ms: int) -> int | None:
        """The first due time of a (re)timed schedule, as of ``now_ms``."""
        if self.at_ms is not None:
            return self.at_ms
        if self.anchor_ms is not None and self.anchor_ms > now_ms:
            return self.anchor_ms
        return self.trigger().next_after(now_ms)

    def public(self) -> dict[str, Any]:
        """The spec as a caller writes it (ISO times, seconds)."""
        tz = zone(self.timezone)
        out: dict[str, Any] = {
            "name": self.name,
            "timezone": self.timezone,
            "target": self.target,
            "misfire": self.misfire.value,
            "misfire_grace_s": self.misfire_grace_s,
            "overlap": self.overlap.value,
            "jitter_s": self.jitter_s,
        }
        if self.cron is not None:
            out["cron"] = self.cron
        if self.interval_ms is not None:
            out["every_s"] = self.interval_ms / 1000
        if self.at_ms is not None:
            out["at"] = from_ms(self.at_ms, tz).isoformat()
        if self.start_at_ms is not None:
            out["start_at"] = from_ms(self.start_at_ms, tz).isoformat()
        return out


@dataclass(slots=True)
class Run:
    """One entry of a schedule's history. A handed-over run (fired or failed) has
    ``fire_at_ms`` and what follows it; a missed one ``last_due_ms`` and ``count``."""

    outcome: Outcome
    due_ms: int
    decided_at: float | None = None  #: missed and skipped runs: when that was decided
    fire_at_ms: int | None = None  #: the due time plus jitter
    handed_at: float | None = None
    lateness_ms: float | None = None  #: handed_at minus fire_at
    ref: dict[str, Any] | None = None  #: what the target made
    error: dict[str, Any] | None = None  #: the target's refusal (an error's code, message, details)
    last_due_ms: int | None = None
    count: int | None = None
    uncounted: bool | None = None  #: an outage so long that some missed runs were not walked

    def public(self, tz: ZoneInfo) -> dict[str, Any]:
        """The run as the history answers it (ISO times in the schedule's zone)."""
        out: dict[str, Any] = {"outcome": self.outcome.value, "due_at": _iso_ms(self.due_ms, tz)}
        if self.fire_at_ms is not None and self.handed_at is not None:
            out["ref"] = self.ref
            out["error"] = self.error
            out["fire_at"] = _iso_ms(self.fire_at_ms, tz)
            out["handed_at"] = _iso_s(self.handed_at, tz)
            out["lateness_ms"] = self.lateness_ms
        if self.last_due_ms is not None:
            out["count"] = self.count
            out["uncounted"] = self.uncounted
            out["last_due_at"] = _iso_ms(self.last_due_ms, tz)
        if self.decided_at is not None:
            out["decided_at"] = _iso_s(self.decided_at, tz)
        return out


@dataclass(slots=True)
class Schedule:
    """One schedule as its partition keeps it (and snapshots it)."""

    id: str
    owner: str | None
    spec: Spec
    created_at: float
    updated_at: float
    paused: bool = False
    next_due_ms: int | None = None  #: the next due time not yet decided
    pending: dict[int, str] = field(default_factory=dict)  #: decided, not done: due -> key
    last_ref: dict[str, Any] | None = None  #: what the last hand-off made (a job)
    fired: int = 0
    failed: int = 0
    skipped: int = 0
    history: deque[Run] = field(default_factory=deque)  #: oldest first

    def fire_at_ms(self, due: int) -> int:
        """When the run due at ``due`` is handed over: the due time plus its jitter."""
        return due + jitter_ms(self.id, due, self.spec.jitter_s)

    def remember(self, run: Run, keep: int) -> None:
        """Add ``run`` to the history, which keeps the newest ``keep``."""
        self.history.append(run)
        while len(self.history) > keep:
            self.history.popleft()

    @property
    def state(self) -> str:
        if self.paused:
            return "paused"
        if self.next_due_ms is None and not self.pending:
            return "completed"
        return "active"

    def upcoming(self, count: int) -> list[dict[str, str]]:
        """The next ``count`` due and fire times (ISO, in the zone), soonest first."""
        if self.paused:
            return []
        tz = zone(self.spec.timezone)
        dues = sorted(self.pending)[:count]
        due = self.next_due_ms
        trigger = self.spec.trigger()
        while due is not None and len(dues) < count:
            dues.append(due)
            due = trigger.next_after(due)
        return [
            {"due_at": _iso_ms(d, tz), "fire_at": _iso_ms(self.fire_at_ms(d), tz)} for d in dues
        ]

    def view(self) -> dict[str, Any]:
        """The schedule as callers see it: its spec, state, next fire time and counters."""
        tz = zone(self.spec.timezone)
        upcoming = self.upcoming(1)
        return {
            "id": self.id,
            "owner": self.owner,
            **self.spec.public(),
            "paused": self.paused,
            "state": self.state,
            "next_fire_at": upcoming[0]["fire_at"] if upcoming else None,
            "created_at": _iso_s(self.created_at, tz),
            "updated_at": _iso_s(self.updated_at, tz),
            "fired": self.fired,
            "failed": self.failed,
            "skipped": self.skipped,
            "pending": len(self.pending),
        }

    def runs(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` runs, newest first."""
        tz = zone(self.spec.timezone)
        return [run.public(tz) for run in itertools.islice(reversed(self.history), limit)]


def _iso_ms(ms: int, tz: ZoneInfo) -> str:
    return from_ms(ms, tz).isoformat()


def _iso_s(epoch_s: float, tz: ZoneInfo) -> str:
    return from_ms(round(epoch_s * 1000), tz).isoformat()


def jitter_ms(schedule_id: str, due_ms: int, jitter_s: float) -> int:
    """A deterministic offset in [0, jitter] for one schedule and due time: spread,
    yet the same after a restart and in ``upcoming``."""
    if jitter_s <= 0:
        return 0
    span = round(jitter_s * 1000) + 1
    return xxhash.xxh3_64_intdigest(f"{schedule_id}:{due_ms}".encode()) % span


def firing_key(schedule_id: str, due_ms: int) -> str:
    """The idempotency key of a firing: a repeated hand-off of it lands once."""
    return f"{schedule_id}:{due_ms}"


@dataclass(frozen=True)
class Plan:
    fire: list[int]  #: due times to fire, oldest first
    missed: list[int]  #: due times given up (beyond grace), oldest first
    missed_uncounted: bool  #: an outage so long that some missed runs were not walked
    next_due: int | None


def plan(
    trigger: Trigger,
    next_due: int | None,
    *,
    fire_at: Callable[[int], int],
    now_ms: int,
    horizon_ms: int,
    grace_ms: int,
    misfire: Misfire,
    max_catchup: int,
) -> Plan:
    """Decide the due times from ``next_due`` whose fire time is at most ``horizon_ms``.

    A due time whose fire time is more than ``grace_ms`` before ``now_ms`` was
    missed; the misfire policy says what happens to missed ones. The others fire.
    """
    late: list[int] = []
    on_time: list[int] = []
    uncounted = False
    due = next_due
    walked = 0
    while due is not None and fire_at(due) <= horizon_ms:
        (late if now_ms - fire_at(due) > grace_ms else on_time).append(due)
        due = trigger.next_after(due)
        walked += 1
        if walked >= _WALK_MAX and due is not None and now_ms - fire_at(due) > grace_ms:
            uncounted = True  # jump over the rest of a long outage
            due = trigger.next_after(now_ms - grace_ms - 1)
            walked = 0
    if misfire is Misfire.SKIP:
        fire = on_time
    elif misfire is Misfire.FIRE_ONCE:
        fire = on_time or late[-1:]
    else:
        fire = (late + on_time)[-max_catchup:]
    kept = set(fire)
    return Plan(fire, [d for d in late if d not in kept], uncounted, due)


def _number(spec: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = spec.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a number")
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low:g} and {high:g}", **{name: value})
    return float(value)


def normalize(
    spec: object, targets: dict[str, Target], *, now_ms: int, check_past: bool = True
) -> Spec:
    """A schedule spec checked and in its stored form; raises a RealmError to refuse it.
    ``paused`` is allowed and left to the caller."""
    if not isinstance(spec, dict):
        raise InvalidInput("a schedule is an object")
    if extra := set(spec) - SPEC_FIELDS:
        raise InvalidInput("unknown schedule fields", fields=sorted(extra))
    given = [name for name in TRIGGER_FIELDS if spec.get(name) is not None]
    if len(given) != 1:
        raise InvalidInput("give exactly one of cron, every_s and at", given=given)
    name = spec.get("name") or ""
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"name must be a string of at most {MAX_NAME_CHARS} characters")
    tz_name = spec.get("timezone") or "UTC"
    tz = zone(tz_name)
    try:
        misfire = Misfire(spec.get("misfire") or Misfire.FIRE_ONCE)
        overlap = Overlap(spec.get("overlap") or Overlap.ALLOW)
    except ValueError:
        raise InvalidInput(
            "misfire is fire_once, fire_all or skip; overlap is allow or skip",
            misfire=str(spec.get("misfire")),
            overlap=str(spec.get("overlap")),
        ) from None
    grace_s = _number(spec, "misfire_grace_s", DEFAULT_GRACE_S, 0.0, MAX_GRACE_S)
    jitter_s = _number(spec, "jitter_s", 0.0, 0.0, MAX_JITTER_S)
    target = validate_target(targets, spec.get("target"))
    if overlap is Overlap.SKIP and not targets[target["type"]].tracks_runs:
        raise InvalidInput("overlap=skip needs a target that tracks runs (queue)")
    if spec.get("start_at") is not None and "every_s" not in given:
        raise InvalidInput("start_at goes with every_s")
    timing: dict[str, Any] = {}
    if given == ["cron"]:
        timing["cron"] = check_cron(spec["cron"])
    elif given == ["every_s"]:
        timing["interval_ms"] = check_interval_s(spec["every_s"])
        if jitter_s * 1000 >= timing["interval_ms"]:
            raise InvalidInput("jitter_s must be shorter than every_s")
        if spec.get("start_at") is not None:
            timing["start_at_ms"] = parse_at(spec["start_at"], tz)
    else:
        timing["at_ms"] = parse_at(spec["at"], tz)
        if check_past and timing["at_ms"] < now_ms - grace_s * 1000:
            raise InvalidInput("at is in the past", at=str(spec["at"]))
    return Spec(
        name=name, timezone=tz_name, target=target, misfire=misfire, misfire_grace_s=grace_s,
        overlap=overlap, jitter_s=jitter_s, **timing,
    )  # fmt: skip


def changed(spec: Spec, changes: object, targets: dict[str, Target], *, now_ms: int) -> Spec:
    """``spec`` with ``changes`` (fields as a caller writes them) applied and checked;
    giving one of cron/every_s/at replaces the trigger. Pausing is not a change."""
    if not isinstance(changes, dict):
        raise InvalidInput("changes are an object")
    if "paused" in changes:
        raise InvalidInput("use pause and resume to pause and resume")
    current = spec.public()
    if any(changes.get(name) is not None for name in TRIGGER_FIELDS):
        for name in (*TRIGGER_FIELDS, "start_at"):
            current.pop(name, None)
    check_past = changes.get("at") is not None
    return normalize({**current, **changes}, targets, now_ms=now_ms, check_past=check_past)


__all__ = [
    "MAX_ID_CHARS",
    "MAX_UPCOMING",
    "TRIGGER_FIELDS",
    "Misfire",
    "Outcome",
    "Overlap",
    "Plan",
    "Run",
    "Schedule",
    "Spec",
    "changed",
    "firing_key",
    "jitter_ms",
    "normalize",
    "plan",
]
