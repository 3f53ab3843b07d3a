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

import logging
from typing import Any

import ray

from actors.ledger.coordinator import FINAL, RemoteShard, TxCoordinator
from actors.ledger.settings import LedgerSettings
from actors.ledger.shard import LedgerShard
from actors.runtime.clock import every
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards
from actors.runtime.supervision import ActorRef, Restart, recover, remote_actor

log = logging.getLogger(__name__)

#: Shard actors are ``ledger-shard-<i>``; coordinators ``ledger-coordinator-<i>``.
SHARD_PREFIX = "ledger-shard"
COORDINATOR_PREFIX = "ledger-coordinator"


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
        self.settings = settings
        self.config = LedgerSettings.of(settings)
        self._coordinators: dict[str, ActorRef] = {}
        self.restarts = await recover(self, settings, name)
        self._expirer = every(self.clock, self.config.pending_sweep_s, self.expire_due)
        self._asker = every(self.clock, self.config.in_doubt_after_s, self.ask_coordinators)

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
        self.remote = remote
        self.restarts = await recover(self, settings, name)
        self.recovered = await self.recover()
        if self.recovered:
            log.warning("%s: driving %d unfinished transactions", name, self.recovered)
        self._sweeper = every(self.clock, config.in_doubt_after_s, self.sweep)
        self._expirer = every(self.clock, config.pending_sweep_s, self.expire_due)

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
