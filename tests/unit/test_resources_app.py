"""The resources HTTP app and its client, without Ray: pool actors are
``ResourcePool`` objects in this process (a real SQLite store), reached through
the real ``ResourcesClient`` over stand-in shard references, and callers are
principals chosen per request (``apps.signin.current_principal`` overridden).

What is checked here is what the app and the client decide: scopes, owners'
namespaces (another user's pool answers 404), quotas and strict bodies; the
whole deployment is in ``tests/integration/test_resources_http.py``.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.websockets import WebSocket

from actors.auth.client import Principal
from actors.resources.client import ResourcesClient
from actors.resources.pool import ResourcePool
from actors.resources.settings import ResourcesSettings
from actors.runtime.hashing import Rendezvous
from actors.runtime.settings import Settings
from actors.runtime.store import SQLiteStore
from apps.resources import Waiter, make_app
from tests.unit.conftest import settle
from tests.unit.fronts import Callers

ANN = Principal("ann0000000000001", "ann", ("user",), "s-ann")
BOB = Principal("bob0000000000002", "bob", ("user",), "s-bob")


def key_of(user: Principal, *scopes: str) -> Principal:
    """An API key of ``user`` holding ``scopes``."""
    return Principal(user.user_id, user.username, (), "k-" + "-".join(scopes), frozenset(scopes))


class LocalRef:
    """An actor reference whose actor is an object here; arguments and answers are
    copied, as Ray would."""

    def __init__(self, target: Any) -> None:
        self.target = target

    async def call(self, method: str, *args: Any, patience_s: float = 0, **kw: Any) -> Any:
        args, kw = copy.deepcopy((args, kw))
        result = getattr(self.target, method)(*args, **kw)
        if inspect.isawaitable(result):
            result = await result
        return copy.deepcopy(result)


class LocalShards:
    def __init__(self, targets: list[Any]) -> None:
        self.refs = [LocalRef(target) for target in targets]
        self.ring = Rendezvous(len(targets))

    def index(self, key: str) -> int:
        return self.ring.owner(key)

    def owner(self, key: str) -> LocalRef:
        return self.refs[self.ring.owner(key)]

    def split(self, keys: Any) -> dict[int, list[int]]:
        return self.ring.split(keys)

    async def call_all(self, method: str, *args: Any, **kw: Any) -> list[Any]:
        return [await ref.call(method, *args, **kw) for ref in self.refs]

    async def start(self) -> None:
        return None

    def __getitem__(self, index: int) -> LocalRef:
        return self.refs[index]

    def __len__(self) -> int:
        return len(self.refs)


class Deployment:
    def __init__(self, settings: Settings, client: ResourcesClient, pools: list[ResourcePool]):
        self.settings, self.client, self.pools = settings, client, pools
        self.app = make_app(client, settings)
        self.http = Callers(self.app).http


@pytest.fixture
async def deployment(
    make_settings: Callable[..., Settings], store: SQLiteStore
) -> AsyncIterator[Callable[..., Any]]:
    made: list[ResourcePool] = []

    async def make(**overrides: Any) -> Deployment:
        settings = make_settings(resources_shards=2, **overrides)
        config = ResourcesSettings.of(settings)
        pools = []
        for index in range(config.shards):
            pool = ResourcePool(config)
            await pool.open(store, f"resources-{len(made)}-{index}")
            pools.append(pool)
        made.extend(pools)
        client = ResourcesClient(settings)
        client.shards = LocalShards(pools)  # type: ignore[assignment]
        return Deployment(settings, client, pools)

    yield make
    for pool in made:
        await pool.journal.drain()


def code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def test_another_users_pool_answers_404_on_every_route(deployment) -> None:
    world = await deployment()
    async with world.http(ANN) as ann, world.http(BOB) as bob:
        assert (await ann.put("/pools/gpu", json={"kind": "semaphore", "capacity": 2})).is_success
        assert (await ann.put("/groups/g", json={"pools": ["gpu"]})).is_success
        lease = (await ann.post("/pools/gpu/acquire", json={"ttl_s": 60})).json()
        before = (await ann.get("/pools/gpu")).json()
        token = lease["token"]
        for method, path, body in [
            ("GET", "/pools/gpu", None),
            ("GET", "/pools/gpu/leases", None),
            ("POST", "/pools/gpu/acquire", {}),
            ("POST", f"/pools/gpu/leases/{token}/renew", {}),
            ("DELETE", f"/pools/gpu/leases/{token}", None),
            ("GET", f"/pools/gpu/leases/{token}/validate", None),
            ("DELETE", "/pools/gpu", None),
            ("GET", "/groups/g", None),
            ("POST", "/groups/g/acquire", {}),
            ("DELETE", "/groups/g", None),
            ("GET", "/stats?pool=gpu", None),
            ("PUT", "/groups/h", {"pools": ["gpu"]}),
        ]:
            answer = await bob.request(method, path, json=body)
            assert answer.status_code == 404, (method, path, answer.text)
            assert code(answer) in ("pool_not_found", "group_not_found")
        assert (await ann.get("/pools/gpu")).json() == before
        assert (await bob.get("/stats")).json()["pools"] == []
        # bob's own pool of the same name is another pool, and answers by its name
        mine = await bob.put("/pools/gpu", json={"kind": "mutex"})
        assert mine.json()["name"] == "gpu" and mine.json()["kind"] == "mutex"
        theirs = (await bob.post("/pools/gpu/acquire", json={})).json()
        assert (theirs["pool"], theirs["token"], theirs["owner"]) == ("gpu", 1, BOB.user_id)
        assert (await ann.get("/pools/gpu")).json()["kind"] == "semaphore"
        assert [p["name"] for p in (await ann.get("/stats")).json()["pools"]] == ["gpu"]


async def test_routes_need_their_scope(deployment) -> None:
    world = await deployment()
    async with world.http(ANN) as ann:
        await ann.put("/pools/lock", json={"kind": "mutex"})
    reader = key_of(ANN, "resources:read")
    acquirer = key_of(ANN, "resources:acquire")
    manager = key_of(ANN, "resources:manage")
    other = key_of(ANN, "cache:read")
    async with (
        world.http(reader) as read,
        world.http(acquirer) as acquire,
        world.http(manager) as manage,
        world.http(other) as cache_only,
        world.http(None) as anonymous,
    ):
        assert (await read.get("/pools/lock")).status_code == 200
        refused = await read.post("/pools/lock/acquire", json={})
        assert refused.status_code == 403 and code(refused) == "forbidden"
        lease = await acquire.post("/pools/lock/acquire", json={})
        assert lease.status_code == 200 and lease.json()["owner"] == ANN.user_id
        assert (await acquire.get("/pools/lock")).status_code == 403
        assert (await acquire.put("/pools/other", json={"kind": "mutex"})).status_code == 403
        assert (await manage.put("/pools/other", json={"kind": "mutex"})).status_code == 200
        assert (await manage.post("/pools/other/acquire", json={})).status_code == 403
        assert (await cache_only.get("/pools/lock")).status_code == 403
        missing = await anonymous.get("/pools/lock")
        assert missing.status_code == 401 and code(missing) == "unauthorized"
        # what a key creates is its user's
        async with world.http(ANN) as ann:
            assert (await ann.get("/pools/other")).status_code == 200


async def test_an_owner_may_have_so_many_pools(deployment) -> None:
    world = await deployment(resources_max_pools_per_owner=2)
    async with world.http(ANN) as ann, world.http(BOB) as bob:
        for name in ("a", "b"):
            assert (await ann.put(f"/pools/{name}", json={"kind": "mutex"})).status_code == 200
        assert (await ann.put("/pools/a", json={"kind": "mutex"})).status_code == 200  # the same
        over = await ann.put("/pools/c", json={"kind": "mutex"})
        assert over.status_code == 403 and code(over) == "limit_reached"
        assert over.json()["error"]["details"] == {"limit": 2}
        assert (await ann.get("/pools/c")).status_code == 404
        assert (await bob.put("/pools/c", json={"kind": "mutex"})).status_code == 200
        assert (await ann.delete("/pools/b")).status_code == 200
        assert (await ann.put("/pools/c", json={"kind": "mutex"})).status_code == 200


async def test_a_busy_pool_is_not_deleted_and_a_new_one_goes_on_from_its_tokens(
    deployment,
) -> None:
    world = await deployment()
    async with world.http(ANN) as ann:
        await ann.put("/pools/lock", json={"kind": "mutex"})
        lease = (await ann.post("/pools/lock/acquire", json={})).json()
        busy = await ann.delete("/pools/lock")
        assert busy.status_code == 409 and code(busy) == "pool_busy"
        await ann.delete(f"/pools/lock/leases/{lease['token']}")
        assert (await ann.delete("/pools/lock")).status_code == 200
        assert (await ann.get("/pools/lock")).status_code == 404
        await ann.put("/pools/lock", json={"kind": "mutex"})
        again = (await ann.post("/pools/lock/acquire", json={})).json()
        assert again["token"] > lease["token"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/pools/p", {"kind": "semaphore", "capacity": True}),
        ("PUT", "/pools/p", {"kind": "semaphore", "capacity": "2"}),
        ("PUT", "/pools/p", {"kind": "semaphore", "capacity": 10**6}),
        ("PUT", "/pools/p", {"kind": "mutex", "max_waiters": 10**7}),
        ("PUT", "/pools/p", {"kind": "mutex", "max_waiters": 101}),  # over the deployment's
        ("PUT", "/pools/p", {"kind": "mutex", "ttl_s": 10**6}),
        ("PUT", "/pools/p", {"kind": "mutex", "extra": 1}),
        ("PUT", "/groups/g", {"pools": ["bad name"]}),
        ("POST", "/pools/lock/acquire", {"timeout_s": "5"}),
        ("POST", "/pools/lock/acquire", {"timeout_s": False}),
        ("POST", "/pools/lock/acquire", {"timeout_s": 10**5}),
        ("POST", "/pools/lock/acquire", {"ttl_s": 10**9}),
        ("POST", "/pools/lock/leases/1/renew", {"ttl_s": True}),
        ("POST", f"/pools/lock/leases/{2**64}/renew", {}),
    ],
)
async def test_bodies_are_strict_and_bounded(deployment, method, path, body) -> None:
    world = await deployment(resources_max_waiters=100)
    async with world.http(ANN) as ann:
        await ann.put("/pools/lock", json={"kind": "mutex"})
        answer = await ann.request(method, path, json=body)
        assert answer.status_code == 422, answer.text
        assert code(answer) == "invalid_input"
        assert (await ann.get("/pools/p")).status_code == 404
        assert (await ann.get("/pools/lock")).json()["held"] == 0


class Socket:
    """A wait WebSocket driven from here: frames in, frames out."""

    def __init__(self, world: Deployment, pool: str) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.frames: list[dict[str, Any]] = []
        verifier = type("Verifier", (), {"recheck": staticmethod(self._recheck)})()
        app = type("App", (), {"state": type("State", (), {"session_verifier": verifier})()})()
        scope = {"type": "websocket", "path": f"/pools/{pool}/wait", "headers": [],
                 "query_string": b"", "app": app}  # fmt: skip
        self.ws = WebSocket(scope, self.inbox.get, self._send)

    @staticmethod
    async def _recheck(principal: Principal) -> Principal:
        return principal

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            self.frames.append(json.loads(message["text"]))

    async def open(self) -> None:
        self.inbox.put_nowait({"type": "websocket.connect"})
        await self.ws.accept()

    def send(self, frame: dict[str, Any]) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": json.dumps(frame)})

    def close(self) -> None:
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})


async def test_a_websocket_has_so_many_acquires_in_progress(deployment) -> None:
    world = await deployment(resources_max_acquires_per_socket=2)
    config = ResourcesSettings.of(world.settings)
    async with world.http(ANN) as ann:
        await ann.put("/pools/lock", json={"kind": "mutex"})
        await ann.post("/pools/lock/acquire", json={"ttl_s": 60})
        socket = Socket(world, "lock")
        await socket.open()
        running = asyncio.ensure_future(Waiter(socket.ws, world.client, "lock", ANN, config).run())
        for ref in ("a", "b", "c"):
            socket.send({"type": "acquire", "ref": ref, "timeout_s": 60})
        for _ in range(50):
            await settle()
            if (await ann.get("/pools/lock")).json()["waiting"] == 2 and len(socket.frames) == 3:
                break
        refused = [f for f in socket.frames if f["type"] == "error"]
        assert [(f["ref"], f["status"], f["error"]["code"]) for f in refused] == [
            ("c", 429, "too_many_acquires")
        ]
        assert sorted(f["ref"] for f in socket.frames if f["type"] == "queued") == ["a", "b"]
        assert (await ann.get("/pools/lock")).json()["waiting"] == 2
        # the socket goes away: its waits are withdrawn
        socket.close()
        await asyncio.wait_for(running, 10)
        for _ in range(50):
            await settle()
            if (await ann.get("/pools/lock")).json()["waiting"] == 0:
                break
        assert (await ann.get("/pools/lock")).json()["waiting"] == 0


async def test_an_admin_names_a_holder_that_can_be_journaled(deployment) -> None:
    root = Principal("root000000000003", "root", ("user", "admin"), "s-root")
    world = await deployment()
    async with world.http(root) as admin, world.http(ANN) as ann:
        await admin.put("/pools/lock", json={"kind": "mutex"})
        named = await admin.post("/pools/lock/acquire", json={"owner": "job-7"})
        assert named.status_code == 200 and named.json()["owner"] == "job-7"
        await admin.delete(f"/pools/lock/leases/{named.json()['token']}")
        bad = await admin.post(
            "/pools/lock/acquire",
            content=rb'{"owner": "\ud800"}',
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 422 and code(bad) == "invalid_input"
        assert (await admin.get("/pools/lock")).json()["held"] == 0
        await ann.put("/pools/lock", json={"kind": "mutex"})
        posing = await ann.post("/pools/lock/acquire", json={"owner": "job-7"})
        assert posing.status_code == 403 and code(posing) == "forbidden"
