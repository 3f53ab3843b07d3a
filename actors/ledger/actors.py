"""The ledger's Ray actors: ``LedgerShardActor`` and ``TxCoordinatorActor``, wired
to each other.

The plain classes know nothing of Ray nor of each other's module: a
``TxCoordinator`` drives the shards through ports it is given, and a
``LedgerShard`` only lists the transactions it is in doubt about. This module
joins them: a coordinator reaches the shard actors through ``Shards``, each
seen through a coalescing ``RemoteShard``, and a shard in doubt asks the
coordinator actor that prepared the transaction, by its name.

Both are permanent (restarted after a crash; calls in flight are retried, and
every mutation is idempotent), spread over nodes, and journaled in their own
store stream (``recover``).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path
from typing import Any

import ray

from actors.ledger.coordinator import FINAL, RemoteShard, TxCoordinator
from actors.ledger.settings import LedgerSettings
from actors.ledger.shard import LedgerShard
from actors.runtime.clock import every
from actors.runtime.heap import allocation_probe, process_freezer
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards
from actors.runtime.supervision import ActorRef, Restart, recover, remote_actor

log = logging.getLogger(__name__)

#: Shard actors are ``ledger-shard-<i>``; coordinators ``ledger-coordinator-<i>``.
SHARD_PREFIX = "ledger-shard"
COORDINATOR_PREFIX = "ledger-coordinator"
#: How often a ledger actor freezes what survived its latest full collection.
HEAP_STEP_S = 1.0


class _GcPauses:
    """Collections per generation in this process since it started
    (``gc.callbacks``): how many, the CPU time they took (``thread_time`` of the
    thread that ran them, so a busy machine does not inflate it) and the longest
    pause in wall time; for ``diagnostics``."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.cpu_s = [0.0, 0.0, 0.0]
        self.max_s = [0.0, 0.0, 0.0]
        self._started = (0.0, 0.0)
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = (time.thread_time(), time.perf_counter())
            return
        generation = info["generation"]
        self.count[generation] += 1
        self.cpu_s[generation] += time.thread_time() - self._started[0]
        self.max_s[generation] = max(self.max_s[generation], time.perf_counter() - self._started[1])

    def report(self) -> dict[str, Any]:
        return {
            "collections": list(self.count),
            "cpu_ms": [round(1000 * t, 1) for t in self.cpu_s],
            "max_ms": [round(1000 * t, 2) for t in self.max_s],
            "tracked_objects": len(gc.get_objects()),
        }


_gc_pauses: _GcPauses | None = None


def _watch_gc() -> _GcPauses:
    """This process's ``_GcPauses`` (installed by the first caller)."""
    global _gc_pauses
    if _gc_pauses is None:
        _gc_pauses = _GcPauses()
    return _gc_pauses


def _process_diagnostics(actor: Any) -> dict[str, Any]:
    """What a durable ledger actor's process holds: memory, GC, journal, store files."""
    import psutil

    journal = actor.journal
    files: dict[str, int] = {}
    path = getattr(journal.store, "path", None)
    if isinstance(path, Path):
        for suffix in ("", "-wal", "-shm"):
            found = Path(f"{path}{suffix}")
            files[f"sqlite{suffix}"] = found.stat().st_size if found.exists() else 0
    process = psutil.Process()
    cpu = process.cpu_times()
    return {
        "pid": os.getpid(),
        "rss": process.memory_info().rss,
        "cpu_s": round(cpu.user + cpu.system, 3),
        "gc": _watch_gc().report() | {"heap": process_freezer().report()},
        "journal": {
            "commits": journal.commits,
            "records": journal.records,
            "head": journal.committed,
            "snapshot_at": actor._snapshot_seq,
            "snapshot_failures": actor.snapshot_failures,
        },
        "store_bytes": files,
        "replies": len(actor._replies),
        "inflight_keys": len(actor._inflight),
        "allocation_probe_us": allocation_probe(),
    }


def shard_actors(settings: Settings) -> Shards:
    """The deployment's shard actors; accounts are routed by ``index(account_id)``."""
    return Shards(LedgerShardActor, SHARD_PREFIX, LedgerSettings.of(settings).shards, settings)


def coordinator_actors(settings: Settings) -> Shards:
    """The deployment's coordinator actors; a unit goes to ``index(first transfer id)``."""
    count = LedgerSettings.of(settings).coordinators
    return Shards(TxCoordinatorActor, COORDINATOR_PREFIX, count, settings)


class _LedgerShardProcess(LedgerShard):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        super().__init__(name=name)
        _watch_gc()
        self.settings = settings
        self.config = LedgerSettings.of(settings)
        self._coordinators: dict[str, ActorRef] = {}
        self.restarts = await recover(self, settings, name)
        self._expirer = every(self.clock, self.config.pending_sweep_s, self.expire_due)
        self._asker = every(self.clock, self.config.in_doubt_after_s, self.ask_coordinators)
        # the books only grow: keep them out of full collections (actors.runtime.heap)
        self._heap = every(self.clock, HEAP_STEP_S, process_freezer().step)

    async def ask_coordinators(self) -> None:
        """Ask the coordinator of each transaction in doubt for long how it ended."""
        doubtful = await self.in_doubt(self.config.in_doubt_after_s)
        by_coordinator: dict[str, list[str]] = {}
        for txid, coordinator in doubtful:
            by_coordinator.setdefault(coordinator, []).append(txid)
        for coordinator, txids in by_coordinator.items():
            ref = self._coordinators.get(coordinator)
            if ref is None:  # by name: the one that prepared it, even if since renumbered
                ref = self._coordinators[coordinator] = ActorRef(
                    TxCoordinatorActor, coordinator, self.settings, coordinator,
                    namespace=self.settings.namespace,
                )  # fmt: skip
            outcomes = await ref.call("resolve", txids)
            commits = [t for t, outcome in zip(txids, outcomes, strict=True) if outcome == "commit"]
            aborts = [t for t, outcome in zip(txids, outcomes, strict=True) if outcome == "abort"]
            if commits:
                await self.commit(commits)
            if aborts:
                await self.abort(aborts)
            if commits or aborts:
                log.warning(
                    "%s resolved %d in-doubt transactions", self.name, len(commits + aborts)
                )

    async def ping(self) -> str:
        return self.name

    async def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node_id": ray.get_runtime_context().get_node_id(),
            "restarts": self.restarts,
            "journal_commits": self.journal.commits,
            "journal_records": self.journal.records,
            **(await self.totals()),
        }

    async def diagnostics(self) -> dict[str, Any]:
        """Sizes of every map this shard keeps, its GC and its store files (benchmarks)."""
        books = self.books
        return {
            **_process_diagnostics(self),
            "accounts": len(books.accounts),
            "transfers": len(books.transfers),
            "history_entries": sum(len(h) for h in books.history.values()),
            "expiries": len(books.expiries),
            "prepared": len(self.prepared),
            "resolved": len(self.resolved),
        }


#: Journaled; calls in flight at a crash are retried (every mutation is idempotent).
LedgerShardActor = remote_actor(
    _LedgerShardProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD"
)


class _TxCoordinatorProcess(TxCoordinator):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        config = LedgerSettings.of(settings)
        shards = shard_actors(settings)
        remote = [RemoteShard(ref, max_batch=config.max_batch) for ref in shards]
        super().__init__(name, remote, shards.index)
        _watch_gc()
        self.remote = remote
        self.restarts = await recover(self, settings, name)
        self.recovered = await self.recover()
        if self.recovered:
            log.warning("%s: driving %d unfinished transactions", name, self.recovered)
        self._sweeper = every(self.clock, config.in_doubt_after_s, self.sweep)
        self._expirer = every(self.clock, config.pending_sweep_s, self.expire_due)
        # decisions are kept an hour: keep them out of full collections (actors.runtime.heap)
        self._heap = every(self.clock, HEAP_STEP_S, process_freezer().step)

    async def ping(self) -> str:
        return self.name

    async def info(self) -> dict[str, Any]:
        live = sum(e.state not in FINAL for e in self.entries.values())
        calls = [shard.calls() for shard in self.remote]
        phases = ("prepare", "commit", "abort")
        return {
            "name": self.name,
            "node_id": ray.get_runtime_context().get_node_id(),
            "restarts": self.restarts,
            "recovered": self.recovered,
            "entries": len(self.entries),
            "live": live,
            "journal_commits": self.journal.commits,
            "journal_records": self.journal.records,
            "committed": self.committed,
            "phase_ms": {
                k: round(1000 * v / max(1, self.committed), 2) for k, v in self.phase_s.items()
            },
            "shard_calls": {phase: sum(c[phase][0] for c in calls) for phase in phases},
            "shard_requests": {phase: sum(c[phase][1] for c in calls) for phase in phases},
        }

    async def diagnostics(self) -> dict[str, Any]:
        """Sizes of every map this coordinator keeps, its GC and its store files
        (benchmarks)."""
        return {
            **_process_diagnostics(self),
            "entries": len(self.entries),
            "live": sum(e.state not in FINAL for e in self.entries.values()),
            "finished": len(self._finished),
            "drivers": len(self._drivers),
            "expiring": len(self.expiring),
            "owner_locks": len(self._owner_locks),
            "phase_ms": {
                k: round(1000 * v / max(1, self.committed), 2) for k, v in self.phase_s.items()
            },
            "committed": self.committed,
        }


#: Journaled decision log; calls in flight at a crash are retried (idempotent by unit id).
TxCoordinatorActor = remote_actor(
    _TxCoordinatorProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD"
)


__all__ = [
    "COORDINATOR_PREFIX",
    "SHARD_PREFIX",
    "LedgerShardActor",
    "TxCoordinatorActor",
    "coordinator_actors",
    "shard_actors",
]
