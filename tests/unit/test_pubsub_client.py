"""PubSubClient's bookkeeping of what the brokers follow, against stand-in brokers (no Ray)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.pubsub.client import PubSubClient
from actors.runtime.settings import Settings
from tests.unit.conftest import settle


class Broker:
    """One stand-in broker: nothing to deliver, every other call answered at once."""

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "pull":
            await asyncio.Event().wait()
        return None


class Brokers:
    """Stand-in ``Shards``: records each follow sent to all brokers, and each answered;
    ``gate`` holds the answers back."""

    def __init__(self, count: int = 2) -> None:
        self.refs = [Broker() for _ in range(count)]
        self.sent: list[list[Any]] = []
        self.answered: list[list[Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def call_all(self, method: str, follower: str, interests: list[Any]) -> None:
        assert method == "follow"
        self.sent.append(interests)
        await self.gate.wait()
        self.answered.append(interests)

    def __getitem__(self, index: int) -> Broker:
        return self.refs[index]

    def __iter__(self) -> Any:
        return iter(self.refs)

    def __len__(self) -> int:
        return len(self.refs)


@pytest.fixture
async def client() -> Any:
    client = PubSubClient(Settings())
    client.brokers = Brokers()  # type: ignore[assignment]
    yield client
    await client.close()


async def test_a_follow_cut_short_is_sent_again(client: PubSubClient) -> None:
    brokers: Brokers = client.brokers  # type: ignore[assignment]
    await client.subscribe("a")
    brokers.gate.clear()
    subscribing = asyncio.create_task(client.subscribe("b"))
    await settle()
    subscribing.cancel()  # while the brokers are being told about "b"
    brokers.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await subscribing
    # The brokers may have heard of "b": they are told again that "a" is all.
    assert brokers.sent == [[("a", None)], [("a", None), ("b", None)], [("a", None)]]


async def test_a_close_cut_short_still_tells_the_brokers(client: PubSubClient) -> None:
    brokers: Brokers = client.brokers  # type: ignore[assignment]
    subscription = await client.subscribe("a")
    brokers.gate.clear()
    closing = asyncio.create_task(subscription.close())
    await settle()
    closing.cancel()  # as when the stream it served is cancelled
    brokers.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await settle()
    assert brokers.answered[-1] == []
