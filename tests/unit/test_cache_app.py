"""The cache HTTP app and its client, without Ray: shards are ``CacheShard``
objects in this process, reached through the real ``CacheClient`` over
stand-in shard references, and callers are principals chosen per request
(``apps.signin.current_principal`` overridden).

What is checked here is what the app and the client decide: scopes, each
owner's keyspace, per-owner limits and strict bodies; the whole deployment is
in ``tests/integration/test_cache_http.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from actors.auth.client import Principal
from actors.cache.client import CacheClient
from actors.cache.settings import CacheSettings
from actors.cache.shard import CacheShard
from actors.runtime.settings import Settings
from apps.cache import make_app
from tests.unit.fronts import Callers
from tests.unit.test_resources_app import LocalShards, key_of

ANN = Principal("ann0000000000001", "ann", ("user",), "s-ann")
BOB = Principal("bob0000000000002", "bob", ("user",), "s-bob")
ROOT = Principal("root000000000003", "root", ("user", "admin"), "s-root")


class Deployment:
    def __init__(self, settings: Settings) -> None:
        config = CacheSettings.of(settings)
        self.shards = [CacheShard(settings, name=f"cache-shard-{i}") for i in range(config.shards)]
        self.client = CacheClient(LocalShards(self.shards), config)  # type: ignore[arg-type]
        self.app = make_app(self.client, settings)
        self.http = Callers(self.app).http


@pytest.fixture
def deployment(make_settings: Callable[..., Settings]) -> Callable[..., Deployment]:
    def make(**overrides: Any) -> Deployment:
        return Deployment(make_settings(**{"cache_shards": 2, **overrides}))

    return make


def code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def test_each_user_has_a_keyspace_of_their_own(deployment) -> None:
    world = deployment()
    async with world.http(ANN) as ann, world.http(BOB) as bob:
        await ann.put("/keys/session", json={"value": {"who": "ann"}})
        await ann.post("/mset", json={"items": {"a": 1, "b": 2}})
        await ann.post("/incr", json={"key": "hits", "by": 5})
        # bob sees none of ann's keys, by any route
        assert (await bob.get("/keys/session")).status_code == 404
        assert (await bob.post("/mget", json={"keys": ["a", "b", "session"]})).json() == {
            "values": {},
            "missing": ["a", "b", "session"],
        }
        assert (await bob.get("/ttl/session")).json()["exists"] is False
        assert (await bob.post("/expire/session", json={"ttl_s": 5})).status_code == 404
        assert (await bob.delete("/keys/session")).json()["deleted"] is False
        assert (await bob.post("/incr", json={"key": "hits"})).json()["value"] == 1
        # bob's writes to the same names are his own
        await bob.put("/keys/session", json={"value": {"who": "bob"}})
        assert (await ann.get("/keys/session")).json()["value"] == {"who": "ann"}
        assert (await bob.get("/keys/session")).json()["value"] == {"who": "bob"}
        assert (await ann.post("/incr", json={"key": "hits"})).json()["value"] == 6
        assert (await ann.post("/mget", json={"keys": ["a", "b"]})).json()["values"] == {
            "a": 1,
            "b": 2,
        }


async def test_routes_need_their_scope(deployment) -> None:
    world = deployment()
    reader, writer = key_of(ANN, "cache:read"), key_of(ANN, "cache:write")
    elsewhere = key_of(ANN, "queue:read")
    async with (
        world.http(reader) as read,
        world.http(writer) as write,
        world.http(elsewhere) as queue_only,
        world.http(None) as anonymous,
    ):
        assert (await write.put("/keys/k", json={"value": 1})).status_code == 200
        assert (await read.get("/keys/k")).json()["value"] == 1  # the key's user owns it
        for method, path, body in [
            ("PUT", "/keys/k", {"value": 2}),
            ("DELETE", "/keys/k", None),
            ("POST", "/mset", {"items": {"k": 2}}),
            ("POST", "/incr", {"key": "n"}),
            ("POST", "/expire/k", {"ttl_s": 5}),
        ]:
            refused = await read.request(method, path, json=body)
            assert refused.status_code == 403 and code(refused) == "forbidden", path
        for path in ("/keys/k", "/ttl/k", "/stats"):
            assert (await write.get(path)).status_code == 403
        assert (await write.post("/mget", json={"keys": ["k"]})).status_code == 403
        assert (await queue_only.get("/keys/k")).status_code == 403
        unknown = await anonymous.get("/keys/k")
        assert unknown.status_code == 401 and code(unknown) == "unauthorized"
        assert (await anonymous.put("/keys/k", json={"value": 3})).status_code == 401
        assert (await read.get("/keys/k")).json()["value"] == 1


async def test_one_user_cannot_evict_another(deployment) -> None:
    # A shard of 64 entries, of which one user may take 8: ann writes many
    # more; her oldest go, bob's stay
    world = deployment(cache_shards=1, cache_max_entries=64, cache_max_entries_per_owner=8)
    async with world.http(ANN) as ann, world.http(BOB) as bob:
        await bob.post("/mset", json={"items": {f"b{i}": i for i in range(8)}})
        for start in range(0, 200, 50):
            items = {f"a{i}": i for i in range(start, start + 50)}
            assert (await ann.post("/mset", json={"items": items})).json() == {"stored": 50}
        theirs = (await bob.post("/mget", json={"keys": [f"b{i}" for i in range(8)]})).json()
        assert theirs["missing"] == []
        usage = (await ann.get("/stats")).json()["usage"]
        assert (usage["entries"], usage["max_entries_per_shard"]) == (8, 8)
        kept = (await ann.post("/mget", json={"keys": [f"a{i}" for i in range(200)]})).json()
        assert sorted(kept["values"]) == sorted(f"a{i}" for i in range(192, 200))


async def test_stats_show_a_user_their_own_and_an_admin_everything(deployment) -> None:
    world = deployment()
    async with world.http(ANN) as ann, world.http(ROOT) as root:
        await ann.put("/keys/k", json={"value": "v"})
        mine = (await ann.get("/stats")).json()
        assert mine["usage"]["entries"] == 1 and mine["usage"]["bytes"] > 0
        assert (mine["shards"], mine["total"], mine["near"]) == (None, None, None)
        everything = (await root.get("/stats")).json()
        assert everything["usage"]["entries"] == 0
        assert len(everything["shards"]) == 2 and everything["total"]["entries"] == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/incr", {"key": "n", "by": False}),
        ("POST", "/incr", {"key": "n", "by": "1"}),
        ("POST", "/incr", {"key": "n", "by": 2**63}),
        ("POST", "/incr", {"key": "n", "by": 1, "extra": True}),
        ("POST", "/incr", {"key": 5}),
        ("PUT", "/keys/n", {"value": 1, "ttl_s": True}),
        ("PUT", "/keys/n", {"value": 1, "ttl_s": 10**9}),
        ("PUT", "/keys/n", {"value": 1, "ttl_s": 40 * 86_400}),  # over REALM_CACHE_MAX_TTL_S
        ("PUT", "/keys/n%1Fx", {"value": 1}),
        ("POST", "/mget", {"keys": ["n\x1fx"]}),
        ("POST", "/mset", {"items": {"n": 1}, "ttl_s": "5"}),
        ("POST", "/mget", {"keys": [1]}),
        ("POST", "/expire/n", {"ttl_s": False}),
    ],
)
async def test_bodies_are_strict_and_bounded(deployment, method, path, body) -> None:
    world = deployment()
    async with world.http(ANN) as ann:
        answer = await ann.request(method, path, json=body)
        assert answer.status_code == 422, answer.text
        assert code(answer) == "invalid_input"
        assert (await ann.get("/keys/n")).status_code == 404


async def test_the_keys_a_client_remembers_are_bounded(deployment, monkeypatch) -> None:
    from actors.cache import client as cache_client

    monkeypatch.setattr(cache_client, "STORED_KEYS_KEPT", 5)
    world = deployment()
    cache = world.client
    for i in range(12):
        owner = ("ann", "bob")[i % 2]
        await cache.set(f"k{i}", i, owner=owner)
        assert await cache.get(f"k{i}", owner=owner) == i
        assert await cache.get(f"k{i}", owner=("bob", "ann")[i % 2]) is None
        assert cache._remembered <= 5
    assert await cache.mget([f"k{i}" for i in range(12)], owner="ann") == {
        f"k{i}": i for i in range(0, 12, 2)
    }


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/mget", rb'{"keys": ["\ud800"]}'),
        ("POST", "/mset", rb'{"items": {"\ud800": 1}}'),
        ("POST", "/incr", rb'{"key": "\udfff"}'),
        ("PUT", "/keys/n", rb'{"value": "\ud800"}'),
    ],
)
async def test_a_lone_surrogate_is_refused_not_a_fault(deployment, method, path, body) -> None:
    world = deployment()
    async with world.http(ANN) as ann:
        answer = await ann.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 422, answer.text
        assert code(answer) == "invalid_input"
        assert (await ann.get("/keys/n")).status_code == 404
