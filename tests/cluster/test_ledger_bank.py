"""The ledger's proof (issue 5): a bank on a 3-node cluster with the Redis store.

Many concurrent random transfers between customers on different shards run
while shards and coordinators are killed at random moments and the worker
node holding most of them is removed. At the end every transfer the ledger
acknowledged is applied exactly once, none it refused is applied, no
account breaks its flags, and the customers hold exactly what was put in
(``tests/integration/ledger_audit.py``).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter

import ray

from actors.ledger.actors import (
    COORDINATOR_PREFIX,
    SHARD_PREFIX,
    LedgerShardActor,
    TxCoordinatorActor,
)
from actors.ledger.client import LedgerClient
from actors.runtime.settings import Settings
from actors.runtime.shards import shard_names
from actors.runtime.supervision import call, get_or_create
from tests.cluster.conftest import MARKER, remove_and_wait
from tests.conftest import REDIS_URL
from tests.integration.ledger_audit import audit, open_books, random_transfers

SHARDS = 4
COORDINATORS = 2
CUSTOMERS = 16
TRANSFERS = 500
IN_FLIGHT = 32
KILLS = 6
SEED = 5

ON_WORKERS = {"resources": {MARKER: 0.01}}


async def test_the_books_balance_after_kills_and_a_lost_node(cluster, worker_node, tmp_path):
    rng = random.Random(SEED)
    # Given two worker nodes holding every shard and coordinator (spread over
    # both), journaling to Redis
    worker_node()
    worker_node()
    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        namespace=f"cluster-{tag}", store_prefix=f"cluster-{tag}", data_dir=tmp_path,
        store_url=REDIS_URL, ledger_shards=SHARDS, ledger_coordinators=COORDINATORS,
        ledger_in_doubt_after_s=1.0, snapshot_every=200,
    )  # fmt: skip
    names = shard_names(SHARD_PREFIX, SHARDS) + shard_names(COORDINATOR_PREFIX, COORDINATORS)
    for name in names:
        actor_class = LedgerShardActor if name.startswith(SHARD_PREFIX) else TxCoordinatorActor
        get_or_create(actor_class, name, settings, name, namespace=settings.namespace,
                      **ON_WORKERS)  # fmt: skip
    client = LedgerClient(settings)
    await client.start()
    books = await open_books(client, tag, customers=CUSTOMERS)
    nodes = {name: (await info(settings, name))["node_id"] for name in names}
    assert len(set(nodes.values())) == 2, nodes

    # When transfers between customers on different shards run while actors are
    # killed at random moments and the node with most of them is removed
    specs = random_transfers(books, TRANSFERS, seed=SEED, cross_only=client.shard_of)
    gate = asyncio.Semaphore(IN_FLIGHT)
    acks = 0

    async def one(spec):
        nonlocal acks
        async with gate:
            (outcome,) = await client.create_transfers([spec])
        books.record(spec.id, outcome)
        acks += 1

    work = [asyncio.ensure_future(one(spec)) for spec in specs]
    kill_at = sorted(rng.sample(range(20, TRANSFERS - 100), KILLS))
    remove_at = kill_at[KILLS // 2] + 5
    busiest = Counter(nodes.values()).most_common(1)[0][0]
    killed = []
    removed = False
    while not all(task.done() for task in work):
        if kill_at and acks >= kill_at[0]:
            kill_at.pop(0)
            victim = rng.choice(names)
            ray.kill(ray.get_actor(victim, namespace=settings.namespace), no_restart=False)
            killed.append((acks, victim))
        if not removed and acks >= remove_at:
            node = next(n for n in cluster.worker_nodes if n.node_id == busiest)
            await asyncio.to_thread(remove_and_wait, cluster, node)
            removed = True
        await asyncio.sleep(0.05)
    await asyncio.gather(*work)

    # Then the books balance
    counts = await audit(client, books)
    assert removed and len(killed) == KILLS, killed
    assert counts["acknowledged"] > TRANSFERS // 2, counts
    assert counts["refused"] > 0, counts
    after = {name: await info(settings, name) for name in names}
    assert all(a["node_id"] != busiest for a in after.values())
    print(f"killed {killed}; counts {counts}")
    await client.close()
    for name in names:
        ray.kill(ray.get_actor(name, namespace=settings.namespace), no_restart=True)


async def info(settings: Settings, name: str) -> dict:
    handle = ray.get_actor(name, namespace=settings.namespace)
    found: dict = await call(handle, "info", patience_s=60)
    return found
