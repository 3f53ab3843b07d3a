"""What the fan-out benchmarks share (``pubsub.py``, ``chat.py``; ``game.py`` for the
connection helpers): receivers that tally each message, a sender paced or flat out,
and the median round.

A message's body is ``{"i": n, "t": <time.time() just before it was sent>}``; every
receiver hands it to ``Tally.receive``, which takes ``time.time() - t`` as the
send->receive latency (one process, one clock). Messages go to *rooms* (a topic, a
chat room): room ``r`` has ``sizes[r]`` receivers, so message ``n`` is complete once
that many have it. Pub/sub is one room of every subscriber.

Modes (``run_mode``):
  paced      ``args.rate`` messages/s per room (the rooms in turn), for
             ``args.duration_s``; then up to ``args.drain_s`` for the last to arrive.
  flat_out   message n is sent only once message n - window has reached every
             receiver of its room (a closed loop; the window is ``args.window``, times
             one per 10 rooms), for ``args.duration_s``; a run that sees no progress
             for ``STALL_S`` stops and says ``stalled``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

#: Connections opened at once while setting up receivers.
CONNECT_BATCH = 50
#: Give up on a closed-loop run that saw no message for this long.
STALL_S = 20.0


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def in_batches(n: int, make: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """``make(0) .. make(n - 1)``, ``CONNECT_BATCH`` at a time, in order."""
    made: list[Any] = []
    for start in range(0, n, CONNECT_BATCH):
        made.extend(
            await asyncio.gather(*(make(i) for i in range(start, min(n, start + CONNECT_BATCH))))
        )
    return made


def percentile_ms(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000, 2)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@dataclass
class Tally:
    """Receipts of one run: latencies, and per message how many receivers have it."""

    sizes: list[int]  #: receivers per room
    received: int = 0
    latencies_s: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    wanted: list[int] = field(default_factory=list)  #: receivers each message must reach
    complete: int = 0  #: messages 0..complete-1 reached all their receivers
    last_receipt: float = 0.0
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    recording: bool = False

    def receive(self, body: dict[str, Any]) -> None:
        """One receiver got the message whose body is ``body``."""
        now = time.time()
        if not self.recording:
            return
        i = body["i"]
        if i >= len(self.counts):
            return  # from an earlier run
        self.latencies_s.append(now - body["t"])
        self.received += 1
        self.last_receipt = now
        counts, wanted = self.counts, self.wanted
        counts[i] += 1
        if counts[i] == wanted[i]:
            while self.complete < len(counts) and counts[self.complete] >= wanted[self.complete]:
                self.complete += 1
            self.progress.set()

    def sent(self, room: int) -> int:
        self.counts.append(0)
        self.wanted.append(self.sizes[room])
        return len(self.counts) - 1


Send = Callable[[int, bytes], Awaitable[Any]]


async def run_mode(tally: Tally, send: Send, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Send for ``args.duration_s`` (``send(room, body)``), then wait for the receipts;
    the run's figures."""
    rooms = len(tally.sizes)
    tally.recording = True
    started = time.time()
    deadline = started + args.duration_s
    stalled = False
    turn = 0

    async def one() -> None:
        nonlocal turn
        room = turn % rooms
        turn += 1
        i = tally.sent(room)
        await send(room, orjson.dumps({"i": i, "t": time.time()}))

    if mode == "paced":
        # as many messages/s as rooms x --rate: the same deliveries per second either way
        interval = 1.0 / (args.rate * rooms)
        while True:
            due = started + len(tally.counts) * interval
            if due >= deadline:
                break
            if due > time.time():
                await asyncio.sleep(due - time.time())
            await one()
    else:
        window = args.window * max(1, rooms // 10)
        while time.time() < deadline:
            while len(tally.counts) - tally.complete >= window:
                tally.progress.clear()
                try:
                    await asyncio.wait_for(tally.progress.wait(), STALL_S)
                except TimeoutError:
                    stalled = True
                    break
            if stalled:
                break
            await one()
    sent_s = time.time() - started
    expected = sum(tally.wanted)
    drain_until = time.time() + args.drain_s
    while tally.complete < len(tally.counts) and time.time() < drain_until:
        tally.progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.progress.wait(), drain_until - time.time())
    tally.recording = False
    elapsed = max(tally.last_receipt - started, 1e-9)
    ordered = sorted(tally.latencies_s)
    return {
        "sent": len(tally.counts),
        "send_s": round(sent_s, 3),
        "send_rate_per_s": round(len(tally.counts) / sent_s, 1),
        "expected": expected,
        "received": tally.received,
        "lost": expected - tally.received,
        "duration_s": round(elapsed, 3),
        "delivered_per_s": round(tally.received / elapsed, 1),
        "throughput_ops_s": round(tally.received / elapsed, 1),
        "p50_ms": percentile_ms(ordered, 50),
        "p90_ms": percentile_ms(ordered, 90),
        "p99_ms": percentile_ms(ordered, 99),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else float("nan"),
        "stalled": stalled,
    }


def median_round(rounds: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The round with the median figure that matters: delivered/s flat out, p99 paced;
    with every round's figures."""
    key = "p99_ms" if mode == "paced" else "delivered_per_s"
    ordered = sorted(rounds, key=lambda m: m[key])
    return ordered[(len(ordered) - 1) // 2] | {
        "rounds": {
            "delivered_per_s": [m["delivered_per_s"] for m in rounds],
            "p99_ms": [m["p99_ms"] for m in rounds],
            "load_avg_1m": [m.get("load_avg_1m") for m in rounds],
        }
    }


def round_ratios(realm: dict[str, Any], other: dict[str, Any], key: str) -> list[float]:
    """Realm's figure over the peer's, round by round (they ran one after the other)."""
    pairs = zip(realm["rounds"][key], other["rounds"][key], strict=True)
    return [round(mine / theirs, 3) for mine, theirs in pairs if theirs]


def summarize(
    results: dict[str, dict[str, Any]],
    scenarios: Iterable[str],
    peers: Iterable[str],
    *,
    goal_ratio: float,
    goal_p99_ms: float,
) -> tuple[dict[str, float], dict[str, bool], dict[str, list[float]]]:
    """Realm against each of ``peers``, per scenario: delivered/s flat out and p99
    paced. Ratios are medians of the per-round ratios: on a shared machine the load
    moves between rounds far more than between two peers' turns in one round. The
    goals: delivered/s >= ``goal_ratio`` x Redis, and p99 <= ``goal_p99_ms`` paced
    with nothing lost."""
    ratios: dict[str, float] = {}
    goals: dict[str, bool] = {}
    per_round: dict[str, list[float]] = {}
    for scenario in scenarios:
        for mode, key, what in (
            ("flat_out", "delivered_per_s", "delivered/s"),
            ("paced", "p99_ms", "paced p99"),
        ):
            realm = results.get(f"realm_{scenario}_{mode}")
            for peer in peers:
                other = results.get(f"{peer}_{scenario}_{mode}")
                if realm and other:
                    label = f"{scenario} {what} realm/{peer}"
                    per_round[label] = round_ratios(realm, other, key)
                    if per_round[label]:
                        ratios[label] = round(median(per_round[label]), 3)
        label = f"{scenario} delivered/s realm/redis"
        if label in ratios:
            goals[f"{scenario}: delivered/s >= {goal_ratio} x Redis"] = ratios[label] >= goal_ratio
        paced = results.get(f"realm_{scenario}_paced")
        if paced:
            goals[f"{scenario}: p99 <= {goal_p99_ms:g} ms (paced)"] = (
                paced["p99_ms"] <= goal_p99_ms and paced["lost"] == 0
            )
    return ratios, goals, per_round
