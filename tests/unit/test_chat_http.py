"""Chat's HTTP front without Ray: every route's scope, strict bodies, and the envelope.

The app runs on a real ``ChatClient`` whose shard is a ``ChatShard`` in this
process (``LocalRef``); the caller is set by overriding
``apps.signin.current_principal`` (a user, or an API key with given scopes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from actors.auth.client import Principal
from actors.chat.client import ChatClient
from actors.chat.settings import ChatSettings
from actors.chat.shard import ChatShard
from actors.runtime.clock import FakeClock
from actors.runtime.store import SQLiteStore
from apps.chat import make_app
from apps.chat.frames import post_json
from tests.unit.fronts import calling_as, principal
from tests.unit.test_chat_client import Directory, LocalRef

SCOPES = {"chat:read", "chat:write", "chat:manage"}


@pytest.fixture
async def front(
    clock: FakeClock, store: SQLiteStore, make_settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, list[Principal], str]]:
    shard = ChatShard(ChatSettings(send_burst=1_000), clock=clock)
    await shard.open(store, "chat-shard-0", on_failure=lambda error: None)
    settings = make_settings(chat_shards=1)
    client = ChatClient(settings, render=post_json, directory=Directory(), clock=clock)
    client.shards.refs = [LocalRef(shard)]  # type: ignore[list-item]
    app = make_app(client, settings)
    caller = [principal("alice")]
    async with calling_as(app, caller, base_url="http://t") as http:
        made = await http.post("/rooms", json={"name": "general"})
        assert made.status_code == 201, made.text
        room = made.json()["id"]
        await http.post(f"/rooms/{room}/messages", json={"text": "first"})
        yield http, caller, room


#: Every HTTP route, a request it accepts, and the scope an API key needs for it.
ROUTES: list[tuple[str, str, Any, str]] = [
    ("POST", "/rooms", {"name": "another"}, "chat:manage"),
    ("POST", "/direct", {"user_id": "bob"}, "chat:write"),
    ("GET", "/rooms", None, "chat:read"),
    ("GET", "/invites", None, "chat:read"),
    ("GET", "/rooms/{room}", None, "chat:read"),
    ("PATCH", "/rooms/{room}", {"topic": "new"}, "chat:manage"),
    ("POST", "/rooms/{room}/archive", None, "chat:manage"),
    ("DELETE", "/rooms/{room}/archive", None, "chat:manage"),
    ("POST", "/rooms/{room}/join", None, "chat:write"),
    ("GET", "/rooms/{room}/members", None, "chat:read"),
    ("GET", "/rooms/{room}/pending", None, "chat:manage"),
    ("POST", "/rooms/{room}/invites", {"user_id": "carol"}, "chat:manage"),
    ("DELETE", "/rooms/{room}/invites/carol", None, "chat:manage"),
    ("DELETE", "/rooms/{room}/requests/carol", None, "chat:manage"),
    ("POST", "/rooms/{room}/bans", {"user_id": "mallory"}, "chat:manage"),
    ("DELETE", "/rooms/{room}/bans/mallory", None, "chat:manage"),
    ("POST", "/rooms/{room}/messages", {"text": "hi"}, "chat:write"),
    ("GET", "/rooms/{room}/messages", None, "chat:read"),
    ("PATCH", "/rooms/{room}/messages/2", {"text": "first!"}, "chat:write"),
    ("PUT", "/rooms/{room}/messages/2/reactions/x", None, "chat:write"),
    ("DELETE", "/rooms/{room}/messages/2/reactions/x", None, "chat:write"),
    ("POST", "/rooms/{room}/read", {"seq": 2}, "chat:write"),
    ("GET", "/rooms/{room}/events", None, "chat:read"),
    ("GET", "/rooms/{room}/search?q=first", None, "chat:read"),
    ("GET", "/rooms/{room}/presence", None, "chat:read"),
]


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES, ids=lambda v: str(v))
async def test_every_route_needs_its_scope(front, method, path, body, scope) -> None:
    http, caller, room = front
    url = path.format(room=room)
    caller[0] = principal("alice", SCOPES - {scope})
    refused = await http.request(method, url, json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "forbidden"
    caller[0] = principal("alice", {scope})
    allowed = await http.request(method, url, json=body)
    assert allowed.status_code < 300, (url, allowed.text)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/rooms", {"name": "x", "kind": "direct"}),
        ("/rooms", {"name": "x", "owner": "bob"}),
        ("/rooms", {"name": 5}),
        ("/rooms/{room}/messages", {"text": "hi", "client_id": 7}),
        ("/rooms/{room}/messages", {"text": "hi", "reply_to": True}),
        ("/rooms/{room}/read", {"seq": "2"}),
        ("/rooms/{room}/bans", {"user_id": "bob", "duration_s": -1}),
        ("/rooms/{room}/bans", {"user_id": "bob", "duration_s": 10**9}),
        ("/direct", {"user_id": ""}),
    ],
)
async def test_bodies_are_strict(front, path, body) -> None:
    http, _, room = front
    answer = await http.post(path.format(room=room), json=body)
    assert answer.status_code == 422, answer.text
    assert set(answer.json()["error"]) >= {"code", "message", "details"}


async def test_a_room_others_cannot_see_answers_404_and_creates_nothing(front) -> None:
    http, caller, room = front
    private = (await http.post("/rooms", json={"name": "secret", "kind": "private"})).json()["id"]
    caller[0] = principal("mallory")
    for url in (
        f"/rooms/{private}",
        f"/rooms/{private}/messages",
        "/rooms/r-" + "0" * 24,
        "/rooms/xyz",
    ):
        answer = await http.get(url)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "room_not_found"
    assert (await http.get("/rooms")).json() == {"rooms": []}
    assert (await http.post("/direct", json={"user_id": "ghost"})).status_code == 404
    del room
