"""The task queue on Ray: jobs run on worker actors, and survive killed workers and queues."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import ray

from actors.queue.client import QueueClient
from actors.queue.model import queue_actor_name
from tests.conftest import until
from tests.integration.conftest import store_overrides

H = "actors.queue.handlers"
FAST_RETRIES = {"queue_backoff_base_s": 0.05, "queue_backoff_max_s": 0.2}
DEADLINE_S = 60.0


@pytest.fixture
async def client(ray_settings):
    client = QueueClient(ray_settings(**FAST_RETRIES))
    await client.start()
    yield client
    await client.close()


async def test_jobs_run_on_workers_and_their_results_come_back(client: QueueClient) -> None:
    jobs = await asyncio.gather(
        *(client.enqueue("work", f"{H}:echo", {"i": i}) for i in range(20)),
        client.enqueue("work", f"{H}:add", {"a": 2, "b": 3}, priority=9),
        client.enqueue("work", f"{H}:fail", max_attempts=2),
        client.enqueue("work", f"{H}:fail_until", {"attempt": 2}),
    )
    *echoes, added, failing, flaky = jobs
    assert [await client.result("work", j["id"]) for j in echoes] == [{"i": i} for i in range(20)]
    assert await client.result("work", added["id"]) == 5
    dead = await client.wait("work", failing["id"])
    assert (dead["state"], dead["attempts"]) == ("dead", 2)
    assert "HandlerFailed: failed on purpose" in dead["error"]
    done = await client.wait("work", flaky["id"])
    assert (done["state"], done["attempts"], done["result"]) == ("succeeded", 2, {"attempt": 2})
    stats = await client.stats("work")
    assert stats["completed"] == 22 and stats["depth"]["dead"] == 1
    assert stats["failed"] == 3
    # the dead job runs again by hand
    assert await client.retry_dead("work") == [failing["id"]]
    assert (await client.wait("work", failing["id"]))["state"] == "dead"


async def test_a_worker_killed_mid_job_runs_the_job_again(client: QueueClient) -> None:
    job = await client.enqueue("kill-worker", f"{H}:hang_first", {"seconds": 600})
    queue = ray.get_actor(queue_actor_name("kill-worker"), namespace=client.settings.namespace)

    async def running_on() -> Any:
        workers = await queue.workers.remote()
        index = workers["running"].get(job["id"])
        return None if index is None else workers["handles"][index]

    worker = await until(running_on, within_s=DEADLINE_S, what="the job running")
    found = await until(
        lambda: _progress(client, "kill-worker", job["id"]),
        within_s=DEADLINE_S,
        what="the job reporting progress",
    )
    assert found["progress"] == {"started": 1}
    ray.kill(worker, no_restart=False)
    done = await client.wait("kill-worker", job["id"], timeout_s=60)
    assert (done["state"], done["attempts"]) == ("succeeded", 2)
    assert done["result"] == {"attempt": 2, "key": job["id"]}


async def _progress(client: QueueClient, queue: str, job_id: str) -> Any:
    job = await client.get(queue, job_id)
    return job if job["progress"] else None


async def test_cancel_a_running_job(client: QueueClient) -> None:
    job = await client.enqueue("cancel", f"{H}:sleep", {"seconds": 600})
    await until(
        lambda: _state_is(client, "cancel", job["id"], "running"),
        within_s=DEADLINE_S,
        what="the job running",
    )
    assert (await client.cancel("cancel", job["id"]))["state"] == "cancelled"
    queue = ray.get_actor(queue_actor_name("cancel"), namespace=client.settings.namespace)

    async def worker_idle() -> bool:
        workers = await queue.workers.remote()
        busy = await asyncio.gather(*(h.running.remote() for h in workers["handles"]))
        return not any(busy)

    await until(worker_idle, within_s=DEADLINE_S, what="the worker stopping the job")
    assert (await client.get("cancel", job["id"]))["state"] == "cancelled"


async def _state_is(client: QueueClient, queue: str, job_id: str, state: str) -> bool:
    return bool((await client.get(queue, job_id))["state"] == state)


CALLS = 60
PER_CALL = 5
PRODUCERS = 6
KILL_AFTER_ACKS = 20


async def test_a_queue_killed_during_a_burst_of_enqueues_loses_nothing(
    ray_settings, store_kind
) -> None:
    # Given a queue on the store under test, snapshotting often
    settings = ray_settings(snapshot_every=20, **FAST_RETRIES, **store_overrides(store_kind))
    client = QueueClient(settings)
    await client.start()
    await client.stats("burst")  # the actor is up
    queue = ray.get_actor(queue_actor_name("burst"), namespace=settings.namespace)

    # When enqueue calls keep coming from several producers (one call in flight
    # each) and the queue actor is killed after a third of them was answered
    acked: list[dict[str, Any]] = []
    killed = asyncio.Event()
    in_flight = 0

    async def producer(first: int) -> None:
        nonlocal in_flight
        for c in range(first, CALLS, PRODUCERS):
            batch = [
                {"handler": f"{H}:echo", "args": {"i": c * PER_CALL + k}} for k in range(PER_CALL)
            ]
            acked.extend(await client.enqueue_many("burst", batch))
            if len(acked) >= KILL_AFTER_ACKS * PER_CALL and not killed.is_set():
                killed.set()
                in_flight = CALLS - len(acked) // PER_CALL  # calls not answered yet
                ray.kill(queue, no_restart=False)

    await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))
    results = acked

    # Then every acknowledged job is there exactly once
    acknowledged = {job["id"] for job in results}
    assert len(acknowledged) >= KILL_AFTER_ACKS * PER_CALL
    jobs: list[dict[str, Any]] = []
    page: dict[str, Any] = {"next_offset": 0}
    while page["next_offset"] is not None:
        page = await client.list("burst", offset=page["next_offset"], limit=1000)
        jobs += page["jobs"]
    counts = Counter(job["args"]["i"] for job in jobs)
    assert [i for i, n in counts.items() if n > 1] == [], "a job was enqueued twice"
    assert set(acknowledged) <= {job["id"] for job in jobs}
    assert killed.is_set() and in_flight > 0
    assert len(acknowledged) == CALLS * PER_CALL  # every call was answered in the end
    # and they run to the end on the new incarnation
    for job_id in sorted(acknowledged)[::25]:
        assert (await client.wait("burst", job_id, timeout_s=60))["state"] == "succeeded"
    restarts = (await queue.workers.remote())["restarts"]
    assert restarts == 1
    await client.close()
