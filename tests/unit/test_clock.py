"""``every``: periodic work on an injectable clock that survives a failing turn."""

from __future__ import annotations

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
