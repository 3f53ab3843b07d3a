"""One backoff for every retry: delays, budgets, and the first failure logged once."""

from __future__ import annotations

import logging

import pytest

from actors.runtime.backoff import Backoff, retry_call, retrying
from actors.runtime.clock import FakeClock


def test_delays_double_up_to_the_cap_with_jitter_in_the_upper_half():
    backoff = Backoff(first_s=0.1, max_s=1.0)
    assert [backoff.delay_s(n, draw=0.999999) for n in range(1, 7)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0], rel=1e-5
    )
    assert backoff.delay_s(3, draw=0.0) == pytest.approx(0.2)  # half of the ceiling at least
    assert 0.2 <= backoff.delay_s(3) <= 0.4


async def test_retry_call_retries_the_named_errors_and_waits_between_attempts():
    clock, waits, calls = FakeClock(), [], []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def flaky() -> str:
        calls.append(clock.now())
        if len(calls) < 3:
            raise ConnectionError("away")
        return "done"

    backoff = Backoff(first_s=1.0, max_s=10.0)
    assert await retry_call(flaky, on=ConnectionError, backoff=backoff, attempts=5, sleep=sleep)
    assert len(calls) == 3
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0


async def test_other_errors_and_the_last_attempt_are_raised_as_they_are():
    async def sleep(_: float) -> None:
        pass

    async def wrong() -> None:
        raise ValueError("not retried")

    with pytest.raises(ValueError, match="not retried"):
        await retry_call(wrong, on=ConnectionError, attempts=5, sleep=sleep)
    tries = 0

    async def away() -> None:
        nonlocal tries
        tries += 1
        raise ConnectionError(f"try {tries}")

    with pytest.raises(ConnectionError, match="try 3"):
        await retry_call(away, on=ConnectionError, attempts=3, sleep=sleep)


async def test_only_the_first_failure_of_a_streak_is_logged(caplog):
    async def sleep(_: float) -> None:
        pass

    log = logging.getLogger("test.backoff")
    tries = 0
    with caplog.at_level(logging.WARNING, logger="test.backoff"):
        async for attempt in retrying(on=OSError, attempts=4, sleep=sleep, log=log, what="x"):
            with attempt:
                tries += 1
                if tries < 4:
                    raise OSError("down")
    assert tries == 4
    assert [r.getMessage() for r in caplog.records] == ["x failed (OSError('down')); retrying"]
