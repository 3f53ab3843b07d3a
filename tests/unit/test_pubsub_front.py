"""Pub/sub front pieces without Ray: authorization rules, SSE cursors, WebSocket frames."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from actors.auth.client import Principal
from actors.pubsub.broker import Message
from actors.runtime.errors import Forbidden, InvalidInput
from apps.pubsub import MAX_FRAME_BYTES, format_cursor, message_frame, next_frame, parse_cursor
from apps.pubsub_acl import Acl, load_hook

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
