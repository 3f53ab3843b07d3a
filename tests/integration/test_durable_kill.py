"""The durable path under fire: kill an actor in the middle of concurrent writes.

Every write the actor acknowledged must be there after the restart, exactly
once, on both stores.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import ray

from actors.runtime.supervision import call, get_or_create
from tests.integration.conftest import store_overrides
from tests.integration.tally import TallyActor

WRITES = 400
KILL_AFTER_ACKS = 120


async def test_acknowledged_writes_survive_a_kill(ray_settings, store_kind):
    # Given a permanent durable actor that snapshots often (so recovery uses
    # snapshot + replay), on the store under test
    settings = ray_settings(snapshot_every=25, **store_overrides(store_kind))
    tally = get_or_create(TallyActor, "tally", settings, "tally", namespace=settings.namespace)
    before = await call(tally, "info")

    # When hundreds of writes are in flight and the actor is killed mid-way
    tasks = [
        asyncio.ensure_future(call(tally, "add", i, f"write-{i}", patience_s=120))
        for i in range(WRITES)
    ]
    acked_before_kill = 0
    for finished in asyncio.as_completed(tasks):
        await finished
        acked_before_kill += 1
        if acked_before_kill == KILL_AFTER_ACKS:
            in_flight = sum(not task.done() for task in tasks)
            ray.kill(tally, no_restart=False)
            break
    results = await asyncio.gather(*tasks, return_exceptions=True)

    # Then every acknowledged write is there exactly once, and nothing else is
    acknowledged = {i for i, result in enumerate(results) if not isinstance(result, BaseException)}
    assert acknowledged, "no write was acknowledged"
    contents = await call(tally, "contents")
    counts = Counter(contents)
    assert not [item for item, n in counts.items() if n > 1], "an item was applied twice"
    assert acknowledged <= set(contents), sorted(acknowledged - set(contents))[:10]
    assert set(contents) <= set(range(WRITES))

    # And the actor really was restarted, and batched its commits
    after = await call(tally, "info")
    assert after["pid"] != before["pid"]
    assert after["restarts"] == 1
    assert acked_before_kill == KILL_AFTER_ACKS
    assert in_flight > 0, "the kill came after the work, not in the middle of it"
    print(f"{store_kind}: in flight at kill {in_flight}, after: {after}, kept {len(contents)}")


async def test_a_retried_call_is_answered_once(ray_settings, store_kind):
    settings = ray_settings(**store_overrides(store_kind))
    tally = get_or_create(TallyActor, "tally", settings, "tally", namespace=settings.namespace)
    first = await call(tally, "add", "a", "same-key")
    again = await call(tally, "add", "a", "same-key")
    assert first == again == 1
    ray.kill(tally, no_restart=False)
    # After the restart the key is remembered from the journal.
    assert await call(tally, "add", "a", "same-key", patience_s=60) == 1
    assert await call(tally, "contents") == ["a"]


async def test_group_commit_batches_concurrent_writes(ray_settings, store_kind):
    settings = ray_settings(**store_overrides(store_kind))
    tally = get_or_create(TallyActor, "tally", settings, "tally", namespace=settings.namespace)
    await asyncio.gather(*(call(tally, "add", i, f"k{i}") for i in range(300)))
    info = await call(tally, "info")
    assert info["records"] == 300
    assert info["commits"] < 300
