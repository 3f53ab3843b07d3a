"""The lease test: many clients contend for a mutex and a semaphore while the
pool actor is killed, on a 2-node cluster with the Redis store.

Every grant is recorded (pool, unit, token, start, end = release or expiry,
all in the pool actor's time). While the run goes on, a checker validates
every token some client believes it holds, in one call per pool (answered at
one instant): no unit may have two valid tokens. Some clients pause past
their lease's deadline without renewing (a GC pause, say): their token must
then be invalid. Afterwards the recorded intervals of each unit must not
overlap, tokens must increase in grant order, and every grant must have ended
(released or expired), with the actor's own counts agreeing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

import ray

from actors.resources.client import ResourcesClient
from actors.resources.errors import AcquireTimedOut, LeaseExpired
from actors.resources.pool import SHARD_PREFIX, ResourcePoolActor
from actors.runtime.settings import Settings
from actors.runtime.shards import shard_names
from actors.runtime.supervision import get_or_create
from tests.cluster.conftest import MARKER
from tests.conftest import REDIS_URL

CLIENTS = 16
RUN_S = 18.0
KILLS_AT_S = (4.0, 10.0)
TTL_S = 1.0
#: A paused holder sleeps this much longer than its TTL before it looks again.
PAUSE_S = TTL_S + 0.5
POOLS = {"mutex": ("mutex", None), "sem": ("semaphore", 3)}


@dataclass
class Grant:
    pool: str
    unit: int
    token: int
    owner: str
    start: float
    end: float | None = None
    how: str | None = None


class Run:
    def __init__(self) -> None:
        self.grants: list[Grant] = []
        #: tokens some client currently believes it holds, per pool
        self.believed: dict[str, set[int]] = defaultdict(set)
        self.checks = 0
        self.paused_checks = 0
        self.stop = False


async def contend(run: Run, client: ResourcesClient, owner: str, seed: int) -> None:
    rng = random.Random(seed)
    while not run.stop:
        pool = rng.choice(list(POOLS))
        try:
            lease = await client.acquire(pool, owner, ttl_s=TTL_S, timeout_s=5.0)
        except AcquireTimedOut:
            continue
        grant = Grant(pool, lease["unit"], lease["token"], owner, lease["granted_at"])
        run.grants.append(grant)
        run.believed[pool].add(grant.token)
        try:
            if rng.random() < 0.15:  # pause past the deadline without renewing
                await asyncio.sleep(PAUSE_S)
                answer = await client.validate(pool, grant.token)
                assert not answer["valid"], answer
                run.paused_checks += 1
            else:
                await asyncio.sleep(rng.uniform(0, 0.05))
                if rng.random() < 0.3:
                    # (it may have expired while the actor was down)
                    with contextlib.suppress(LeaseExpired):
                        await client.renew(pool, grant.token, owner=owner)
                    await asyncio.sleep(rng.uniform(0, 0.05))
        finally:
            run.believed[pool].discard(grant.token)
            ended = await client.release(pool, grant.token, owner=owner)
            grant.end, grant.how = ended["ended_at"], ended["state"]


async def check(run: Run, client: ResourcesClient) -> None:
    """At no instant do two believed tokens of one unit both validate."""
    while not run.stop:
        for pool in POOLS:
            tokens = sorted(run.believed[pool])
            if not tokens:
                continue
            answers = await client.validate_many(pool, tokens)
            valid_units = [a["unit"] for a in answers if a["valid"]]
            assert len(valid_units) == len(set(valid_units)), answers
            run.checks += 1
        await asyncio.sleep(0.01)


async def test_no_unit_ever_has_two_valid_holders(cluster, worker_node, tmp_path):
    # Given the pool actor on a worker node, journaling to Redis
    worker_node()
    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        namespace=f"cluster-{tag}", store_prefix=f"cluster-{tag}", data_dir=tmp_path,
        store_url=REDIS_URL, resources_shards=1, snapshot_every=500,
    )  # fmt: skip
    (name,) = shard_names(SHARD_PREFIX, 1)
    get_or_create(ResourcePoolActor, name, settings, name, namespace=settings.namespace,
                  resources={MARKER: 0.01})  # fmt: skip
    admin = ResourcesClient(settings)
    await admin.start()
    for pool, (kind, capacity) in POOLS.items():
        await admin.create_pool(pool, kind, capacity)

    # When many clients contend for both pools while the actor is killed twice
    run = Run()
    clients = [ResourcesClient(settings) for _ in range(CLIENTS)]
    workers = [
        asyncio.ensure_future(contend(run, c, f"client-{i}", seed=i)) for i, c in enumerate(clients)
    ]
    checker = asyncio.ensure_future(check(run, admin))
    started = time.monotonic()
    for kill_at in KILLS_AT_S:
        await asyncio.sleep(max(0.0, started + kill_at - time.monotonic()))
        ray.kill(admin.shards[0].handle, no_restart=False)
    await asyncio.sleep(max(0.0, started + RUN_S - time.monotonic()))
    run.stop = True
    await asyncio.gather(*workers, checker)

    # Then the checker ran, the paused holders were refused, and the actor restarted twice
    assert run.checks > 50 and run.paused_checks > 5
    assert await admin.restarts() == [len(KILLS_AT_S)]
    # And every grant ended, released or expired (some of each), and nothing is held
    assert all(g.how in ("released", "expired") and g.end is not None for g in run.grants)
    hows = {g.how for g in run.grants}
    assert hows == {"released", "expired"}
    for pool in POOLS:
        assert await admin.leases(pool) == []
    # And the actor counted exactly the grants clients got (none lost, none twice)
    stats = {p["name"]: p for p in (await admin.stats())["pools"]}
    for pool in POOLS:
        mine = [g for g in run.grants if g.pool == pool]
        assert stats[pool]["grants"] == len(mine)
        assert stats[pool]["releases"] + stats[pool]["expiries"] == len(mine)
        # tokens: unique and increasing in grant order
        tokens = [g.token for g in sorted(mine, key=lambda g: (g.start, g.token))]
        assert tokens == sorted(set(tokens))
    # And no unit's recorded intervals overlap
    by_unit: dict[tuple[str, int], list[Grant]] = defaultdict(list)
    for grant in run.grants:
        by_unit[(grant.pool, grant.unit)].append(grant)
    for unit, grants in by_unit.items():
        grants.sort(key=lambda g: g.token)
        for before, after in itertools.pairwise(grants):
            assert before.end is not None and after.start >= before.end, (unit, before, after)
    assert {u for u in by_unit} == {("mutex", 0), ("sem", 0), ("sem", 1), ("sem", 2)}
    for client in [admin, *clients]:
        await client.close()
    ray.kill(admin.shards[0].handle, no_restart=True)
