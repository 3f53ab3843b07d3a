"""API keys and tickets over real HTTP, through Serve's ingress.

Keys are made by the deployment's admin (``make_api_key`` in the conftest);
tickets sign real SSE streams and WebSockets of the pub/sub service in, once,
and those streams end with the session behind them.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from tests.integration.conftest import (
    admin_headers,
    error_code,
    make_api_key,
    service_client,
    sign_up,
)

SERVICE = "auth"  # of the `http` fixture
SIGNED_IN = False
DEADLINE_S = 60.0


def topic() -> str:
    return f"tickets.{uuid.uuid4().hex[:10]}"


async def ticket_for(base_url: str, headers: dict[str, str]) -> str:
    async with service_client(base_url, "auth", headers) as auth:
        answer = await auth.post("/ticket")
        assert answer.status_code == 200, answer.text
        assert answer.json()["expires_in_s"] == 30
        ticket: str = answer.json()["ticket"]
    assert ticket.startswith("rt_")
    return ticket


async def publish(base_url: str, headers: dict[str, str], where: str, data: Any) -> None:
    async with service_client(base_url, "pubsub", headers) as pubsub:
        answer = await pubsub.post("/publish", json={"topic": where, "data": data})
        assert answer.status_code == 200, answer.text


async def logout(base_url: str, headers: dict[str, str]) -> None:
    async with service_client(base_url, "auth", headers) as auth:
        assert (await auth.post("/logout")).status_code == 204


# --- API keys -------------------------------------------------------------------------


async def test_an_api_key_is_made_used_listed_and_revoked(http, base_url):
    owner = await sign_up(base_url)
    me = (await http.get("/me", headers=owner)).json()
    admin = await admin_headers(base_url)
    made = await http.post(
        "/keys",
        json={"scopes": ["pubsub:publish"], "name": "feeder", "user_id": me["id"]},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    key = made.json()
    assert key["key"].startswith("rk_") and key["user_id"] == me["id"]
    assert key["scopes"] == ["pubsub:publish"] and key["expires_at"] is None
    headers = {"authorization": f"Bearer {key['key']}"}

    # The key signs in (a ticket is any principal's), but is no signed-in user
    assert (await http.post("/ticket", headers=headers)).status_code == 200
    me_as_key = await http.get("/me", headers=headers)
    assert me_as_key.status_code == 403 and error_code(me_as_key) == "forbidden"
    # Listed for the admin, without its secret
    listed = (await http.get("/keys", params={"user_id": me["id"]}, headers=admin)).json()
    assert listed == {"keys": [{k: v for k, v in key.items() if k != "key"}]}
    # Not for its owner
    assert (await http.get("/keys", headers=owner)).status_code == 403

    # Revoked: refused at once, and gone from the list
    assert (await http.delete(f"/keys/{key['id']}", headers=admin)).status_code == 204
    refused = await http.post("/ticket", headers=headers)
    assert refused.status_code == 401 and error_code(refused) == "unauthorized"
    listed = (await http.get("/keys", params={"user_id": me["id"]}, headers=admin)).json()
    assert listed == {"keys": []}
    again = await http.delete(f"/keys/{key['id']}", headers=admin)
    assert again.status_code == 404 and error_code(again) == "not_found"


async def test_a_bad_key_request_is_422_and_makes_nothing(http, base_url):
    admin = await admin_headers(base_url)
    for body in (
        {"scopes": []},
        {"scopes": ["queue:everything"]},
        {"scopes": ["cache:read"], "expires_in_s": False},
        {"scopes": ["cache:read"], "user_id": "a", "username": "b"},
        {"scopes": ["cache:read"], "owner": "me"},
    ):
        answer = await http.post("/keys", json=body, headers=admin)
        assert answer.status_code == 422 and error_code(answer) == "invalid_input", body
    nobody = await http.post(
        "/keys",
        json={"scopes": ["cache:read"], "username": "nobody-" + uuid.uuid4().hex},
        headers=admin,
    )
    assert nobody.status_code == 404 and error_code(nobody) == "not_found"


async def test_the_make_api_key_helper_gives_a_working_key(base_url, api_key):
    owner = await sign_up(base_url)
    headers = await api_key(["pubsub:subscribe"], owner=owner)
    direct = await make_api_key(base_url, ["cache:read"], expires_in_s=600)
    for key in (headers, direct):
        async with service_client(base_url, "auth", key) as auth:
            assert (await auth.post("/ticket")).status_code == 200
            assert (await auth.get("/me")).status_code == 403


# --- tickets on real streams ------------------------------------------------------------


async def test_a_ticket_opens_an_sse_stream_once_and_the_stream_ends_with_the_session(base_url):
    user = await sign_up(base_url)
    where = topic()
    ticket = await ticket_for(base_url, user)
    stream = f"{base_url}/pubsub/sse"
    params = {"pattern": where, "ticket": ticket}
    async with (
        httpx.AsyncClient(timeout=DEADLINE_S) as sse,
        sse.stream("GET", stream, params=params) as opened,
    ):
        assert opened.status_code == 200
        # The ticket is used up: a second stream with it is refused
        reused = await sse.get(stream, params=params)
        assert reused.status_code == 401 and error_code(reused) == "unauthorized"
        await publish(base_url, user, where, "hello")
        lines = opened.aiter_lines()
        while (await asyncio.wait_for(anext(lines), DEADLINE_S)) != "event: message":
            pass
        # When the session behind the ticket ends, so does the stream
        await logout(base_url, user)

        async def drain() -> None:
            async for _ in lines:
                pass

        await asyncio.wait_for(drain(), DEADLINE_S)


async def test_a_ticket_opens_a_websocket_once_and_it_closes_with_the_session(base_url):
    user = await sign_up(base_url)
    url = base_url.replace("http://", "ws://") + "/pubsub/ws"
    ticket = await ticket_for(base_url, user)
    async with connect(f"{url}?ticket={ticket}") as ws:
        await ws.send('{"type": "ping"}')
        assert '"pong"' in await asyncio.wait_for(ws.recv(), DEADLINE_S)
        with pytest.raises(websockets.exceptions.InvalidStatus) as reused:
            async with connect(f"{url}?ticket={ticket}"):
                pass
        assert reused.value.response.status_code == 401
        await logout(base_url, user)
        await asyncio.wait_for(ws.wait_closed(), DEADLINE_S)
        assert ws.close_code == 4401


async def test_a_token_in_the_url_is_refused(base_url):
    user = await sign_up(base_url)
    token = user["authorization"].removeprefix("Bearer ")
    async with service_client(base_url, "pubsub") as anonymous:
        refused = await anonymous.get("/sse", params={"pattern": topic(), "access_token": token})
        assert refused.status_code == 401 and error_code(refused) == "unauthorized"
        assert "ticket" in refused.json()["error"]["message"]
    url = base_url.replace("http://", "ws://") + "/pubsub/ws"
    with pytest.raises(websockets.exceptions.InvalidStatus) as denied:
        async with connect(f"{url}?access_token={token}"):
            pass
    assert denied.value.response.status_code == 401


async def test_a_ticket_of_an_ended_session_is_refused(base_url):
    user = await sign_up(base_url)
    ticket = await ticket_for(base_url, user)
    await logout(base_url, user)
    async with service_client(base_url, "pubsub") as anonymous:
        refused = await anonymous.get("/sse", params={"pattern": topic(), "ticket": ticket})
        assert refused.status_code == 401 and error_code(refused) == "unauthorized"
