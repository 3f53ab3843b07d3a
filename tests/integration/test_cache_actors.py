"""The cache's Python client against real shard actors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import ray

from actors.cache.client import CacheClient
from actors.cache.errors import LoaderFailed
from actors.cache.shard import SHARDS_PREFIX
from actors.runtime import metrics
from actors.runtime.heap import YOUNG_THRESHOLD
from actors.runtime.settings import Settings
from tests.conftest import until


@pytest.fixture
def cache_settings(ray_settings: Callable[..., Settings]) -> Settings:
    return ray_settings(cache_shards=3, cache_near_lease_s=1.0)


@pytest.fixture
async def clients(cache_settings: Settings) -> AsyncIterator[Callable[..., CacheClient]]:
    made: list[CacheClient] = []

    def make(*, near_cache: bool = False) -> CacheClient:
        client = CacheClient.connect(cache_settings, near_cache=near_cache)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def test_keys_spread_over_shards_and_batches_split(clients):
    cache = clients()
    items = {f"k{i}": {"i": i} for i in range(300)}
    assert await cache.mset(items) == 300
    assert await cache.mget([*items, "absent"]) == items
    stats = await cache.stats()
    per_shard = [shard["entries"] for shard in stats["shards"]]
    assert sum(per_shard) == 300 and min(per_shard) > 50
    for key, value in list(items.items())[:20]:
        assert await cache.get(key) == value


def _young_threshold(actor: Any) -> int:
    import gc

    return gc.get_threshold()[0]


async def test_a_shard_runs_the_start_hooks_though_it_is_not_durable(clients, cache_settings):
    # Given a shard, which keeps nothing in the store
    await clients().set("k", 1)
    shard = ray.get_actor(f"{SHARDS_PREFIX}-0", namespace=cache_settings.namespace)
    # Its process was set up as a durable actor's is: the collector's youngest
    # generation at the runtime's threshold (the start hook), not CPython's 700
    assert await shard.__ray_call__.remote(_young_threshold) == YOUNG_THRESHOLD


async def test_no_near_cache_reader_sees_a_stale_value_after_a_write(clients):
    # Given a reader whose near cache holds the key, and a writer elsewhere
    reader, writer = clients(near_cache=True), clients()
    counted = metrics.CACHE_LOOKUPS.value(tier="near", result="hit")
    await writer.set("hot", 0)
    assert await reader.get("hot") == 0
    for version in range(1, 40):
        # When the writer's set is acknowledged
        await writer.set("hot", version)
        # Then the very next read sees it, although the reader cached the key
        assert await reader.get("hot") == version
        assert await reader.get("hot") == version  # and keeps serving it locally
    stats = await reader.stats()
    assert stats["near"]["hits"] >= 39  # hot reads were served from the near cache
    # and the lookups metric counts every one of them
    hits = metrics.CACHE_LOOKUPS.value(tier="near", result="hit") - counted
    assert hits == stats["near"]["hits"]
    assert stats["total"]["invalidations"] >= 39


async def test_delete_incr_and_mset_also_invalidate_near_copies(clients):
    reader, writer = clients(near_cache=True), clients()
    await writer.mset({"a": 1, "b": 2})
    assert await reader.mget(["a", "b"]) == {"a": 1, "b": 2}
    await writer.incr("a", 10)
    await writer.delete("b")
    assert await reader.mget(["a", "b"]) == {"a": 11}
    await writer.mset({"a": "new", "b": "back"})
    assert await reader.mget(["a", "b"]) == {"a": "new", "b": "back"}


async def test_owners_keys_are_apart_in_shards_and_near_caches(clients):
    # Given a reader whose near cache holds ann's "hot", and a writer elsewhere
    reader, writer = clients(near_cache=True), clients()
    await writer.set("hot", "ann's", owner="ann")
    assert await reader.get("hot", owner="ann") == "ann's"
    assert await reader.get("hot", owner="ann") == "ann's"  # now near
    # When bob writes a key of the same name, ann's copy stays (it is another key)
    await writer.set("hot", "bob's", owner="bob")
    assert await reader.get("hot", owner="bob") == "bob's"
    assert await reader.get("hot", owner="ann") == "ann's"
    assert await reader.get("hot") is None  # nor is it the deployment's own
    # And ann's own write still reaches every near copy of hers
    await writer.set("hot", "ann's again", owner="ann")
    assert await reader.get("hot", owner="ann") == "ann's again"
    assert await reader.mget(["hot"], owner="bob") == {"hot": "bob's"}
    usage = await writer.usage("ann")
    assert usage["entries"] == 1 and len(usage["shards"]) == 3


async def test_concurrent_misses_run_the_loader_once(clients, cache_settings):
    callers = [clients() for _ in range(4)]
    release = asyncio.Event()
    runs = 0

    async def loader() -> dict[str, str]:
        nonlocal runs
        runs += 1
        await release.wait()
        return {"computed": "once"}

    tasks = [
        asyncio.ensure_future(client.get_or_compute("expensive", loader, ttl_s=60))
        for client in callers
        for _ in range(3)
    ]

    async def eleven_waiting() -> bool:
        stats = await callers[0].stats()
        return stats["total"]["load_waiters"] == 11

    await until(eleven_waiting, what="eleven callers waiting on the loader")
    release.set()
    assert await asyncio.gather(*tasks) == [{"computed": "once"}] * 12
    assert runs == 1
    assert await callers[0].get("expensive") == {"computed": "once"}


async def test_a_loader_error_reaches_every_waiter_and_caches_nothing(clients):
    callers = [clients() for _ in range(3)]
    release = asyncio.Event()

    async def failing_loader() -> Any:
        await release.wait()
        raise RuntimeError("backend down")

    tasks = [
        asyncio.ensure_future(client.get_or_compute("fragile", failing_loader))
        for client in callers
    ]

    async def two_waiting() -> bool:
        return (await callers[0].stats())["total"]["load_waiters"] == 2

    await until(two_waiting, what="two callers waiting on the loader")
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, RuntimeError) and str(r) == "backend down" for r in results) == 1
    waiters = [r for r in results if isinstance(r, LoaderFailed)]
    assert len(waiters) == 2 and "backend down" in waiters[0].message
    assert await callers[0].get("fragile") is None
    # The next call loads again.
    assert await callers[1].get_or_compute("fragile", lambda: "fine") == "fine"


async def test_a_crashed_shard_restarts_empty_while_the_others_keep_serving(clients):
    cache = clients()
    keys = [f"key-{i}" for i in range(60)]
    await cache.mset({key: key for key in keys})
    victim = cache.shards.index(keys[0])
    lost = [k for k in keys if cache.shards.index(k) == victim]
    kept = [k for k in keys if cache.shards.index(k) != victim]

    ray.kill(cache.shards[victim].handle, no_restart=False)

    # The other shards answered throughout; the crashed one is back, empty.
    assert await cache.mget(kept) == {k: k for k in kept}
    assert await cache.mget(lost) == {}
    stats = await cache.stats()
    assert [s["restarts"] for s in stats["shards"]] == [
        1 if i == victim else 0 for i in range(len(cache.shards))
    ]
    await cache.set(lost[0], "again")
    assert await cache.get(lost[0]) == "again"


async def test_a_near_cache_drops_copies_from_a_restarted_shard(clients):
    reader, writer = clients(near_cache=True), clients()
    await writer.set("k", "before")
    assert await reader.get("k") == "before"
    shard = writer.shards.owner("k")
    old = await shard.call("ping")  # its incarnation
    ray.kill(shard.handle, no_restart=False)
    # Once the new incarnation answers (a write the dying one took before it
    # went would be lost with it: the cache keeps no journal), the restarted
    # shard is empty and holds back writes for one lease, so no copy granted
    # by the old incarnation can outlive a new write.
    await until(lambda: shard.call("ping"), lambda now: now != old, what="the restart")
    await writer.set("k", "after")
    assert await reader.get("k") == "after"


@ray.remote(num_cpus=0)
def write_from_a_task(settings: Settings, key: str, value: Any) -> Any:
    async def work() -> Any:
        cache = CacheClient.connect(settings)
        await cache.set(key, value)
        return await cache.get(key)

    return asyncio.run(work())


@ray.remote(num_cpus=0)
class Reader:
    """Another actor reading through its own near cache."""

    def __init__(self, settings: Settings) -> None:
        self.cache = CacheClient.connect(settings, near_cache=True)

    async def read(self, key: str) -> Any:
        return await self.cache.get(key)


async def test_the_client_works_from_ray_tasks_and_actors(clients, cache_settings):
    reader = Reader.remote(cache_settings)
    assert await write_from_a_task.remote(cache_settings, "shared", {"v": 1}) == {"v": 1}
    assert await reader.read.remote("shared") == {"v": 1}
    # A write from a task invalidates the near copy held in the other actor.
    assert await write_from_a_task.remote(cache_settings, "shared", {"v": 2}) == {"v": 2}
    assert await reader.read.remote("shared") == {"v": 2}
    assert await clients().get("shared") == {"v": 2}
    ray.kill(reader)
