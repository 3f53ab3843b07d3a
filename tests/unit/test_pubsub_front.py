"""Pub/sub front pieces without Ray: authorization, SSE cursors and streams, WebSocket frames."""

from __future__ import annotations

import asyncio
import sys

import orjson
import pytest
from sse_starlette import ServerSentEvent

from actors.auth.client import Principal
from actors.pubsub.broker import Message
from actors.pubsub.client import Acl, Subscription, load_hook
from actors.runtime.errors import Forbidden, InvalidInput
from apps.pubsub.sse import SEP, events, format_cursor, message_event, parse_cursor
from apps.pubsub.ws import MAX_FRAME_BYTES, Outbox, limit_websocket_messages, message_frame

ALICE = Principal("u1", "alice", ("user",), "s1")
BOB = Principal("u2", "bob", ("user",), "s2")


@pytest.mark.parametrize("topic", ["user.u1.inbox", "user.u1.a.b", "news.today", "user.u2", "user"])
def test_alice_may_publish_to_her_topics_and_public_ones(topic):
    Acl().check_publish(ALICE, topic)


@pytest.mark.parametrize("topic", ["user.u2.inbox", "user.u2.a.b"])
def test_nobody_publishes_to_another_users_private_topics(topic):
    with pytest.raises(Forbidden):
        Acl().check_publish(ALICE, topic)


@pytest.mark.parametrize(
    "pattern", ["user.u1.>", "user.u1.*", "user.*.inbox", ">", "*.*.inbox", "user.u2", "news.*"]
)
def test_subscribing_to_own_public_and_wide_patterns_is_allowed(pattern):
    Acl().check_subscribe(ALICE, pattern)


@pytest.mark.parametrize("pattern", ["user.u2.>", "user.u2.inbox", "_inbox.x.*", "_inbox.>"])
def test_subscribing_to_others_private_topics_or_reply_topics_is_refused(pattern):
    with pytest.raises(Forbidden):
        Acl().check_subscribe(ALICE, pattern)


@pytest.mark.parametrize(
    ("topic", "readable"),
    [
        ("user.u1.inbox", True),
        ("user.u2.inbox", False),
        ("user.u2.a.b", False),
        ("user.u2", True),  # two tokens: not under user.<id>.
        ("news.today", True),
        ("_inbox.c.1", False),
    ],
)
def test_wildcard_deliveries_skip_what_the_user_may_not_read(topic, readable):
    assert Acl().may_read(ALICE, topic) is readable


def test_malformed_subjects_are_invalid_not_forbidden():
    with pytest.raises(InvalidInput):
        Acl().check_publish(ALICE, "a.*")
    with pytest.raises(InvalidInput):
        Acl().check_subscribe(ALICE, "a..b")


def only_alice_publishes_to_announcements(user: Principal, action: str, subject: str) -> bool:
    return not (action == "publish" and subject.startswith("announce.")) or user.username == "alice"


def test_the_hook_is_asked_after_the_built_in_rules():
    acl = Acl(load_hook(f"{__name__}:only_alice_publishes_to_announcements"))
    acl.check_publish(ALICE, "announce.all")
    acl.check_subscribe(BOB, "announce.>")
    with pytest.raises(Forbidden):
        acl.check_publish(BOB, "announce.all")
    with pytest.raises(Forbidden):  # the built-in rule refuses before the hook is asked
        acl.check_publish(ALICE, "user.u2.x")


@pytest.mark.parametrize("path", ["no_colon", "math:", ":sqrt", "math:pi"])
def test_a_bad_hook_path_is_refused_at_start(path):
    with pytest.raises((ValueError, TypeError)):
        load_hook(path)


def test_sse_cursors_round_trip():
    assert parse_cursor("room.1", None) == {}
    assert parse_cursor("room.1", "41") == {"room.1": 41}
    assert format_cursor("room.1", {"room.1": 41}) == "41"
    cursor = {"room.1": 3, "room.2": 9}
    assert parse_cursor("room.*", format_cursor("room.*", cursor)) == cursor


@pytest.mark.parametrize(
    "last_event_id", ["garbage", "[1]", '{"a": -1}', '{"a": "1"}', '{"a": true}']
)
def test_a_bad_last_event_id_is_invalid_input(last_event_id):
    with pytest.raises(InvalidInput):
        parse_cursor("room.*", last_event_id)


@pytest.mark.parametrize("event_id", ["7", '{"room.1":3,"room.2":9}', None])
def test_a_message_event_is_framed_as_sse_starlette_frames_it(event_id):
    data = orjson.dumps({"topic": "room.1", "data": "two\nlines"}).decode()
    expected = ServerSentEvent(data, event="message", id=event_id, sep=SEP).encode()
    assert message_event(event_id, data) == expected


class StubClient:
    """What a ``Subscription`` asks of its client, with nothing behind it."""

    def __init__(self) -> None:
        self.unsubscribed = 0

    async def _unsubscribe(self, subscription: Subscription) -> None:
        self.unsubscribed += 1

    async def _history_page(self, topic: str, after: int, before: int) -> list:
        return []


def sse_fields(event: ServerSentEvent | bytes) -> dict[str, str]:
    raw = event.encode() if isinstance(event, ServerSentEvent) else event
    lines = raw.decode().removesuffix(SEP * 2).split(SEP)
    return dict(line.split(": ", 1) for line in lines)


async def test_an_sse_stream_gives_a_retry_hint_then_messages_with_resume_cursors():
    stub = StubClient()
    subscription = Subscription(stub, ">", 10)  # type: ignore[arg-type]
    stream = events(subscription, pattern=">", resume={"room.1": 4}, may_read=Acl().reader(ALICE),
                    signed_out=asyncio.Event().wait, cursor_topics=64)  # fmt: skip
    assert sse_fields(await anext(stream)) == {"retry": "1000"}
    for message in (
        Message("room.1", 5, 1.0, b'"a"'),
        Message("user.u2.inbox", 1, 1.0, b'"not for alice"'),
        Message("room.2", 1, 1.0, b'"b"'),
    ):
        subscription._offer(message)
    first, second = sse_fields(await anext(stream)), sse_fields(await anext(stream))
    assert first["event"] == "message" and orjson.loads(first["data"])["data"] == "a"
    assert orjson.loads(first["id"]) == {"room.1": 5}
    assert orjson.loads(second["id"]) == {"room.1": 5, "room.2": 1}  # bob's message skipped
    await stream.aclose()
    assert stub.unsubscribed == 1


async def test_an_sse_stream_ends_with_an_error_event_for_a_slow_consumer_or_a_session_end():
    slow = Subscription(StubClient(), "t", 2)  # type: ignore[arg-type]
    stream = events(slow, pattern="t", resume={}, may_read=Acl().reader(ALICE),
                    signed_out=asyncio.Event().wait, cursor_topics=64)  # fmt: skip
    await anext(stream)
    for seq in (1, 2, 3):
        slow._offer(Message("t", seq, 1.0, b"1"))
    ending = sse_fields(await anext(stream))
    assert ending["event"] == "error"
    assert orjson.loads(ending["data"])["code"] == "slow_consumer"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)

    signed_out = asyncio.Event()
    stub = StubClient()
    revoked = Subscription(stub, "t", 10)  # type: ignore[arg-type]
    stream = events(revoked, pattern="t", resume={}, may_read=Acl().reader(ALICE),
                    signed_out=signed_out.wait, cursor_topics=64)  # fmt: skip
    await anext(stream)
    signed_out.set()
    ending = sse_fields(await anext(stream))
    assert ending["event"] == "error"
    assert orjson.loads(ending["data"])["code"] == "unauthorized"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert stub.unsubscribed >= 1


# --- WebSocket frames -------------------------------------------------------------


async def test_a_frame_carries_what_is_queued_one_message_per_line_up_to_a_size():
    outbox = Outbox(1_000, 1 << 30)
    small = [orjson.dumps({"n": i}).decode() for i in range(5)]
    for line in small:
        assert outbox.put(line)
    assert (await outbox.next_frame()).split("\n") == small
    big = "x" * (MAX_FRAME_BYTES // 2)
    for _ in range(5):
        assert outbox.put(big)
    sizes = [len((await outbox.next_frame()).split("\n")) for _ in range(3)]
    assert sizes == [2, 2, 1]  # a frame stops taking more once it reaches the size
    assert outbox.size == 0 and not outbox.items
    waiting = asyncio.ensure_future(outbox.next_frame())
    await asyncio.sleep(0)
    assert not waiting.done()  # nothing queued: it waits
    outbox.put("late")
    assert await waiting == "late"


async def test_a_send_buffer_is_bounded_in_bytes_as_well_as_in_messages():
    line = "x" * 1_000
    by_bytes = Outbox(1_000, 3 * sys.getsizeof(line))
    assert [by_bytes.put(line) for _ in range(4)] == [True, True, True, False]
    await by_bytes.next_frame()
    assert by_bytes.put(line)  # sent: room again
    by_count = Outbox(2, 1 << 30)
    assert [by_count.put("a") for _ in range(3)] == [True, True, False]
    huge = Outbox(10, 100)
    assert huge.put("y" * 1_000)  # one message always fits an empty buffer...
    assert not huge.put("z")  # ...and nothing after it


def test_a_message_frame_is_the_body_with_the_subscription_id():
    message = Message("room.1", 7, 1.5, b'{"hi": [1, 2]}', None)
    frame = orjson.loads(message_frame(orjson.dumps('s"1').decode(), message))
    assert frame == {
        "type": "message",
        "sub": 's"1',
        "topic": "room.1",
        "seq": 7,
        "at": 1.5,
        "data": {"hi": [1, 2]},
        "reply_to": None,
    }
    raw = orjson.loads(message_frame('"s"', Message("t", 1, 0.0, b"\xff\x00", "_inbox.a.b")))
    assert raw["data_base64"] == "/wA=" and "data" not in raw and raw["reply_to"] == "_inbox.a.b"


# --- reply topics, deliveries asked of the hook, cursors, frame limits ------------------


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [("_inbox.r.token", True), ("_inbox.r", False), ("_inbox.r.token.more", False)],
)
def test_a_reply_topic_is_published_to_only_in_the_shape_a_request_gives(topic, allowed):
    if allowed:
        Acl().check_publish(ALICE, topic)
    else:
        with pytest.raises(Forbidden):
            Acl().check_publish(ALICE, topic)


def test_a_reply_to_must_be_a_topic_its_publisher_may_publish_to():
    Acl().check_reply_to(ALICE, None)
    Acl().check_reply_to(ALICE, "user.u1.replies")
    Acl().check_reply_to(ALICE, "_inbox.r.token")
    with pytest.raises(Forbidden):
        Acl().check_reply_to(ALICE, "user.u2.inbox")


asked: list[tuple[str, str, str]] = []


def no_secrets_for_bob(user: Principal, action: str, subject: str) -> bool:
    asked.append((user.username, action, subject))
    return not (user.username == "bob" and subject.startswith("secret."))


def test_a_delivery_to_a_wide_pattern_asks_the_hook_once_per_topic():
    asked.clear()
    acl = Acl(load_hook(f"{__name__}:no_secrets_for_bob"))
    acl.check_subscribe(BOB, ">")  # the hook allows the pattern...
    may_read = acl.reader(BOB)
    assert [may_read(t) for t in ("news.a", "secret.plans", "secret.plans", "news.a")] == [
        True,
        False,  # ...but not this topic, which a message on it would reveal
        False,
        True,
    ]
    assert asked[1:] == [("bob", "subscribe", "news.a"), ("bob", "subscribe", "secret.plans")]
    assert acl.reader(ALICE)("secret.plans") is True


def failing_hook(user: Principal, action: str, subject: str) -> bool:
    raise RuntimeError("the hook's database is away")


def test_a_hook_that_fails_on_a_delivery_withholds_the_message():
    assert Acl(load_hook(f"{__name__}:failing_hook")).may_read(ALICE, "news.a") is False


@pytest.mark.parametrize(
    ("pattern", "last_event_id"),
    [
        ("room.1", "9" * 5_000),  # past the digits int() takes: once a 500
        ("room.1", str(2**63)),
        ("room.*", '{"room.1": 9223372036854775808}'),
        ("room.*", '{"room.1": ' + "9" * 4_000 + "}"),
    ],
)
def test_a_cursor_out_of_range_is_invalid_input(pattern, last_event_id):
    with pytest.raises(InvalidInput):
        parse_cursor(pattern, last_event_id)


def test_the_largest_cursor_is_taken():
    assert parse_cursor("room.1", str(2**63 - 1)) == {"room.1": 2**63 - 1}


def test_uvicorn_servers_made_after_the_limit_refuse_bigger_websocket_messages(monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "Config", uvicorn.Config)  # restored afterwards
    app = object()
    assert uvicorn.Config(app).ws_max_size == 16 * 1024 * 1024  # uvicorn's, as Serve uses it
    limit_websocket_messages(70_000)
    limit_websocket_messages(66_000)  # a second call replaces the first, not nests
    config = uvicorn.Config(app, host="127.0.0.1", port=1)
    assert config.ws_max_size == 66_000 and isinstance(config, uvicorn.config.Config)
    assert uvicorn.Config.__mro__[1] is uvicorn.config.Config
    assert uvicorn.Config(app, ws_max_size=5).ws_max_size == 5


async def test_a_subscription_stops_at_once_when_closed_with_history_still_to_read():
    stub = StubClient()
    subscription = Subscription(stub, "t", 10)  # type: ignore[arg-type]
    subscription._resume({"t": (0, 5)})
    subscription._offer(Message("t", 1, 1.0, b"1"))
    await subscription.close()
    with pytest.raises(StopAsyncIteration):
        await anext(subscription)
