"""Scheduler (service 7): one partition's schedules, timers and firings.

Each schedule has one owner, a ``Scheduler`` partition (rendezvous hashing of
the schedule id over ``scheduler-<i>`` actors), so no two processes ever
decide the same schedule: exactly-once firing needs no lock.

A firing goes through two journaled steps (``Durable``):

1. **decide** (``scheduler_decide_ahead_ms`` before the due time): the misfire
   and overlap policies are applied, the due times to fire become *pending*
   (each with the key ``<schedule id>:<due ms>``) and the next due time moves
   on, all in one journal record.
2. **hand-off** at the due time (plus jitter): a pending firing goes to its
   target with its key as the idempotency key; once the target answered,
   **done** records the run (job id, lateness) and clears the pending mark.

A crash before a decision is committed decided nothing: recovery finds the old
next due time and decides it (late, so the misfire policy applies). A crash
after it finds the firing pending and hands it over again with the same key,
so the target makes one job however often that happens. Hence no firing is
lost and none lands twice. Lateness is measured at the hand-off, which waits
for no store write because the decision was committed ahead of time.

Timers: one asyncio timer per partition, armed for the earliest event in a
heap (decide or hand-off), re-armed when an earlier event arrives; nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import itertools
import logging
import math
import random
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import xxhash

from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import Conflict, InvalidInput, RealmError
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, recover, remote_actor
from actors.scheduler.errors import ScheduleNotFound
from actors.scheduler.targets import ACTIVE_JOB_STATES, Target, validate_target
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

log = logging.getLogger(__name__)

#: Runs kept per schedule, most catch-up firings, decide-ahead time (defaults of the settings).
HISTORY_MAX = 100
MAX_CATCHUP = 100
DECIDE_AHEAD_MS = 250
#: Due times walked in one decision before the rest of a long outage is jumped over.
_WALK_MAX = 10_000
MAX_NAME_CHARS = 200
MAX_JITTER_S = 3_600.0
MAX_GRACE_S = 366 * 86_400.0
TRIGGER_FIELDS = ("cron", "every_s", "at")
SPEC_FIELDS = {
    "name", *TRIGGER_FIELDS, "start_at", "timezone", "target",
    "misfire", "misfire_grace_s", "overlap", "jitter_s", "paused",
}  # fmt: skip
#: Changing one of these (stored form) moves the schedule's due times.
TIMING_FIELDS = ("cron", "interval_ms", "at_ms", "start_at_ms", "timezone", "jitter_s")


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


@dataclass
class Schedule:
    id: str
    owner: str | None
    spec: dict[str, Any]  #: normalized; times in ms (at_ms, start_at_ms, interval_ms)
    created_at: float
    updated_at: float
    paused: bool = False
    next_due_ms: int | None = None  #: the next due time not yet decided
    pending: dict[int, str] = field(default_factory=dict)  #: decided, not done: due -> key
    last_ref: dict[str, Any] | None = None  #: what the last hand-off made (a job)
    fired: int = 0
    failed: int = 0
    skipped: int = 0
    history: deque[dict[str, Any]] = field(default_factory=deque)


@dataclass(frozen=True)
class Plan:
    fire: list[int]  #: due times to fire, oldest first
    missed: list[int]  #: due times given up (beyond grace), oldest first
    missed_uncounted: bool  #: an outage so long that some missed runs were not walked
    next_due: int | None


def trigger_of(spec: dict[str, Any]) -> Trigger:
    if "cron" in spec:
        return Cron(spec["cron"], spec["timezone"])
    if "interval_ms" in spec:
        return Every(spec["interval_ms"], spec["anchor_ms"])
    return Once(spec["at_ms"])


def jitter_ms(schedule_id: str, due_ms: int, jitter_s: float) -> int:
    """A deterministic offset in [0, jitter] for one schedule and due time."""
    if jitter_s <= 0:
        return 0
    span = round(jitter_s * 1000) + 1
    return xxhash.xxh3_64_intdigest(f"{schedule_id}:{due_ms}".encode()) % span


def firing_key(schedule_id: str, due_ms: int) -> str:
    """The idempotency key of a firing: a repeated hand-off of it lands once."""
    return f"{schedule_id}:{due_ms}"


def plan(
    trigger: Trigger,
    next_due: int | None,
    *,
    fire_at: Any,
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
) -> dict[str, Any]:
    """A schedule spec checked and in its stored form; raises a RealmError to refuse it."""
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
    out: dict[str, Any] = {
        "name": name,
        "timezone": tz_name,
        "misfire": misfire.value,
        "misfire_grace_s": _number(spec, "misfire_grace_s", 60.0, 0.0, MAX_GRACE_S),
        "overlap": overlap.value,
        "jitter_s": _number(spec, "jitter_s", 0.0, 0.0, MAX_JITTER_S),
        "target": validate_target(targets, spec.get("target")),
    }
    if overlap is Overlap.SKIP and not targets[out["target"]["type"]].tracks_runs:
        raise InvalidInput("overlap=skip needs a target that tracks runs (queue)")
    if spec.get("start_at") is not None and "every_s" not in given:
        raise InvalidInput("start_at goes with every_s")
    if given == ["cron"]:
        out["cron"] = check_cron(spec["cron"])
    elif given == ["every_s"]:
        out["interval_ms"] = check_interval_s(spec["every_s"])
        if out["jitter_s"] * 1000 >= out["interval_ms"]:
            raise InvalidInput("jitter_s must be shorter than every_s")
        if spec.get("start_at") is not None:
            out["start_at_ms"] = parse_at(spec["start_at"], tz)
    else:
        out["at_ms"] = parse_at(spec["at"], tz)
        if check_past and out["at_ms"] < now_ms - out["misfire_grace_s"] * 1000:
            raise InvalidInput("at is in the past", at=str(spec["at"]))
    return out


def first_due(spec: dict[str, Any], now_ms: int) -> int | None:
    """The first due time of a (re)timed schedule, as of ``now_ms``."""
    if "at_ms" in spec:
        return int(spec["at_ms"])
    if "interval_ms" in spec and spec["anchor_ms"] > now_ms:
        return int(spec["anchor_ms"])
    return trigger_of(spec).next_after(now_ms)


def public_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The stored spec as a caller writes it (ISO times, seconds)."""
    tz = zone(spec["timezone"])
    out = {k: v for k, v in spec.items() if not k.endswith("_ms")}
    if "interval_ms" in spec:
        out["every_s"] = spec["interval_ms"] / 1000
    if "at_ms" in spec:
        out["at"] = from_ms(spec["at_ms"], tz).isoformat()
    if "start_at_ms" in spec:
        out["start_at"] = from_ms(spec["start_at_ms"], tz).isoformat()
    return out


class Scheduler(Durable):
    """One partition's schedules; fires each due time once through its target."""

    def __init__(
        self,
        *,
        targets: dict[str, Target],
        clock: Clock | None = None,
        decide_ahead_ms: int = DECIDE_AHEAD_MS,
        history_max: int = HISTORY_MAX,
        max_catchup: int = MAX_CATCHUP,
        retry_max_s: float = 30.0,
    ) -> None:
        self.targets = targets
        self.clock = clock or SystemClock()
        self.decide_ahead_ms = decide_ahead_ms
        self.history_max = history_max
        self.max_catchup = max_catchup
        self.retry_max_s = retry_max_s
        self.schedules: dict[str, Schedule] = {}
        #: Timer events: (at ms, order, "decide" | "hand", schedule id, due ms).
        self._events: list[tuple[int, int, str, str, int]] = []
        self._order = itertools.count()
        self._timer: asyncio.Task[None] | None = None
        self._armed_at: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._deciding: set[str] = set()
        self._handing: set[tuple[str, int]] = set()
        self._retry_delay_s: dict[tuple[str, int], float] = {}
        self._started = False
        self.handoffs = 0  #: hand-offs by this incarnation
        #: Decisions committed only after their first fire time (the store was slower
        #: than ``decide_ahead_ms``): their hand-offs were late by the difference.
        self.late_decisions = 0

    # --- state changes (deterministic; replayed on recovery) --------------

    def apply_create(
        self, schedule_id: str, owner: str | None, spec: dict[str, Any], at: float
    ) -> dict[str, Any]:
        if schedule_id in self.schedules:
            raise Conflict("a schedule with this id exists", schedule_id=schedule_id)
        now_ms = round(at * 1000)
        spec = dict(spec)
        if "interval_ms" in spec:
            spec["anchor_ms"] = spec.get("start_at_ms", now_ms + spec["interval_ms"])
        paused = bool(spec.pop("paused", False))
        schedule = Schedule(schedule_id, owner, spec, at, at, paused=paused)
        schedule.next_due_ms = first_due(spec, now_ms)
        self.schedules[schedule_id] = schedule
        return self.view(schedule)

    def apply_update(
        self, schedule_id: str, spec: dict[str, Any], retime: bool, cancel: list[int], at: float
    ) -> dict[str, Any]:
        schedule = self._get(schedule_id)
        now_ms = round(at * 1000)
        spec = dict(spec)
        spec.pop("paused", None)
        if "interval_ms" in spec:
            old_anchor = schedule.spec.get("anchor_ms", now_ms + spec["interval_ms"])
            spec["anchor_ms"] = spec.get(
                "start_at_ms", now_ms + spec["interval_ms"] if retime else old_anchor
            )
        schedule.spec = spec
        schedule.updated_at = at
        if retime:
            for due in cancel:
                schedule.pending.pop(due, None)
            schedule.next_due_ms = first_due(spec, now_ms)
        return self.view(schedule)

    def apply_delete(self, schedule_id: str) -> bool:
        self._get(schedule_id)
        del self.schedules[schedule_id]
        return True

    def apply_pause(self, schedule_id: str, cancel: list[int], at: float) -> dict[str, Any]:
        schedule = self._get(schedule_id)
        schedule.paused = True
        schedule.updated_at = at
        for due in cancel:  # decided but not handed over: decided again on resume
            if schedule.pending.pop(due, None) is not None and (
                schedule.next_due_ms is None or due < schedule.next_due_ms
            ):
                schedule.next_due_ms = due
        return self.view(schedule)

    def apply_resume(self, schedule_id: str, at: float) -> dict[str, Any]:
        """Due times that passed while paused are not caught up: the next one after now is."""
        schedule = self._get(schedule_id)
        now_ms = round(at * 1000)
        if schedule.paused and schedule.next_due_ms is not None and schedule.next_due_ms <= now_ms:
            schedule.next_due_ms = trigger_of(schedule.spec).next_after(now_ms)
        schedule.paused = False
        schedule.updated_at = at
        return self.view(schedule)

    def apply_decide(
        self,
        schedule_id: str,
        from_due: int,
        fire: list[int],
        missed: list[int],
        uncounted: bool,
        overlapped: bool,
        next_due: int | None,
        at: float,
    ) -> None:
        schedule = self.schedules.get(schedule_id)
        if schedule is None or schedule.paused or schedule.next_due_ms != from_due:
            raise Conflict("the schedule changed before this decision", schedule_id=schedule_id)
        if missed:
            schedule.skipped += len(missed)
            self._record(
                schedule,
                {
                    "outcome": "missed",
                    "due_ms": missed[0],
                    "last_due_ms": missed[-1],
                    "count": len(missed),
                    "uncounted": uncounted,
                    "decided_at": at,
                },
            )
        for due in fire:
            if overlapped:
                schedule.skipped += 1
                self._record(
                    schedule, {"outcome": "skipped_overlap", "due_ms": due, "decided_at": at}
                )
            else:
                schedule.pending[due] = firing_key(schedule_id, due)
        schedule.next_due_ms = next_due

    def apply_done(
        self,
        schedule_id: str,
        due: int,
        ref: dict[str, Any] | None,
        error: dict[str, Any] | None,
        handed_at: float,
    ) -> None:
        schedule = self.schedules.get(schedule_id)
        if schedule is None or due not in schedule.pending:
            return  # deleted meanwhile, or already recorded
        del schedule.pending[due]
        fire_at = due + jitter_ms(schedule_id, due, schedule.spec["jitter_s"])
        run = {
            "outcome": "failed" if error else "fired",
            "due_ms": due,
            "fire_at_ms": fire_at,
            "handed_at": handed_at,
            "lateness_ms": round(handed_at * 1000 - fire_at, 3),
            "ref": ref,
            "error": error,
        }
        if error:
            schedule.failed += 1
        else:
            schedule.fired += 1
            schedule.last_ref = ref
        self._record(schedule, run)

    def _record(self, schedule: Schedule, run: dict[str, Any]) -> None:
        schedule.history.append(run)
        while len(schedule.history) > self.history_max:
            schedule.history.popleft()

    def snapshot_state(self) -> dict[str, Schedule]:
        return self.schedules

    def restore_state(self, state: dict[str, Schedule]) -> None:
        self.schedules = state

    # --- reads ----------------------------------------------------------------

    def _get(self, schedule_id: str, owner: str | None = None) -> Schedule:
        schedule = self.schedules.get(schedule_id)
        if schedule is None or (owner is not None and schedule.owner != owner):
            raise ScheduleNotFound(schedule_id=schedule_id)
        return schedule

    def fire_at_ms(self, schedule: Schedule, due: int) -> int:
        return due + jitter_ms(schedule.id, due, schedule.spec["jitter_s"])

    def view(self, schedule: Schedule) -> dict[str, Any]:
        tz = zone(schedule.spec["timezone"])
        upcoming = self._upcoming(schedule, 1)
        if schedule.paused:
            state = "paused"
        elif schedule.next_due_ms is None and not schedule.pending:
            state = "completed"
        else:
            state = "active"
        return {
            "id": schedule.id,
            "owner": schedule.owner,
            **public_spec(schedule.spec),
            "paused": schedule.paused,
            "state": state,
            "next_fire_at": upcoming[0]["fire_at"] if upcoming else None,
            "created_at": from_ms(round(schedule.created_at * 1000), tz).isoformat(),
            "updated_at": from_ms(round(schedule.updated_at * 1000), tz).isoformat(),
            "fired": schedule.fired,
            "failed": schedule.failed,
            "skipped": schedule.skipped,
            "pending": len(schedule.pending),
        }

    def _upcoming(self, schedule: Schedule, count: int) -> list[dict[str, Any]]:
        if schedule.paused:
            return []
        tz = zone(schedule.spec["timezone"])
        dues = sorted(schedule.pending)[:count]
        due = schedule.next_due_ms
        trigger = trigger_of(schedule.spec)
        while due is not None and len(dues) < count:
            dues.append(due)
            due = trigger.next_after(due)
        return [
            {
                "due_at": from_ms(d, tz).isoformat(),
                "fire_at": from_ms(self.fire_at_ms(schedule, d), tz).isoformat(),
            }
            for d in dues
        ]

    async def get(self, schedule_id: str, owner: str | None = None) -> dict[str, Any]:
        return self.view(self._get(schedule_id, owner))

    async def list_schedules(self, owner: str | None = None) -> list[dict[str, Any]]:
        return [self.view(s) for s in self.schedules.values() if owner is None or s.owner == owner]

    async def upcoming(
        self, schedule_id: str, owner: str | None = None, count: int = 10
    ) -> list[dict[str, Any]]:
        """The next ``count`` due times (and fire times, with jitter), soonest first."""
        if not isinstance(count, int) or not 1 <= count <= 1_000:
            raise InvalidInput("count must be from 1 to 1000", count=count)
        return self._upcoming(self._get(schedule_id, owner), count)

    async def history(
        self, schedule_id: str, owner: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Recent runs, newest first: fired (job ref, lateness), failed, skipped, missed."""
        schedule = self._get(schedule_id, owner)
        tz = zone(schedule.spec["timezone"])
        runs = []
        for run in reversed(schedule.history):
            out = {k: v for k, v in run.items() if not k.endswith("_ms") and k != "handed_at"}
            out["due_at"] = from_ms(run["due_ms"], tz).isoformat()
            if "last_due_ms" in run:
                out["last_due_at"] = from_ms(run["last_due_ms"], tz).isoformat()
            if "fire_at_ms" in run:
                out["fire_at"] = from_ms(run["fire_at_ms"], tz).isoformat()
                out["handed_at"] = from_ms(round(run["handed_at"] * 1000), tz).isoformat()
                out["lateness_ms"] = run["lateness_ms"]
            if "decided_at" in run:
                out["decided_at"] = from_ms(round(run["decided_at"] * 1000), tz).isoformat()
            runs.append(out)
            if len(runs) >= limit:
                break
        return runs

    # --- commands ---------------------------------------------------------------

    def _now_ms(self) -> int:
        return round(self.clock.time() * 1000)

    async def create(
        self, schedule_id: str, owner: str | None, spec: dict[str, Any], *, key: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(schedule_id, str) or not 1 <= len(schedule_id) <= 64:
            raise InvalidInput("a schedule id is 1 to 64 characters")
        if key is not None and key in self._replies:
            return self._replies[key]
        normalized = normalize(spec, self.targets, now_ms=self._now_ms())
        normalized["paused"] = bool(spec.get("paused", False))
        answer = await self.execute(
            "create", key=key, schedule_id=schedule_id, owner=owner, spec=normalized,
            at=self.clock.time(),
        )  # fmt: skip
        self._arm(self.schedules[schedule_id])
        return answer

    def _cancellable(self, schedule: Schedule) -> list[int]:
        """Pending firings whose hand-off has not begun."""
        return [d for d in schedule.pending if (schedule.id, d) not in self._handing]

    async def update(
        self,
        schedule_id: str,
        owner: str | None,
        changes: dict[str, Any],
        *,
        key: str | None = None,
    ) -> dict[str, Any]:
        """Change fields; giving one of cron/every_s/at replaces the trigger."""
        schedule = self._get(schedule_id, owner)
        if not isinstance(changes, dict):
            raise InvalidInput("changes are an object")
        if "paused" in changes:
            raise InvalidInput("use pause and resume to pause and resume")
        current = public_spec(schedule.spec)
        if any(changes.get(name) is not None for name in TRIGGER_FIELDS):
            for name in (*TRIGGER_FIELDS, "start_at"):
                current.pop(name, None)
        merged = {**current, **changes}
        normalized = normalize(
            merged, self.targets, now_ms=self._now_ms(), check_past=changes.get("at") is not None
        )
        retime = any(normalized.get(n) != schedule.spec.get(n) for n in TIMING_FIELDS)
        answer = await self.execute(
            "update", key=key, schedule_id=schedule_id, spec=normalized, retime=retime,
            cancel=self._cancellable(schedule) if retime else [], at=self.clock.time(),
        )  # fmt: skip
        if schedule_id in self.schedules:
            self._arm(self.schedules[schedule_id])
        return answer

    async def delete(
        self, schedule_id: str, owner: str | None = None, *, key: str | None = None
    ) -> bool:
        if key is None or key not in self._replies:
            self._get(schedule_id, owner)
        return bool(await self.execute("delete", key=key, schedule_id=schedule_id))

    async def pause(
        self, schedule_id: str, owner: str | None = None, *, key: str | None = None
    ) -> dict[str, Any]:
        schedule = self._get(schedule_id, owner)
        return await self.execute(
            "pause", key=key, schedule_id=schedule_id, cancel=self._cancellable(schedule),
            at=self.clock.time(),
        )  # fmt: skip

    async def resume(
        self, schedule_id: str, owner: str | None = None, *, key: str | None = None
    ) -> dict[str, Any]:
        self._get(schedule_id, owner)
        answer = await self.execute(
            "resume", key=key, schedule_id=schedule_id, at=self.clock.time()
        )
        if schedule_id in self.schedules:
            self._arm(self.schedules[schedule_id])
        return answer

    # --- timers and firing -----------------------------------------------------

    def start(self) -> None:
        """Arm every schedule's timers (after ``open``); pending firings go out at once if due."""
        self._started = True
        for schedule in self.schedules.values():
            self._arm(schedule)

    def _arm(self, schedule: Schedule) -> None:
        if not self._started:
            return
        for due in schedule.pending:
            self._push(self.fire_at_ms(schedule, due), "hand", schedule.id, due)
        if schedule.next_due_ms is not None and not schedule.paused:
            decide_at = self.fire_at_ms(schedule, schedule.next_due_ms) - self.decide_ahead_ms
            self._push(decide_at, "decide", schedule.id, schedule.next_due_ms)

    def _push(self, at_ms: int, kind: str, schedule_id: str, due: int) -> None:
        heapq.heappush(self._events, (at_ms, next(self._order), kind, schedule_id, due))
        if self._armed_at is None or at_ms < self._armed_at:
            self._rearm()

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._events:
            self._armed_at = None
            return
        self._armed_at = self._events[0][0]
        self._timer = asyncio.create_task(self._wait(self._armed_at))

    async def _wait(self, at_ms: int) -> None:
        delay_s = (at_ms - self.clock.time() * 1000) / 1000
        if delay_s > 0:
            await self.clock.sleep(delay_s)
        self._timer = None
        self._armed_at = None
        self._on_timer()

    def _on_timer(self) -> None:
        now_ms = self.clock.time() * 1000
        while self._events and self._events[0][0] <= now_ms:
            _, _, kind, schedule_id, due = heapq.heappop(self._events)
            schedule = self.schedules.get(schedule_id)
            if schedule is None:
                continue
            if kind == "decide":
                if (
                    not schedule.paused
                    and schedule.next_due_ms == due
                    and schedule_id not in self._deciding
                ):
                    self._deciding.add(schedule_id)
                    self._spawn(self._decide(schedule_id, due))
            elif due in schedule.pending and (schedule_id, due) not in self._handing:
                self._handing.add((schedule_id, due))
                self._spawn(self._hand(schedule_id, due))
        self._rearm()

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _previous_running(self, schedule: Schedule) -> bool:
        if schedule.pending:
            return True
        if schedule.last_ref is None:
            return False
        spec = schedule.spec["target"]
        try:
            state = await self.targets[spec["type"]].status(spec, schedule.last_ref)
        except Exception as error:  # cannot tell: do not hold the schedule back
            log.warning("overlap check of %s failed: %r", schedule.id, error)
            return False
        return state in ACTIVE_JOB_STATES

    async def _decide(self, schedule_id: str, due: int) -> None:
        try:
            schedule = self.schedules.get(schedule_id)
            if schedule is None or schedule.paused or schedule.next_due_ms != due:
                return
            overlapped = False
            if schedule.spec["overlap"] == Overlap.SKIP.value:
                overlapped = await self._previous_running(schedule)
                current = self.schedules.get(schedule_id)
                if current is None or current.paused or current.next_due_ms != due:
                    return  # changed meanwhile; the change armed what is next
                schedule = current
            now_ms = self._now_ms()
            decided = plan(
                trigger_of(schedule.spec),
                due,
                fire_at=lambda d: self.fire_at_ms(schedule, d),
                now_ms=now_ms,
                horizon_ms=now_ms + self.decide_ahead_ms,
                grace_ms=round(schedule.spec["misfire_grace_s"] * 1000),
                misfire=Misfire(schedule.spec["misfire"]),
                max_catchup=self.max_catchup,
            )
            fire_at = self.fire_at_ms(schedule, decided.fire[0]) if decided.fire else None
            await self.execute(
                "decide", schedule_id=schedule_id, from_due=due, fire=decided.fire,
                missed=decided.missed, uncounted=decided.missed_uncounted,
                overlapped=overlapped, next_due=decided.next_due, at=self.clock.time(),
            )  # fmt: skip
            if fire_at is not None and self._now_ms() > fire_at:
                self.late_decisions += 1
        except Conflict:
            return
        finally:
            self._deciding.discard(schedule_id)
        if schedule_id in self.schedules:
            self._arm(self.schedules[schedule_id])

    async def _hand(self, schedule_id: str, due: int) -> None:
        """Hand one decided firing to its target; if the target is away, the timer
        tries again later (backoff), with the same key."""
        try:
            schedule = self.schedules.get(schedule_id)
            if schedule is None or due not in schedule.pending:
                return
            spec = schedule.spec["target"]
            handed_at = self.clock.time()
            error: dict[str, Any] | None = None
            try:
                ref = await self.targets[spec["type"]].fire(spec, key=schedule.pending[due])
            except RealmError as failure:
                if failure.status >= 500:
                    self._retry_later(schedule_id, due, failure)
                    return
                ref, error = None, failure.to_dict()  # refused: retrying would not help
            except Exception as failure:
                self._retry_later(schedule_id, due, failure)
                return
            self._retry_delay_s.pop((schedule_id, due), None)
            self.handoffs += 1
            await self.execute(
                "done", schedule_id=schedule_id, due=due, ref=ref, error=error, handed_at=handed_at
            )
        finally:
            self._handing.discard((schedule_id, due))

    def _retry_later(self, schedule_id: str, due: int, failure: BaseException) -> None:
        delay = self._retry_delay_s.get((schedule_id, due), 0.1)
        self._retry_delay_s[(schedule_id, due)] = min(delay * 2, self.retry_max_s)
        log.warning("hand-off of %s failed (%r); again in %.1f s", schedule_id, failure, delay)
        at_ms = self._now_ms() + round(delay * (0.5 + random.random()) * 1000)
        self._push(at_ms, "hand", schedule_id, due)

    async def stats(self) -> dict[str, int]:
        return {
            "schedules": len(self.schedules),
            "pending": sum(len(s.pending) for s in self.schedules.values()),
            "timer_events": len(self._events),
            "handoffs": self.handoffs,
            "late_decisions": self.late_decisions,
        }

    async def drain(self) -> None:
        """Wait until every decision and hand-off started so far has finished (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def __repr__(self) -> str:
        pending = sum(len(s.pending) for s in self.schedules.values())
        return (
            f"<Scheduler schedules={len(self.schedules)} pending={pending} "
            f"events={len(self._events)} handoffs={self.handoffs}>"
        )


# --- the actor --------------------------------------------------------------


def partition_name(index: int) -> str:
    return f"scheduler-{index}"


class _SchedulerPartitionProcess(Scheduler):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        from actors.scheduler.targets import make_targets

        super().__init__(
            targets=make_targets(settings),
            decide_ahead_ms=settings.scheduler_decide_ahead_ms,
            history_max=settings.scheduler_history_max,
            max_catchup=settings.scheduler_max_catchup,
            retry_max_s=settings.scheduler_retry_max_s,
        )
        self.restarts = await recover(self, settings, name)
        # Everything loaded so far (Ray, the recovered schedules) lives as long as the
        # process: keep it out of the collector's way, so that a full collection does
        # not stall a due timer for milliseconds.
        gc.collect()
        gc.freeze()
        self.start()

    async def ping(self) -> int:
        return len(self.schedules)


#: Durable schedules; calls in flight at a crash are retried (mutations carry keys).
SchedulerPartitionActor = remote_actor(
    _SchedulerPartitionProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD"
)
