"""Waiting between attempts, written once: exponential backoff with jitter.

Every retry in Realm goes through ``retrying`` (built on tenacity): an actor
call riding out a restart, a store read during recovery, a follower losing
its owner, a coordinator telling a shard a decision. ``Backoff`` names the
delays: the n-th wait is drawn between half of and all of
``min(first_s * 2**(n-1), max_s)``, so a crowd of clients that lost the same
actor does not come back in step, and no wait is ever near zero.

``delay_s`` gives the n-th wait on its own, for code that waits through a
timer rather than a loop (the scheduler's hand-offs).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    stop_never,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base


@dataclass(frozen=True)
class Backoff:
    """Delays that double from ``first_s`` up to ``max_s``, with jitter."""

    first_s: float = 0.05
    max_s: float = 2.0

    def delay_s(self, failures: int, *, draw: float | None = None) -> float:
        """The wait after the ``failures``-th failure in a row (1 for the first).
        ``draw`` in [0, 1) picks the point in the jitter range (random if None)."""
        ceiling: float = min(self.first_s * 2.0 ** max(failures - 1, 0), self.max_s)
        return ceiling * (0.5 + 0.5 * (random.random() if draw is None else draw))


class _wait_backoff(wait_base):
    def __init__(self, backoff: Backoff, failed_before: int = 0) -> None:
        self.backoff = backoff
        self.failed_before = failed_before

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.backoff.delay_s(self.failed_before + retry_state.attempt_number)


#: Riding out an actor restart: Ray restarts one in about a second here.
ACTOR_RESTART = Backoff(first_s=0.05, max_s=2.0)
#: A follower that lost its owner, or a store away during recovery.
RECONNECT = Backoff(first_s=0.25, max_s=5.0)


def retrying(
    *,
    on: type[BaseException] | tuple[type[BaseException], ...],
    backoff: Backoff = ACTOR_RESTART,
    patience_s: float | None = None,
    attempts: int | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    log: logging.Logger | None = None,
    what: str = "",
    failed_before: int = 0,
) -> AsyncRetrying:
    """Retry on ``on``, waiting per ``backoff``, for up to ``patience_s`` seconds
    and/or ``attempts`` tries (forever if neither); the last error is re-raised.

    ``async for attempt in retrying(...): with attempt: ...`` is the loop.
    ``patience_s`` is real time; code on a fake clock passes ``sleep`` and
    bounds by ``attempts``. With ``log``, the first failure of a streak is
    logged as a warning (later ones are not: one line per outage).
    ``failed_before``: failures already seen, so the waits go on from there.
    """
    stops: list[stop_base] = []
    if patience_s is not None:
        stops.append(stop_after_delay(patience_s))
    if attempts is not None:
        stops.append(stop_after_attempt(attempts))
    before_sleep = None
    if log is not None:

        def before_sleep(state: RetryCallState) -> None:
            if state.attempt_number == 1 and state.outcome is not None:
                log.warning("%s failed (%r); retrying", what or "call", state.outcome.exception())

    return AsyncRetrying(
        retry=retry_if_exception_type(on),
        wait=_wait_backoff(backoff, failed_before),
        stop=stop_any(*stops) if stops else stop_never,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


async def retry_call(
    fn: Callable[[], Awaitable[Any]],
    *,
    on: type[BaseException] | tuple[type[BaseException], ...],
    backoff: Backoff = ACTOR_RESTART,
    patience_s: float | None = None,
    attempts: int | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    log: logging.Logger | None = None,
    what: str = "",
) -> Any:
    """``await fn()``, retried as ``retrying`` says on failure.

    The first try runs bare: nearly every call succeeds at once, and building
    the retry machinery costs more than a local call (about 18 us here)."""
    started = time.monotonic()
    try:
        return await fn()
    except on as error:
        if attempts is not None and attempts <= 1:
            raise
        if log is not None:
            log.warning("%s failed (%r); retrying", what or "call", error)
    await sleep(backoff.delay_s(1))
    left_s = None if patience_s is None else patience_s - (time.monotonic() - started)
    async for attempt in retrying(
        on=on,
        backoff=backoff,
        patience_s=None if left_s is None else max(left_s, 0.0),
        attempts=None if attempts is None else attempts - 1,
        sleep=sleep,
        failed_before=1,
    ):
        with attempt:
            return await fn()
    raise AssertionError("unreachable: retrying re-raises the last error")


__all__ = ["ACTOR_RESTART", "RECONNECT", "Backoff", "retry_call", "retrying"]
