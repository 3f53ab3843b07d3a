"""Remove the node a task queue runs on, in the middle of enqueues and running jobs.

The queue actor is pinned to a worker node (its workers go with it: they share
its fate). With the Redis store, every acknowledged job is there after the
queue restarts on a replacement node, exactly once, and every one of them
runs to the end: the jobs that were running come back when their leases run
out.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import ray

from actors.queue.client import QueueClient
from actors.queue.jobqueue import JobQueueActor
from actors.runtime.settings import Settings
from actors.runtime.supervision import get_or_create
from tests.cluster.conftest import MARKER, remove_and_wait
from tests.conftest import REDIS_URL

CALLS = 60
PER_CALL = 5
PRODUCERS = 6
OWNER = "tester"


async def test_no_acknowledged_job_is_lost_with_the_node_of_its_queue(
    cluster, worker_node, tmp_path
):
    # Given a queue on a worker node, journaling to Redis, with short leases
    worker = worker_node()
    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        namespace=f"cluster-{tag}",
        store_prefix=f"cluster-{tag}",
        data_dir=tmp_path,
        store_url=REDIS_URL,
        snapshot_every=50,
        queue_visibility_timeout_s=3.0,
        queue_heartbeat_s=0.5,
        queue_backoff_base_s=0.05,
        queue_backoff_max_s=0.2,
    )
    client = QueueClient(settings)
    await client.start()
    # The queue is created (the directory records it) and its actor started here,
    # pinned, before anything looks it up: the directory then finds it by name.
    entry, _ = await client.directory.call("create", OWNER, "jobs")
    name = entry["actor"]
    queue = get_or_create(JobQueueActor, name, settings, "jobs", name, namespace=settings.namespace,
                          resources={MARKER: 0.01})  # fmt: skip
    await client.stats("jobs", owner=OWNER)

    # When the node is removed while enqueues keep coming and jobs run
    acked: list[dict[str, Any]] = []
    removed: list[Any] = []
    unanswered = 0

    async def producer(first: int) -> None:
        nonlocal unanswered
        for c in range(first, CALLS, PRODUCERS):
            batch = [
                {"handler": "actors.queue.handlers:sleep", "args": {"seconds": 0.05},
                 "unique_key": f"u{i}"}
                for i in range(c * PER_CALL, (c + 1) * PER_CALL)
            ]  # fmt: skip
            acked.extend(await client.enqueue_many("jobs", batch, owner=OWNER))
            if len(acked) >= CALLS // 3 * PER_CALL and not removed:
                unanswered = CALLS - len(acked) // PER_CALL
                remove_and_wait(cluster, worker)
                removed.append(worker_node())

    await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))
    replacement = removed[0]

    # Then every acknowledged job is there once, and runs to the end
    acknowledged = {job["id"] for job in acked}
    assert unanswered > 0
    assert len(acknowledged) == CALLS * PER_CALL
    jobs: list[dict[str, Any]] = (await client.list("jobs", owner=OWNER, limit=1_000))["jobs"]
    assert max(Counter(job["unique_key"] for job in jobs).values()) == 1
    assert acknowledged <= {job["id"] for job in jobs}
    for job_id in acknowledged:
        done_job = await client.wait("jobs", job_id, owner=OWNER, timeout_s=120)
        assert done_job["state"] == "succeeded", done_job
    workers = await queue.workers.remote()
    assert (workers["restarts"], workers["node_id"]) == (1, replacement.node_id)
    await client.close()
    ray.kill(queue, no_restart=True)
