"""What the runtime and the services record in Realm's metrics, without Ray:
journal commits, fan-out lag, cache lookups, queue depth and ledger 2PC phases.
Each test reads a metric's in-process value before and after."""

from __future__ import annotations

import asyncio
from typing import Any

from actors.cache.shard import CacheShard
from actors.ledger.coordinator import TxCoordinator
from actors.ledger.model import AccountSpec, TransferSpec
from actors.ledger.shard import LedgerShard
from actors.queue.jobqueue import JobQueue
from actors.queue.model import JobState
from actors.queue.settings import QueueSettings
from actors.runtime import metrics
from actors.runtime.clock import FakeClock
from actors.runtime.fanout import Mailboxes
from actors.runtime.journal import Durable
from actors.runtime.store import SQLiteStore
from actors.scheduler.partition import Scheduler
from actors.scheduler.settings import SchedulerSettings
from tests.unit.conftest import settle
from tests.unit.test_scheduler import AHEAD_MS, T0, FakeTarget, advance


class Tally(Durable):
    def __init__(self) -> None:
        self.total = 0

    def snapshot_state(self) -> int:
        return self.total

    def restore_state(self, state: int) -> None:
        self.total = state

    def apply_add(self, amount: int) -> int:
        self.total += amount
        return self.total


class _TallyProcess(Tally):
    """As an actor's process class is named: the label is still ``Tally``."""


async def test_every_group_commit_is_timed_and_its_records_counted(store: SQLiteStore):
    commits = metrics.JOURNAL_COMMIT_SECONDS
    batches = metrics.JOURNAL_BATCH_RECORDS

    def now() -> tuple[int, int, float]:
        label = {"actor": "Tally"}
        return commits.count(**label), batches.count(**label), batches.sum(**label)

    before = now()
    tally = _TallyProcess()
    await tally.open(store, "tally", on_failure=lambda error: None)
    await asyncio.gather(*(tally.execute("add", amount=1) for _ in range(50)))
    await tally.execute("add", amount=1)
    after = now()
    assert after[0] - before[0] == tally.journal.commits >= 2
    assert after[1] - before[1] == tally.journal.commits
    assert after[2] - before[2] == 51  # every record counted once
    assert commits.sum(actor="Tally") > 0


async def test_a_pull_reports_how_long_its_oldest_new_message_waited(clock: FakeClock):
    lag = metrics.FANOUT_LAG_SECONDS
    before = (lag.count(owner="test-fanout"), lag.sum(owner="test-fanout"))
    boxes = Mailboxes(clock, name="test-fanout")
    boxes.post("f", "a")
    clock.advance(2.0)
    boxes.post("f", "b")
    clock.advance(0.5)
    assert [m for _, m in await boxes.pull("f", after=0, timeout_s=1)] == ["a", "b"]
    assert lag.count(owner="test-fanout") - before[0] == 1
    assert lag.sum(owner="test-fanout") - before[1] == 2.5  # "a" waited 2.5 s
    # The same messages handed out again (not yet acknowledged) are not new.
    await boxes.pull("f", after=0, timeout_s=1)
    assert lag.count(owner="test-fanout") - before[0] == 1
    # Acknowledged, then a new one: its own wait only.
    boxes.post("f", "c")
    clock.advance(0.25)
    assert [m for _, m in await boxes.pull("f", after=2, timeout_s=1)] == ["c"]
    assert lag.count(owner="test-fanout") - before[0] == 2
    assert lag.sum(owner="test-fanout") - before[1] == 2.75


async def test_a_message_waited_for_by_a_long_poll_counts_from_its_post(clock: FakeClock):
    lag = metrics.FANOUT_LAG_SECONDS
    before = lag.count(owner="test-poll")
    boxes = Mailboxes(clock, name="test-poll")
    pull = asyncio.create_task(boxes.pull("f", after=0, timeout_s=10))
    await settle()
    clock.advance(5.0)  # a poll waiting long is no lag
    boxes.post("f", "a")
    assert [m for _, m in await pull] == ["a"]
    assert lag.count(owner="test-poll") - before == 1
    assert lag.sum(owner="test-poll") == 0.0


async def test_cache_hits_and_misses_are_counted_per_call(make_settings, clock: FakeClock):
    lookups = metrics.CACHE_LOOKUPS

    def counts() -> tuple[float, float]:
        return lookups.value(tier="shard", result="hit"), lookups.value(tier="shard", result="miss")

    shard = CacheShard(make_settings(), clock=clock)
    await shard.set("ada:a", b"1")
    await shard.set("ada:b", b"2")
    hits, misses = counts()
    assert (await shard.get("ada:a"))[0] == b"1"
    assert (await shard.get("ada:zz"))[0] is None
    await shard.mget(["ada:a", "ada:b", "ada:c"])
    assert (await shard.load_begin("ada:b"))[0] == "hit"
    assert counts() == (hits + 4, misses + 2)
    assert shard.stats_.hits == 4 and shard.stats_.misses == 2  # the same figures


async def test_queue_depth_by_state_is_exported_under_the_queues_actor_name(
    store: SQLiteStore, clock: FakeClock
):
    config = QueueSettings(max_batch_jobs=10)
    queue = JobQueue("q", config, clock=clock, holder="queue/ada/q/1234")
    await queue.open(store, "queue-q", on_failure=lambda error: None)
    handler = "actors.queue.handlers:noop"
    await queue.enqueue([{"handler": handler} for _ in range(3)])
    await queue.enqueue([{"handler": handler, "delay_s": 60}])
    queue.report_depth()

    def depth(state: JobState) -> float:
        return metrics.QUEUE_JOBS.value(queue="queue/ada/q/1234", state=state.value)

    assert depth(JobState.QUEUED) == 3
    assert depth(JobState.SCHEDULED) == 1
    assert depth(JobState.DEAD) == 0
    await queue.cancel(next(iter(queue.table.by_state[JobState.QUEUED])))
    queue.report_depth()
    assert (depth(JobState.QUEUED), depth(JobState.CANCELLED)) == (2, 1)


def route(account_id: str) -> int:
    return 0 if account_id.startswith("a") else 1


async def ledger(store: SQLiteStore, clock: FakeClock) -> TxCoordinator:
    shards = []
    for i in range(2):
        shard = LedgerShard(clock=clock, name=f"s{i}")
        await shard.open(store, f"s{i}", on_failure=lambda error: None)
        shards.append(shard)
    for spec in (
        AccountSpec("a-alice", 1, debits_must_not_exceed_credits=True),
        AccountSpec("b-bank", 1),
        AccountSpec("b-bob", 1, debits_must_not_exceed_credits=True),
    ):
        await shards[route(spec.id)].create_accounts([spec])
    ports: list[Any] = shards
    coordinator = TxCoordinator("c0", ports, route, clock=clock)
    await coordinator.open(store, "c0", on_failure=lambda error: None)
    await coordinator.recover()
    return coordinator


async def test_ledger_2pc_phases_are_counted_with_their_outcomes(
    store: SQLiteStore, clock: FakeClock
):
    steps = metrics.LEDGER_2PC
    phases = [("prepare", "ok"), ("prepare", "refused"), ("decide", "ok"), ("commit", "ok"),
              ("abort", "ok")]  # fmt: skip
    before = {p: steps.value(phase=p[0], outcome=p[1]) for p in phases}
    timed_before = metrics.LEDGER_2PC_SECONDS.count(phase="commit")
    coordinator = await ledger(store, clock)
    [funded] = await coordinator.run([[TransferSpec("t1", "b-bank", "a-alice", 10, 1)]])
    [refused] = await coordinator.run([[TransferSpec("t2", "b-bob", "a-alice", 5, 1)]])
    assert funded[0] == "ok" and refused[0] != "ok"
    counted = {p: steps.value(phase=p[0], outcome=p[1]) - before[p] for p in phases}
    assert counted == {
        ("prepare", "ok"): 1,
        ("prepare", "refused"): 1,  # bob has nothing
        ("decide", "ok"): 1,
        ("commit", "ok"): 1,
        ("abort", "ok"): 1,
    }
    assert metrics.LEDGER_2PC_SECONDS.count(phase="commit") - timed_before == 1


async def test_a_schedules_lateness_is_reported_per_target_kind(store: SQLiteStore):
    clock = FakeClock(start=0.0, wall_offset=T0)
    target = FakeTarget(clock)
    lateness = metrics.SCHEDULER_LATENESS_SECONDS
    before = (lateness.count(target="fake"), lateness.sum(target="fake"))
    scheduler = Scheduler(
        SchedulerSettings(decide_ahead_ms=AHEAD_MS), targets={"fake": target}, clock=clock
    )
    await scheduler.open(store, "scheduler-0", on_failure=lambda error: None)
    scheduler.start()
    try:
        await scheduler.create("s1", "ada", {"target": {"type": "fake"}, "every_s": 10})
        await advance(clock, scheduler, 25)
    finally:
        await scheduler.stop()
    assert len(target.calls) == 2
    assert lateness.count(target="fake") - before[0] == 2
    assert 0 <= lateness.sum(target="fake") - before[1] < 1  # handed over within 0.1 s steps
