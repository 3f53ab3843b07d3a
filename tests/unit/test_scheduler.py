"""Scheduler partitions run directly (no Ray) on a FakeClock and a real SQLite store.

A restart is a second Scheduler opened on the same store and stream after the
first one stopped, as a restarted actor would be. The fake target remembers
every hand-off and, like the task queue, makes one job per idempotency key.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timezone
from typing import Any, ClassVar

import pytest

from actors.auth.client import Principal
from actors.queue.errors import JobArgsTooLarge, QueueNotFound, UnknownHandler
from actors.runtime.clock import FakeClock
from actors.runtime.errors import (
    Forbidden,
    InvalidInput,
    LimitReached,
    RealmError,
    TooLarge,
    Unavailable,
)
from actors.runtime.settings import Settings
from actors.runtime.store import SQLiteStore
from actors.scheduler.client import SchedulerClient, owner_tag
from actors.scheduler.errors import BadCron, ScheduleNotFound, UnknownTarget, UnknownTimeZone
from actors.scheduler.model import Misfire, jitter_ms, plan
from actors.scheduler.partition import Scheduler
from actors.scheduler.settings import SchedulerSettings
from actors.scheduler.targets import PubSubTarget, QueueTarget, check_handler
from actors.scheduler.triggers import Every, to_ms
from tests.conftest import until
from tests.unit.conftest import settle

#: 2026-03-07 12:00:00 UTC, a Saturday.
T0 = datetime(2026, 3, 7, 12, 0, tzinfo=timezone.utc).timestamp()
AHEAD_MS = 250


def noop_handler(**_: Any) -> None:
    """A handler the queue-target tests may name (this module is allowed there)."""


class FakeTarget:
    kind: ClassVar[str] = "fake"
    scope: ClassVar[str] = "queue:enqueue"
    tracks_runs: ClassVar[bool] = True

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float]] = []  #: (key, wall time) of every hand-off
        self.jobs: dict[str, dict[str, Any]] = {}  #: one job per key
        self.states: dict[str, str] = {}
        self.failures = 0  #: the next this-many hand-offs fail as unavailable
        self.hang: asyncio.Event | None = None  #: hand-offs wait for this, if set
        self.refusal: RealmError | None = None  #: hand-offs are refused with this, if set
        #: Owners who may not use a target (as ``authorize`` and ``fire`` find).
        self.unauthorized: set[str | None] = set()
        self.owners: list[str | None] = []  #: the owner of every hand-off

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {"type": self.kind, "queue": spec.get("queue", "q")}

    async def authorize(self, spec: dict[str, Any], owner: str | None) -> None:
        if owner in self.unauthorized:
            raise QueueNotFound(queue=spec["queue"])

    async def fire(self, spec: dict[str, Any], *, key: str, owner: str | None) -> dict[str, Any]:
        self.calls.append((key, self.clock.time()))
        self.owners.append(owner)
        await self.authorize(spec, owner)
        if self.hang is not None:
            await self.hang.wait()
        if self.failures:
            self.failures -= 1
            raise Unavailable("queue away")
        if self.refusal is not None:
            raise self.refusal
        job = self.jobs.setdefault(key, {"queue": spec["queue"], "job_id": f"job-{len(self.jobs)}"})
        return dict(job)

    async def status(
        self, spec: dict[str, Any], ref: dict[str, Any], *, owner: str | None
    ) -> str | None:
        return self.states.get(ref["job_id"], "succeeded")

    async def close(self) -> None: ...


class UntrackedTarget(FakeTarget):
    kind: ClassVar[str] = "untracked"
    tracks_runs: ClassVar[bool] = False


OpenScheduler = Callable[..., Awaitable[Scheduler]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=0.0, wall_offset=T0)


@pytest.fixture
def target(clock: FakeClock) -> FakeTarget:
    return FakeTarget(clock)


@pytest.fixture
async def open_scheduler(
    clock: FakeClock, store: SQLiteStore, target: FakeTarget
) -> AsyncIterator[OpenScheduler]:
    opened: list[Scheduler] = []

    async def open_(
        *, snapshot_every: int = 10_000, targets: dict[str, Any] | None = None, **config: Any
    ) -> Scheduler:
        scheduler = Scheduler(
            SchedulerSettings(decide_ahead_ms=AHEAD_MS, **config),
            targets={"fake": target, "untracked": UntrackedTarget(clock), **(targets or {})},
            clock=clock,
        )
        await scheduler.open(
            store, "scheduler-0", snapshot_every=snapshot_every, on_failure=lambda error: None
        )
        scheduler.start()
        opened.append(scheduler)
        return scheduler

    yield open_
    for scheduler in opened:
        await scheduler.stop()


@pytest.fixture
async def scheduler(open_scheduler: OpenScheduler) -> Scheduler:
    return await open_scheduler()


async def quiesce(scheduler: Scheduler) -> None:
    """Let every timer that is due, and everything it starts, run to the end."""
    for _ in range(30):
        await settle()
        await scheduler.drain()


async def advance(clock: FakeClock, scheduler: Scheduler, seconds: float, step: float = 0.1):
    """Move time forward in steps, letting due timers run at each."""
    end = clock.now() + seconds
    while clock.now() < end - 1e-9:
        # A microsecond more than the step: a timer armed for exactly the step's
        # end must not miss it by a float rounding.
        clock.advance(min(step, end - clock.now()) + 1e-6)
        await quiesce(scheduler)


def spec(**fields: Any) -> dict[str, Any]:
    return {"target": {"type": "fake"}, **fields}


def fired_dues(target: FakeTarget, schedule_id: str) -> list[int]:
    return sorted(int(key.split(":")[1]) for key in target.jobs if key.startswith(schedule_id))


# --- firing -------------------------------------------------------------------


async def test_interval_fires_once_per_due_time_with_its_key(
    clock: FakeClock, scheduler: Scheduler, target: FakeTarget
):
    view = await scheduler.create("s1", "ada", spec(every_s=10))
    assert view["state"] == "active" and view["every_s"] == 10
    await advance(clock, scheduler, 35)
    anchor = to_ms(datetime.fromtimestamp(T0, timezone.utc)) + 10_000
    assert [key for key, _ in target.calls] == [f"s1:{anchor + k * 10_000}" for k in range(3)]
    runs = await scheduler.history("s1", "ada")
    assert [run["outcome"] for run in runs] == ["fired"] * 3
    assert all(0 <= run["lateness_ms"] <= 100 for run in runs)
    assert runs[0]["ref"]["job_id"] == "job-2"  # newest first


async def test_cron_schedule_fires_at_the_wall_clock_time(
    clock: FakeClock, scheduler: Scheduler, target: FakeTarget
):
    await scheduler.create("c", "ada", spec(cron="*/30 * * * * *", timezone="Europe/Paris"))
    await advance(clock, scheduler, 91, step=0.5)
    assert [due % 60_000 for due in fired_dues(target, "c")] == [30_000, 0, 30_000]


async def test_one_shot_fires_once_then_completes(
    clock: FakeClock, scheduler: Scheduler, target: FakeTarget
):
    await scheduler.create("o", "ada", spec(at="2026-03-07T12:00:05Z"))
    assert len(await scheduler.upcoming("o", "ada")) == 1
    await advance(clock, scheduler, 20, step=1)
    assert len(target.calls) == 1
    view = await scheduler.get("o", "ada")
    assert view["state"] == "completed" and view["fired"] == 1
    assert await scheduler.upcoming("o", "ada") == []


async def test_a_firing_is_decided_ahead_and_handed_over_at_its_due_time(
    clock: FakeClock, scheduler: Scheduler, target: FakeTarget
):
    await scheduler.create("o", None, spec(at="2026-03-07T12:00:05Z"))
    await advance(clock, scheduler, 4.9, step=0.05)  # 100 ms before: decided, not handed
    assert target.calls == [] and scheduler.schedules["o"].pending
    await advance(clock, scheduler, 0.11, step=0.05)
    assert [at for _, at in target.calls] == [pytest.approx(T0 + 5, abs=0.02)]


async def test_target_unavailable_is_retried_with_the_same_key(
    clock: FakeClock, scheduler: Scheduler, target: FakeTarget
):
    target.failures = 3
    await scheduler.create("o", None, spec(at="2026-03-07T12:00:01Z"))
    await advance(clock, scheduler, 10, step=0.1)
    assert len(target.calls) == 4 and len({key for key, _ in target.calls}) == 1
    assert len(target.jobs) == 1
    assert [run["outcome"] for run in await scheduler.history("o")] == ["fired"]


# --- restarts -------------------------------------------------------------------


async def test_restart_neither_fires_twice_nor_skips(
    clock: FakeClock, open_scheduler: OpenScheduler, target: FakeTarget
):
    first = await open_scheduler()
    await first.create("s", None, spec(every_s=5))
    await advance(clock, first, 12)  # two fired
    await first.stop()
    second = await open_scheduler()  # recovers from the journal
    await advance(clock, second, 3.5)  # the third (due at 15 s) fires once
    dues = fired_dues(target, "s")
    assert len(target.calls) == len(dues) == 3
    assert [b - a for a, b in itertools.pairwise(dues)] == [5_000, 5_000]


async def test_crash_after_the_hand_off_before_it_was_recorded_makes_one_job(
    clock: FakeClock, open_scheduler: OpenScheduler, target: FakeTarget
):
    first = await open_scheduler()
    await first.create("s", None, spec(at="2026-03-07T12:00:02Z"))
    target.hang = asyncio.Event()
    clock.advance(2.0)
    # the decision's commit is real I/O (SQLite, on a thread)
    await until(lambda: target.calls, what="the hand-off to the target")
    assert len(target.calls) == 1  # handed over, the target has not answered
    await first.stop()  # crash: "done" is never journaled
    target.hang.set()
    target.hang = None
    target.jobs.setdefault(target.calls[0][0], {"queue": "q", "job_id": "job-0"})  # it landed
    second = await open_scheduler()
    await quiesce(second)
    assert len(target.calls) == 2 and target.calls[0][0] == target.calls[1][0]
    assert len(target.jobs) == 1
    runs = await second.history("s")
    assert [(run["outcome"], run["ref"]["job_id"]) for run in runs] == [("fired", "job-0")]


async def test_records_and_snapshots_bring_every_schedule_back_equal(
    clock: FakeClock, open_scheduler: OpenScheduler, target: FakeTarget, store: SQLiteStore
):
    # A snapshot every few records: a reopened partition reads the latest one and
    # replays the records after it, and each must give the state that was applied.
    first = await open_scheduler(snapshot_every=3)
    every = spec(every_s=5, jitter_s=1, overlap="skip", misfire="skip", misfire_grace_s=1)
    created = await first.create("every", "ada", every, key="create:every")
    await first.create("cron", None, spec(cron="*/30 * * * * *", timezone="Europe/Paris"))
    await first.create("once", "bob", spec(at="2026-03-07T12:00:03Z", name="once"))
    later = spec(every_s=60, start_at="2026-03-08T00:00:00", timezone="Asia/Tokyo", paused=True)
    await first.create("later", None, later)
    await first.create("gone", None, spec(every_s=10))
    await first.update("later", None, {"name": "renamed", "every_s": 120})
    await first.delete("gone")
    target.refusal = InvalidInput("queue closed", reasons=("paused", "full"))
    await advance(clock, first, 4)  # "once" is refused: a failed run
    target.refusal, target.failures = None, 1
    await advance(clock, first, 3)  # "every" fires after one retry
    target.states.update({job["job_id"]: "running" for job in target.jobs.values()})
    await advance(clock, first, 5)  # and skips its next run: the job still runs
    await first.stop()
    await first.journal.drain()
    await until(lambda: store.read_snapshot("scheduler-0"), what="a snapshot in the store")
    clock.advance(30)  # down: "every" misses its runs, "cron" is late within grace

    second = await open_scheduler(snapshot_every=3)
    assert second.schedules == first.schedules
    assert await second.create("every", "ada", every, key="create:every") == created
    await advance(clock, second, 1)
    await second.stop()
    await second.journal.drain()
    third = await open_scheduler(snapshot_every=3)
    assert third.schedules == second.schedules
    outcomes = {run.outcome.value for s in third.schedules.values() for run in s.history}
    assert outcomes == {"fired", "failed", "skipped_overlap", "missed"}
    [failed] = await third.history("once", "bob")
    assert failed["error"]["details"] == {"reasons": ["paused", "full"]}


@pytest.mark.parametrize(
    ("misfire", "fired", "missed"),
    [("skip", 0, 6), ("fire_once", 1, 5), ("fire_all", 6, 0)],
)
async def test_misfire_policy_after_an_outage(
    clock: FakeClock,
    open_scheduler: OpenScheduler,
    target: FakeTarget,
    misfire: str,
    fired: int,
    missed: int,
):
    first = await open_scheduler()
    await first.create("s", None, spec(every_s=10, misfire=misfire, misfire_grace_s=5))
    await advance(clock, first, 10.5)  # the run at 10 s fires
    await first.stop()
    clock.advance(67)  # down over the runs at 20..70 s (all over 5 s late)
    second = await open_scheduler()
    await quiesce(second)
    assert len(target.jobs) == 1 + fired
    runs = await second.history("s")
    assert sum(run["outcome"] == "fired" for run in runs) == 1 + fired
    assert sum(run.get("count", 0) for run in runs if run["outcome"] == "missed") == missed
    if misfire == "fire_once":  # the latest missed run is the one fired
        assert max(fired_dues(target, "s")) % 100_000 == 70_000 % 100_000
    await advance(clock, second, 10)  # then back on the timetable: the run at 80 s
    assert len(target.jobs) == 2 + fired


async def test_a_late_run_within_grace_fires(
    clock: FakeClock, open_scheduler: OpenScheduler, target: FakeTarget
):
    first = await open_scheduler()
    await first.create("s", None, spec(every_s=10, misfire="skip", misfire_grace_s=30))
    await first.stop()
    clock.advance(25)  # the run at 10 s is 15 s late, the one at 20 s 5 s late
    second = await open_scheduler()
    await quiesce(second)
    runs = await second.history("s")
    assert [run["outcome"] for run in runs] == ["fired", "fired"]
    assert sorted(run["lateness_ms"] for run in runs) == [5_000, 15_000]


def test_plan_walks_a_long_outage_without_hanging():
    trigger = Every(1_000, 0)
    decided = plan(
        trigger,
        1_000,
        fire_at=lambda d: d,
        now_ms=10_000_000_000,
        horizon_ms=10_000_000_250,
        grace_ms=0,
        misfire=Misfire.FIRE_ONCE,
        max_catchup=10,
    )
    assert len(decided.fire) == 1 and decided.missed_uncounted
    assert decided.next_due is not None and decided.next_due > 10_000_000_000


def test_plan_fire_all_is_capped():
    decided = plan(
        Every(1_000, 0),
        1_000,
        fire_at=lambda d: d,
        now_ms=50_500,
        horizon_ms=50_750,
        grace_ms=0,
        misfire=Misfire.FIRE_ALL,
        max_catchup=10,
    )
    assert decided.fire == list(range(41_000, 51_000, 1_000))
    assert len(decided.missed) == 40 and decided.next_due == 51_000


# --- policies -------------------------------------------------------------------


async def test_overlap_skip_while_the_previous_job_runs(
    clock: FakeClock, scheduler: Scheduler, target: FakeTarget
):
    await scheduler.create("s", None, spec(every_s=10, overlap="skip"))
    await advance(clock, scheduler, 10.5)
    target.states["job-0"] = "running"
    await advance(clock, scheduler, 10)
    target.states["job-0"] = "succeeded"
    await advance(clock, scheduler, 10)
    outcomes = [run["outcome"] for run in reversed(await scheduler.history("s"))]
    assert outcomes == ["fired", "skipped_overlap", "fired"]
    assert len(target.jobs) == 2


async def test_overlap_allow_fires_anyway(
    clock: FakeClock, scheduler: Scheduler, target: FakeTarget
):
    await scheduler.create("s", None, spec(every_s=10))
    await advance(clock, scheduler, 10.5)
    target.states["job-0"] = "running"
    await advance(clock, scheduler, 10)
    assert len(target.jobs) == 2


async def test_jitter_is_deterministic_and_within_bounds(
    clock: FakeClock, scheduler: Scheduler, target: FakeTarget
):
    offsets = [jitter_ms("s", due, 2.0) for due in range(0, 100_000, 1_000)]
    assert offsets == [jitter_ms("s", due, 2.0) for due in range(0, 100_000, 1_000)]
    assert all(0 <= o <= 2_000 for o in offsets) and len(set(offsets)) > 50
    assert jitter_ms("s", 5, 0) == 0
    await scheduler.create("s", None, spec(every_s=10, jitter_s=2))
    upcoming = await scheduler.upcoming("s", count=3)
    await advance(clock, scheduler, 32.5, step=0.05)
    handed = [round(at * 1000) for _, at in target.calls]
    expected = [round(datetime.fromisoformat(u["fire_at"]).timestamp() * 1000) for u in upcoming]
    assert all(0 <= h - e < 60 for h, e in zip(handed, expected, strict=True))


async def test_pause_stops_firing_and_resume_does_not_catch_up(
    clock: FakeClock, scheduler: Scheduler, target: FakeTarget
):
    await scheduler.create("s", "ada", spec(every_s=10))
    await advance(clock, scheduler, 10.5)
    assert (await scheduler.pause("s", "ada"))["state"] == "paused"
    assert await scheduler.upcoming("s", "ada") == []
    await advance(clock, scheduler, 40, step=1)
    assert len(target.jobs) == 1
    await scheduler.resume("s", "ada")
    await advance(clock, scheduler, 10.5)
    assert len(target.jobs) == 2  # only the next one after resuming


async def test_update_retimes_and_delete_stops(
    clock: FakeClock, scheduler: Scheduler, target: FakeTarget
):
    await scheduler.create("s", "ada", spec(every_s=10, name="a"))
    view = await scheduler.update("s", "ada", {"name": "b"})
    assert view["name"] == "b" and view["every_s"] == 10
    await scheduler.update("s", "ada", {"every_s": 3})
    await advance(clock, scheduler, 10)
    assert len(target.jobs) == 3
    await scheduler.update("s", "ada", {"cron": "0 0 1 1 *"})
    upcoming = await scheduler.upcoming("s", "ada", count=2)
    assert [u["due_at"][:10] for u in upcoming] == ["2027-01-01", "2028-01-01"]
    assert await scheduler.delete("s", "ada")
    await advance(clock, scheduler, 10, step=1)
    assert len(target.jobs) == 3
    with pytest.raises(ScheduleNotFound):
        await scheduler.get("s", "ada")


async def test_schedules_are_private_to_their_owner(scheduler: Scheduler):
    await scheduler.create("s", "ada", spec(every_s=10))
    with pytest.raises(ScheduleNotFound):
        await scheduler.get("s", "bob")
    with pytest.raises(ScheduleNotFound):
        await scheduler.delete("s", "bob")
    assert [v["id"] for v in await scheduler.list_schedules("ada")] == ["s"]
    assert await scheduler.list_schedules("bob") == []


async def test_upcoming_in_the_zone_across_spring_forward(clock: FakeClock, scheduler: Scheduler):
    await scheduler.create("d", None, spec(cron="30 2 * * *", timezone="America/New_York"))
    upcoming = await scheduler.upcoming("d", count=3)
    assert [u["due_at"] for u in upcoming] == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]


async def test_spring_forward_day_fires_once_at_0300(
    clock: FakeClock, scheduler: Scheduler, target: FakeTarget
):
    await scheduler.create("d", None, spec(cron="30 2 * * *", timezone="America/New_York"))
    clock.advance(datetime.fromisoformat("2026-03-08T01:59:59-05:00").timestamp() - clock.time())
    await quiesce(scheduler)
    await advance(clock, scheduler, 1)  # the wall clock jumps to 03:00 EDT
    await advance(clock, scheduler, 7_200, step=60)  # and nothing more that day
    assert [at for _, at in target.calls] == [
        pytest.approx(datetime.fromisoformat("2026-03-08T03:00:00-04:00").timestamp(), abs=0.01)
    ]


# --- refusals change nothing ---------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"cron": "61 * * * *"}, BadCron),
        ({"cron": "* * *"}, BadCron),
        ({"cron": "0 9 * * *", "timezone": "Mars/Base"}, UnknownTimeZone),
        ({"every_s": 10, "target": {"type": "carrier-pigeon"}}, UnknownTarget),
        ({"every_s": 10, "target": "queue"}, InvalidInput),
        ({"every_s": 0.1}, InvalidInput),
        ({"every_s": 10, "cron": "* * * * *"}, InvalidInput),
        ({}, InvalidInput),
        ({"at": "2020-01-01T00:00:00Z"}, InvalidInput),
        ({"every_s": 10, "misfire": "sometimes"}, InvalidInput),
        ({"every_s": 10, "jitter_s": 10}, InvalidInput),
        ({"every_s": 10, "overlap": "skip", "target": {"type": "untracked"}}, InvalidInput),
        ({"every_s": 10, "colour": "blue"}, InvalidInput),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_created(
    scheduler: Scheduler, fields: dict[str, Any], error: type[Exception]
):
    with pytest.raises(error):
        await scheduler.create("bad", None, {"target": {"type": "fake"}, **fields})
    assert scheduler.schedules == {}


def test_queue_target_checks_handler_and_args():
    allowed = "tests.unit.test_scheduler"
    settings = Settings(queue_handler_modules=allowed, queue_max_args_bytes=64)
    target = QueueTarget(settings)
    good = target.validate({"type": "queue", "queue": "q", "handler": f"{__name__}:noop_handler"})
    assert good["args"] == {} and good["priority"] == 5
    handler = f"{__name__}:noop_handler"
    with pytest.raises(UnknownHandler):
        check_handler("os:system", allowed)
    with pytest.raises(UnknownHandler):
        check_handler(f"{__name__}:no_such_function", allowed)
    with pytest.raises(UnknownHandler):
        check_handler("tests.unit.test_scheduler.nope:f", allowed)
    with pytest.raises(JobArgsTooLarge):
        target.validate({"queue": "q", "handler": handler, "args": {"x": "y" * 100}})
    with pytest.raises(InvalidInput):
        target.validate({"queue": "q", "handler": handler, "priority": 10})
    with pytest.raises(InvalidInput):
        target.validate({"queue": "", "handler": handler})


async def test_fall_back_day_fires_once_at_the_first_0130(
    clock: FakeClock, scheduler: Scheduler, target: FakeTarget
):
    clock.advance(datetime.fromisoformat("2026-10-31T12:00:00-04:00").timestamp() - clock.time())
    await scheduler.create("d", None, spec(cron="30 1 * * *", timezone="America/New_York"))
    clock.advance(datetime.fromisoformat("2026-11-01T01:29:59-04:00").timestamp() - clock.time())
    await quiesce(scheduler)
    await advance(clock, scheduler, 1)  # 01:30 EDT
    await advance(clock, scheduler, 7_200, step=60)  # 01:30 EST passes too: no second run
    assert [at for _, at in target.calls] == [
        pytest.approx(datetime.fromisoformat("2026-11-01T01:30:00-04:00").timestamp(), abs=0.01)
    ]


def test_pubsub_target_checks_topic_and_payload():
    target = PubSubTarget(Settings(scheduler_max_payload_bytes=32))
    good = target.validate({"type": "pubsub", "topic": "a.b", "payload": {"n": 1}})
    assert good == {"type": "pubsub", "topic": "a.b", "payload": {"n": 1}}
    assert not target.tracks_runs
    for bad in (
        {"topic": "a.*"},
        {"topic": ""},
        {"topic": "a.b", "payload": "x" * 64},
        {"topic": "a.b", "headers": {}},
    ):
        with pytest.raises((InvalidInput, TooLarge)):
            target.validate({"type": "pubsub", **bad})


async def test_a_stale_incarnation_cannot_fire_what_the_owner_fires(
    clock: FakeClock, open_scheduler: OpenScheduler, target: FakeTarget
):
    # Two live incarnations of one partition (a zombie and its replacement):
    # both decide the same due time, only one decision reaches the journal, and
    # only a committed decision is ever handed over.
    first = await open_scheduler()
    await first.create("s", None, spec(at="2026-03-07T12:00:02Z"))
    second = await open_scheduler()
    clock.advance(2.0)
    for scheduler in (first, second, first, second):
        await quiesce(scheduler)
    assert len(target.calls) == 1 and len(target.jobs) == 1
    # The loser's journal refused the append (in an actor, it would now crash and recover).
    assert [s.journal._broken is not None for s in (first, second)].count(True) == 1


# --- a schedule acts for its owner, with their rights only ---------------------

#: Topics the ACL hook of these tests refuses.
DENIED: set[str] = set()


def acl_hook(user: Principal, action: str, subject: str) -> bool:
    """The pub/sub ACL hook (``REALM_PUBSUB_ACL_HOOK``) of these tests."""
    return subject not in DENIED


@pytest.fixture
def pubsub_target() -> Iterator[PubSubTarget]:
    DENIED.clear()
    yield PubSubTarget(Settings(pubsub_acl_hook=f"{__name__}:acl_hook"))
    DENIED.clear()


async def test_a_pubsub_target_is_held_to_its_owners_acl(pubsub_target: PubSubTarget):
    mine = pubsub_target.validate({"type": "pubsub", "topic": "user.ada.news"})
    await pubsub_target.authorize(mine, "ada")
    theirs = pubsub_target.validate({"type": "pubsub", "topic": "user.bob.inbox"})
    with pytest.raises(Forbidden):
        await pubsub_target.authorize(theirs, "ada")
    with pytest.raises(Forbidden):  # and at fire time, before anything is published
        await pubsub_target.fire(theirs, key="k", owner="ada")
    with pytest.raises(Forbidden):  # a schedule without an owner is nobody's: no private topic
        await pubsub_target.authorize(mine, None)
    DENIED.add("news.today")  # the hook is asked too
    with pytest.raises(Forbidden):
        await pubsub_target.authorize({"type": "pubsub", "topic": "news.today"}, "ada")


async def test_a_schedule_to_another_users_private_topic_is_refused(
    open_scheduler: OpenScheduler, pubsub_target: PubSubTarget
):
    scheduler = await open_scheduler(targets={"pubsub": pubsub_target})
    victim = {"type": "pubsub", "topic": "user.bob.inbox", "payload": {"x": 1}}
    with pytest.raises(Forbidden):
        await scheduler.create("s", "ada", {"every_s": 10, "target": victim})
    assert scheduler.schedules == {}
    await scheduler.create("s", "ada", {"every_s": 10, "target": {**victim, "topic": "news"}})
    with pytest.raises(Forbidden):  # nor may a schedule be pointed there later
        await scheduler.update("s", "ada", {"target": victim})
    assert (await scheduler.get("s", "ada"))["target"]["topic"] == "news"


async def test_the_owners_acl_applies_again_at_fire_time(
    clock: FakeClock, open_scheduler: OpenScheduler, pubsub_target: PubSubTarget
):
    scheduler = await open_scheduler(targets={"pubsub": pubsub_target})
    topic = {"type": "pubsub", "topic": "news.ada", "payload": None}
    await scheduler.create("s", "ada", {"every_s": 10, "target": topic})
    DENIED.add("news.ada")  # the hook says no from now on
    await advance(clock, scheduler, 11)
    [run] = await scheduler.history("s", "ada")
    assert (run["outcome"], run["error"]["code"]) == ("failed", "forbidden")


class FakeQueues:
    """The task queue's client as the queue target uses it: queues by (owner, name)."""

    def __init__(self, *queues: tuple[str, str]) -> None:
        self.queues = set(queues)
        self.enqueued: list[tuple[str, str, str]] = []  #: (owner, queue, idempotency key)

    async def exists(self, queue: str, *, owner: str) -> bool:
        return (owner, queue) in self.queues

    async def enqueue(
        self, queue: str, handler: str, args: Any, *, owner: str, **options: Any
    ) -> dict[str, Any]:
        if (owner, queue) not in self.queues:
            raise QueueNotFound(queue=queue)
        self.enqueued.append((owner, queue, options["idempotency_key"]))
        return {"queue": queue, "id": f"job-{len(self.enqueued)}", "state": "queued"}

    async def close(self) -> None: ...


async def test_a_queue_target_reaches_only_its_owners_queues():
    target = QueueTarget(Settings(queue_handler_modules=__name__))
    queues = target._client = FakeQueues(("ada", "emails"))  # type: ignore[assignment]
    job = {"type": "queue", "queue": "emails", "handler": f"{__name__}:noop_handler"}
    normalized = target.validate(job)
    await target.authorize(normalized, "ada")
    for owner in ("bob", None):  # bob's "emails" would be his own: he has none
        with pytest.raises(QueueNotFound):
            await target.authorize(normalized, owner)
        with pytest.raises(QueueNotFound):
            await target.fire(normalized, key="s:1", owner=owner)
    assert await target.fire(normalized, key="s:2", owner="ada") == {
        "queue": "emails",
        "job_id": "job-1",
        "state": "queued",
    }
    assert queues.enqueued == [("ada", "emails", "s:2")]
    with pytest.raises(InvalidInput):  # a job's timeout has a maximum
        target.validate({**job, "timeout_s": 10**9})


async def test_a_schedule_is_refused_a_target_its_owner_may_not_use(
    clock: FakeClock, scheduler: Scheduler, target: FakeTarget
):
    target.unauthorized.add("bob")
    with pytest.raises(QueueNotFound):
        await scheduler.create("b", "bob", spec(every_s=10))
    assert scheduler.schedules == {}
    await scheduler.create("a", "ada", spec(every_s=10))
    await advance(clock, scheduler, 11)
    assert target.owners == ["ada"]  # a firing acts for its owner
    target.unauthorized.add("ada")  # e.g. ada deleted the queue: firings fail, as absent
    await advance(clock, scheduler, 10)
    runs = await scheduler.history("a", "ada")
    assert [(r["outcome"], (r["error"] or {}).get("code")) for r in runs] == [
        ("failed", "queue_not_found"),
        ("fired", None),
    ]
    with pytest.raises(QueueNotFound):  # and it cannot be changed while she may not
        await scheduler.update("a", "ada", {"name": "renamed"})


async def test_an_owner_holds_at_most_max_schedules(open_scheduler: OpenScheduler):
    scheduler = await open_scheduler(max_schedules_per_owner=2, snapshot_every=3)
    await scheduler.create("a1", "ada", spec(every_s=10))
    await scheduler.create("a2", "ada", spec(every_s=10))
    with pytest.raises(LimitReached):
        await scheduler.create("a3", "ada", spec(every_s=10))
    assert sorted(scheduler.schedules) == ["a1", "a2"]
    await scheduler.create("b1", "bob", spec(every_s=10))  # others are not held back
    assert await scheduler.delete("a1", "ada")
    await scheduler.create("a3", "ada", spec(every_s=10))
    # the count comes back with the schedules after a restart (snapshot and records)
    await scheduler.stop()
    again = await open_scheduler(max_schedules_per_owner=2, snapshot_every=3)
    assert again.owned == {"ada": 2, "bob": 1}
    with pytest.raises(LimitReached):
        await again.create("a4", "ada", spec(every_s=10))


def test_an_owners_schedules_all_live_on_one_partition():
    client = SchedulerClient(Settings(scheduler_partitions=16))
    ada = {client._partition(f"{owner_tag('ada')}-{uuid.uuid4().hex}").name for _ in range(50)}
    assert len(ada) == 1  # so that partition holds her to her quota exactly
    spread = {client._partition(f"{owner_tag(f'u{i}')}-x").name for i in range(200)}
    assert len(spread) > 8  # and owners are spread over the partitions
    old = uuid.uuid4().hex  # an id made before owner tags is placed as it was
    assert client._partition(old) is client.partitions.owner(old)


async def test_a_schedule_is_created_for_an_owner():
    client = SchedulerClient(Settings())
    for owner in (None, "", "x" * 200):
        with pytest.raises(InvalidInput):
            await client.create(spec(every_s=10), owner=owner)  # type: ignore[arg-type]
