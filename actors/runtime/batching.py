"""Coalescing: concurrent requests to one actor become few batched calls.

An actor call costs about a millisecond of CPU whatever it carries, while a
thousand items in one call cost about the same as one (see
``benchmarks/engine_limit.py``). A ``Coalescer`` sits in front of one actor
method that takes a list and answers a list of the same length: while
``max_in_flight`` calls are outstanding (one by default: measured best here),
new requests queue, and the next call
carries all of them (up to ``max_batch`` items), like a group commit. A quiet
client pays no extra latency: a request finding no call in flight goes at once.

``per_turn=True`` holds a call until the end of the event-loop turn, so that
requests made together (the units of one batch reaching the same phase) go
in one call rather than the first alone and the rest after it. It costs no
time: the turn ends as soon as the submitting code awaits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[list[R]]],
        *,
        max_batch: int,
        max_in_flight: int = 1,
        per_turn: bool = False,
    ) -> None:
        self._send = send
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.per_turn = per_turn
        self._pump_scheduled = False
        self._queue: list[tuple[list[T], asyncio.Future[list[R]]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()  # held so they are not collected
        self.calls = 0  #: batched calls sent
        self.requests = 0  #: requests served

    async def submit(self, items: list[T]) -> list[R]:
        """The answers for ``items``, in order, from one or more batched calls."""
        if len(items) > self.max_batch:
            parts = [items[i : i + self.max_batch] for i in range(0, len(items), self.max_batch)]
            answers = await asyncio.gather(*(self.submit(part) for part in parts))
            return [answer for part in answers for answer in part]
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._queue.append((items, future))
        self.requests += 1
        if not self.per_turn:
            self._pump()
        elif not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump_at_end_of_turn)
        return await future

    def _pump_at_end_of_turn(self) -> None:
        self._pump_scheduled = False
        self._pump()

    def _pump(self) -> None:
        while self._queue and self._in_flight < self.max_in_flight:
            batch, size = [], 0
            while self._queue and size + len(self._queue[0][0]) <= self.max_batch:
                request = self._queue.pop(0)
                batch.append(request)
                size += len(request[0])
            self._in_flight += 1
            self.calls += 1
            task = asyncio.ensure_future(self._call(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, batch: list[tuple[list[T], asyncio.Future[list[R]]]]) -> None:
        try:
            answers = await self._send([item for items, _ in batch for item in items])
        except BaseException as error:  # every request of the batch gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
        else:
            start = 0
            for items, future in batch:
                if not future.done():
                    future.set_result(answers[start : start + len(items)])
                start += len(items)
        finally:
            self._in_flight -= 1
            self._pump()

    def __repr__(self) -> str:
        return (
            f"<Coalescer requests={self.requests} calls={self.calls} "
            f"in_flight={self._in_flight} queued={len(self._queue)}>"
        )
