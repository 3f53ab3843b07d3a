"""Scheduler (service 7): one partition's schedules, timers, decisions and hand-offs.

Each schedule has one owner, a ``Scheduler`` partition (rendezvous hashing of
the schedule id over ``scheduler-<i>`` actors), so no two processes ever
decide the same schedule: exactly-once firing needs no lock.

A firing goes through two journaled steps (``Durable``):

1. **decide** (``REALM_SCHEDULER_DECIDE_AHEAD_MS`` before the due time): the
   misfire and overlap policies are applied, the due times to fire become
   *pending* (each with the key ``<schedule id>:<due ms>``) and the next due
   time moves on, all in one journal record.
2. **hand-off** at the due time (plus jitter): a pending firing goes to its
   target with its key as the idempotency key; once the target answered,
   **done** records the run (job id, lateness) and clears the pending mark.

A crash before a decision is committed decided nothing: recovery finds the old
next due time and decides it (late, so the misfire policy applies). A crash
after it finds the firing pending and hands it over again with the same key,
so the target makes one job however often that happens. Hence no firing is
lost and none lands twice. Lateness is measured at the hand-off, which waits
for no store write because the decision was committed ahead of time.

What a schedule is, and how a spec is checked, is ``actors.scheduler.model``;
the timer heap is ``actors.scheduler.timers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Coroutine
from dataclasses import replace
from enum import Enum
from typing import Any

import orjson

from actors.runtime import metrics
from actors.runtime.backoff import Backoff
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import Conflict, InvalidInput, LimitReached, RealmError
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, recover, remote_actor
from actors.scheduler.errors import ScheduleNotFound
from actors.scheduler.model import (
    MAX_ID_CHARS,
    MAX_UPCOMING,
    Outcome,
    Overlap,
    Run,
    Schedule,
    Spec,
    changed,
    firing_key,
    normalize,
    plan,
)
from actors.scheduler.settings import SchedulerSettings
from actors.scheduler.targets import Target, make_targets, run_going
from actors.scheduler.timers import Timers

log = logging.getLogger(__name__)

#: Prefix of the partition actors' names (``scheduler-<i>``).
PARTITIONS = "scheduler"
#: First wait before handing a firing again to a target that failed; the waits double
#: up to ``REALM_SCHEDULER_RETRY_MAX_S``. Short: a restarting queue is back within a second.
HAND_OFF_RETRY_FIRST_S = 0.1


class Step(str, Enum):
    """What a timer event does to a schedule's due time."""

    #: Apply the policies and journal which due times fire (ahead of the due time).
    DECIDE = "decide"
    #: Hand a decided firing to its target (at its fire time).
    HAND = "hand"


#: A timer event: the step, the schedule id, the due time (ms).
Event = tuple[Step, str, int]


class Scheduler(Durable):
    """One partition's schedules; fires each due time once through its target."""

    def __init__(
        self,
        config: SchedulerSettings,
        *,
        targets: dict[str, Target],
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.targets = targets
        self.clock = clock or SystemClock()
        self.schedules: dict[str, Schedule] = {}
        self.owned: dict[str | None, int] = {}  #: schedules per owner (not stored: counted)
        self.timers: Timers[Event] = Timers(self.clock, self._on_due)
        self.retry = Backoff(first_s=HAND_OFF_RETRY_FIRST_S, max_s=config.retry_max_s)
        self._tasks: set[asyncio.Task[None]] = set()
        self._deciding: set[str] = set()
        self._handing: set[tuple[str, int]] = set()
        self._failures: dict[tuple[str, int], int] = {}  #: failed hand-offs in a row
        self.handoffs = 0  #: hand-offs by this incarnation
        #: Decisions committed only after their first fire time (the store was slower
        #: than ``decide_ahead_ms``): their hand-offs were late by the difference.
        self.late_decisions = 0

    # --- state changes (deterministic; replayed on recovery) --------------

    def apply_create(
        self, schedule_id: str, owner: str | None, spec: Spec, paused: bool, at: float
    ) -> dict[str, Any]:
        if schedule_id in self.schedules:
            raise Conflict("a schedule with this id exists", schedule_id=schedule_id)
        now_ms = round(at * 1000)
        if spec.interval_ms is not None:
            first = spec.start_at_ms if spec.start_at_ms is not None else now_ms + spec.interval_ms
            spec = replace(spec, anchor_ms=first)
        schedule = Schedule(schedule_id, owner, spec, at, at, paused=paused)
        schedule.next_due_ms = spec.first_due(now_ms)
        self.schedules[schedule_id] = schedule
        self.owned[owner] = self.owned.get(owner, 0) + 1
        return schedule.view()

    def apply_update(
        self, schedule_id: str, spec: Spec, retime: bool, cancel: list[int], at: float
    ) -> dict[str, Any]:
        schedule = self._get(schedule_id)
        now_ms = round(at * 1000)
        if spec.interval_ms is not None:
            anchor = schedule.spec.anchor_ms
            if spec.start_at_ms is not None:
                anchor = spec.start_at_ms
            elif retime or anchor is None:
                anchor = now_ms + spec.interval_ms
            spec = replace(spec, anchor_ms=anchor)
        schedule.spec = spec
        schedule.updated_at = at
        if retime:
            for due in cancel:
                schedule.pending.pop(due, None)
            schedule.next_due_ms = spec.first_due(now_ms)
        return schedule.view()

    def apply_delete(self, schedule_id: str) -> bool:
        owner = self._get(schedule_id).owner
        del self.schedules[schedule_id]
        left = self.owned.get(owner, 1) - 1
        if left > 0:
            self.owned[owner] = left
        else:
            self.owned.pop(owner, None)
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
        return schedule.view()

    def apply_resume(self, schedule_id: str, at: float) -> dict[str, Any]:
        """Due times that passed while paused are not caught up: the next one after now is."""
        schedule = self._get(schedule_id)
        now_ms = round(at * 1000)
        if schedule.paused and schedule.next_due_ms is not None and schedule.next_due_ms <= now_ms:
            schedule.next_due_ms = schedule.spec.trigger().next_after(now_ms)
        schedule.paused = False
        schedule.updated_at = at
        return schedule.view()

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
        keep = self.config.history_max
        if missed:
            schedule.skipped += len(missed)
            run = Run(Outcome.MISSED, missed[0], decided_at=at, last_due_ms=missed[-1],
                      count=len(missed), uncounted=uncounted)  # fmt: skip
            schedule.remember(run, keep)
        for due in fire:
            if overlapped:
                schedule.skipped += 1
                schedule.remember(Run(Outcome.SKIPPED_OVERLAP, due, decided_at=at), keep)
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
        fire_at = schedule.fire_at_ms(due)
        run = Run(
            Outcome.FAILED if error else Outcome.FIRED, due, fire_at_ms=fire_at,
            handed_at=handed_at, lateness_ms=round(handed_at * 1000 - fire_at, 3),
            ref=ref, error=error,
        )  # fmt: skip
        if error:
            schedule.failed += 1
        else:
            schedule.fired += 1
            schedule.last_ref = ref
        schedule.remember(run, self.config.history_max)

    def snapshot_state(self) -> dict[str, Schedule]:
        return self.schedules

    def restore_state(self, state: dict[str, Schedule]) -> None:
        self.schedules = state
        self.owned = {}
        for schedule in state.values():
            self.owned[schedule.owner] = self.owned.get(schedule.owner, 0) + 1

    # --- reads ----------------------------------------------------------------

    def _get(self, schedule_id: str, owner: str | None = None) -> Schedule:
        schedule = self.schedules.get(schedule_id)
        if schedule is None or (owner is not None and schedule.owner != owner):
            raise ScheduleNotFound(schedule_id=schedule_id)
        return schedule

    async def get(self, schedule_id: str, owner: str | None = None) -> dict[str, Any]:
        return self._get(schedule_id, owner).view()

    async def list_schedules(self, owner: str | None = None) -> list[dict[str, Any]]:
        return [s.view() for s in self.schedules.values() if owner is None or s.owner == owner]

    async def upcoming(
        self, schedule_id: str, owner: str | None = None, count: int = 10
    ) -> list[dict[str, str]]:
        """The next ``count`` due times (and fire times, with jitter), soonest first."""
        if not isinstance(count, int) or not 1 <= count <= MAX_UPCOMING:
            raise InvalidInput(f"count must be from 1 to {MAX_UPCOMING}", count=count)
        return self._get(schedule_id, owner).upcoming(count)

    async def history(
        self, schedule_id: str, owner: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Recent runs, newest first: fired (job ref, lateness), failed, skipped, missed."""
        return self._get(schedule_id, owner).runs(limit)

    # --- commands ---------------------------------------------------------------

    def _now_ms(self) -> int:
        return round(self.clock.time() * 1000)

    async def create(
        self, schedule_id: str, owner: str | None, spec: dict[str, Any], *, key: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(schedule_id, str) or not 1 <= len(schedule_id) <= MAX_ID_CHARS:
            raise InvalidInput(f"a schedule id is 1 to {MAX_ID_CHARS} characters")
        replied = None if key is None else await self.committed_reply(key)
        if replied is not None:
            # A call retried after a restart answers as the first did, even if its
            # ``at`` is in the past by now (which ``normalize`` would refuse).
            first: dict[str, Any] = replied[1]
            return first
        normalized = normalize(spec, self.targets, now_ms=self._now_ms())
        await self._authorize(normalized, owner)
        limit = self.config.max_schedules_per_owner
        if owner is not None and self.owned.get(owner, 0) >= limit:
            # Checked with nothing awaited before the create is applied: exact. An
            # owner's schedules all live on one partition (the client sees to it).
            raise LimitReached(
                f"an owner may hold at most {limit} schedules; delete one first", limit=limit
            )
        answer: dict[str, Any] = await self.execute(
            "create", key=key, schedule_id=schedule_id, owner=owner, spec=normalized,
            paused=bool(spec.get("paused", False)), at=self.clock.time(),
        )  # fmt: skip
        self._arm_again(schedule_id)
        return answer

    async def _authorize(self, spec: Spec, owner: str | None) -> None:
        """Refuse a spec whose target its owner may not use (as absent, or forbidden)."""
        await self.targets[spec.target["type"]].authorize(spec.target, owner)

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
        spec = changed(schedule.spec, changes, self.targets, now_ms=self._now_ms())
        await self._authorize(spec, schedule.owner)
        schedule = self._get(schedule_id, owner)  # deleted meanwhile?
        retime = spec.timing() != schedule.spec.timing()
        answer: dict[str, Any] = await self.execute(
            "update", key=key, schedule_id=schedule_id, spec=spec, retime=retime,
            cancel=self._cancellable(schedule) if retime else [], at=self.clock.time(),
        )  # fmt: skip
        self._arm_again(schedule_id)
        return answer

    async def delete(
        self, schedule_id: str, owner: str | None = None, *, key: str | None = None
    ) -> bool:
        if key is None or await self.committed_reply(key) is None:
            self._get(schedule_id, owner)
        return bool(await self.execute("delete", key=key, schedule_id=schedule_id))

    async def pause(
        self, schedule_id: str, owner: str | None = None, *, key: str | None = None
    ) -> dict[str, Any]:
        schedule = self._get(schedule_id, owner)
        answer: dict[str, Any] = await self.execute(
            "pause", key=key, schedule_id=schedule_id, cancel=self._cancellable(schedule),
            at=self.clock.time(),
        )  # fmt: skip
        return answer

    async def resume(
        self, schedule_id: str, owner: str | None = None, *, key: str | None = None
    ) -> dict[str, Any]:
        self._get(schedule_id, owner)
        answer: dict[str, Any] = await self.execute(
            "resume", key=key, schedule_id=schedule_id, at=self.clock.time()
        )
        self._arm_again(schedule_id)
        return answer

    # --- timers, decisions and hand-offs -----------------------------------------

    def start(self) -> None:
        """Arm every schedule's timers (after ``open``); pending firings go out at once if due."""
        self.timers.start()
        for schedule in self.schedules.values():
            self._arm(schedule)

    def _arm(self, schedule: Schedule) -> None:
        for due in schedule.pending:
            self.timers.push(schedule.fire_at_ms(due), (Step.HAND, schedule.id, due))
        if schedule.next_due_ms is not None and not schedule.paused:
            decide_at = schedule.fire_at_ms(schedule.next_due_ms) - self.config.decide_ahead_ms
            self.timers.push(decide_at, (Step.DECIDE, schedule.id, schedule.next_due_ms))

    def _arm_again(self, schedule_id: str) -> None:
        """Arm what is next for a schedule a change or decision moved (if it still exists)."""
        schedule = self.schedules.get(schedule_id)
        if schedule is not None:
            self._arm(schedule)

    def _on_due(self, event: Event) -> None:
        step, schedule_id, due = event
        schedule = self.schedules.get(schedule_id)
        if schedule is None:
            return
        if step is Step.DECIDE:
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

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _previous_running(self, schedule: Schedule) -> bool:
        if schedule.pending:
            return True
        if schedule.last_ref is None:
            return False
        spec = schedule.spec.target
        target = self.targets[spec["type"]]
        return await run_going(target, spec, schedule.last_ref, owner=schedule.owner)

    async def _decide(self, schedule_id: str, due: int) -> None:
        try:
            schedule = self.schedules.get(schedule_id)
            if schedule is None or schedule.paused or schedule.next_due_ms != due:
                return
            overlapped = False
            if schedule.spec.overlap is Overlap.SKIP:
                overlapped = await self._previous_running(schedule)
                current = self.schedules.get(schedule_id)
                if current is None or current.paused or current.next_due_ms != due:
                    return  # changed meanwhile; the change armed what is next
                schedule = current
            now_ms = self._now_ms()
            decided = plan(
                schedule.spec.trigger(),
                due,
                fire_at=schedule.fire_at_ms,
                now_ms=now_ms,
                horizon_ms=now_ms + self.config.decide_ahead_ms,
                grace_ms=round(schedule.spec.misfire_grace_s * 1000),
                misfire=schedule.spec.misfire,
                max_catchup=self.config.max_catchup,
            )
            fire_at = schedule.fire_at_ms(decided.fire[0]) if decided.fire else None
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
        self._arm_again(schedule_id)

    async def _hand(self, schedule_id: str, due: int) -> None:
        """Hand one decided firing to its target; if the target is away, the timer
        tries again later (backoff), with the same key."""
        try:
            schedule = self.schedules.get(schedule_id)
            if schedule is None or due not in schedule.pending:
                self._failures.pop((schedule_id, due), None)
                return
            spec = schedule.spec.target
            handed_at = self.clock.time()
            error: dict[str, Any] | None = None
            try:
                ref = await self.targets[spec["type"]].fire(
                    spec, key=schedule.pending[due], owner=schedule.owner
                )
            except RealmError as failure:
                if failure.status >= 500:
                    self._retry_later(schedule_id, due, failure)
                    return
                # Refused: retrying would not help. Kept as the JSON an answer shows.
                ref, error = None, orjson.loads(orjson.dumps(failure.to_dict(), default=str))
            except Exception as failure:
                self._retry_later(schedule_id, due, failure)
                return
            self._failures.pop((schedule_id, due), None)
            self.handoffs += 1
            late_s = max(0.0, handed_at - schedule.fire_at_ms(due) / 1000)
            await self.execute(
                "done", schedule_id=schedule_id, due=due, ref=ref, error=error, handed_at=handed_at
            )
            metrics.SCHEDULER_LATENESS_SECONDS.observe(late_s, target=str(spec["type"]))
        finally:
            self._handing.discard((schedule_id, due))

    def _retry_later(self, schedule_id: str, due: int, failure: BaseException) -> None:
        failures = self._failures.get((schedule_id, due), 0) + 1
        self._failures[(schedule_id, due)] = failures
        delay_s = self.retry.delay_s(failures)
        log.warning("hand-off of %s failed (%r); again in %.1f s", schedule_id, failure, delay_s)
        self.timers.push(self._now_ms() + round(delay_s * 1000), (Step.HAND, schedule_id, due))

    async def stats(self) -> dict[str, int]:
        return {
            "schedules": len(self.schedules),
            "pending": sum(len(s.pending) for s in self.schedules.values()),
            "timer_events": len(self.timers),
            "handoffs": self.handoffs,
            "late_decisions": self.late_decisions,
        }

    async def drain(self) -> None:
        """Wait until every decision and hand-off started so far has finished (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        self.timers.stop()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def __repr__(self) -> str:
        pending = sum(len(s.pending) for s in self.schedules.values())
        return (
            f"<Scheduler schedules={len(self.schedules)} pending={pending} "
            f"events={len(self.timers)} handoffs={self.handoffs}>"
        )


# --- the actor --------------------------------------------------------------


class _SchedulerPartitionProcess(Scheduler):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        super().__init__(SchedulerSettings.of(settings), targets=make_targets(settings))
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


__all__ = ["PARTITIONS", "Scheduler", "SchedulerPartitionActor", "Step"]
