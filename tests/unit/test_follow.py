"""follow(): the follower's loop over an owner's mailbox, riding out its loss."""

from __future__ import annotations

import asyncio
from typing import Any

from actors.runtime.backoff import Backoff
from actors.runtime.clock import FakeClock
from actors.runtime.fanout import Mailboxes, follow
from tests.unit.conftest import cancel, settle

QUICK = Backoff(first_s=0.001, max_s=0.002)


async def test_a_follower_gets_every_message_in_order_and_acknowledges_it(clock: FakeClock):
    boxes, got = Mailboxes(clock), []

    async def pull(after: int) -> list[tuple[int, Any]]:
        return await boxes.pull("f", after=after, timeout_s=10)

    task = asyncio.create_task(follow(pull, got.append, what="test"))
    for i in range(5):
        boxes.post("f", i)
        await settle()
    assert got == [0, 1, 2, 3, 4]
    assert await boxes.wait_acked("f", 4, deadline=clock.now() + 1)  # acknowledged by pulling
    await cancel(task)


async def test_a_lost_owner_is_reported_and_followed_again_from_the_start():
    answers: list[Any] = [[(1, "a"), (2, "b")], ConnectionError("owner restarting"), [(1, "c")]]
    asked_after: list[int] = []
    lost: list[BaseException] = []
    got: list[str] = []
    done = asyncio.Event()

    async def pull(after: int) -> list[tuple[int, str]]:
        asked_after.append(after)
        if not answers:
            done.set()
            await asyncio.Event().wait()  # a long poll with nothing to say
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    task = asyncio.create_task(follow(pull, got.append, what="test", on_lost=lost.append,
                                      backoff=QUICK))  # fmt: skip
    await asyncio.wait_for(done.wait(), 5)
    await cancel(task)
    assert got == ["a", "b", "c"]
    assert [type(e) for e in lost] == [ConnectionError]
    assert asked_after == [0, 2, 0, 1]  # after the loss, the cursor starts over


async def test_an_async_on_lost_hook_runs_before_the_next_pull():
    order: list[str] = []
    failed = False

    async def pull(after: int) -> list[tuple[int, str]]:
        nonlocal failed
        order.append(f"pull {after}")
        if not failed:
            failed = True
            raise LookupError("forgot you")
        await asyncio.Event().wait()
        return []

    async def register_again(error: BaseException) -> None:
        order.append(f"lost {type(error).__name__}")

    task = asyncio.create_task(follow(pull, print, what="test", on_lost=register_again,
                                      backoff=QUICK))  # fmt: skip
    for _ in range(100):
        await asyncio.sleep(0.001)
        if len(order) >= 3:
            break
    await cancel(task)
    assert order[:3] == ["pull 0", "lost LookupError", "pull 0"]
