"""The resource manager over real HTTP and WebSocket, through Serve's ingress.

The deployment is shared by every test, so each test uses its own pool names.
Pools belong to the user who made them: another user's answer 404.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import until
from tests.integration.conftest import client_address, error_code, service_client, sign_up

SERVICE = "resources"  # of the `http` fixture


@pytest.fixture
async def other(base_url) -> AsyncIterator[httpx.AsyncClient]:
    """A second user."""
    async with service_client(base_url, SERVICE, await sign_up(base_url)) as client:
        yield client


@pytest.fixture
async def fresh(base_url) -> AsyncIterator[httpx.AsyncClient]:
    """A user of this test only."""
    async with service_client(base_url, SERVICE, await sign_up(base_url)) as client:
        yield client


def new_name(prefix: str = "pool") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def make_pool(http: httpx.AsyncClient, kind: str = "mutex", **spec: Any) -> str:
    name = new_name()
    created = await http.put(f"/pools/{name}", json={"kind": kind, **spec})
    assert created.status_code == 200, created.text
    return name


async def test_acquire_validate_renew_release(http):
    name = await make_pool(http, ttl_s=60)
    lease = (await http.post(f"/pools/{name}/acquire", json={})).json()
    assert (lease["unit"], lease["token"], lease["state"], lease["ttl_s"]) == (0, 1, "held", 60)
    check = (await http.get(f"/pools/{name}/leases/{lease['token']}/validate")).json()
    assert check["valid"] and check["current_token"] == 1
    renewed = await http.post(f"/pools/{name}/leases/1/renew", json={"ttl_s": 120})
    assert renewed.status_code == 200 and renewed.json()["expires_at"] > lease["expires_at"]
    released = await http.delete(f"/pools/{name}/leases/1")
    assert released.json()["state"] == "released"
    after = (await http.get(f"/pools/{name}/leases/1/validate")).json()
    assert (after["valid"], after["reason"]) == (False, "released")
    again = await http.post(f"/pools/{name}/leases/1/renew", json={})
    assert again.status_code == 409 and error_code(again) == "lease_expired"
    assert (await http.post(f"/pools/{name}/acquire", json={})).json()["token"] == 2


async def test_a_long_poll_is_granted_when_the_holder_releases(
    http, base_url, api_key, user_headers
):
    # the waiter is an API key of the same user: a key acts in its user's pools
    name = await make_pool(http)
    held = (await http.post(f"/pools/{name}/acquire", json={})).json()
    key = await api_key(["resources:acquire"], owner=user_headers)
    async with service_client(base_url, SERVICE, key) as waiter:
        unread = await waiter.get(f"/pools/{name}")  # the key holds resources:acquire only
        assert unread.status_code == 403 and error_code(unread) == "forbidden"
        busy = await waiter.post(f"/pools/{name}/acquire", json={"timeout_s": 0})
        assert busy.status_code == 409 and error_code(busy) == "acquire_timed_out"
        waiting = asyncio.ensure_future(
            waiter.post(f"/pools/{name}/acquire", json={"timeout_s": 30})
        )
        await until(lambda: http.get(f"/pools/{name}"), lambda r: r.json()["waiting"] == 1)
        await http.delete(f"/pools/{name}/leases/{held['token']}")
        granted = await waiting
    assert granted.status_code == 200 and granted.json()["token"] == held["token"] + 1
    assert granted.json()["pool"] == name


async def test_quota_and_ownership_are_enforced(fresh, other):
    name = await make_pool(fresh, "semaphore", capacity=5, quota_per_owner=2)
    mine = [(await fresh.post(f"/pools/{name}/acquire", json={})).json() for _ in range(2)]
    over = await fresh.post(f"/pools/{name}/acquire", json={"timeout_s": 5})
    assert over.status_code == 429 and error_code(over) == "quota_exceeded"
    details = over.json()["error"]["details"]
    assert (details["quota"], details["held"], details["pool"]) == (2, 2, name)
    assert over.headers["retry-after"]
    before = (await fresh.get(f"/pools/{name}")).json()
    # another user finds no such pool, by any route, and changes nothing
    token = mine[0]["token"]
    for method, path, body in [
        ("GET", f"/pools/{name}", None),
        ("GET", f"/pools/{name}/leases", None),
        ("POST", f"/pools/{name}/acquire", {}),
        ("POST", f"/pools/{name}/leases/{token}/renew", {}),
        ("DELETE", f"/pools/{name}/leases/{token}", None),
        ("GET", f"/pools/{name}/leases/{token}/validate", None),
        ("DELETE", f"/pools/{name}", None),
        ("GET", "/stats?pool=" + name, None),
    ]:
        answer = await other.request(method, path, json=body)
        assert answer.status_code == 404, (method, path, answer.text)
        assert error_code(answer) == "pool_not_found"
    assert (await fresh.get(f"/pools/{name}")).json() == before
    # nor can a user take a grant in another holder's name
    posing = await fresh.post(f"/pools/{name}/acquire", json={"owner": "someone-else"})
    assert posing.status_code == 403 and error_code(posing) == "forbidden"
    # and a pool of the same name of theirs is another pool
    theirs = await other.put(f"/pools/{name}", json={"kind": "mutex"})
    assert theirs.status_code == 200 and theirs.json()["held"] == 0
    stats = (await fresh.get("/stats", params={"pool": name})).json()["pools"][0]
    assert (stats["held"], stats["grants"], stats["refusals"]) == (2, 2, 1)
    assert stats["owners"][mine[0]["owner"]]["held"] == 2
    # the owner declared gone: its leases end
    assert (await fresh.post("/owners/me/release")).json() == {"released": 2}
    checks = [(await fresh.get(f"/pools/{name}/leases/{m['token']}/validate")).json() for m in mine]
    assert [c["valid"] for c in checks] == [False, False]


async def test_groups_over_http(http):
    pools = [await make_pool(http, "semaphore", capacity=2) for _ in range(2)]
    group = new_name("group")
    created = await http.put(f"/groups/{group}", json={"pools": pools})
    assert created.json() == {"name": group, "pools": pools, "loads": None}
    got = [(await http.post(f"/groups/{group}/acquire", json={})).json()["pool"] for _ in range(4)]
    assert sorted(got) == sorted(pools * 2)
    loads = (await http.get(f"/groups/{group}")).json()["loads"]
    assert [load["held"] for load in loads] == [2, 2]
    missing = await http.put(f"/groups/{new_name('group')}", json={"pools": [new_name()]})
    assert missing.status_code == 404 and error_code(missing) == "pool_not_found"


async def test_bad_input_is_refused_and_changes_nothing(http, base_url):
    name = await make_pool(http, "semaphore", capacity=2)
    held = (await http.post(f"/pools/{name}/acquire", json={})).json()
    before = ((await http.get(f"/pools/{name}")).json(), (await http.get("/stats")).json())
    refused = [
        (await http.put(f"/pools/{name}", json={"kind": "mutex"}), 409),
        (await http.put(f"/pools/{new_name()}", json={"kind": "lock"}), 422),
        (await http.put(f"/pools/{new_name()}", json={"kind": "semaphore"}), 422),
        (await http.put(f"/pools/{new_name()}", json={"kind": "mutex", "capacity": 3}), 422),
        (await http.put(f"/pools/{new_name()}", json={"kind": "mutex", "ttl_s": 10**9}), 422),
        (await http.put("/pools/bad%20name", json={"kind": "mutex"}), 422),
        (await http.put(f"/pools/{new_name()}", content=b"{not json"), 422),
        (await http.post(f"/pools/{name}/acquire", json={"ttl_s": -1}), 422),
        (await http.post(f"/pools/{name}/acquire", json={"timeout_s": 10**6}), 422),
        (await http.post(f"/pools/{name}/acquire", json={"timeout_s": "soon"}), 422),
        (await http.post(f"/pools/{name}/acquire", json={"timeout_s": False}), 422),
        (await http.post(f"/pools/{name}/acquire", json={"wait": 5}), 422),
        (await http.put(f"/pools/{new_name()}", json={"kind": "mutex", "max_waiters": 10**8}), 422),
        (await http.post(f"/pools/{new_name()}/acquire", json={}), 404),
        (await http.post(f"/pools/{name}/leases/0/renew", json={}), 422),
        (await http.post(f"/pools/{name}/leases/999/renew", json={}), 404),
        (await http.post(f"/pools/{name}/leases/{held['token']}/renew", json={"ttl_s": 0}), 422),
        (await http.delete(f"/pools/{name}/leases/abc"), 422),
        (await http.get(f"/pools/{name}/leases/999/validate"), 200),  # answers "unknown"
        (await http.get(f"/groups/{new_name()}"), 404),
        (await http.put(f"/groups/{new_name()}", json={"pools": []}), 422),
    ]
    for response, status in refused:
        assert response.status_code == status, (response.request.url, response.text)
        if status != 200:
            assert "error" in response.json()
    async with service_client(base_url, SERVICE) as anonymous_client:
        anonymous = await anonymous_client.post(f"/pools/{name}/acquire", json={})
    assert anonymous.status_code == 401
    after = ((await http.get(f"/pools/{name}")).json(), (await http.get("/stats")).json())
    assert after[0] == before[0]
    mine = [p for p in after[1]["pools"] if p["name"] == name]
    assert mine == [p for p in before[1]["pools"] if p["name"] == name]


async def test_a_websocket_follows_a_wait(http, base_url, user_headers):
    name = await make_pool(http)
    held = (await http.post(f"/pools/{name}/acquire", json={})).json()
    url = base_url.replace("http://", "ws://") + f"/resources/pools/{name}/wait"
    async with websockets.connect(url, additional_headers=user_headers) as ws:
        await ws.send(json.dumps({"type": "nonsense"}))
        bad = json.loads(await ws.recv())
        assert (bad["type"], bad["error"]["code"], bad["seq"]) == ("error", "invalid_input", 1)
        await ws.send(json.dumps({"type": "acquire", "ref": "r1", "timeout_s": 30}))
        queued = json.loads(await ws.recv())
        assert (queued["type"], queued["ref"], queued["seq"]) == ("queued", "r1", 2)
        await until(lambda: http.get(f"/pools/{name}"), lambda r: r.json()["waiting"] == 1)
        await http.delete(f"/pools/{name}/leases/{held['token']}")
        granted = json.loads(await ws.recv())
        assert (granted["type"], granted["seq"]) == ("granted", 3)
        assert granted["lease"]["token"] == held["token"] + 1
        # a second wait, then the socket goes away: the wait is withdrawn
        await ws.send(json.dumps({"type": "acquire", "ref": "r2", "timeout_s": 30}))
        assert json.loads(await ws.recv())["type"] == "queued"
        await until(lambda: http.get(f"/pools/{name}"), lambda r: r.json()["waiting"] == 1)
    await until(lambda: http.get(f"/pools/{name}"), lambda r: r.json()["waiting"] == 0)
    assert (await http.get(f"/pools/{name}")).json()["held"] == 1
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(url):
            pass
    assert refused.value.response.status_code == 401


async def test_a_websocket_has_so_many_acquires_in_progress(http, base_url, user_headers):
    name = await make_pool(http)
    await http.post(f"/pools/{name}/acquire", json={})
    url = base_url.replace("http://", "ws://") + f"/resources/pools/{name}/wait"
    limit = 16  # REALM_RESOURCES_MAX_ACQUIRES_PER_SOCKET
    async with websockets.connect(url, additional_headers=user_headers) as ws:
        for i in range(limit + 1):
            await ws.send(json.dumps({"type": "acquire", "ref": f"r{i}", "timeout_s": 60}))
        frames = [json.loads(await ws.recv()) for _ in range(limit + 1)]
        refused = [f for f in frames if f["type"] == "error"]
        assert [(f["ref"], f["status"], f["error"]["code"]) for f in refused] == [
            (f"r{limit}", 429, "too_many_acquires")
        ]
        await until(lambda: http.get(f"/pools/{name}"), lambda r: r.json()["waiting"] == limit)
    await until(lambda: http.get(f"/pools/{name}"), lambda r: r.json()["waiting"] == 0)


async def post_body_after_headers(
    base_url: str, path: str, headers: dict[str, str], body: dict[str, Any]
) -> asyncio.StreamWriter:
    """Send a POST as most clients do under load: its headers, then its body in a
    packet of its own; the answer is never read."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port), local_addr=(client_address(), 0))
    data = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"host: {host}:{port}",
        "content-type: application/json",
        f"content-length: {len(data)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(data)
    await writer.drain()
    return writer


@pytest.mark.parametrize("client", ["httpx", "body_after_headers"])
async def test_a_long_poll_whose_client_goes_away_leaves_the_queue(
    http, base_url, user_headers, client
):
    # Given a mutex held for an hour
    name = await make_pool(http, ttl_s=3600)
    held = (await http.post(f"/pools/{name}/acquire", json={})).json()
    # When another request long-polls for it, and its client goes away
    path = f"/resources/pools/{name}/acquire"
    if client == "httpx":
        gone = service_client(base_url, SERVICE, user_headers)
        poll = asyncio.ensure_future(gone.post(f"/pools/{name}/acquire", json={"timeout_s": 300}))
    else:
        writer = await post_body_after_headers(base_url, path, user_headers, {"timeout_s": 300})
    await until(lambda: http.get(f"/pools/{name}"), lambda r: r.json()["waiting"] == 1)
    if client == "httpx":
        poll.cancel()
        await gone.aclose()
    else:
        writer.close()
    # Then its wait is withdrawn (the held lease lasts an hour, the wait five
    # minutes: nothing else empties the queue), and nothing was granted
    await until(lambda: http.get(f"/pools/{name}"), lambda r: r.json()["waiting"] == 0, within_s=60)
    stats = (await http.get("/stats", params={"pool": name})).json()["pools"][0]
    assert (stats["grants"], stats["held"], stats["timeouts"]) == (1, 1, 0)
    # And once the holder releases, the mutex is free: no grant went to a caller that left
    released = await http.delete(f"/pools/{name}/leases/{held['token']}")
    assert released.json()["state"] == "released"
    after = (await http.get(f"/pools/{name}")).json()
    assert (after["held"], after["waiting"], after["next_token"]) == (0, 0, held["token"] + 1)
