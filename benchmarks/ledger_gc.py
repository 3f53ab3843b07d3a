"""Ledger: what the garbage collector costs a batched cross-shard transfer as the
ledger's state grows, with and without ``actors.runtime.heap`` (issue 14 §2).

One ``TxCoordinator`` over 4 ``LedgerShard``s in one process, without Ray,
each with its own SQLite file (synchronous=FULL), runs batches of 100
cross-shard transfers, 4 in flight, for --rounds rounds of --duration-s. Three
such processes run side by side (the same weather): ``plain``, as the
ledger was; ``frozen``, which runs ``HeapFreezer.step`` every second; and
``tuned``, which also collects the youngest generation every 50,000 new
objects (``tune_collector``), as the ledger's actors do. Per round each
reports the main thread's CPU time per transfer and the part of it spent in
collections, by generation
(``thread_time``, so a busy machine slows the rate but hardly the CPU per
transfer), and the objects a full collection walks. Writes
``results/ledger_gc.json``.

Goals: as the ledger's actors run (``tuned``), the CPU per transfer of the
last round is within 10% of the first round's, while the plain process's
grows with the state; and ``tuned`` spends less CPU per transfer than
``frozen``.

``--modes tuned,pruned`` asks whether the books' size itself costs: ``pruned``
is ``tuned`` whose shards forget, after each round, every posted transfer,
all but each account's latest 10 history entries and every resolved
transaction (an experiment, not a feature: books of a fixed size, as if older
history lived only in the store). Side by side, the two see the same weather,
so their ratio round by round rises only if holding more transfers costs more
per transfer. Goal: that ratio's second half within 1.1 x its first. Writes
``results/ledger_gc_tuned_pruned.json`` (any other choice of modes likewise
names its result after them).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from actors.runtime.heap import process_freezer
from benchmarks import harness

CLAIM = (
    "Issue 14: a batched cross-shard transfer costs the same CPU however many "
    "transfers the ledger holds (the collector does not walk its state)."
)
CLAIM_BOOKS = (
    "Issue 14: a batched cross-shard transfer costs the same CPU whether the shards hold "
    "every transfer (tuned) or only one round's (pruned), side by side."
)
MODES = ("plain", "frozen", "tuned", "pruned")
#: What a plain run compares; ``--modes tuned,pruned`` asks whether the books' size costs.
DEFAULT_MODES = "plain,frozen,tuned"
SHARDS = 4


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument(
        "--modes",
        default=DEFAULT_MODES,
        help=f"modes run side by side, comma-separated, of {', '.join(MODES)}",
    )
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)


class _Collections:
    """CPU time of collections per generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.cpu_s = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.cpu_s[info["generation"]] += time.thread_time() - self._started
            self.count[info["generation"]] += 1


class _Port:
    def __init__(self, shard: Any) -> None:
        self.shard = shard

    async def prepare(self, items: Any) -> Any:
        return await self.shard.prepare(items)

    async def commit(self, txids: Any) -> Any:
        return await self.shard.commit(txids)

    async def abort(self, txids: Any) -> Any:
        return await self.shard.abort(txids)

    async def in_doubt(self, older_than_s: float = 0.0) -> Any:
        return await self.shard.in_doubt(older_than_s)


async def _one_mode(args: argparse.Namespace) -> None:
    """Run one mode's rounds; print them as JSON on stdout and end the process."""
    from actors.ledger.coordinator import TxCoordinator
    from actors.ledger.model import AccountSpec, TransferSpec
    from actors.ledger.shard import LedgerShard
    from actors.runtime.clock import SystemClock, every
    from actors.runtime.heap import tune_collector
    from actors.runtime.store import SQLiteStore

    data = Path(tempfile.mkdtemp(prefix="realm-bench-ledger-gc-"))
    route = lambda account: int(account.split("-")[1]) % SHARDS  # noqa: E731
    shards = []
    for i in range(SHARDS):
        shard = LedgerShard(name=f"s{i}")
        await shard.open(SQLiteStore(data / f"s{i}.sqlite3"), f"s{i}")
        shards.append(shard)
    ports: list[Any] = [_Port(s) for s in shards]  # the two calls benchmarked are enough
    coordinator = TxCoordinator("c0", ports, route)
    await coordinator.open(SQLiteStore(data / "c0.sqlite3"), "c0")
    accounts = [f"a-{i}" for i in range(args.accounts)]
    for i, shard in enumerate(shards):
        await shard.create_accounts([AccountSpec(a, 1) for a in accounts if route(a) == i])
    if args.mode != "plain":
        every(SystemClock(), 1.0, process_freezer().step)
    if args.mode in ("tuned", "pruned"):
        tune_collector()
    collections = _Collections()
    ids, rng = itertools.count(), random.Random(args.seed)

    def unit() -> list[TransferSpec]:
        while True:
            debit, credit = rng.sample(accounts, 2)
            if route(debit) != route(credit):
                return [TransferSpec(f"t{next(ids)}", debit, credit, 1, 1)]

    rounds = []
    for round_ in range(args.rounds):
        done = 0
        cpu0, gc0, count0 = time.thread_time(), list(collections.cpu_s), list(collections.count)
        started = time.perf_counter()
        deadline = started + args.duration_s

        async def worker(deadline: float = deadline) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                results = await coordinator.run([unit() for _ in range(100)])
                assert all(r[0] == "ok" for r in results), results[:2]
                done += len(results)

        await asyncio.gather(*(worker() for _ in range(4)))
        elapsed = time.perf_counter() - started
        cpu_us = (time.thread_time() - cpu0) / done * 1e6
        gc_us = [(c - c0) / done * 1e6 for c, c0 in zip(collections.cpu_s, gc0, strict=True)]
        rounds.append({
            "round": round_ + 1,
            "loadavg": os.getloadavg()[0],
            "transfers_s": round(done / elapsed, 1),
            "transfers_held": len(coordinator.entries),
            "shard_transfers_held": sum(len(shard.books.transfers) for shard in shards),
            "cpu_us_per_transfer": round(cpu_us, 1),
            "gc_cpu_us_per_transfer": [round(g, 1) for g in gc_us],
            "collections": [c - c0 for c, c0 in zip(collections.count, count0, strict=True)],
            "walked_objects": len(gc.get_objects()),
            "frozen_objects": gc.get_freeze_count(),
        })  # fmt: skip
        print(f"{args.mode} {json.dumps(rounds[-1])}", file=sys.stderr, flush=True)
        if args.mode == "pruned":
            _prune(shards)
    print(json.dumps(rounds), flush=True)
    os._exit(0)  # the stores' threads need no goodbye


def _prune(shards: list[Any]) -> None:
    """Forget what the shards' books hold beyond one round's worth: every posted
    transfer, all but the latest 10 history entries of each account, every
    resolved transaction. An experiment, not a feature: the memory a shard
    would keep if older history lived only in its store, so that a round of
    ``pruned`` runs on books of a fixed size while ``tuned``'s keep growing."""
    for shard in shards:
        books = shard.books
        books.transfers = {k: v for k, v in books.transfers.items() if v.state != "posted"}
        books.history = {account: entries[-10:] for account, entries in books.history.items()}
        shard.resolved.clear()
    process_freezer().rebuild()


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__ or "", argv, duration_s=8.0, extra=_add_flags)
    if args.mode:
        harness.stop_niceness_sampler()  # the parent writes the result; keep its scans out
        asyncio.run(_one_mode(args))
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown or len(set(modes)) != len(modes):
        raise SystemExit(f"--modes: each of {', '.join(MODES)} at most once, not {args.modes!r}")
    passed = list(argv if argv is not None else sys.argv[1:])
    load_before = os.getloadavg()
    runs = {
        mode: subprocess.Popen(
            [sys.executable, "-m", "benchmarks.ledger_gc", *passed, "--mode", mode],
            stdout=subprocess.PIPE,
            text=True,
        )
        for mode in modes
    }
    harness.remember_realm_processes(run.pid for run in runs.values())
    found = {mode: json.loads(run.communicate()[0]) for mode, run in runs.items()}
    ratios, goals, by_round = {}, {}, {}
    cpu = {mode: [r["cpu_us_per_transfer"] for r in rounds] for mode, rounds in found.items()}
    for mode, per_round in cpu.items():
        ratios[f"{mode}: CPU per transfer, last / first round"] = round(
            per_round[-1] / per_round[0], 3
        )
        harness.progress(f"{mode}: CPU us per transfer by round {per_round}")
    mean = {mode: sum(per_round) / len(per_round) for mode, per_round in cpu.items()}
    if "tuned" in cpu:
        goals["tuned: last round's CPU per transfer <= 1.1 x the first"] = (
            ratios["tuned: CPU per transfer, last / first round"] <= 1.1
        )
    if {"tuned", "frozen"} <= set(cpu):
        ratios["tuned / frozen: mean CPU per transfer"] = round(mean["tuned"] / mean["frozen"], 3)
        goals["tuned: less CPU per transfer than frozen"] = mean["tuned"] < mean["frozen"]
    if {"tuned", "pruned"} <= set(cpu):
        # Side by side, both see the same weather: their ratio round by round
        # rises only if holding more transfers costs more per transfer.
        each = [t / p for t, p in zip(cpu["tuned"], cpu["pruned"], strict=True)]
        later = harness.second_half_over_first(each)
        by_round["tuned_over_pruned_by_round"] = [round(r, 3) for r in each]
        ratios["tuned / pruned: second half / first half"] = round(later, 3)
        goals["tuned / pruned: second half within 1.1 x the first"] = later <= 1.1
    for label, met in goals.items():
        harness.progress(f"goal {label}: {'met' if met else 'NOT MET'}")
    default = modes == DEFAULT_MODES.split(",")
    harness.write_result(
        "ledger_gc" if default else "_".join(["ledger_gc", *modes]),
        {
            "claim": CLAIM if default else CLAIM_BOOKS,
            "params": vars(args)
            | {"loadavg_before": load_before, "loadavg_after": os.getloadavg()},
            "variants": {
                mode: {
                    "throughput_ops_s": round(
                        sum(r["transfers_s"] for r in rounds) / len(rounds), 1
                    )
                }
                for mode, rounds in found.items()
            },
            "ratios": ratios,
            "goals": goals,
            "rounds": found,
            **by_round,
        },
    )


if __name__ == "__main__":
    main()
