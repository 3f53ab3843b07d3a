"""Priority: with the delivery queue busy, a high-priority notification queued after
normal ones is delivered before them (real queue, real workers, a webhook stand-in)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from actors.push.client import PushClient
from actors.push.shard import QUEUE_NAME, QUEUE_OWNER
from actors.queue.client import QueueClient
from actors.runtime.settings import Settings
from tests.conftest import until
from tests.unit.test_push_standins import WebhookReceiver


class StalledReceiver(WebhookReceiver):
    """A webhook receiver whose first request waits until the test lets it go: the
    stalled provider that keeps the queue's only slot busy."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        if not self.hits:
            self.hit("stall")
            await self.release.wait()
        return await super().handle(request)


async def test_high_priority_is_delivered_before_queued_normal_ones(
    ray_settings: Callable[..., Settings],
) -> None:
    settings = ray_settings(
        queue_concurrency=1,  # one delivery job at a time: the others wait, by priority
        queue_workers=1,
        queue_handler_modules="actors.queue.handlers,actors.push.jobs",
        push_shards=1,
        push_allow_private_addresses=True,
    )
    receiver = StalledReceiver()
    await receiver.start()
    try:
        push = PushClient(settings)
        device = await push.register("ann", platform="webhook", token=f"{receiver.url}/d", app="a")
        receiver.secrets[device["id"]] = device["secret"]
        to = {"device": device["id"]}
        await push.send("ann", to=to, title="first")
        await until(lambda: receiver.hits.get("stall", 0), within_s=30, what="the first is sent")
        for n in range(5):
            await push.send("ann", to=to, title=f"normal-{n}")
        await push.send("ann", to=to, title="high", priority="high")
        queue = QueueClient(settings)
        await until(
            lambda: queue.list(QUEUE_NAME, "queued", owner=QUEUE_OWNER),
            lambda page: page["total"] == 6,
            within_s=30,
            what="six delivery jobs wait",
        )
        receiver.release.set()
        await until(lambda: len(receiver.received), lambda n: n == 7, within_s=30)
        titles = [r["title"] for r in receiver.received]
        assert titles == ["first", "high", *(f"normal-{n}" for n in range(5))], titles
        assert receiver.refused == []
    finally:
        receiver.release.set()
        await receiver.stop()
