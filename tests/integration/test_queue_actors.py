"""The task queue on Ray: jobs run on worker actors, and survive killed workers and queues."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import ray
from ray.exceptions import ActorDiedError

from actors.queue.client import QueueClient, QueueNotFound
from actors.runtime.errors import LimitReached
from tests.conftest import until
from tests.integration.conftest import ON_SQLITE

H = "actors.queue.handlers"
FAST_RETRIES = {"queue_backoff_base_s": 0.05, "queue_backoff_max_s": 0.2}
DEADLINE_S = 60.0
OWNER = "tester"


@pytest.fixture
async def client(ray_settings):
    client = QueueClient(ray_settings(**FAST_RETRIES))
    await client.start()
    yield client
    await client.close()


async def test_jobs_run_on_workers_and_their_results_come_back(client: QueueClient) -> None:
    await client.create("work", owner=OWNER)
    jobs = await asyncio.gather(
        *(client.enqueue("work", f"{H}:echo", {"i": i}, owner=OWNER) for i in range(20)),
        client.enqueue("work", f"{H}:add", {"a": 2, "b": 3}, owner=OWNER, priority=9),
        client.enqueue("work", f"{H}:fail", owner=OWNER, max_attempts=2),
        client.enqueue("work", f"{H}:fail_until", {"attempt": 2}, owner=OWNER),
    )
    *echoes, added, failing, flaky = jobs
    results = [await client.result("work", j["id"], owner=OWNER) for j in echoes]
    assert results == [{"i": i} for i in range(20)]
    assert await client.result("work", added["id"], owner=OWNER) == 5
    dead = await client.wait("work", failing["id"], owner=OWNER)
    assert (dead["state"], dead["attempts"]) == ("dead", 2)
    assert "HandlerFailed: failed on purpose" in dead["error"]
    done = await client.wait("work", flaky["id"], owner=OWNER)
    assert (done["state"], done["attempts"], done["result"]) == ("succeeded", 2, {"attempt": 2})
    stats = await client.stats("work", owner=OWNER)
    assert stats["completed"] == 22 and stats["depth"]["dead"] == 1
    assert stats["failed"] == 3
    # the dead job runs again by hand
    assert await client.retry_dead("work", owner=OWNER) == [failing["id"]]
    assert (await client.wait("work", failing["id"], owner=OWNER))["state"] == "dead"


async def test_a_worker_killed_mid_job_runs_the_job_again(client: QueueClient) -> None:
    await client.create("kill-worker", owner=OWNER)
    job = await client.enqueue("kill-worker", f"{H}:hang_first", {"seconds": 600}, owner=OWNER)
    name = await client.actor_name("kill-worker", owner=OWNER)
    queue = ray.get_actor(name, namespace=client.settings.namespace)

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
    done = await client.wait("kill-worker", job["id"], owner=OWNER, timeout_s=60)
    assert (done["state"], done["attempts"]) == ("succeeded", 2)
    assert done["result"] == {"attempt": 2, "key": job["id"]}


async def _progress(client: QueueClient, queue: str, job_id: str) -> Any:
    job = await client.get(queue, job_id, owner=OWNER)
    return job if job["progress"] else None


async def test_cancel_a_running_job(client: QueueClient) -> None:
    await client.create("cancel", owner=OWNER)
    job = await client.enqueue("cancel", f"{H}:sleep", {"seconds": 600}, owner=OWNER)
    await until(
        lambda: _state_is(client, "cancel", job["id"], "running"),
        within_s=DEADLINE_S,
        what="the job running",
    )
    assert (await client.cancel("cancel", job["id"], owner=OWNER))["state"] == "cancelled"
    name = await client.actor_name("cancel", owner=OWNER)
    queue = ray.get_actor(name, namespace=client.settings.namespace)

    async def worker_idle() -> bool:
        workers = await queue.workers.remote()
        busy = await asyncio.gather(*(h.running.remote() for h in workers["handles"]))
        return not any(busy)

    await until(worker_idle, within_s=DEADLINE_S, what="the worker stopping the job")
    assert (await client.get("cancel", job["id"], owner=OWNER))["state"] == "cancelled"


async def _state_is(client: QueueClient, queue: str, job_id: str, state: str) -> bool:
    return bool((await client.get(queue, job_id, owner=OWNER))["state"] == state)


CALLS = 60
PER_CALL = 5
PRODUCERS = 6
KILL_AFTER_ACKS = 20


async def test_a_queue_killed_during_a_burst_of_enqueues_loses_nothing(ray_settings) -> None:
    # Given a queue on SQLite, snapshotting often
    settings = ray_settings(snapshot_every=20, **FAST_RETRIES, **ON_SQLITE)
    client = QueueClient(settings)
    await client.start()
    await client.create("burst", owner=OWNER)
    await client.stats("burst", owner=OWNER)  # the actor is up
    name = await client.actor_name("burst", owner=OWNER)
    queue = ray.get_actor(name, namespace=settings.namespace)

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
            acked.extend(await client.enqueue_many("burst", batch, owner=OWNER))
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
        page = await client.list("burst", owner=OWNER, offset=page["next_offset"], limit=1000)
        jobs += page["jobs"]
    counts = Counter(job["args"]["i"] for job in jobs)
    assert [i for i, n in counts.items() if n > 1] == [], "a job was enqueued twice"
    assert set(acknowledged) <= {job["id"] for job in jobs}
    assert killed.is_set() and in_flight > 0
    assert len(acknowledged) == CALLS * PER_CALL  # every call was answered in the end
    # and they run to the end on the new incarnation
    for job_id in sorted(acknowledged)[::25]:
        job = await client.wait("burst", job_id, owner=OWNER, timeout_s=60)
        assert job["state"] == "succeeded"
    restarts = (await queue.workers.remote())["restarts"]
    assert restarts == 1
    await client.close()


# --- queues are created explicitly, owned, bounded ------------------------------


def _named(namespace: str) -> set[str]:
    return {
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == namespace
    }


async def test_a_queue_that_does_not_exist_starts_no_actor(client: QueueClient) -> None:
    namespace = client.settings.namespace
    await client.create("mine", owner=OWNER)
    before = _named(namespace)
    for call in (
        client.stats("nope", owner=OWNER),
        client.get("nope", "some-job", owner=OWNER),
        client.enqueue("nope", f"{H}:noop", owner=OWNER),
        client.enqueue_many("nope", [{"handler": f"{H}:noop"}], owner=OWNER),
        client.pause("nope", owner=OWNER),
        client.info("nope", owner=OWNER),
        client.delete("nope", owner=OWNER),
        client.stats("mine", owner="someone-else"),  # another owner's queue is not theirs
        client.enqueue("mine", f"{H}:noop", owner="someone-else"),
    ):
        with pytest.raises(QueueNotFound):
            await call
    assert _named(namespace) == before
    # a new queue starts its actor only when first used
    assert not any(name.startswith("queue/") for name in before)


async def test_a_queue_named_like_an_internal_actor_is_a_queue_like_any(
    client: QueueClient,
) -> None:
    # `slots` was once the name of the global slot actor's queue: jobs never ran then.
    for name in ("slots", "directory"):
        await client.create(name, owner=OWNER)
        job = await client.enqueue(name, f"{H}:add", {"a": 1, "b": 2}, owner=OWNER)
        assert await client.result(name, job["id"], owner=OWNER, timeout_s=DEADLINE_S) == 3
    other = await client.create("other", owner=OWNER)
    job = await client.enqueue("other", f"{H}:noop", owner=OWNER)
    assert other["created"]
    assert (await client.wait("other", job["id"], owner=OWNER))["state"] == "succeeded"


async def test_deleting_a_queue_stops_its_actors_and_frees_the_quota(ray_settings) -> None:
    client = QueueClient(ray_settings(queue_max_queues_per_owner=2))
    await client.start()
    await client.create("a", owner=OWNER)
    await client.create("b", owner=OWNER)
    with pytest.raises(LimitReached):
        await client.create("c", owner=OWNER)
    assert [q["queue"] for q in await client.list_queues(owner=OWNER)] == ["a", "b"]
    await client.create("c", owner="another")  # a quota is per owner
    job = await client.enqueue("a", f"{H}:sleep", {"seconds": 600}, owner=OWNER)
    await until(
        lambda: _state_is(client, "a", job["id"], "running"),
        within_s=DEADLINE_S,
        what="the job running",
    )
    name = await client.actor_name("a", owner=OWNER)
    workers = (await ray.get_actor(name, namespace=client.settings.namespace).workers.remote())[
        "handles"
    ]
    assert await client.delete("a", owner=OWNER)
    assert name not in _named(client.settings.namespace)

    async def all_dead() -> bool:
        for worker in workers:  # a worker shares its queue actor's fate
            try:
                await worker.ping.remote()
            except ActorDiedError:
                continue
            return False
        return True

    await until(all_dead, within_s=DEADLINE_S, what="the queue's workers stopping")
    with pytest.raises(QueueNotFound):
        await client.get("a", job["id"], owner=OWNER)
    # the place is free again, and a queue made again is new and empty
    made = await client.create("a", owner=OWNER)
    assert made["created"] and (await client.list("a", owner=OWNER))["total"] == 0
    assert await client.actor_name("a", owner=OWNER) != name
    await client.close()
