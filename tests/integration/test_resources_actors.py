"""The resource manager's Python API against real pool actors, killed mid-work."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import ray

from actors.resources.client import ResourcesClient
from actors.runtime.settings import Settings
from tests.conftest import until
from tests.integration.conftest import ON_SQLITE


async def test_leases_survive_a_pool_actor_kill(
    ray_settings: Callable[..., Settings],
) -> None:
    # Given a mutex and a semaphore with leases held and a waiter queued
    client = ResourcesClient(ray_settings(resources_shards=1, **ON_SQLITE))
    await client.start()
    await client.create_pool("lock", "mutex", ttl_s=300)
    await client.create_pool("sem", "semaphore", 3, quota_per_owner=2)
    lock = await client.acquire("lock", "alice")
    sems = [await client.acquire("sem", owner, ttl_s=300) for owner in ("alice", "bob", "bob")]
    waiting = asyncio.ensure_future(client.acquire("lock", "carol", timeout_s=120))
    await until(lambda: client.get_pool("lock"), lambda pool: pool["waiting"] == 1)
    before = {pool: await client.leases(pool) for pool in ("lock", "sem")}

    # When the pool actor is killed (Ray restarts it from the journal)
    ray.kill(client.shards[0].handle, no_restart=False)

    # Then every lease is still held, still valid, and tokens go on from where they were
    assert {pool: await client.leases(pool) for pool in ("lock", "sem")} == before
    assert (await client.validate("lock", lock["token"]))["valid"]
    answers = await client.validate_many("sem", [lease["token"] for lease in sems])
    assert [a["valid"] for a in answers] == [True, True, True]
    assert await client.restarts() == [1]
    # and the quota still counts bob's two leases
    with_quota = await client.get_pool("sem")
    assert with_quota["quota_per_owner"] == 2 and with_quota["held"] == 3
    # And the waiter (re-sent by Ray to the new incarnation) gets the lock once it is released
    await until(lambda: client.get_pool("lock"), lambda pool: pool["waiting"] == 1)
    assert not waiting.done()
    released = await client.release("lock", lock["token"], owner="alice")
    assert released["state"] == "released"
    granted = await asyncio.wait_for(waiting, 60)
    assert granted["owner"] == "carol" and granted["token"] == lock["token"] + 1
    stats = await client.stats("lock")
    assert stats["pools"][0]["grants"] == 2 and stats["pools"][0]["releases"] == 1
    await client.close()


async def test_groups_spread_grants_over_pools_on_several_actors(
    ray_settings: Callable[..., Settings],
) -> None:
    client = ResourcesClient(ray_settings(resources_shards=2))
    await client.start()
    # pools whose names land on different actors
    names = [f"gpu-{i}" for i in range(8)]
    by_shard = {client.shards.index(name): name for name in names}
    assert len(by_shard) == 2
    pools = sorted(by_shard.values())
    for pool in pools:
        await client.create_pool(pool, "semaphore", 2)
    group = f"gpus-{uuid.uuid4().hex[:6]}"
    await client.create_group(group, pools)
    leases = [await client.acquire_group(group, f"o{i}") for i in range(4)]
    assert sorted(lease["pool"] for lease in leases) == sorted(pools * 2)
    loads = await client.group_loads(group)
    assert [(load["name"], load["held"]) for load in loads] == [(pool, 2) for pool in pools]
    await client.close()
