"""Pub/sub's Python API: publish and subscribe from any Ray actor, task or replica.

Topics are spread over the broker actors by rendezvous hashing. A client is
one follower of every broker: it registers the union of its subscriptions'
patterns (wildcards may match topics on any broker), keeps one long-poll per
broker, and fans each message out locally to its matching subscriptions. So a
message crosses the network once per client (per Serve replica), not once per
subscriber.

Live delivery is at-most-once: a subscription whose queue is full is closed
as a slow consumer, and a broker restart loses what was published before the
client followed it again. A subscriber that noted the last sequence number
per topic closes any gap from ``history`` (which says whether it is complete).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from actors.errors import NotFound
from actors.hashing import Rendezvous
from actors.pubsub import BrokerActor, Delivery, broker_name
from actors.settings import Settings
from actors.supervision import ActorRef
from actors.topics import SubscriptionIndex, check_pattern, check_topic

log = logging.getLogger(__name__)

#: How long a follower's long-poll waits before answering empty.
PULL_TIMEOUT_S = 10.0


class SlowConsumer(Exception):
    """The subscription fell behind its queue bound and was closed; resume from history."""


class Subscription:
    """Messages ``(topic, seq, at, payload)`` for one pattern, as an async iterator."""

    def __init__(self, client: PubSubClient, pattern: str, max_pending: int) -> None:
        self.id = uuid.uuid4().hex
        self.pattern = pattern
        self._client = client
        self._queue: asyncio.Queue[Delivery | None] = asyncio.Queue(max_pending)
        self.closed_because: BaseException | None = None

    def _offer(self, message: Delivery) -> None:
        if self.closed_because is not None:
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self._close(SlowConsumer(f"more than {self._queue.maxsize} messages pending"))

    def _close(self, reason: BaseException | None) -> None:
        if self.closed_because is None:
            self.closed_because = reason or StopAsyncIteration()
            while not self._queue.empty():  # make room for the end marker
                self._queue.get_nowait()
            self._queue.put_nowait(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delivery:
        message = await self._queue.get()
        if message is None:
            if isinstance(self.closed_because, SlowConsumer):
                raise self.closed_because
            raise StopAsyncIteration
        return message

    async def close(self) -> None:
        await self._client._unsubscribe(self)
        self._close(None)


class PubSubClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.brokers = [
            ActorRef(BrokerActor, name, settings, name, namespace=settings.namespace)
            for name in map(broker_name, range(settings.pubsub_brokers))
        ]
        self.ring = Rendezvous(len(self.brokers))
        self.follower = uuid.uuid4().hex
        self._index = SubscriptionIndex()
        self._subscriptions: dict[str, Subscription] = {}
        self._pollers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await asyncio.gather(*(broker.call("ping") for broker in self.brokers))

    def _broker(self, topic: str) -> ActorRef:
        return self.brokers[self.ring.owner(topic)]

    async def publish(self, topic: str, payload: bytes) -> tuple[int, float]:
        """Publish; answers ``(seq, at)`` once the message is durable."""
        check_topic(topic)
        seq, at = await self._broker(topic).call("publish", topic, payload, key=uuid.uuid4().hex)
        return seq, at

    async def history(self, topic: str, after_seq: int = 0, limit: int = 100) -> dict[str, Any]:
        """Messages after ``after_seq``; ``complete`` is False if some were trimmed."""
        check_topic(topic)
        found: dict[str, Any] = await self._broker(topic).call(
            "history", topic, after_seq, limit=limit
        )
        return found

    async def subscribe(self, pattern: str, *, max_pending: int = 1_000) -> Subscription:
        """Live messages on topics matching ``pattern`` from now on."""
        check_pattern(pattern)
        subscription = Subscription(self, pattern, max_pending)
        self._subscriptions[subscription.id] = subscription
        self._index.add(pattern, subscription.id)
        await self._follow_all()
        if not self._pollers:
            self._pollers = [asyncio.create_task(self._poll(i)) for i in range(len(self.brokers))]
        return subscription

    async def _unsubscribe(self, subscription: Subscription) -> None:
        if self._subscriptions.pop(subscription.id, None) is not None:
            self._index.remove(subscription.pattern, subscription.id)
            await self._follow_all()

    def _patterns(self) -> list[str]:
        return sorted({s.pattern for s in self._subscriptions.values()})

    async def _follow_all(self) -> None:
        patterns = self._patterns()
        await asyncio.gather(*(b.call("follow", self.follower, patterns) for b in self.brokers))

    async def _poll(self, index: int) -> None:
        broker, after, backoff = self.brokers[index], 0, 0.0
        while True:
            try:
                deliveries = await broker.call(
                    "pull", self.follower, after=after, timeout_s=PULL_TIMEOUT_S
                )
            except asyncio.CancelledError:
                raise
            except NotFound:  # the broker restarted or forgot us: follow again
                after = 0
                await broker.call("follow", self.follower, self._patterns())
                continue
            except Exception as error:
                if not backoff:
                    log.warning("pub/sub lost broker %d (%r)", index, error)
                backoff = min(max(backoff * 2, 0.25), 5.0)
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            for seq, message in deliveries:
                for subscription_id in self._index.match(message[0]):
                    self._subscriptions[subscription_id]._offer(message)
                after = seq

    async def close(self) -> None:
        for task in self._pollers:
            task.cancel()
        self._pollers = []
        for subscription in list(self._subscriptions.values()):
            subscription._close(None)
        self._subscriptions.clear()
        await asyncio.gather(
            *(b.call("unfollow", self.follower) for b in self.brokers), return_exceptions=True
        )

    def __repr__(self) -> str:
        return (
            f"<PubSubClient brokers={len(self.brokers)} subscriptions={len(self._subscriptions)}>"
        )
