"""Mailboxes: ordered delivery, acknowledgement by cursor, long-poll and deadlines."""

from __future__ import annotations

import asyncio

import pytest

from actors.runtime.clock import FakeClock
from actors.runtime.fanout import Mailboxes
from tests.unit.conftest import cancel, settle

POLL_S = 10.0


@pytest.fixture
def boxes(clock: FakeClock) -> Mailboxes:
    return Mailboxes(clock)


async def test_pull_returns_posted_messages_in_order(boxes: Mailboxes) -> None:
    assert [boxes.post("f", m) for m in ("a", "b", "c")] == [1, 2, 3]
    assert await boxes.pull("f", after=0, timeout_s=POLL_S) == [(1, "a"), (2, "b"), (3, "c")]


async def test_mailboxes_are_per_follower(boxes: Mailboxes) -> None:
    boxes.post("f", "for f")
    boxes.post("g", "for g")
    assert await boxes.pull("g", after=0, timeout_s=POLL_S) == [(1, "for g")]


async def test_pull_acknowledges_up_to_its_cursor(boxes: Mailboxes) -> None:
    for m in ("a", "b", "c"):
        boxes.post("f", m)
    assert await boxes.pull("f", after=2, timeout_s=POLL_S) == [(3, "c")]
    # Going back does not bring acknowledged messages back.
    assert await boxes.pull("f", after=1, timeout_s=POLL_S) == [(3, "c")]


async def test_a_cursor_past_the_last_message_acks_only_what_was_posted(
    boxes: Mailboxes, clock: FakeClock
) -> None:
    boxes.post("f", "a")
    boxes.register("f")
    waiter = asyncio.create_task(boxes.wait_acked("f", 1, deadline=clock.now() + 1))
    puller = asyncio.create_task(boxes.pull("f", after=99, timeout_s=POLL_S))
    assert await waiter is True
    seq = boxes.post("f", "b")
    await cancel(puller)
    assert seq == 2
    later = asyncio.create_task(boxes.wait_acked("f", seq, deadline=clock.now() + 1))
    await settle()
    assert not later.done()  # message 2 was not acknowledged by the cursor 99
    clock.advance(1)
    assert await later is False


async def test_wait_acked_returns_true_once_acknowledged(
    boxes: Mailboxes, clock: FakeClock
) -> None:
    seq = boxes.post("f", "a")
    waiter = asyncio.create_task(boxes.wait_acked("f", seq, deadline=clock.now() + 5))
    await settle()
    assert not waiter.done()
    puller = asyncio.create_task(boxes.pull("f", after=seq, timeout_s=POLL_S))
    assert await waiter is True
    await cancel(puller)


async def test_wait_acked_returns_false_when_the_deadline_passes(
    boxes: Mailboxes, clock: FakeClock
) -> None:
    seq = boxes.post("f", "a")
    waiter = asyncio.create_task(boxes.wait_acked("f", seq, deadline=clock.now() + 5))
    await settle()
    clock.advance(4.9)
    await settle()
    assert not waiter.done()
    clock.advance(0.1)
    assert await waiter is False


async def test_wait_acked_answers_at_once_when_it_need_not_wait(
    boxes: Mailboxes, clock: FakeClock
) -> None:
    assert await boxes.wait_acked("unknown", 1, deadline=clock.now() + 5) is True
    seq = boxes.post("f", "a")
    assert await boxes.wait_acked("f", seq, deadline=clock.now()) is False
    await boxes.pull("f", after=seq, timeout_s=0)
    assert await boxes.wait_acked("f", seq, deadline=clock.now()) is True


async def test_pull_waits_until_something_is_posted(boxes: Mailboxes) -> None:
    puller = asyncio.create_task(boxes.pull("f", after=0, timeout_s=POLL_S))
    await settle()
    assert not puller.done()
    boxes.post("f", "a")
    assert await puller == [(1, "a")]


async def test_pull_answers_empty_after_its_timeout(boxes: Mailboxes, clock: FakeClock) -> None:
    puller = asyncio.create_task(boxes.pull("f", after=0, timeout_s=POLL_S))
    await settle()
    clock.advance(POLL_S - 1)
    await settle()
    assert not puller.done()
    clock.advance(1)
    assert await puller == []


async def test_drop_wakes_ack_waiters_and_pullers(boxes: Mailboxes, clock: FakeClock) -> None:
    seq = boxes.post("f", "a")
    waiter = asyncio.create_task(boxes.wait_acked("f", seq, deadline=clock.now() + 5))
    puller = asyncio.create_task(boxes.pull("g", after=0, timeout_s=POLL_S))
    await settle()
    boxes.drop("f")
    boxes.drop("g")
    boxes.drop("never-seen")
    assert await waiter is True
    assert await puller == []
    assert "f" not in boxes and len(boxes) == 0


async def test_drop_idle_forgets_followers_that_stopped_pulling(
    boxes: Mailboxes, clock: FakeClock
) -> None:
    boxes.register("quiet")
    clock.advance(5)
    boxes.post("busy", "a")
    await boxes.pull("busy", after=0, timeout_s=POLL_S)  # a message waits: answers at once
    assert boxes.drop_idle(3) == ["quiet"]
    assert boxes.followers() == ["busy"]
    assert boxes.idle_since("busy") == clock.now()
    assert boxes.idle_since("quiet") is None


async def test_a_far_behind_follower_keeps_only_the_latest_messages(clock: FakeClock) -> None:
    boxes = Mailboxes(clock, max_pending=3)
    for i in range(5):
        boxes.post("f", i)
    assert await boxes.pull("f", after=0, timeout_s=POLL_S) == [(3, 2), (4, 3), (5, 4)]
