"""A queue's bounds, run directly (no Ray) on a FakeClock and a real SQLite store:
how many jobs and bytes it holds, how far ahead and how long a job may ask for,
and the limits a caller may set. Every number a client sends has a maximum."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors.queue.jobqueue import JobQueue
from actors.queue.model import MAX_CONCURRENCY, MAX_RATE_BURST, MAX_RATE_PER_S
from actors.queue.settings import QueueSettings
from actors.runtime.clock import FakeClock
from actors.runtime.errors import InvalidInput, QueueFull
from actors.runtime.store import SQLiteStore

H = "actors.queue.handlers"
OpenQueue = Callable[..., Awaitable[JobQueue]]


@pytest.fixture
def open_queue(clock: FakeClock, store: SQLiteStore) -> OpenQueue:
    async def open_(**config: Any) -> JobQueue:
        queue = JobQueue("q", QueueSettings(**config), clock=clock)
        await queue.open(store, "queue/ada/q/1", snapshot_every=10_000, on_failure=print)
        return queue

    return open_


def job(**fields: Any) -> dict[str, Any]:
    return {"handler": f"{H}:echo", **fields}


async def test_a_queue_holds_at_most_max_jobs_unfinished(open_queue: OpenQueue) -> None:
    queue = await open_queue(max_jobs_per_queue=3)
    await queue.enqueue([job(), job(idempotency_key="k")], key="c1")
    with pytest.raises(QueueFull) as full:  # all or nothing
        await queue.enqueue([job(), job()], key="c2")
    assert full.value.details["index"] == 1 and len(queue.table) == 2
    # one at a time (as coalesced single enqueues go): each refused alone
    answers = await queue.enqueue([job(), job(), job(idempotency_key="k")], atomic=False)
    assert [type(a).__name__ if not isinstance(a, dict) else a["duplicate"] for a in answers] == [
        False,
        "QueueFull",
        True,  # a job already held takes no room
    ]
    # a call retried after a restart is answered as it was, not refused
    again = await queue.enqueue([job(), job(idempotency_key="k")], key="c1")
    assert len(again) == 2 and len(queue.table) == 3
    # a finished job makes room
    await queue.cancel(answers[0]["id"])
    await queue.enqueue([job()])


async def test_a_queue_holds_at_most_max_bytes_of_arguments(open_queue: OpenQueue) -> None:
    queue = await open_queue(max_queue_bytes=1_024, max_args_bytes=1_000)
    big = {"x": "y" * 600}
    await queue.enqueue([job(args=big)])
    with pytest.raises(QueueFull):
        await queue.enqueue([job(args=big)])
    await queue.enqueue([job(args={"x": "y" * 100})])  # a smaller one still fits
    assert 600 < queue.table.unfinished_bytes <= 1_024


@pytest.mark.parametrize(
    "fields",
    [
        {"timeout_s": 86_400.5},  # over max_job_timeout_s
        {"timeout_s": 0},
        {"delay_s": 30 * 86_400 + 1},  # over max_delay_s
        {"run_at": 2e9},  # further ahead than max_delay_s
        {"run_at": float("inf")},
        {"unique_key": "u", "unique_for_s": 31 * 86_400},
        {"max_attempts": 1_001},
        {"max_attempts": True},
        {"priority": 10},
    ],
)
async def test_every_number_of_a_job_has_a_maximum(
    open_queue: OpenQueue, fields: dict[str, Any]
) -> None:
    queue = await open_queue()
    with pytest.raises(InvalidInput):
        await queue.enqueue([job(**fields)])
    assert len(queue.table) == 0


async def test_limits_a_caller_sets_are_bounded_at_the_door_not_on_replay(
    open_queue: OpenQueue, clock: FakeClock
) -> None:
    queue = await open_queue()
    for limits in (
        {"concurrency": MAX_CONCURRENCY + 1},
        {"concurrency": True},
        {"rate_limit_per_s": MAX_RATE_PER_S * 2},
        {"rate_burst": MAX_RATE_BURST + 1},
    ):
        with pytest.raises(InvalidInput):
            await queue.configure(**limits)
    assert (await queue.configure(concurrency=MAX_CONCURRENCY))["concurrency"] == MAX_CONCURRENCY
    # a record journaled before a bound was lowered still replays
    await queue.execute("configure", concurrency=10**6, rate_limit_per_s=None, rate_burst=None)
    again = await open_queue()
    assert again.concurrency == 10**6


async def test_finished_jobs_are_kept_within_max_finished_bytes(
    open_queue: OpenQueue, clock: FakeClock
) -> None:
    queue = await open_queue(max_finished_bytes=2_000)
    jobs = await queue.enqueue([job(args={"n": i}) for i in range(5)])
    now = clock.time()
    queue.record("lease", leases=[(j["id"], 1) for j in jobs], at=now, lease_s=30.0)
    for done in jobs:  # each result ~700 bytes, finishing one by one
        clock.advance(1)
        outcome = (done["id"], 1, True, {"r": "z" * 700}, None, now, clock.time())
        queue.record("finish", outcomes=[outcome], at=clock.time())
        queue.dispatcher.dispatch()
        assert queue.table.finished_bytes <= 2_000
    kept = [j["id"] for j in jobs if j["id"] in queue.table.jobs]
    assert kept == [j["id"] for j in jobs[-2:]]  # the soonest to expire went first
    assert queue.table.unfinished_bytes == 0
    # and a restart (the journal replayed) agrees
    await queue.journal.drain()
    again = await open_queue(max_finished_bytes=2_000)
    assert sorted(again.table.jobs) == sorted(kept)
    assert again.table.finished_bytes == queue.table.finished_bytes
