"""Sample job handlers: the ones tests, benchmarks and first users call by path.

Enqueue them as ``actors.queue.handlers:<name>``. Only modules listed in
``REALM_QUEUE_HANDLER_MODULES`` may be named by a job (this one by default).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def noop(**_: Any) -> None:
    """Does nothing, whatever its arguments (the benchmark's job)."""


async def echo(**args: Any) -> dict[str, Any]:
    """Answers its arguments."""
    return args


async def sleep(seconds: float = 0.1) -> float:
    """Waits ``seconds`` on the worker's event loop; cancellable."""
    await asyncio.sleep(seconds)
    return seconds


def block(seconds: float = 0.1) -> float:
    """Blocks a worker thread for ``seconds`` (a plain function: runs in a thread)."""
    time.sleep(seconds)
    return seconds


def add(a: float, b: float) -> float:
    return a + b


class HandlerFailed(Exception):
    """Raised on purpose by ``fail``."""


def fail(message: str = "failed on purpose") -> None:
    """Always raises: for retries and dead letters."""
    raise HandlerFailed(message)


async def fail_until(attempt: int, job: Any) -> dict[str, int]:
    """Fails before attempt ``attempt``, then succeeds."""
    if job.attempt < attempt:
        raise HandlerFailed(f"attempt {job.attempt} of {attempt}")
    return {"attempt": job.attempt}


async def hang_first(seconds: float, job: Any) -> dict[str, Any]:
    """The first attempt reports progress and waits ``seconds`` (long enough to be
    killed in); later attempts finish at once."""
    job.progress({"started": job.attempt})
    if job.attempt == 1:
        await asyncio.sleep(seconds)
    return {"attempt": job.attempt, "key": job.idempotency_key}
