"""Coalescer: concurrent requests become few batched calls, answers go back in order."""

from __future__ import annotations

import asyncio

import pytest

from actors.runtime.batching import Coalescer
from tests.unit.conftest import settle


class FakeActor:
    """Answers each item doubled; each call waits until the test releases it."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gates: list[asyncio.Event] = []
        self.fail_with: Exception | None = None

    async def send(self, items: list[int]) -> list[int]:
        self.calls.append(items)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [item * 2 for item in items]

    def release_all(self) -> None:
        for gate in self.gates:
            gate.set()


async def test_a_quiet_request_is_sent_at_once():
    actor = FakeActor()
    coalescer = Coalescer(actor.send, max_batch=100)
    task = asyncio.ensure_future(coalescer.submit([1, 2]))
    await settle()
    assert actor.calls == [[1, 2]]
    actor.release_all()
    assert await task == [2, 4]


async def test_requests_queued_behind_calls_in_flight_go_together():
    actor = FakeActor()
    coalescer = Coalescer(actor.send, max_batch=100, max_in_flight=1)
    first = asyncio.ensure_future(coalescer.submit([1]))
    await settle()
    queued = [asyncio.ensure_future(coalescer.submit([n, n + 100])) for n in range(2, 6)]
    await settle()
    assert actor.calls == [[1]]  # the others wait for the call in flight
    actor.release_all()
    await first
    await settle()
    assert actor.calls[1] == [2, 102, 3, 103, 4, 104, 5, 105]
    actor.release_all()
    assert await asyncio.gather(*queued) == [[n * 2, (n + 100) * 2] for n in range(2, 6)]
    assert coalescer.calls == 2 and coalescer.requests == 5


async def test_batches_never_exceed_max_batch():
    actor = FakeActor()
    coalescer = Coalescer(actor.send, max_batch=4, max_in_flight=1)
    big = asyncio.ensure_future(coalescer.submit(list(range(10))))
    for _ in range(5):
        await settle()
        actor.release_all()
    assert await big == [n * 2 for n in range(10)]
    assert all(len(call) <= 4 for call in actor.calls)
    assert sorted(n for call in actor.calls for n in call) == list(range(10))


async def test_an_error_reaches_every_request_of_its_batch_only():
    actor = FakeActor()
    coalescer = Coalescer(actor.send, max_batch=100, max_in_flight=1)
    first = asyncio.ensure_future(coalescer.submit([1]))
    await settle()
    queued = [asyncio.ensure_future(coalescer.submit([n])) for n in (2, 3)]
    await settle()
    actor.fail_with = RuntimeError("shard down")
    actor.release_all()
    with pytest.raises(RuntimeError):
        await first
    await settle()
    actor.fail_with = None
    actor.release_all()
    assert await asyncio.gather(*queued) == [[4], [6]]


async def test_per_turn_sends_what_arrives_in_one_turn_together():
    sent: list[list[int]] = []

    async def send(items: list[int]) -> list[int]:
        sent.append(items)
        return items

    plain = Coalescer(send, max_batch=100)
    await asyncio.gather(*(plain.submit([i]) for i in range(3)))
    assert sent == [[0], [1, 2]]  # the first goes alone, the rest wait for it
    sent.clear()
    per_turn = Coalescer(send, max_batch=100, per_turn=True)
    assert await asyncio.gather(*(per_turn.submit([i]) for i in range(3))) == [[0], [1], [2]]
    assert sent == [[0, 1, 2]]
