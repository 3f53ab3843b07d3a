"""Shards: N named actors of one class, a key's owner found by rendezvous hashing,
each placed on its node; and the options every Realm actor class gets.

No actor starts here: an ActorRef resolves its name only on its first call."""

from __future__ import annotations

from typing import Any

from actors.runtime.hashing import Rendezvous
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards, shard_names


def test_shards_are_named_after_their_prefix_in_the_deployments_namespace():
    shards = Shards(object, "cache-shard", 3, Settings(namespace="ns-test"))
    assert [ref.name for ref in shards] == shard_names("cache-shard", 3)
    assert shard_names("cache-shard", 3) == ["cache-shard-0", "cache-shard-1", "cache-shard-2"]
    assert {ref.namespace for ref in shards} == {"ns-test"}
    assert len(shards) == 3 and shards[1].name == "cache-shard-1"


def test_a_key_is_owned_by_the_shard_rendezvous_hashing_picks():
    shards = Shards(object, "s", 5, Settings())
    ring = Rendezvous(5)
    keys = [f"key-{i}" for i in range(200)]
    for key in keys:
        assert shards.index(key) == ring.owner(key)
        assert shards.owner(key) is shards[ring.owner(key)]
    assert shards.split(keys) == ring.split(keys)
    assert len({shards.index(key) for key in keys}) == 5  # every shard owns some


async def test_call_all_asks_every_shard_and_keeps_their_order():
    shards = Shards(object, "s", 3, Settings())
    asked: list[tuple[str, str]] = []

    async def fake_call(ref: Any, method: str, *args: Any) -> str:
        asked.append((ref.name, method))
        return ref.name

    for ref in shards:
        ref.call = fake_call.__get__(ref)  # type: ignore[method-assign]
    assert await shards.call_all("ping") == ["s-0", "s-1", "s-2"]
    assert sorted(asked) == [("s-0", "ping"), ("s-1", "ping"), ("s-2", "ping")]


def test_shard_i_starts_on_node_i_modulo_the_nodes_and_anywhere_on_one_node(monkeypatch):
    from actors.runtime import supervision

    shards = Shards(object, "s", 5, Settings())
    assert [ref.spread_index for ref in shards] == [0, 1, 2, 3, 4]

    a, b = "aa" * 28, "bb" * 28  # node ids are 56 hex digits
    monkeypatch.setattr(supervision, "_alive_nodes", lambda: [a, b])
    placed = [supervision.spread_placement(ref.spread_index) for ref in shards]
    assert [p["scheduling_strategy"].node_id for p in placed] == [a, b] * 2 + [a]
    assert all(p["scheduling_strategy"].soft for p in placed)  # a lost node gives way
    # a token CPU: Ray places an actor that asks for nothing at random
    assert {p["num_cpus"] for p in placed} == {
        supervision.SPREAD_CPUS
    } and supervision.SPREAD_CPUS > 0

    monkeypatch.setattr(supervision, "_alive_nodes", lambda: [a])
    assert supervision.spread_placement(3) == {}


def test_an_actor_with_no_async_method_takes_one_call_at_a_time():
    from actors.queue.workers import JobSlots
    from actors.runtime.supervision import ACTOR_DEFAULTS, Restart, actor_options

    class Async:
        async def get(self) -> int:
            return 1

    assert actor_options(JobSlots, restart=Restart.PERMANENT)["max_concurrency"] == 1
    options = actor_options(Async, restart=Restart.PERMANENT)
    assert options["max_concurrency"] == ACTOR_DEFAULTS["max_concurrency"] > 1
    assert (
        actor_options(JobSlots, restart=Restart.PERMANENT, max_concurrency=4)["max_concurrency"]
        == 4
    )
