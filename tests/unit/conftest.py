"""Helpers for unit tests: a fake clock, and ways to step the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from actors.runtime.clock import FakeClock


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
