"""What a durable actor writes to its store is data: it replays after its code
moves, refuses to run anything it reads, and says which record it cannot read."""

from __future__ import annotations

import importlib.util
import pickle
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from actors.runtime.errors import RecordUndecodable
from actors.runtime.journal import Durable
from actors.runtime.store import SQLiteStore

#: A durable inventory whose records and snapshots carry a dataclass, an enum,
#: tuples, a set and bytes: everything the codec types back from annotations.
INVENTORY = textwrap.dedent(
    '''
    from __future__ import annotations

    from dataclasses import dataclass, field
    from enum import Enum

    from actors.runtime.journal import Durable


    class Kind(str, Enum):
        TOOL = "tool"
        FOOD = "food"


    @dataclass
    class Item:
        name: str
        kind: Kind
        size: tuple[int, int]
        tags: set[str] = field(default_factory=set)
        photo: bytes = b""


    class Inventory(Durable):
        def __init__(self) -> None:
            self.items: dict[str, Item] = {}

        def snapshot_state(self) -> dict[str, Item]:
            return self.items

        def restore_state(self, state: dict[str, Item]) -> None:
            self.items = state

        def apply_put(self, item: Item) -> Item:
            self.items[item.name] = item
            return item


    class InventoryV2(Inventory):
        """Version 2 calls the operation ``store``."""

        schema_version = 2

        def apply_store(self, item: Item) -> Item:
            return self.apply_put(item)
    '''
)


def load(tmp_path: Path, module_name: str) -> ModuleType:
    """The inventory's code as module ``module_name`` (a fresh file each time)."""
    path = tmp_path / f"{module_name}.py"
    path.write_text(INVENTORY)
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


async def opened(cls: type[Durable], store: SQLiteStore, **options: Any) -> Any:
    actor = cls()
    await actor.open(store, "inventory", **options)
    return actor


async def test_a_journal_written_before_its_module_moved_replays_after(tmp_path):
    store = SQLiteStore(tmp_path / "store.sqlite3")
    old = load(tmp_path, "inventory_before_the_move")
    before = await opened(old.Inventory, store, snapshot_every=3)
    for i in range(5):  # a snapshot after 3 records, then 2 records after it
        item = old.Item(f"i{i}", old.Kind.TOOL, (i, i + 1), {"a", "b"}, bytes([i]))
        await before.execute("put", item=item, key=f"k{i}")
    await before._snapshot_task
    assert (await store.read_snapshot("inventory"))[0] == 3

    moved = load(tmp_path, "inventory_after_the_move")  # same code, another module
    after = await opened(moved.Inventory, store)
    assert sorted(after.items) == [f"i{i}" for i in range(5)]
    got = after.items["i4"]
    assert type(got) is moved.Item and got.kind is moved.Kind.TOOL
    assert got.size == (4, 5) and got.tags == {"a", "b"} and got.photo == b"\x04"
    # An idempotent answer from before the snapshot comes back typed too.
    again = await after.execute("put", item=moved.Item("other", moved.Kind.FOOD, (0, 0)), key="k1")
    assert type(again) is moved.Item and again.name == "i1"


async def test_a_record_that_does_not_decode_names_its_stream_and_number(tmp_path):
    store = SQLiteStore(tmp_path / "store.sqlite3")
    module = load(tmp_path, "inventory_garbage")
    first = await opened(module.Inventory, store)
    await first.execute("put", item=module.Item("ok", module.Kind.TOOL, (1, 1)))
    await store.append("inventory", 1, [b"\xc1 not msgpack"])
    with pytest.raises(RecordUndecodable) as refused:
        await opened(module.Inventory, store)
    assert refused.value.details == {"stream": "inventory", "seq": 2}
    assert "record 2 of stream inventory" in refused.value.message


ran: list[str] = []


def _would_run(text: str) -> None:
    ran.append(text)


class _Exploit:
    def __reduce__(self) -> Any:
        return (_would_run, ("code from the store",))


async def test_a_pickle_in_the_store_is_refused_and_never_run(tmp_path):
    store = SQLiteStore(tmp_path / "store.sqlite3")
    module = load(tmp_path, "inventory_pickle")
    await store.append("inventory", 0, [pickle.dumps(("put", {"item": _Exploit()}, None))])
    with pytest.raises(RecordUndecodable):
        await opened(module.Inventory, store)
    await store.write_snapshot("inventory", 1, pickle.dumps(_Exploit()))
    with pytest.raises(RecordUndecodable, match="snapshot 1"):
        await opened(module.Inventory, store)
    assert ran == []


async def test_records_of_an_older_schema_need_an_upgrade(tmp_path):
    store = SQLiteStore(tmp_path / "store.sqlite3")
    module = load(tmp_path, "inventory_versions")
    first = await opened(module.Inventory, store)
    await first.execute("put", item=module.Item("old", module.Kind.TOOL, (1, 2)))

    with pytest.raises(RecordUndecodable, match="schema version 1"):
        await opened(module.InventoryV2, store)

    class Upgraded(module.InventoryV2):  # type: ignore[name-defined,misc]
        def upgrade_record(self, version: int, op: str, args: dict[str, Any]) -> Any:
            assert (version, op) == (1, "put")
            args["item"]["name"] = args["item"]["name"].upper()  # and version 2 names loudly
            return "store", args

    assert list((await opened(Upgraded, store)).items) == ["OLD"]


class Pairs(Durable):
    """Annotated as a list, handed a tuple: it would come back as another type."""

    def __init__(self) -> None:
        self.pairs: list[Any] = []

    def snapshot_state(self) -> list[Any]:
        return self.pairs

    def restore_state(self, state: list[Any]) -> None:
        self.pairs = state

    def apply_add(self, pair: list[int]) -> None:
        self.pairs.append(pair)


async def test_a_value_that_would_replay_differently_is_caught_where_it_is_written(tmp_path):
    store = SQLiteStore(tmp_path / "store.sqlite3")
    pairs = await opened(Pairs, store)
    await pairs.execute("add", pair=[1, 2])
    with pytest.raises(TypeError, match=r"apply_add: 'pair' does not survive the store"):
        await pairs.execute("add", pair=(3, 4))
