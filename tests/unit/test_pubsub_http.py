"""Pub/sub's HTTP and WebSocket front without Ray: every route's scope, strict
bodies, cursors out of range, reply topics, and queue groups owned by their user.

The app is built on a fake client, and the caller is set by overriding
``apps.signin.current_principal`` and ``stream_user`` (a user, or an API key
with given scopes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from actors.auth.client import Principal
from actors.pubsub.broker import MAX_SEQ, Message
from actors.pubsub.client import Acl, Subscription
from actors.pubsub.settings import PubSubSettings
from actors.runtime.errors import Forbidden, InvalidInput
from actors.runtime.settings import Settings
from apps.pubsub import make_app
from apps.pubsub.ws import Connection, PublishFrame, SubscribeFrame, parse_frame
from apps.signin import stream_user
from tests.unit.fronts import calling_as, principal

SCOPES = {"pubsub:publish", "pubsub:subscribe"}


class FakePubSub:
    """Answers what the front asks of ``PubSubClient``, and remembers the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def publish(self, *args: Any, **kwargs: Any) -> tuple[int, float]:
        self.calls.append(("publish", args, kwargs))
        return 1, 1.0

    async def history(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("history", args, kwargs))
        return {"messages": [Message("t", 1, 1.0, b"1")], "complete": True, "last_seq": 1}

    async def request(self, *args: Any, **kwargs: Any) -> Message:
        self.calls.append(("request", args, kwargs))
        return Message("_inbox.a.b", 0, 1.0, b"2")

    async def subscribe(self, *args: Any, **kwargs: Any) -> Subscription:
        self.calls.append(("subscribe", args, kwargs))
        raise InvalidInput("no subscriptions here")  # before any stream starts


@pytest.fixture
async def front() -> AsyncIterator[tuple[httpx.AsyncClient, FakePubSub, list[Principal]]]:
    fake = FakePubSub()
    caller = [principal()]
    app = make_app(fake, Settings())  # type: ignore[arg-type]
    async with calling_as(app, caller, also=(stream_user,)) as http:
        yield http, fake, caller


#: Every HTTP route, a request it accepts, and the scope an API key needs for it.
ROUTES: list[tuple[str, str, Any, str]] = [
    ("POST", "/publish", {"topic": "t", "data": 1}, "pubsub:publish"),
    ("GET", "/history?topic=t", None, "pubsub:subscribe"),
    ("POST", "/request", {"topic": "t", "data": 1}, "pubsub:publish"),
]


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
async def test_every_route_takes_its_scope(front, method, path, body, scope) -> None:
    http, fake, caller = front
    caller[0] = principal(scopes=SCOPES - {scope})
    refused = await http.request(method, path, json=body)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    assert fake.calls == []
    caller[0] = principal(scopes={scope})
    allowed = await http.request(method, path, json=body)
    assert allowed.status_code == 200, allowed.text
    assert len(fake.calls) == 1


async def test_an_sse_stream_takes_the_subscribe_scope(front) -> None:
    http, fake, caller = front
    caller[0] = principal(scopes={"pubsub:publish"})
    refused = await http.get("/sse", params={"pattern": "t"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    caller[0] = principal(scopes={"pubsub:subscribe"})
    assert (await http.get("/sse", params={"pattern": "t"})).status_code == 422  # the fake's
    assert [call[0] for call in fake.calls] == ["subscribe"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/publish", {"topic": "t", "data": 1, "extra": 1}),  # unknown fields are refused
        ("/publish", {"topic": 5, "data": 1}),  # a number is not a topic
        ("/request", {"topic": "t", "data": 1, "timeout_s": True}),  # nor a boolean a number
        ("/request", {"topic": "t", "data": 1, "timeout_s": "5"}),
        ("/request", {"topic": "t", "data": 1, "timeout_s": 61}),  # over its maximum
    ],
)
async def test_bodies_are_strict(front, path, body) -> None:
    http, fake, _ = front
    answer = await http.post(path, json=body)
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "invalid_input")
    assert fake.calls == []


@pytest.mark.parametrize(
    "last_event_id",
    [
        "9" * 5_000,  # past Python's limit on digits in int(): once a 500
        str(MAX_SEQ + 1),
        f'{{"a.b": {MAX_SEQ + 1}}}',
        '{"a.b": ' + "9" * 4_000 + "}",
    ],
)
@pytest.mark.parametrize("pattern", ["a.b", "a.*"])
async def test_a_last_event_id_out_of_range_is_invalid_input(front, pattern, last_event_id):
    http, fake, _ = front
    answer = await http.get("/sse", params={"pattern": pattern},
                            headers={"last-event-id": last_event_id})  # fmt: skip
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "invalid_input")
    assert fake.calls == []


async def test_a_history_cursor_out_of_range_is_invalid_input(front) -> None:
    http, fake, _ = front
    for after_seq in (str(MAX_SEQ + 1), "9" * 5_000):
        answer = await http.get("/history", params={"topic": "t", "after_seq": after_seq})
        assert answer.status_code == 422, answer.text
    assert fake.calls == []
    assert (await http.get("/history", params={"topic": "t", "after_seq": MAX_SEQ})).is_success


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"topic": "_inbox.x", "data": 1}, 403),  # not a reply topic a request gives
        ({"topic": "_inbox.x.y.z", "data": 1}, 403),
        ({"topic": "t", "data": 1, "reply_to": "user.bob.inbox"}, 403),  # not hers to publish to
        ({"topic": "_inbox.x.y", "data": 1}, 200),  # a reply (its token the capability)
        ({"topic": "t", "data": 1, "reply_to": "user.ada.replies"}, 200),
    ],
)
async def test_reply_topics_and_reply_to(front, body, status) -> None:
    http, fake, _ = front
    answer = await http.post("/publish", json=body)
    assert answer.status_code == status, answer.text
    assert len(fake.calls) == (status == 200)


# --- WebSocket -------------------------------------------------------------------------


def connection(fake: FakePubSub, user: Principal) -> Connection:
    config = PubSubSettings()
    return Connection(None, fake, verifier=None, acl=Acl(), user=user, token="",  # type: ignore[arg-type]
                      config=config)  # fmt: skip


async def test_websocket_frames_take_their_scope() -> None:
    fake = FakePubSub()
    publisher = connection(fake, principal(scopes={"pubsub:publish"}))
    subscriber = connection(fake, principal(scopes={"pubsub:subscribe"}))
    publish = PublishFrame(type="publish", topic="t", data=1)
    subscribe = SubscribeFrame(type="subscribe", pattern="t")
    with pytest.raises(Forbidden):
        await subscriber._handle(publish)
    with pytest.raises(Forbidden):
        await publisher._handle(subscribe)
    assert fake.calls == []
    await publisher._handle(publish)
    with pytest.raises(InvalidInput):  # the fake's: it got there
        await subscriber._handle(subscribe)
    assert [call[0] for call in fake.calls] == ["publish", "subscribe"]


async def test_a_websocket_queue_group_is_its_users_own() -> None:
    fake = FakePubSub()
    with pytest.raises(InvalidInput):
        await connection(fake, principal("ada"))._handle(
            SubscribeFrame(type="subscribe", pattern="jobs", group="workers")
        )
    [(_, _, kwargs)] = fake.calls
    assert (kwargs["group"], kwargs["owner"]) == ("workers", "ada")


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "ping", "extra": 1}',
        '{"type": "subscribe", "pattern": "a", "resume": {"a": true}}',
        '{"type": "subscribe", "pattern": "a", "resume": {"a": "1"}}',
        f'{{"type": "subscribe", "pattern": "a", "resume": {{"a": {MAX_SEQ + 1}}}}}',
        '{"type": "subscribe", "pattern": "a", "resume": {"a": -1}}',
        '{"type": "publish", "topic": "a", "data": 1, "ref": 5}',
    ],
)
def test_websocket_frames_are_strict(frame: str) -> None:
    with pytest.raises(InvalidInput):
        parse_frame(frame)


async def test_a_publish_frame_checks_its_reply_to() -> None:
    fake = FakePubSub()
    ada = connection(fake, principal("ada"))
    with pytest.raises(Forbidden):
        await ada._handle(PublishFrame(type="publish", topic="t", data=1, reply_to="user.bob.x"))
    with pytest.raises(Forbidden):
        await ada._handle(PublishFrame(type="publish", topic="_inbox.guess", data=1))
    assert fake.calls == []
