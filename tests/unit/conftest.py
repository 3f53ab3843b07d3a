"""Helpers for unit tests: a fake clock, a real SQLite store in the test's temp
dir, ways to step the event loop, and a guard that keeps Ray out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import ray

from actors.runtime.clock import FakeClock
from actors.runtime.store import SQLiteStore


async def settle() -> None:
    """Let started tasks run up to the point where they wait."""
    for _ in range(10):
        await asyncio.sleep(0)


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A real SQLite store in the test's temp dir, closed afterwards. An actor
    opened a second time on it is that actor restarted."""
    opened = SQLiteStore(tmp_path / "store.sqlite3")
    yield opened
    await opened.close()


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests run without Ray: starting it (``ray.init``, also what calling a
    remote function or Serve would do) fails the test. tests/layering.py checks
    the same statically."""

    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError("a unit test started Ray (ray.init); it belongs in tests/integration")

    monkeypatch.setattr(ray, "init", refuse)
