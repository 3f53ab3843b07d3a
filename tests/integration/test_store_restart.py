"""The store restarting in the middle of work loses no acknowledged write.

A private Redis (append-only, fsync on every write, as cluster.yaml runs it)
is killed with SIGKILL while a durable actor takes concurrent writes, then
started again on the same files. Writes that were refused while it was down
were never acknowledged; every acknowledged one must be there exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from actors.runtime.errors import Unavailable
from actors.runtime.supervision import call, get_or_create
from serve_app import free_port
from tests.integration.tally import TallyActor


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        for _ in range(100):  # join on it answering (bounded)
            try:
                if client.ping():
                    return
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is needed (Debian package redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


async def test_acknowledged_writes_survive_a_store_restart(ray_settings, private_redis):
    settings = ray_settings(store_url=private_redis.url, snapshot_every=40)
    tally = get_or_create(TallyActor, "tally", settings, "tally", namespace=settings.namespace)
    await call(tally, "info")

    tasks = [
        asyncio.ensure_future(call(tally, "add", i, f"w{i}", patience_s=120)) for i in range(300)
    ]
    for done, finished in enumerate(asyncio.as_completed(tasks), 1):
        with contextlib.suppress(Unavailable):
            await finished
        if done == 100:
            in_flight = sum(not task.done() for task in tasks)
            private_redis.kill()  # writes meet a dead store until it answers again
            private_redis.start()
            break
    results = await asyncio.gather(*tasks, return_exceptions=True)

    acknowledged = {i for i, r in enumerate(results) if not isinstance(r, BaseException)}
    refused = [r for r in results if isinstance(r, BaseException)]
    # Refused writes were answered "unavailable" (the store was down, or a
    # reconnect retry found its append already done): never acknowledged.
    assert all(isinstance(r, Unavailable) for r in refused), refused[:3]
    contents = await call(tally, "contents", patience_s=120)
    assert in_flight > 0
    assert max(Counter(contents).values()) == 1
    assert acknowledged <= set(contents), sorted(acknowledged - set(contents))[:10]
    # Whether the actor had to crash and recover depends on whether the outage
    # outlasted redis-py's own reconnect retries; either way nothing is lost.
