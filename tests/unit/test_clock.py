"""``every``: periodic work on an injectable clock that survives a failing turn;
and the fake clock's sleeps."""

from __future__ import annotations

import asyncio

from actors.runtime.clock import FakeClock, every
from tests.unit.conftest import cancel, settle


async def test_every_runs_each_interval_and_outlives_a_failure(clock: FakeClock, caplog):
    turns: list[float] = []

    def action() -> None:
        turns.append(clock.now())
        if len(turns) == 2:
            raise RuntimeError("store away")

    task = every(clock, 5.0, action)
    await settle()
    assert turns == []
    for _ in range(3):
        clock.advance(5.0)
        await settle()
    assert turns == [1005.0, 1010.0, 1015.0]
    assert "store away" in caplog.text
    await cancel(task)


async def test_every_awaits_async_actions(clock: FakeClock):
    done = []

    async def action() -> None:
        done.append(True)

    task = every(clock, 1.0, action)
    await settle()
    clock.advance(1.0)
    await settle()
    assert done == [True]
    await cancel(task)


async def test_a_sleep_counts_from_when_it_was_asked_for_not_from_its_tasks_first_turn(
    clock: FakeClock,
):
    # A sleep wrapped in a task whose first turn comes after the clock moved
    # (as `first_of` wraps one, in a lease's wait for an acknowledgement)
    task = asyncio.ensure_future(clock.sleep(1.0))
    clock.advance(0.5)
    await settle()
    assert not task.done()

    # Then it wakes one second after it was asked for, not after its first turn
    clock.advance(0.5)
    await settle()
    assert task.done()


async def test_a_sleep_of_nothing_still_yields_a_turn(clock: FakeClock):
    order: list[str] = []

    async def other() -> None:
        order.append("other")

    started = asyncio.ensure_future(other())
    await clock.sleep(0)
    assert order == ["other"] and started.done()
