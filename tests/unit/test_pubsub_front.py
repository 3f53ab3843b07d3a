"""Pub/sub front pieces without Ray: authorization, SSE cursors and streams, WebSocket frames."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from sse_starlette import ServerSentEvent

from actors.auth.client import Principal
from actors.pubsub.broker import Message
from actors.pubsub.client import Acl, Subscription, load_hook
from actors.runtime.errors import Forbidden, InvalidInput
from apps.pubsub.sse import SEP, events, format_cursor, message_event, parse_cursor
from apps.pubsub.ws import MAX_FRAME_BYTES, message_frame, next_frame

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

    async def _history_between(self, topic: str, after: int, before: int | None) -> list:
        return []


def sse_fields(event: ServerSentEvent | bytes) -> dict[str, str]:
    raw = event.encode() if isinstance(event, ServerSentEvent) else event
    lines = raw.decode().removesuffix(SEP * 2).split(SEP)
    return dict(line.split(": ", 1) for line in lines)


async def test_an_sse_stream_gives_a_retry_hint_then_messages_with_resume_cursors():
    stub = StubClient()
    subscription = Subscription(stub, ">", 10)  # type: ignore[arg-type]
    stream = events(subscription, pattern=">", resume={"room.1": 4}, user=ALICE, acl=Acl(),
                    signed_out=asyncio.Event().wait)  # fmt: skip
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
    stream = events(slow, pattern="t", resume={}, user=ALICE, acl=Acl(),
                    signed_out=asyncio.Event().wait)  # fmt: skip
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
    stream = events(revoked, pattern="t", resume={}, user=ALICE, acl=Acl(),
                    signed_out=signed_out.wait)  # fmt: skip
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
    outbox: asyncio.Queue[str] = asyncio.Queue()
    small = [orjson.dumps({"n": i}).decode() for i in range(5)]
    for line in small:
        outbox.put_nowait(line)
    assert (await next_frame(outbox)).split("\n") == small
    big = "x" * (MAX_FRAME_BYTES // 2)
    for _ in range(5):
        outbox.put_nowait(big)
    sizes = [len((await next_frame(outbox)).split("\n")) for _ in range(3)]
    assert sizes == [2, 2, 1]  # a frame stops taking more once it reaches the size
    waiting = asyncio.ensure_future(next_frame(outbox))
    await asyncio.sleep(0)
    assert not waiting.done()  # nothing queued: it waits
    outbox.put_nowait("late")
    assert await waiting == "late"


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
