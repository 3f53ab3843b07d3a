"""The ledger's state is kept out of the garbage collector's full collections
(``actors.runtime.heap``): a full collection walks every object the process
keeps, and the books and the coordinator's decisions only grow, so without
this each transfer cost more the longer the ledger ran (issue 14 §2).

The figures here are object counts, never times: what a full collection has
to walk once the ledger holds some transfers, and after more of them."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from actors.ledger.coordinator import TxCoordinator
from actors.ledger.model import AccountSpec, TransferSpec
from actors.ledger.shard import LedgerShard
from actors.runtime.clock import FakeClock
from actors.runtime.heap import YOUNG_THRESHOLD, HeapFreezer, tune_collector
from actors.runtime.registry import start_hooks
from actors.runtime.store import SQLiteStore
from tests.unit.test_ledger_coordinator import Port, route


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """Each test starts and ends with nothing frozen (the collector is the process's)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


async def ledger(clock: FakeClock, store: SQLiteStore) -> TxCoordinator:
    shards = []
    for i in range(2):
        shard = LedgerShard(clock=clock, name=f"s{i}")
        await shard.open(store, f"s{i}", on_failure=lambda e: None)
        shards.append(shard)
    await shards[0].create_accounts([AccountSpec("a-bank", 1)])
    await shards[1].create_accounts([AccountSpec("b-bank", 1)])
    coordinator = TxCoordinator("c0", [Port(s) for s in shards], route, clock=clock)
    await coordinator.open(store, "c0", on_failure=lambda e: None)
    return coordinator


async def transfers(coordinator: TxCoordinator, first: int, count: int) -> None:
    for start in range(first, first + count, 100):
        units = [
            [TransferSpec(f"t{i}", "a-bank", "b-bank", 1, 1)] for i in range(start, start + 100)
        ]
        results = await coordinator.run(units)
        assert all(result[0] == "ok" for result in results)


def walked() -> int:
    """Objects a full collection walks now (the frozen ones are not among them)."""
    gc.collect()
    return len(gc.get_objects())


def shard_of(coordinator: TxCoordinator, index: int) -> Any:
    port: Any = coordinator.shards[index]
    return port.shard


async def test_full_collections_do_not_walk_the_books(clock, store) -> None:
    coordinator = await ledger(clock, store)
    freezer = HeapFreezer(min_objects=10**9)  # no rebuild here
    await transfers(coordinator, 0, 500)
    before = walked()
    assert freezer.step()  # a full collection ran (walked): freeze what survived it
    after = walked()
    # What a transfer keeps (its decision, its legs on both shards: about 16
    # tracked objects) is no longer walked...
    assert before - after >= 10 * 500, (before, after)
    entry = coordinator.entries["t0"]
    stored = shard_of(coordinator, 0).books.transfers["t0"]
    ids = {id(o) for o in gc.get_objects()}
    assert id(entry) not in ids and id(stored) not in ids
    # ...and 500 transfers more add only what they keep, not a walk of the
    # first ones again: once frozen, it stays flat.
    await transfers(coordinator, 500, 500)
    grown = walked() - after
    assert freezer.step()
    assert walked() < after + grown // 4, (after, grown)


async def test_transfers_stay_readable_and_answer_repeats_after_freezing(clock, store) -> None:
    coordinator = await ledger(clock, store)
    freezer = HeapFreezer(min_objects=10**9)
    await transfers(coordinator, 0, 100)
    gc.collect()
    freezer.step()
    repeat = await coordinator.run([[TransferSpec("t5", "a-bank", "b-bank", 1, 1)]])
    assert repeat[0][0] == "ok"
    totals = await shard_of(coordinator, 1).totals()
    assert totals["credits_posted"] == 100


def test_step_freezes_only_after_a_full_collection() -> None:
    freezer = HeapFreezer(min_objects=10**9)
    assert not freezer.step()
    assert gc.get_freeze_count() == 0
    gc.collect(1)  # not a full one
    assert not freezer.step()
    gc.collect()
    assert freezer.step()
    assert gc.get_freeze_count() > 0 and freezer.freezes == 1


class Node:
    def __init__(self) -> None:
        self.other: Any = self  # a reference cycle: only the collector frees it


def test_rebuild_frees_cycles_that_were_frozen() -> None:
    freezer = HeapFreezer(growth=2.0, min_objects=10**9)
    node = Node()
    gone = weakref.ref(node)
    gc.collect()
    freezer.step()
    del node
    gc.collect()
    assert gone() is not None  # frozen: full collections no longer look at it
    freezer.rebuild()
    assert gone() is None
    assert freezer.rebuilds == 1 and gc.get_freeze_count() > 0


def test_rebuilds_when_the_frozen_objects_have_grown() -> None:
    freezer = HeapFreezer(growth=2.0, min_objects=1)
    gc.collect()
    assert freezer.step() and freezer.rebuilds == 1  # the first freeze sets the base
    base = gc.get_freeze_count()
    kept = [Node() for _ in range(base // 4)]  # +25%: frozen, no rebuild yet
    gc.collect()
    freezer.step()
    assert freezer.rebuilds == 1
    kept += [Node() for _ in range(base)]  # now past twice the base: rebuilt
    gc.collect()
    freezer.step()
    assert freezer.rebuilds == 2
    assert len(kept) > base


@pytest.fixture
def thresholds() -> Iterator[None]:
    """The collector's thresholds are the process's: put them back."""
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_every_actor_and_replica_collects_young_objects_less_often(thresholds) -> None:
    gc.set_threshold(700, 11, 12)
    tune_collector()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)  # the older ratios kept
    gc.set_threshold(YOUNG_THRESHOLD * 2, 10, 10)
    tune_collector()  # never lowers a threshold set higher
    assert gc.get_threshold() == (YOUNG_THRESHOLD * 2, 10, 10)
    assert tune_collector in start_hooks()


def test_a_cycle_is_still_freed_with_the_tuned_threshold(thresholds) -> None:
    tune_collector()
    node = Node()
    gone = weakref.ref(node)
    del node
    assert gone() is not None  # only the collector frees a cycle
    # objects freed at once count for nothing: only the ones that stay bring a collection
    kept = [[] for _ in range(YOUNG_THRESHOLD + 1)]
    assert gone() is None and len(kept) > YOUNG_THRESHOLD


def test_growth_must_exceed_one() -> None:
    with pytest.raises(ValueError):
        HeapFreezer(growth=1.0)


async def test_a_shard_process_freezes_its_books(tmp_path) -> None:
    """The shard actor's process (run here without Ray) freezes what survives
    a full collection within a second or two."""
    from actors.ledger.actors import _LedgerShardProcess
    from actors.runtime.settings import Settings
    from tests.conftest import until

    process: Any = _LedgerShardProcess.__new__(_LedgerShardProcess)
    await process.__init__(Settings(data_dir=tmp_path, namespace="t"), "ledger-shard-0")
    try:
        gc.collect()
        await until(gc.get_freeze_count, within_s=10, what="a freeze")
    finally:
        for name in ("_heap", "_expirer", "_asker"):
            if hasattr(process, name):
                getattr(process, name).cancel()
        await process.journal.store.close()
