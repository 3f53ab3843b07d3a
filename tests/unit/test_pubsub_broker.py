"""Broker run directly (no Ray) on a FakeClock and a real SQLite store.

Recovery is a second Broker opened on the same store and stream, as a
restarted actor would be. Long polls are tasks driven with ``settle()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors.pubsub.broker import MAX_SEQ, Broker, Message, message_size
from actors.pubsub.settings import MESSAGE_OVERHEAD_BYTES, PubSubSettings
from actors.runtime import codec
from actors.runtime.clock import FakeClock
from actors.runtime.errors import InvalidInput, NotFound, TooLarge
from actors.runtime.store import SQLiteStore
from tests.unit.conftest import cancel, settle

HISTORY_MAX = 5
MAX_AGE_S = 60.0
MAX_PAYLOAD = 64
POLL_S = 10.0

OpenBroker = Callable[..., Awaitable[Broker]]


@pytest.fixture
def open_broker(clock: FakeClock, store: SQLiteStore) -> OpenBroker:
    """A Broker recovered from ``store`` (a second call is a restarted actor)."""

    async def open_(*, snapshot_every: int = 10_000, **overrides: Any) -> Broker:
        config = PubSubSettings(
            **{
                "history_max": HISTORY_MAX,
                "history_max_age_s": MAX_AGE_S,
                "max_payload_bytes": MAX_PAYLOAD,
                **overrides,
            }
        )
        broker = Broker(config, clock=clock)
        failures: list[BaseException] = []
        await broker.open(store, "pubsub-0", snapshot_every=snapshot_every,
                          on_failure=failures.append)  # fmt: skip
        return broker

    return open_


@pytest.fixture
async def broker(open_broker: OpenBroker) -> Broker:
    return await open_broker()


def seqs(page: dict) -> list[int]:
    return [message.seq for message in page["messages"]]


# --- sequence numbers and history --------------------------------------------


async def test_sequence_numbers_are_per_topic(broker: Broker, clock: FakeClock) -> None:
    assert await broker.publish("a.b", b"1") == (1, clock.time())
    assert (await broker.publish("a.b", b"2"))[0] == 2
    assert (await broker.publish("a.c", b"x"))[0] == 1
    assert await broker.last_seq("a.b") == 2
    assert await broker.last_seq("never.published") == 0


async def test_history_returns_messages_after_the_cursor(broker: Broker, clock: FakeClock) -> None:
    for i in range(1, 4):
        await broker.publish("t", b"m%d" % i)
        clock.advance(1)
    page = await broker.history("t", 1)
    assert page["messages"] == [
        Message("t", 2, clock.time() - 2, b"m2"),
        Message("t", 3, clock.time() - 1, b"m3"),
    ]
    assert page["complete"] is True and page["last_seq"] == 3
    assert seqs(await broker.history("t", 0, limit=2)) == [1, 2]
    caught_up = await broker.history("t", 3)
    assert caught_up == {"messages": [], "complete": True, "last_seq": 3}


async def test_history_of_an_unknown_topic_is_empty_and_complete(broker: Broker) -> None:
    assert await broker.history("nobody.here") == {
        "messages": [],
        "complete": True,
        "last_seq": 0,
    }


async def test_history_is_bounded_by_count(broker: Broker) -> None:
    for i in range(HISTORY_MAX + 3):
        await broker.publish("t", bytes([i]))
    page = await broker.history("t", 0)
    assert seqs(page) == [4, 5, 6, 7, 8]
    assert page["last_seq"] == HISTORY_MAX + 3


async def test_history_is_bounded_by_age_on_publish_and_on_read(
    broker: Broker, clock: FakeClock
) -> None:
    await broker.publish("t", b"old")
    clock.advance(MAX_AGE_S / 2)
    await broker.publish("t", b"middle")
    clock.advance(MAX_AGE_S / 2 + 1)
    await broker.publish("t", b"new")  # trims "old" as it publishes
    assert len(broker.topics["t"].history) == 2
    assert seqs(await broker.history("t", 0)) == [2, 3]
    clock.advance(MAX_AGE_S)  # "middle" is now too old; reading trims it
    assert seqs(await broker.history("t", 0)) == [3]
    assert len(broker.topics["t"].history) == 1
    clock.advance(MAX_AGE_S)
    page = await broker.history("t", 0)
    assert page == {"messages": [], "complete": False, "last_seq": 3}


async def test_resume_is_complete_only_if_nothing_after_the_cursor_was_trimmed(
    broker: Broker,
) -> None:
    for i in range(HISTORY_MAX + 2):  # 1..7 published, 3..7 kept
        await broker.publish("t", bytes([i]))
    assert (await broker.history("t", 2))["complete"] is True  # 3 is the first kept
    assert (await broker.history("t", 5))["complete"] is True
    gap = await broker.history("t", 1)  # 2 was trimmed
    assert gap["complete"] is False and seqs(gap) == [3, 4, 5, 6, 7]
    assert (await broker.history("t", 0))["complete"] is False


async def test_invalid_publishes_and_reads_are_refused_and_change_nothing(
    broker: Broker,
) -> None:
    with pytest.raises(TooLarge) as refused:
        await broker.publish("t", b"x" * (MAX_PAYLOAD + 1))
    assert refused.value.details == {"size": MAX_PAYLOAD + 1, "limit": MAX_PAYLOAD}
    with pytest.raises(InvalidInput):
        await broker.publish("t.*", b"x")
    with pytest.raises(InvalidInput):
        await broker.publish("t", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await broker.history("t", -1)
    with pytest.raises(InvalidInput):
        await broker.history("t", 0, limit=0)
    with pytest.raises(InvalidInput):
        await broker.history("t.>")
    assert await broker.publish("t", b"x" * MAX_PAYLOAD) == (1, broker.clock.time())
    assert broker.journal.committed == 1


# --- durability -----------------------------------------------------------------


async def test_a_repeated_key_publishes_once(broker: Broker) -> None:
    first = await broker.publish("t", b"once", key="k1")
    again = await broker.publish("t", b"once", key="k1")
    both = await asyncio.gather(
        broker.publish("t", b"twice", key="k2"), broker.publish("t", b"twice", key="k2")
    )
    assert first == again and first[0] == 1
    assert both[0] == both[1] and both[0][0] == 2
    assert (await broker.history("t"))["last_seq"] == 2


@pytest.mark.parametrize("snapshot_every", [10_000, 3])
async def test_a_restarted_broker_has_the_same_seqs_and_history(
    open_broker: OpenBroker, clock: FakeClock, snapshot_every: int
) -> None:
    broker = await open_broker(snapshot_every=snapshot_every)
    await asyncio.gather(*(broker.publish("a", bytes([i])) for i in range(HISTORY_MAX + 2)))
    for i in range(3):
        await broker.publish("b", bytes([i]), key=f"b{i}")
        clock.advance(1)
    if broker._snapshot_task is not None:
        await broker._snapshot_task
    before = {t: await broker.history(t) for t in ("a", "b")}

    restarted = await open_broker(snapshot_every=snapshot_every)
    assert (restarted._snapshot_seq > 0) is (snapshot_every == 3)  # it read a snapshot
    assert restarted.topics == broker.topics  # from the journal, or a snapshot and the rest
    assert {t: await restarted.history(t) for t in ("a", "b")} == before
    assert await restarted.publish("b", b"retry", key="b2") == (3, before["b"]["messages"][2].at)
    assert (await restarted.publish("a", b"next"))[0] == HISTORY_MAX + 3


# --- followers --------------------------------------------------------------------


async def test_a_follower_with_overlapping_patterns_gets_each_message_once(
    broker: Broker, clock: FakeClock
) -> None:
    broker.follow("replica-1", ["orders.>", "orders.*", "orders.eu", "*.eu"])
    await broker.publish("orders.eu", b"one")
    await broker.publish("orders.eu.created", b"two")
    at = clock.time()
    assert await broker.pull("replica-1", after=0, timeout_s=POLL_S) == [
        (1, (Message("orders.eu", 1, at, b"one"), ())),
        (2, (Message("orders.eu.created", 1, at, b"two"), ())),
    ]


async def test_followers_get_only_matching_topics(broker: Broker) -> None:
    broker.follow("r1", ["a.*"])
    broker.follow("r2", ["b.>"])
    for topic in ("a.x", "b.x.y", "a.x.y", "c"):
        await broker.publish(topic, topic.encode())
    r1 = await broker.pull("r1", after=0, timeout_s=POLL_S)
    r2 = await broker.pull("r2", after=0, timeout_s=POLL_S)
    assert [message.topic for _, (message, _) in r1] == ["a.x"]
    assert [message.topic for _, (message, _) in r2] == ["b.x.y"]


async def test_follow_replaces_the_patterns(broker: Broker) -> None:
    broker.follow("r", ["a"])
    broker.follow("r", ["b"])
    await broker.publish("a", b"-")
    await broker.publish("b", b"+")
    assert [m.topic for _, (m, _) in await broker.pull("r", after=0, timeout_s=POLL_S)] == ["b"]
    with pytest.raises(InvalidInput):
        broker.follow("r", ["c", "bad..pattern"])
    assert broker.index.patterns("r") == {"b"}  # a refused follow changes nothing


async def test_a_long_poll_wakes_on_publish_and_acknowledges_by_cursor(broker: Broker) -> None:
    broker.follow("r", [">"])
    puller = asyncio.create_task(broker.pull("r", after=0, timeout_s=POLL_S))
    await settle()
    assert not puller.done()
    await broker.publish("t", b"1")
    first = await puller
    assert [(n, m.seq) for n, (m, _) in first] == [(1, 1)]
    await broker.publish("t", b"2")
    await broker.publish("t", b"3")
    # Pulling with cursor 1 acknowledges message 1: it does not come back.
    second = await broker.pull("r", after=first[-1][0], timeout_s=POLL_S)
    assert [m.payload for _, (m, _) in second] == [b"2", b"3"]
    assert await broker.pull("r", after=2, timeout_s=POLL_S) == second[1:]


async def test_a_long_poll_times_out_empty(broker: Broker, clock: FakeClock) -> None:
    broker.follow("r", ["t"])
    puller = asyncio.create_task(broker.pull("r", after=0, timeout_s=POLL_S))
    await settle()
    await broker.publish("other", b"x")
    await settle()
    assert not puller.done()
    clock.advance(POLL_S)
    assert await puller == []


async def test_concurrent_publishes_reach_followers_in_sequence_order(broker: Broker) -> None:
    broker.follow("r", ["t.*"])
    await asyncio.gather(*(broker.publish(f"t.{i % 2}", bytes([i])) for i in range(20)))
    assert broker.journal.commits < 20  # group commit: one publisher posted for the others
    got = await broker.pull("r", after=0, timeout_s=POLL_S)
    assert [n for n, _ in got] == list(range(1, 21))
    assert [m.payload for _, (m, _) in got] == [bytes([i]) for i in range(20)]
    for topic in ("t.0", "t.1"):
        assert [m.seq for _, (m, _) in got if m.topic == topic] == list(range(1, 11))
    # a repeated key delivers nothing more
    await broker.publish("t.0", b"k", key="k")
    await broker.publish("t.0", b"k", key="k")
    assert len(await broker.pull("r", after=20, timeout_s=POLL_S)) == 1


async def test_unfollow_and_unknown_followers(broker: Broker) -> None:
    with pytest.raises(NotFound):
        await broker.pull("stranger", after=0, timeout_s=POLL_S)
    broker.follow("r", [">"])
    puller = asyncio.create_task(broker.pull("r", after=0, timeout_s=POLL_S))
    await settle()
    broker.unfollow("r")
    assert await puller == []  # the waiting pull is released
    await broker.publish("t", b"x")
    assert "r" not in broker.mailboxes and len(broker.index) == 0
    with pytest.raises(NotFound):
        await broker.pull("r", after=0, timeout_s=POLL_S)


async def test_followers_are_not_recovered_and_idle_ones_are_dropped(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    broker = await open_broker()
    broker.follow("r", [">"])
    broker.follow("quiet", [">"])
    await broker.publish("t", b"x")
    restarted = await open_broker()
    with pytest.raises(NotFound):
        await restarted.pull("r", after=1, timeout_s=POLL_S)  # it must follow again
    clock.advance(5)
    puller = asyncio.create_task(broker.pull("r", after=1, timeout_s=POLL_S))
    await settle()
    assert broker.drop_idle(3) == ["quiet"]
    assert broker.index.subscribers() == ["r"]
    await cancel(puller)


# --- queue groups, ephemeral messages, replies --------------------------------


async def test_a_queue_group_is_served_by_one_follower_per_message_in_turn(
    broker: Broker,
) -> None:
    broker.follow("r1", [("jobs.*", "workers"), "audit.>"])
    broker.follow("r2", [("jobs.>", "workers")])
    broker.follow("r3", ["jobs.*"])  # a plain subscriber gets every message
    for i in range(6):
        await broker.publish(f"jobs.{i}", bytes([i]))
    pulled = {r: await broker.pull(r, after=0, timeout_s=POLL_S) for r in ("r1", "r2", "r3")}
    served = {r: [m.topic for _, (m, g) in got if g == ("workers",)] for r, got in pulled.items()}
    assert sorted(served["r1"] + served["r2"]) == [f"jobs.{i}" for i in range(6)]
    assert len(served["r1"]) == len(served["r2"]) == 3  # in turn
    assert [g for _, (_, g) in pulled["r3"]] == [()] * 6


async def test_group_interests_are_replaced_and_forgotten_like_patterns(broker: Broker) -> None:
    broker.follow("r", [("a", "g")])
    broker.follow("r", [("b", "g")])
    await broker.publish("a", b"-")
    await broker.publish("b", b"+")
    assert [m.topic for _, (m, _) in await broker.pull("r", after=0, timeout_s=POLL_S)] == ["b"]
    with pytest.raises(InvalidInput):
        broker.follow("r", [("c", "no\x00nul")])
    broker.unfollow("r")
    assert len(broker.groups) == 0


async def test_ephemeral_messages_are_delivered_but_not_numbered_or_kept(
    broker: Broker,
) -> None:
    broker.follow("r", ["_inbox.>"])
    assert (await broker.publish("_inbox.x.1", b"reply", ephemeral=True))[0] == 0
    [(_, (message, _))] = await broker.pull("r", after=0, timeout_s=POLL_S)
    assert message.seq == 0 and message.payload == b"reply"
    assert await broker.history("_inbox.x.1") == {"messages": [], "complete": True, "last_seq": 0}
    assert broker.journal.committed == 0
    with pytest.raises(TooLarge):
        await broker.publish("_inbox.x.1", b"x" * (MAX_PAYLOAD + 1), ephemeral=True)


async def test_a_reply_topic_travels_with_the_message_and_survives_a_restart(
    open_broker: OpenBroker,
) -> None:
    broker = await open_broker()
    await broker.publish("svc.time", b"?", reply_to="_inbox.c.1")
    with pytest.raises(InvalidInput):
        await broker.publish("svc.time", b"?", reply_to="bad..topic")
    restarted = await open_broker()
    [message] = (await restarted.history("svc.time"))["messages"]
    assert message.reply_to == "_inbox.c.1" and message.seq == 1


async def test_a_message_to_a_reply_topic_is_never_kept_even_unasked(broker: Broker) -> None:
    assert (await broker.publish("_inbox.x.1", b"reply"))[0] == 0
    assert "_inbox.x.1" not in broker.topics and broker.journal.committed == 0


# --- memory bounds --------------------------------------------------------------------

#: A message of SMALL payload bytes counts this much in the byte limits.
SMALL = 10
SIZE = SMALL + MESSAGE_OVERHEAD_BYTES


async def test_a_topics_history_is_bounded_in_bytes(open_broker: OpenBroker) -> None:
    broker = await open_broker(history_max=1_000, history_max_bytes=3 * SIZE)
    for i in range(10):
        await broker.publish("t", b"%010d" % i)
    assert seqs(await broker.history("t")) == [8, 9, 10]
    assert broker.topics["t"].size == broker.history_bytes == 3 * SIZE


async def test_all_topics_together_are_bounded_in_bytes_the_least_recent_giving_way_first(
    open_broker: OpenBroker,
) -> None:
    broker = await open_broker(broker_history_max_bytes=4 * SIZE)
    for topic in ("old", "old", "new", "new"):
        await broker.publish(topic, b"x" * SMALL)
    await broker.publish("newest", b"x" * SMALL)  # over: the oldest message of "old" goes
    assert seqs(await broker.history("old")) == [2]
    await broker.publish("newest", b"x" * SMALL)
    page = await broker.history("old")
    assert page == {"messages": [], "complete": False, "last_seq": 2}  # remembered, emptied
    assert seqs(await broker.history("new")) == [1, 2]
    assert broker.history_bytes == 4 * SIZE and broker.kept == 4


async def test_topics_past_the_cap_are_forgotten_and_numbers_go_on_above_them(
    open_broker: OpenBroker,
) -> None:
    broker = await open_broker(broker_max_topics=2)
    for _ in range(3):
        await broker.publish("a", b"1")
    await broker.publish("b", b"1")
    await broker.publish("a", b"4")  # "a" is now the most recent; "b" the least
    await broker.publish("c", b"1")
    assert list(broker.topics) == ["a", "c"] and broker.seq_floor == 1
    assert (await broker.publish("b", b"again"))[0] == 2  # above what "b" had, and "c"'s
    assert list(broker.topics) == ["c", "b"]
    assert (await broker.publish("a", b"again"))[0] == 5  # above its own 4
    assert list(broker.topics) == ["b", "a"]
    assert broker.kept == 2 and broker.history_bytes == sum(t.size for t in broker.topics.values())


async def test_idle_topics_are_forgotten_and_their_numbers_never_go_back(
    broker: Broker, clock: FakeClock
) -> None:
    for _ in range(3):
        await broker.publish("idle", b"x")
    clock.advance(MAX_AGE_S / 2)
    await broker.publish("busy", b"x")
    assert broker.forget_idle() == 0
    clock.advance(MAX_AGE_S / 2 + 1)
    assert broker.forget_idle() == 1
    assert list(broker.topics) == ["busy"] and broker.history_bytes == SIZE - SMALL + 1
    # Unknown now: its next number is above any it had, and a resume from
    # before that knows it may have missed something.
    assert await broker.history("idle", 1) == {"messages": [], "complete": False, "last_seq": 3}
    assert (await broker.publish("idle", b"back"))[0] == 4
    assert (await broker.publish("never.seen", b"x"))[0] == 4


async def test_a_replay_gives_every_message_the_number_it_had_though_topics_were_forgotten(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    broker = await open_broker()
    for _ in range(3):
        await broker.publish("t", b"x")
    await broker.publish("u", b"x")
    clock.advance(MAX_AGE_S + 1)
    await broker.publish("u", b"y")
    assert broker.forget_idle() == 1  # "t", not journaled
    assert (await broker.publish("t", b"after")) == (4, clock.time())
    await broker.publish("fresh", b"z")
    before = {t: await broker.history(t) for t in ("t", "u", "fresh")}

    restarted = await open_broker()  # replays "t" 1..3, then its 4th with number 4
    assert {t: await restarted.history(t) for t in ("t", "u", "fresh")} == before
    assert (await restarted.publish("t", b"next"))[0] == 5


async def test_lowering_the_payload_limit_refuses_new_messages_but_replays_old_ones(
    open_broker: OpenBroker,
) -> None:
    """Limits apply where messages come in, never on replay: the broker would
    otherwise refuse its own journal and never start again."""
    broker = await open_broker(max_payload_bytes=2 * MAX_PAYLOAD)
    await broker.publish("t", b"x" * 2 * MAX_PAYLOAD)
    lowered = await open_broker(max_payload_bytes=MAX_PAYLOAD)
    [message] = (await lowered.history("t"))["messages"]
    assert message.payload == b"x" * 2 * MAX_PAYLOAD
    with pytest.raises(TooLarge):
        await lowered.publish("t", b"x" * 2 * MAX_PAYLOAD)
    assert (await lowered.publish("t", b"x" * MAX_PAYLOAD))[0] == 2


async def test_a_snapshot_of_the_first_schema_is_read(
    open_broker: OpenBroker, store: SQLiteStore, clock: FakeClock
) -> None:
    at = clock.time()
    topic = {"last_seq": 7, "history": [["t", 7, at, b"seven", None]]}
    snapshot = {"version": 1, "state": {"t": topic}, "replies": []}
    record = [1, "publish", {"topic": "t", "payload": b"8", "at": at}, None]
    await store.append("pubsub-0", 0, [codec.encode(record)])
    await store.write_snapshot("pubsub-0", 0, codec.encode(snapshot))
    broker = await open_broker()
    assert seqs(await broker.history("t")) == [7, 8]  # the version-1 record replays too
    assert broker.seq_floor == 0 and broker.history_bytes == 2 * MESSAGE_OVERHEAD_BYTES + 6


async def test_history_pages_are_bounded_in_bytes_but_hold_at_least_one_message(
    open_broker: OpenBroker,
) -> None:
    broker = await open_broker(history_page_max_bytes=2 * SMALL)
    for i in range(5):
        await broker.publish("t", b"%010d" % i)
    assert seqs(await broker.history("t")) == [1, 2]
    assert seqs(await broker.history("t", 2)) == [3, 4]
    assert seqs(await broker.history("t", 0, max_bytes=1)) == [1]


@pytest.mark.parametrize("after_seq", [MAX_SEQ + 1, 10**40, True, "1"])
async def test_a_cursor_out_of_range_is_invalid_input(broker: Broker, after_seq: Any) -> None:
    await broker.publish("t", b"x")
    with pytest.raises(InvalidInput):
        await broker.history("t", after_seq)


async def test_the_largest_cursor_is_answered(broker: Broker) -> None:
    await broker.publish("t", b"x")
    assert await broker.history("t", MAX_SEQ, limit=MAX_SEQ) == {
        "messages": [],
        "complete": True,
        "last_seq": 1,
    }


async def test_a_follower_too_far_behind_in_bytes_is_dropped_and_follows_again(
    open_broker: OpenBroker,
) -> None:
    broker = await open_broker(follower_buffer_bytes=3 * SIZE)
    broker.follow("slow", ["t"])
    broker.follow("keeping-up", ["t"])
    for i in range(3):
        await broker.publish("t", b"%010d" % i)
    got = await broker.pull("keeping-up", after=0, timeout_s=POLL_S)
    next_pull = asyncio.create_task(broker.pull("keeping-up", after=got[-1][0], timeout_s=POLL_S))
    await settle()  # it has acknowledged the three
    await broker.publish("t", b"%010d" % 3)
    assert len(await next_pull) == 1
    assert "slow" not in broker.mailboxes and broker.behind == 1
    with pytest.raises(NotFound):
        await broker.pull("slow", after=0, timeout_s=POLL_S)
    broker.follow("slow", ["t"])
    await broker.publish("t", b"%010d" % 4)
    [(_, (message, _))] = await broker.pull("slow", after=0, timeout_s=POLL_S)
    assert message.seq == 5


async def test_a_queue_groups_turn_is_forgotten_with_its_last_member(broker: Broker) -> None:
    broker.follow("r", [("jobs", "g1"), ("jobs", "g2")])
    await broker.publish("jobs", b"x")
    assert set(broker._turn) == {"g1", "g2"}
    broker.follow("r", [("jobs", "g2")])
    assert set(broker._turn) == {"g2"}
    broker.unfollow("r")
    assert broker._turn == {}


def test_a_message_counts_its_payload_and_a_fixed_overhead():
    assert message_size(Message("t", 1, 0.0, b"abc")) == 3 + MESSAGE_OVERHEAD_BYTES
