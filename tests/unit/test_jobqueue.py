"""JobQueue run directly (no Ray) on a FakeClock, a real SQLite store and a fake worker pool.

The dispatcher is stepped by hand (``dispatch()``); the fake pool holds each
batch until the test answers it. Recovery is a second JobQueue opened on the
same store, as a restarted actor would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors.queue.dispatcher import SLOT_HOLD_S
from actors.queue.errors import JobArgsTooLarge, JobNotFound, JobStateConflict, UnknownHandler
from actors.queue.jobqueue import JobQueue
from actors.queue.model import Work, backoff_s
from actors.queue.settings import QueueSettings
from actors.queue.workers import JobSlots
from actors.runtime.clock import FakeClock
from actors.runtime.errors import InvalidInput
from actors.runtime.store import SQLiteStore
from tests.unit.conftest import settle

NOOP = "actors.queue.handlers:noop"
VISIBILITY_S = 30.0


class FakePool:
    """Holds every batch until the test answers it."""

    size = 2

    def __init__(self, capacity: int = 1_000) -> None:
        self.capacity = capacity
        self.pending: list[tuple[list[Work], asyncio.Future[Any]]] = []
        self.cancelled: list[str] = []

    def available(self) -> int:
        return self.capacity - sum(len(batch) for batch, _ in self.pending)

    async def run(self, batch: list[Work]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending.append((batch, future))
        return await future

    def cancel(self, job_ids: list[str]) -> None:
        self.cancelled += job_ids

    def handed(self) -> list[Work]:
        return [work for batch, _ in self.pending for work in batch]

    async def answer(self, clock: FakeClock, *, ok: bool = True, error: str = "boom") -> list[str]:
        """Answer every pending batch (each job started and ended now)."""
        now = clock.time()
        answered = []
        for batch, future in self.pending:
            outcomes = [
                (w[0], w[1], ok, {"ran": w[0]} if ok else None, None if ok else error, now, now)
                for w in batch
            ]
            future.set_result(outcomes)
            answered += [w[0] for w in batch]
        self.pending.clear()
        await settle()
        return answered

    async def lose_workers(self) -> None:
        for _, future in self.pending:
            future.set_exception(RuntimeError("worker died"))
        self.pending.clear()
        await settle()


OpenQueue = Callable[..., Awaitable[JobQueue]]


@pytest.fixture
def open_queue(clock: FakeClock, store: SQLiteStore) -> OpenQueue:
    async def open_(*, pool: FakePool | None = None, **config: Any) -> JobQueue:
        defaults: dict[str, Any] = {
            "visibility_timeout_s": VISIBILITY_S,
            "backoff_base_s": 1.0,
            "backoff_max_s": 60.0,
            "max_attempts": 3,
            "result_ttl_s": 100.0,
            "dead_ttl_s": 1_000.0,
            "unique_for_s": 50.0,
            "max_args_bytes": 1_000,
            "max_batch_jobs": 10,
        }
        queue = JobQueue("q", QueueSettings(**(defaults | config)), clock=clock)
        failures: list[BaseException] = []
        await queue.open(store, "queue-q", snapshot_every=10_000, on_failure=failures.append)
        if pool is not None:
            queue.dispatcher.attach(pool)
        return queue

    return open_


@pytest.fixture
def pool() -> FakePool:
    return FakePool()


@pytest.fixture
async def queue(open_queue: OpenQueue, pool: FakePool) -> JobQueue:
    return await open_queue(pool=pool)


async def put(queue: JobQueue, handler: str = NOOP, **spec: Any) -> dict[str, Any]:
    [job] = await queue.enqueue([{"handler": handler, **spec}])
    assert isinstance(job, dict)
    return job


async def state(queue: JobQueue, job_id: str) -> str:
    return (await queue.get(job_id))["state"]


async def step(queue: JobQueue) -> None:
    queue.dispatcher.dispatch()
    await settle()


# --- backoff -------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    for attempt in range(1, 12):
        ceiling = min(60.0, 1.0 * 2 ** (attempt - 1))
        wait = backoff_s("job-a", attempt, 1.0, 60.0)
        assert ceiling / 2 <= wait <= ceiling
        assert wait == backoff_s("job-a", attempt, 1.0, 60.0)  # the same on replay
    assert len({backoff_s(f"job-{i}", 3, 1.0, 60.0) for i in range(50)}) > 40  # jitter spreads
    assert backoff_s("x", 1_000, 1.0, 60.0) <= 60.0


async def test_a_failing_job_retries_with_backoff_then_is_dead(
    queue: JobQueue, pool: FakePool, clock: FakeClock
) -> None:
    job = await put(queue, max_attempts=3)
    for attempt in (1, 2):
        await step(queue)
        assert [w[1] for w in pool.handed()] == [attempt]
        failed_at = clock.time()
        await pool.answer(clock, ok=False, error=f"boom {attempt}")
        found = await queue.get(job["id"])
        assert found["state"] == "failed"
        assert found["error"] == f"boom {attempt}"
        assert found["run_at"] == failed_at + backoff_s(job["id"], attempt, 1.0, 60.0)
        # not before its time
        clock.advance(found["run_at"] - clock.time() - 0.01)
        await step(queue)
        assert pool.handed() == []
        clock.advance(0.02)
    await step(queue)
    await pool.answer(clock, ok=False)
    dead = await queue.get(job["id"])
    assert (dead["state"], dead["attempts"]) == ("dead", 3)
    stats = await queue.stats()
    assert (stats["failed"], stats["counters"]["dead"], stats["depth"]["dead"]) == (3, 1, 1)


async def test_dead_jobs_are_retried_or_discarded_by_hand(
    queue: JobQueue, pool: FakePool, clock: FakeClock
) -> None:
    jobs = [await put(queue, max_attempts=1) for _ in range(3)]
    await step(queue)
    await pool.answer(clock, ok=False)
    assert [await state(queue, j["id"]) for j in jobs] == ["dead"] * 3
    # one by hand: fresh attempts, runs again
    assert await queue.retry([jobs[0]["id"]]) == [jobs[0]["id"]]
    assert (await queue.get(jobs[0]["id"]))["attempts"] == 0
    await step(queue)
    assert [w[0] for w in pool.handed()] == [jobs[0]["id"]]
    await pool.answer(clock)
    assert await state(queue, jobs[0]["id"]) == "succeeded"
    # only dead jobs can be retried; nothing changes on refusal
    with pytest.raises(JobStateConflict):
        await queue.retry([jobs[1]["id"], jobs[0]["id"]])
    assert await state(queue, jobs[1]["id"]) == "dead"
    with pytest.raises(JobNotFound):
        await queue.retry(["nope"])
    # bulk discard takes every dead job
    assert sorted(await queue.discard()) == sorted([jobs[1]["id"], jobs[2]["id"]])
    with pytest.raises(JobNotFound):
        await queue.get(jobs[1]["id"])
    assert await queue.retry() == []


# --- dispatch order, delays, limits ---------------------------------------------


async def test_higher_priority_first_then_first_in_first_out(
    queue: JobQueue, pool: FakePool
) -> None:
    order = [(1, "a"), (9, "b"), (5, "c"), (9, "d"), (1, "e"), (5, "f")]
    ids = {name: (await put(queue, priority=p, args={"n": name}))["id"] for p, name in order}
    await queue.configure(concurrency=1)
    seen = []
    for _ in order:
        await step(queue)
        [work] = pool.handed()
        seen.append(work[3]["n"])
        await pool.answer(FakeClock())
    assert seen == ["b", "d", "c", "f", "a", "e"]
    assert [await state(queue, i) for i in ids.values()] == ["succeeded"] * len(order)


async def test_delayed_jobs_wait_for_their_time(
    queue: JobQueue, pool: FakePool, clock: FakeClock
) -> None:
    later = await put(queue, delay_s=10)
    at = await put(queue, run_at=clock.time() + 5)
    assert (later["state"], at["state"]) == ("scheduled", "scheduled")
    assert queue.dispatcher.dispatch() <= 5.0  # it wakes up in time for the first
    await settle()
    assert pool.handed() == []
    clock.advance(5)
    await step(queue)
    assert [w[0] for w in pool.handed()] == [at["id"]]
    assert await state(queue, later["id"]) == "scheduled"
    clock.advance(5)
    assert await state(queue, later["id"]) == "queued"
    await step(queue)
    assert len(pool.handed()) == 2


async def test_concurrency_limit(queue: JobQueue, pool: FakePool, clock: FakeClock) -> None:
    await queue.configure(concurrency=3)
    for _ in range(5):
        await put(queue)
    await step(queue)
    assert len(pool.handed()) == 3
    await step(queue)
    assert len(pool.handed()) == 3
    await pool.answer(clock)
    await step(queue)
    assert len(pool.handed()) == 2
    assert (await queue.stats())["in_flight"] == 2


async def test_rate_limit(queue: JobQueue, pool: FakePool, clock: FakeClock) -> None:
    await queue.configure(rate_limit_per_s=2.0, rate_burst=2)
    for _ in range(6):
        await put(queue)
    await step(queue)
    assert len(pool.handed()) == 2  # the burst
    assert 0 < queue.dispatcher.dispatch() <= 0.5  # next token in half a second
    await settle()
    assert len(pool.handed()) == 2
    clock.advance(0.5)
    await step(queue)
    assert len(pool.handed()) == 3
    clock.advance(1.0)
    await step(queue)
    assert len(pool.handed()) == 5
    with pytest.raises(InvalidInput):
        await queue.configure(rate_limit_per_s=-1)


async def test_pause_and_resume(queue: JobQueue, pool: FakePool) -> None:
    await queue.pause()
    job = await put(queue)
    await step(queue)
    assert pool.handed() == []
    assert (await queue.stats())["paused"] is True
    await queue.resume()
    await step(queue)
    assert [w[0] for w in pool.handed()] == [job["id"]]


async def test_pool_capacity_bounds_what_is_handed_out(
    open_queue: OpenQueue, clock: FakeClock
) -> None:
    pool = FakePool(capacity=2)
    queue = await open_queue(pool=pool)
    for _ in range(4):
        await put(queue)
    await step(queue)
    assert len(pool.handed()) == 2


# --- uniqueness and idempotency ---------------------------------------------------


async def test_unique_key_gives_one_job_within_its_period(
    queue: JobQueue, clock: FakeClock
) -> None:
    first = await put(queue, unique_key="report:7")
    again = await put(queue, unique_key="report:7", args={"other": 1})
    assert (again["id"], again["duplicate"], first["duplicate"]) == (first["id"], True, False)
    other = await put(queue, unique_key="report:8")
    assert other["id"] != first["id"]
    clock.advance(50)  # the period (unique_for_s) is over
    later = await put(queue, unique_key="report:7")
    assert later["id"] != first["id"]
    short = await put(queue, unique_key="k", unique_for_s=1)
    clock.advance(1)
    assert (await put(queue, unique_key="k"))["id"] != short["id"]
    assert (await queue.stats())["counters"]["duplicates"] == 1


async def test_idempotency_key_gives_the_same_job_and_reaches_the_worker(
    queue: JobQueue, pool: FakePool, clock: FakeClock
) -> None:
    first = await put(queue, idempotency_key="order-1")
    clock.advance(1_000)
    again = await put(queue, idempotency_key="order-1")
    assert again["id"] == first["id"] and again["duplicate"]
    plain = await put(queue)
    await step(queue)
    keys = {w[0]: w[5] for w in pool.handed()}
    assert keys == {first["id"]: "order-1", plain["id"]: plain["id"]}


async def test_a_repeated_call_key_enqueues_once(queue: JobQueue) -> None:
    one = await queue.enqueue([{"handler": NOOP}, {"handler": NOOP}], key="call-1")
    two = await queue.enqueue([{"handler": NOOP}, {"handler": NOOP}], key="call-1")
    assert [j["id"] for j in one] == [j["id"] for j in two]  # type: ignore[index]
    assert len(queue.table.jobs) == 2


# --- leases, lost workers, cancellation ---------------------------------------------


async def test_an_expired_lease_returns_the_job_and_counts_an_attempt(
    queue: JobQueue, pool: FakePool, clock: FakeClock
) -> None:
    job = await put(queue)
    await step(queue)
    assert await state(queue, job["id"]) == "running"
    clock.advance(VISIBILITY_S - 1)
    await queue.heartbeat([job["id"]])  # renewed: lasts another VISIBILITY_S
    clock.advance(VISIBILITY_S - 1)
    await step(queue)
    assert await state(queue, job["id"]) == "running"
    clock.advance(2)
    await step(queue)
    found = await queue.get(job["id"])
    assert (found["state"], found["attempts"]) == ("failed", 1)
    assert "lease expired" in found["error"]
    assert pool.cancelled == [job["id"]]
    # the late outcome of the expired attempt does not count
    await pool.answer(clock)
    assert await state(queue, job["id"]) == "failed"
    assert (await queue.stats())["counters"]["stale_outcomes"] == 1
    clock.advance(60)
    await step(queue)
    assert [w[1] for w in pool.handed()] == [2]
    await pool.answer(clock)
    assert await state(queue, job["id"]) == "succeeded"


async def test_heartbeat_drops_jobs_that_are_no_longer_running(queue: JobQueue) -> None:
    job = await put(queue)
    await queue.cancel(job["id"])
    assert await queue.heartbeat([job["id"], "unknown"]) == [job["id"], "unknown"]


async def test_a_lost_worker_fails_the_attempt_and_the_job_runs_again(
    queue: JobQueue, pool: FakePool, clock: FakeClock
) -> None:
    job = await put(queue)
    await step(queue)
    await pool.lose_workers()
    found = await queue.get(job["id"])
    assert found["state"] == "failed" and "worker lost" in found["error"]
    clock.advance(60)
    await step(queue)
    await pool.answer(clock)
    found = await queue.get(job["id"])
    assert (found["state"], found["attempts"], found["result"]) == (
        "succeeded",
        2,
        {"ran": job["id"]},
    )


async def test_cancel_a_queued_and_a_running_job(
    queue: JobQueue, pool: FakePool, clock: FakeClock
) -> None:
    running = await put(queue)
    await step(queue)
    queued = await put(queue)
    await queue.pause()
    assert (await queue.cancel(queued["id"]))["state"] == "cancelled"
    assert (await queue.cancel(running["id"]))["state"] == "cancelled"
    assert pool.cancelled == [running["id"]]
    await pool.answer(clock)  # the running attempt's outcome is ignored
    assert await state(queue, running["id"]) == "cancelled"
    with pytest.raises(JobStateConflict):
        await queue.cancel(running["id"])
    await queue.resume()
    await step(queue)
    assert pool.handed() == []


# --- results, pruning, stats, waiting ----------------------------------------------


async def test_results_are_kept_for_their_ttl_then_pruned(
    queue: JobQueue, pool: FakePool, clock: FakeClock
) -> None:
    job = await put(queue, unique_key="u", idempotency_key="i")
    await step(queue)
    await pool.answer(clock)
    assert (await queue.get(job["id"]))["result"] == {"ran": job["id"]}
    clock.advance(99)
    await step(queue)
    assert await state(queue, job["id"]) == "succeeded"
    clock.advance(PRUNE_MARGIN_S)
    await step(queue)
    with pytest.raises(JobNotFound):
        await queue.get(job["id"])
    assert queue.table.unique == {} and queue.table.idempotent == {}
    assert (await queue.stats())["counters"]["pruned"] == 1


PRUNE_MARGIN_S = 10.0


async def test_stats(queue: JobQueue, pool: FakePool, clock: FakeClock) -> None:
    for _ in range(4):
        await put(queue)
    await put(queue, delay_s=100)
    await queue.configure(concurrency=3)
    await step(queue)
    clock.advance(2)
    await pool.answer(clock)
    stats = await queue.stats()
    assert stats["depth"]["succeeded"] == 3
    assert stats["depth"]["queued"] == 1
    assert stats["depth"]["scheduled"] == 1
    assert stats["completed"] == 3
    assert stats["throughput_per_s"] == pytest.approx(3 / 60)
    assert stats["wait_s"]["p50"] == pytest.approx(2.0)  # the fake pool says it started now
    assert stats["run_s"]["p99"] == 0.0


async def test_wait_returns_once_the_job_finished(
    queue: JobQueue, pool: FakePool, clock: FakeClock
) -> None:
    job = await put(queue)
    waiting = asyncio.ensure_future(queue.wait(job["id"], timeout_s=60))
    await step(queue)
    assert not waiting.done()
    await pool.answer(clock)
    assert (await waiting)["state"] == "succeeded"
    other = await put(queue, delay_s=1_000)
    waiting = asyncio.ensure_future(queue.wait(other["id"], timeout_s=5))
    await settle()
    clock.advance(5)
    assert (await waiting)["state"] == "scheduled"


async def test_list_jobs_by_state_in_pages(queue: JobQueue) -> None:
    ids = [(await put(queue))["id"] for _ in range(5)]
    first = await queue.list_jobs("queued", limit=2)
    assert [j["id"] for j in first["jobs"]] == ids[:2]
    assert (first["total"], first["next_offset"]) == (5, 2)
    last = await queue.list_jobs("queued", offset=4, limit=2)
    assert [j["id"] for j in last["jobs"]] == ids[4:] and last["next_offset"] is None
    with pytest.raises(InvalidInput):
        await queue.list_jobs("nonsense")


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"handler": "actors.queue.handlers:nope"}, UnknownHandler),
        ({"handler": "actors.queue.handlers"}, UnknownHandler),
        ({"handler": "os:system"}, UnknownHandler),  # outside the allowed modules
        ({"handler": "actors.queue.handlers_evil:x"}, UnknownHandler),  # a prefix only
        ({"handler": NOOP, "priority": 10}, InvalidInput),
        ({"handler": NOOP, "priority": True}, InvalidInput),
        ({"handler": NOOP, "args": [1]}, InvalidInput),
        ({"handler": NOOP, "args": {"x": "y" * 2_000}}, JobArgsTooLarge),
        ({"handler": NOOP, "args": {"x": {1, 2}}}, InvalidInput),
        ({"handler": NOOP, "delay_s": -1}, InvalidInput),
        ({"handler": NOOP, "delay_s": 1, "run_at": 5}, InvalidInput),
        ({"handler": NOOP, "max_attempts": 0}, InvalidInput),
        ({"handler": NOOP, "timeout_s": 0}, InvalidInput),
        ({"handler": NOOP, "unique_key": ""}, InvalidInput),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    queue: JobQueue, spec: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await queue.enqueue([{"handler": NOOP}, spec])
    assert queue.table.jobs == {}
    # not atomic: the good one goes in, the bad one gets its error
    answers = await queue.enqueue([{"handler": NOOP}, spec], atomic=False)
    assert isinstance(answers[1], error) and isinstance(answers[0], dict)
    assert len(queue.table.jobs) == 1


async def test_batches_have_a_size_limit(queue: JobQueue) -> None:
    with pytest.raises(InvalidInput):
        await queue.enqueue([{"handler": NOOP}] * 11)


# --- recovery ------------------------------------------------------------------------


async def test_replay_rebuilds_the_same_state(
    open_queue: OpenQueue, pool: FakePool, clock: FakeClock
) -> None:
    queue = await open_queue(pool=pool)
    await queue.configure(concurrency=4, rate_limit_per_s=100.0)
    jobs = [await put(queue, priority=i % 10, unique_key=f"u{i % 3}") for i in range(8)]
    await put(queue, delay_s=30)
    await step(queue)
    await pool.answer(clock, ok=False)  # four retries with jittered backoff
    await step(queue)
    await pool.answer(clock)
    await queue.cancel(jobs[0]["id"]) if await state(queue, jobs[0]["id"]) != "succeeded" else None
    await step(queue)  # leaves some running
    await queue.pause()
    await queue.journal.drain()
    recovered = await open_queue()
    assert {i: j.to_dict() for i, j in recovered.table.jobs.items()} == {
        i: j.to_dict() for i, j in queue.table.jobs.items()
    }
    assert recovered.tally == queue.tally
    assert recovered.limits() == queue.limits()
    assert await recovered.stats() == await queue.stats()


async def test_recovery_from_a_snapshot_and_the_journal_after_it(
    open_queue: OpenQueue, pool: FakePool, clock: FakeClock
) -> None:
    queue = await open_queue(pool=pool)
    queue.snapshot_every = 3
    for _ in range(5):
        await put(queue)
    await step(queue)
    await pool.answer(clock)
    await put(queue, unique_key="after")
    await queue.journal.drain()
    if queue._snapshot_task is not None:
        await queue._snapshot_task
    recovered = await open_queue()
    assert recovered._snapshot_seq > 0
    assert {i: j.to_dict() for i, j in recovered.table.jobs.items()} == {
        i: j.to_dict() for i, j in queue.table.jobs.items()
    }
    assert (await put(recovered, unique_key="after"))["duplicate"]


async def test_a_snapshot_brings_back_every_part_of_the_state(
    open_queue: OpenQueue, pool: FakePool, clock: FakeClock
) -> None:
    # Given jobs in every state, keys, limits, figures, and JSON-ish values
    queue = await open_queue(pool=pool)
    await queue.configure(concurrency=3, rate_limit_per_s=50.0, rate_burst=5)
    dead = await put(queue, max_attempts=1, unique_key="u", idempotency_key="i")
    retrying = await put(queue, priority=9, args={"pair": (1, 2)})
    assert retrying["args"] == {"pair": [1, 2]}  # held as JSON reads it back
    await step(queue)
    await pool.answer(clock, ok=False)
    await step(queue)
    await put(queue)
    await step(queue)
    await pool.answer(clock)  # succeeded
    running = await put(queue)
    await step(queue)
    assert await queue.progress(running["id"], {"step": (1, 2)})
    await put(queue, delay_s=100)  # scheduled
    await queue.cancel((await put(queue))["id"])
    await queue.pause()
    for priority in (2, 7, 7):
        await put(queue, priority=priority)
    assert {j.state.value for j in queue.table.jobs.values()} == {
        "dead", "failed", "succeeded", "running", "scheduled", "cancelled", "queued",
    }  # fmt: skip
    assert (await queue.get(dead["id"]))["state"] == "dead"
    # When a snapshot is taken after all of it (only pauses come after) and the
    # queue opens again on the same store
    queue.snapshot_every = 1
    for _ in range(len(queue.table)):
        await queue.pause()
    await queue.journal.drain()
    if queue._snapshot_task is not None:
        await queue._snapshot_task
    recovered = await open_queue()
    # Then its state is the same, and it hands out, expects and prunes the same jobs
    assert recovered._snapshot_seq > 0
    assert recovered.snapshot_state() == queue.snapshot_state()
    assert recovered.tally.wait_samples.maxlen == queue.tally.wait_samples.maxlen
    assert (await recovered.get(running["id"]))["progress"] == {"step": [1, 2]}
    assert recovered.table.next_due() == queue.table.next_due()
    taken = [[job.id for job in q.table.take_ready(10)] for q in (recovered, queue)]
    assert taken[0] == taken[1] and len(taken[0]) == 3
    later = clock.time() + 10**6
    assert recovered.table.prune(later, None) == queue.table.prune(later, None) == 3


async def test_jobs_running_at_a_crash_come_back_when_their_lease_runs_out(
    open_queue: OpenQueue, pool: FakePool, clock: FakeClock
) -> None:
    queue = await open_queue(pool=pool)
    job = await put(queue)
    await step(queue)
    await queue.journal.drain()
    fresh = FakePool()
    recovered = await open_queue(pool=fresh)
    assert await state(recovered, job["id"]) == "running"
    clock.advance(VISIBILITY_S + LEASE_SCAN_MARGIN_S)
    await step(recovered)
    assert await state(recovered, job["id"]) == "failed"
    clock.advance(60)
    await step(recovered)
    assert [w[:2] for w in fresh.handed()] == [(job["id"], 2)]


LEASE_SCAN_MARGIN_S = 1.0


# --- global slots ------------------------------------------------------------------


def test_global_slots_are_shared_fairly() -> None:
    slots = JobSlots(10)
    assert slots.set_demand("a", 8) == 8
    assert slots.set_demand("b", 8) == 2  # what is free
    assert slots.set_demand("a", 8) == 5  # b waits for more: a shrinks to its share
    assert slots.set_demand("b", 8) == 5
    assert slots.set_demand("a", 0) == 0
    assert slots.set_demand("b", 8) == 8
    assert slots.set_demand("c", 3) == 2


async def test_a_queue_asks_for_global_slots_before_dispatching(
    open_queue: OpenQueue, pool: FakePool
) -> None:
    queue = await open_queue()
    slots = JobSlots(2)

    class Client:
        async def set_demand(self, holder: str, want: int) -> int:
            return slots.set_demand(holder, want)

    queue.dispatcher.attach(pool, Client())
    for _ in range(5):
        await put(queue)
    await step(queue)  # asks
    assert pool.handed() == []
    await step(queue)
    assert len(pool.handed()) == 2
    assert slots.held == {"q": 2}


async def test_a_queue_keeps_its_slots_between_bursts_then_gives_them_back(
    open_queue: OpenQueue, pool: FakePool, clock: FakeClock
) -> None:
    queue = await open_queue()
    slots = JobSlots(10)
    asked: list[int] = []

    class Client:
        async def set_demand(self, holder: str, want: int) -> int:
            asked.append(want)
            return slots.set_demand(holder, want)

    queue.dispatcher.attach(pool, Client())
    await put(queue)
    await step(queue)
    await step(queue)
    await pool.answer(clock)
    assert asked == [1]
    # a job right after the burst goes at once, without asking again
    await put(queue)
    await step(queue)
    assert len(pool.handed()) == 1 and asked == [1]
    await pool.answer(clock)
    await step(queue)
    assert slots.held == {"q": 1}
    clock.advance(SLOT_HOLD_S)
    await step(queue)
    assert asked == [1, 0] and slots.held == {}


async def test_past_the_cap_the_soonest_expiring_finished_jobs_are_pruned_early(
    open_queue: OpenQueue, pool: FakePool, clock: FakeClock
) -> None:
    queue = await open_queue(pool=pool, max_finished_jobs=2)
    ids = []
    for _ in range(4):
        ids.append((await put(queue))["id"])
        await step(queue)
        await pool.answer(clock)
        clock.advance(1)
    clock.advance(PRUNE_MARGIN_S)
    await step(queue)
    assert sorted(queue.table.jobs) == sorted(ids[2:])
    assert (await queue.stats())["counters"]["pruned"] == 2


async def test_a_repeated_cancel_or_retry_key_answers_as_the_first_did(
    queue: JobQueue, pool: FakePool, clock: FakeClock
) -> None:
    job = await put(queue, max_attempts=1)
    await step(queue)
    await pool.answer(clock, ok=False)
    assert await queue.retry([job["id"]], key="r1") == [job["id"]]
    assert await queue.retry([job["id"]], key="r1") == [job["id"]]  # not "not dead"
    assert (await queue.cancel(job["id"], key="c1"))["state"] == "cancelled"
    assert (await queue.cancel(job["id"], key="c1"))["state"] == "cancelled"
    with pytest.raises(JobStateConflict):
        await queue.cancel(job["id"], key="c2")


async def test_snapshots_come_no_more_often_than_once_per_job_count_records(
    open_queue: OpenQueue,
) -> None:
    queue = await open_queue()
    await queue.enqueue([{"handler": NOOP}] * 5)
    assert queue.state_size() == 5  # Durable snapshots once per that many records


async def test_a_hung_worker_does_not_keep_the_capacity_after_the_lease(
    queue: JobQueue, pool: FakePool, clock: FakeClock
) -> None:
    await queue.configure(concurrency=1)
    hung = await put(queue)
    await step(queue)  # handed out; the worker never answers
    other = await put(queue)
    await step(queue)
    assert [w[0] for w in pool.handed()] == [hung["id"]]
    clock.advance(VISIBILITY_S + LEASE_SCAN_MARGIN_S)
    await step(queue)  # the lease ran out: the slot is free again
    assert [w[0] for w in pool.handed()] == [hung["id"], other["id"]]
    clock.advance(5)  # past the retry's backoff, within the other's lease
    await step(queue)  # the hung job's next attempt has to wait for the slot
    assert len(pool.handed()) == 2
    _, answered = pool.pending.pop(1)
    answered.set_result([(other["id"], 1, True, None, None, 0.0, 0.0)])
    await settle()
    await step(queue)
    assert [w[:2] for w in pool.handed()] == [(hung["id"], 1), (hung["id"], 2)]
