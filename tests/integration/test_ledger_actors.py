"""The ledger's actors under fire, on both stores: a shard and a coordinator
are killed in the middle of concurrent cross-shard transfers; afterwards the
books balance (see ``ledger_audit``)."""

from __future__ import annotations

import asyncio

import ray

from actors.ledger.client import LedgerClient
from actors.ledger.model import AccountSpec, TransferSpec
from tests.conftest import until
from tests.integration.conftest import ON_SQLITE
from tests.integration.ledger_audit import audit, open_books, random_transfers

TRANSFERS = 160


async def test_transfers_survive_a_shard_and_a_coordinator_killed_mid_way(ray_settings):
    # Given two shards, one coordinator and funded customers on both shards
    settings = ray_settings(
        ledger_shards=2, ledger_coordinators=1, ledger_in_doubt_after_s=1.0,
        snapshot_every=50, **ON_SQLITE,
    )  # fmt: skip
    client = LedgerClient(settings)
    await client.start()
    books = await open_books(client, "bank", customers=8)
    assert len({client.shard_of(name) for name in books.customers}) == 2

    # When many transfers (most across shards) run while a shard, then the
    # coordinator, are killed
    specs = random_transfers(books, TRANSFERS, seed=7)
    tasks = {spec.id: asyncio.ensure_future(client.create_transfers([spec])) for spec in specs}
    for done, finished in enumerate(asyncio.as_completed(list(tasks.values())), 1):
        await finished
        if done == 30:
            shard = ray.get_actor(client.shards[1].name, namespace=settings.namespace)
            ray.kill(shard, no_restart=False)
        if done == 70:
            coordinator = ray.get_actor(client.coordinators[0].name, namespace=settings.namespace)
            ray.kill(coordinator, no_restart=False)
            in_flight = sum(not task.done() for task in tasks.values())
            break
    for transfer_id, task in tasks.items():
        (outcome,) = await task
        books.record(transfer_id, outcome)

    # Then the books balance: acknowledged once, refused never, money conserved
    counts = await audit(client, books)
    assert in_flight > 0
    assert counts["acknowledged"] > 0 and counts["refused"] > 0
    print(counts)
    await client.close()


async def test_a_shard_in_doubt_asks_its_coordinator_and_aborts(ray_settings):
    # Given a transaction prepared on a shard by a coordinator that never logged
    # a decision for it (as if it died right after preparing)
    settings = ray_settings(ledger_shards=2, ledger_coordinators=1, ledger_in_doubt_after_s=0.5)
    client = LedgerClient(settings)
    await client.start()
    bank = next(name for name in (f"acct-{i}" for i in range(20)) if client.shard_of(name) == 0)
    await client.create_accounts([AccountSpec(bank, 1)])
    shard = client.shards[0]
    leg = (0, TransferSpec("stray", bank, "elsewhere", 7, 1), ("debit",))
    stray = ("stray#1", client.coordinators[0].name, [leg])
    assert await shard.call("prepare", [stray]) == [None]
    assert (await client.get_account(bank))["debits_pending"] == 7

    # When the shard has waited long enough, it asks the coordinator, which
    # knows no commit for it: then the reservation is released
    await until(
        lambda: shard.call("in_doubt", 0.0),
        lambda in_doubt: not in_doubt,
        within_s=60,
        what="the shard resolving its transaction",
    )
    assert (await client.get_account(bank))["debits_pending"] == 0
    assert await shard.call("abort", ["stray#1"]) == ["aborted"]
