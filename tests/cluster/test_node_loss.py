"""Remove the node an actor runs on, in the middle of work.

The actor under test may only run on nodes carrying the test's marker
resource, so it is placed on the worker for certain; after that node is
removed, a replacement node (what an autoscaler or an operator provides) lets
Ray restart it there.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import ray

from actors.auth.client import AuthClient
from actors.auth.sessions import SESSIONS_PREFIX, SessionStoreActor
from actors.auth.users import USERS_NAME, UserStoreActor
from actors.cache.client import CacheClient
from actors.cache.shard import SHARDS_PREFIX, CacheShardActor
from actors.runtime.settings import Settings
from actors.runtime.shards import shard_names
from actors.runtime.supervision import call, get_or_create
from tests.cluster.conftest import HEAD_MARKER, MARKER, remove_and_wait
from tests.conftest import REDIS_URL
from tests.integration.tally import TallyActor

ON_MARKED_NODE = {"resources": {MARKER: 0.01}}
ON_HEAD = {"resources": {HEAD_MARKER: 0.01}}


def isolated_settings(tmp_path, **overrides) -> Settings:
    tag = uuid.uuid4().hex[:10]
    return Settings(
        namespace=f"cluster-{tag}", store_prefix=f"cluster-{tag}", data_dir=tmp_path, **overrides
    )


async def test_the_cache_answers_again_after_its_node_is_removed(cluster, worker_node, tmp_path):
    # Given shard 0 on a worker node and shard 1 on the head
    worker = worker_node()
    settings = isolated_settings(tmp_path, cache_shards=2, cache_near_lease_s=1.0)
    for name, placement in zip(
        shard_names(SHARDS_PREFIX, 2), (ON_MARKED_NODE, ON_HEAD), strict=True
    ):
        get_or_create(CacheShardActor, name, settings, name, namespace=settings.namespace,
                      **placement)  # fmt: skip
    cache = CacheClient.connect(settings)
    keys = [f"k{i}" for i in range(40)]
    await cache.mset({key: key for key in keys})
    before = await cache.stats()
    assert before["shards"][0]["node_id"] == worker.node_id
    assert before["shards"][1]["node_id"] == cluster.head_node.node_id

    # When the worker node is removed
    remove_and_wait(cluster, worker)

    # Then shard 1 keeps serving while shard 0 has nowhere to run
    on_head = [k for k in keys if cache.shards.index(k) == 1]
    assert await cache.mget(on_head) == {k: k for k in on_head}

    # And once a replacement node joins, shard 0 answers again: empty, restart counted
    replacement = worker_node()
    assert await cache.mget(keys) == {k: k for k in on_head}
    after = await cache.stats()
    assert after["shards"][0]["node_id"] == replacement.node_id
    assert [s["restarts"] for s in after["shards"]] == [1, 0]
    await cache.set("k0", "again")
    assert await cache.get("k0") == "again"
    await cache.close()


async def test_acknowledged_writes_survive_the_loss_of_their_node(cluster, worker_node, tmp_path):
    # Given a durable actor on a worker node, journaling to Redis
    worker = worker_node()
    settings = isolated_settings(tmp_path, store_url=REDIS_URL, snapshot_every=30)
    tally = get_or_create(TallyActor, "tally", settings, "tally", namespace=settings.namespace,
                          **ON_MARKED_NODE)  # fmt: skip
    before = await call(tally, "info")
    assert before["node_id"] == worker.node_id

    # When its node is removed while writes are in flight (and a replacement joins)
    tasks = [
        asyncio.ensure_future(call(tally, "add", i, f"w{i}", patience_s=120)) for i in range(300)
    ]
    for done, finished in enumerate(asyncio.as_completed(tasks), 1):
        await finished
        if done == 100:
            in_flight = sum(not task.done() for task in tasks)
            remove_and_wait(cluster, worker)
            replacement = worker_node()
            break
    results = await asyncio.gather(*tasks, return_exceptions=True)

    # Then it runs on the new node with every acknowledged write, each exactly once
    acknowledged = {i for i, r in enumerate(results) if not isinstance(r, BaseException)}
    contents = await call(tally, "contents")
    assert in_flight > 0
    assert max(Counter(contents).values()) == 1
    assert acknowledged <= set(contents)
    after = await call(tally, "info")
    assert after["node_id"] == replacement.node_id
    assert after["restarts"] == 1
    ray.kill(tally, no_restart=True)


async def test_no_user_or_session_is_lost_with_the_node_of_the_auth_actors(
    cluster, worker_node, tmp_path
):
    # Given every auth actor on a worker node, journaling to Redis
    worker = worker_node()
    settings = isolated_settings(
        tmp_path, store_url=REDIS_URL, auth_session_shards=2, auth_argon2_memory_kib=1024
    )
    get_or_create(UserStoreActor, USERS_NAME, settings, namespace=settings.namespace,
                  **ON_MARKED_NODE)  # fmt: skip
    for name in shard_names(SESSIONS_PREFIX, 2):
        get_or_create(SessionStoreActor, name, settings, name, namespace=settings.namespace,
                      **ON_MARKED_NODE)  # fmt: skip
    auth = AuthClient(settings)
    await auth.start()
    users = [f"user{i}" for i in range(6)]
    for name in users:
        await auth.register(name, "a long enough password")
    tokens = [(await auth.login(name, "a long enough password"))["token"] for name in users]

    # When the node is removed and a replacement joins
    remove_and_wait(cluster, worker)
    worker_node()

    # Then every session still authenticates (through a fresh client, so no
    # near copy helps) and every user can log in again
    fresh = AuthClient(settings)
    for name, token in zip(users, tokens, strict=True):
        assert (await fresh.authenticate(token)).username == name
        assert (await fresh.login(name, "a long enough password"))["token"]
    await auth.close()
    await fresh.close()
