"""``apps.push`` without Ray: scopes, who may send where, strict bodies, sync and async."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from actors.auth.client import Principal
from actors.push.errors import DeviceNotFound
from actors.runtime.settings import Settings
from apps.push import make_app
from tests.unit.fronts import calling_as, principal


def view(nid: str = "n1", state: str = "delivered") -> dict[str, Any]:
    return {
        "id": nid, "target": {"user": "ada"}, "priority": "normal", "collapse_key": None,
        "created_at": 1.0, "expires_at": 2.0, "finished": state != "pending", "finished_at": None,
        "counts": {state: 1}, "duplicate": False,
        "results": [{"device": "d1", "user": "ada", "platform": "webhook", "app": "shop",
                     "state": state, "reason": None, "attempts": 1, "latency_ms": 3.0}],
    }  # fmt: skip


class FakePush:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def start(self) -> None:
        return None

    async def register(self, owner: str, **device: Any) -> dict[str, Any]:
        self.calls.append(("register", (owner, device)))
        return {"id": "d1", "platform": device["platform"], "token": device["token"],
                "app": device["app"], "locale": device["locale"], "topics": device["topics"],
                "created_at": 1.0, "last_seen": 1.0, "created": True}  # fmt: skip

    async def device(self, owner: str, device: str) -> dict[str, Any]:
        raise DeviceNotFound(device=device)

    async def send(self, sender: str, **options: Any) -> dict[str, Any]:
        self.calls.append(("send", (sender, options)))
        return view()

    async def stats(self) -> dict[str, Any]:
        return {"sent": 0}


@pytest.fixture
async def front() -> AsyncIterator[tuple[httpx.AsyncClient, FakePush, list[Principal]]]:
    fake = FakePush()
    caller = [principal()]
    app = make_app(fake, Settings())  # type: ignore[arg-type]
    async with calling_as(app, caller) as http:
        yield http, fake, caller


async def test_scopes_and_privilege(front: Any) -> None:
    http, fake, caller = front
    send = {"to": {"user": "bob"}, "title": "hi"}
    caller[0] = principal(scopes={"push:read"})
    assert (await http.post("/send", json=send)).status_code == 403
    reg = {"platform": "fcm", "token": "t", "app": "shop"}
    assert (await http.post("/devices", json=reg)).status_code == 403
    caller[0] = principal(scopes={"push:register"})
    assert (await http.post("/devices", json=reg)).status_code == 201
    # a signed-in user sends, but is not privileged; a push:send key and the admin are
    caller[0] = principal()
    assert (await http.post("/send", json=send)).status_code == 202
    caller[0] = principal(scopes={"push:send"})
    assert (await http.post("/send", json=send)).status_code == 202
    caller[0] = principal("root", roles=("user", "admin"))
    assert (await http.post("/send", json=send)).status_code == 202
    privileged = [options["privileged"] for name, (_, options) in fake.calls if name == "send"]
    assert privileged == [False, True, True]
    assert (await http.get("/stats")).status_code == 200
    caller[0] = principal()
    assert (await http.get("/stats")).status_code == 403  # the admin's only


async def test_sync_answers_results_async_answers_202(front: Any) -> None:
    http, fake, _ = front
    answer = await http.post("/send", json={"to": {"device": "d1"}, "mode": "sync"})
    assert answer.status_code == 200 and answer.json()["results"][0]["state"] == "delivered"
    answer = await http.post(
        "/send", json={"to": {"device": "d1"}}, headers={"idempotency-key": "abc"}
    )
    assert answer.status_code == 202 and answer.json() == {
        "id": "n1", "devices": 1, "duplicate": False, "feedback_secret": None,
    }  # fmt: skip
    assert fake.calls[-1][1][1]["idempotency_key"] == "abc"
    assert fake.calls[-1][1][1]["feedback_url"] is None
    hook = "http://127.0.0.1:9/feedback"
    answer = await http.post("/send", json={"to": {"device": "d1"}, "feedback_url": hook})
    assert answer.status_code == 202 and fake.calls[-1][1][1]["feedback_url"] == hook
    too_long = await http.post(
        "/send", json={"to": {"device": "d1"}, "feedback_url": "http://x/" + "a" * 5000}
    )
    assert too_long.status_code == 422
    missing = await http.get("/devices/nope")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "device_not_found")


@pytest.mark.parametrize(
    "path,body",
    [
        ("/send", {"to": {"user": "bob"}, "ttl_s": True}),
        ("/send", {"to": {"user": "bob"}, "ttl_s": "60"}),
        ("/send", {"to": {"user": "bob"}, "ttl_s": 10**9}),
        ("/send", {"to": {"user": "bob"}, "priority": "urgent"}),
        ("/send", {"to": {"user": "bob"}, "colour": "blue"}),
        ("/send", {"to": {"user": "bob", "owner": "x"}}),
        ("/send", {"to": {"users": ["u"] * 10_001}}),
        ("/send", {"to": {"user": "bob"}, "wait_timeout_s": 61}),
        ("/send", {"to": {"user": "bob"}, "title": "x" * 300}),
        ("/devices", {"platform": "sms", "token": "t", "app": "shop"}),
        ("/devices", {"platform": "fcm", "token": 5, "app": "shop"}),
        ("/devices", {"platform": "fcm", "app": "shop"}),
        ("/devices", {"platform": "webpush", "token": "https://x", "app": "shop"}),
        ("/devices", {"platform": "fcm", "token": "t", "app": "shop", "topics": "news"}),
        ("/devices/d1/inbox/ack", {"seq": -1}),
        ("/devices/d1/inbox/ack", {"seq": "1"}),
    ],
)
async def test_bodies_are_strict_and_bounded(front: Any, path: str, body: dict[str, Any]) -> None:
    http, fake, _ = front
    answer = await http.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert [c for c, _ in fake.calls if c in ("send", "register")] == []
