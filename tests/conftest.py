"""Fixtures shared by every test layer."""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Ray must use 127.0.0.1 for every node it starts, never an outward address.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# Every journal record and snapshot a test writes must decode to what was applied
# (actors.runtime.journal.CHECK_ROUND_TRIP); actors started by tests inherit it.
os.environ["REALM_CHECK_ROUND_TRIP"] = "1"

from actors.runtime.settings import Settings

REDIS_URL = os.environ.get("REALM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings isolated to one test: own namespace, key prefix and data dir."""

    def make(**overrides: Any) -> Settings:
        tag = uuid.uuid4().hex[:10]
        values: dict[str, Any] = {
            "namespace": f"test-{tag}",
            "store_prefix": f"test-{tag}",
            "data_dir": tmp_path / "data",
        }
        values.update(overrides)
        return Settings(**values)

    return make


async def until(
    fetch: Callable[[], Any],
    condition: Callable[[Any], object] = bool,
    *,
    within_s: float = 30.0,
    what: str = "the condition",
) -> Any:
    """Poll ``fetch()`` (a plain or an async callable) until ``condition`` holds of
    its value, and answer that value: a join on a state another task or process
    reaches, not a timing check. Fails once ``within_s`` seconds have passed: a
    time budget, so a loaded machine gets the same patience as an idle one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    pause_s = 0.01
    while True:
        value = fetch()
        if inspect.isawaitable(value):
            value = await value
        if condition(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} never held within {within_s} s (last: {value!r:.300})")
        await asyncio.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.2)


# The session's stack, shared by tests/integration and tests/fuzz (registered here
# so that one pytest run of both starts it once).
from tests.stack import base_url, http_settings, ray_runtime  # noqa: E402, F401
