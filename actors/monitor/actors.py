"""The Ray actors of monitoring: evaluators (``RuleEngine``) and alert managers.

Both are durable (journal + snapshots), permanent (restarted after a crash,
calls in flight retried: mutations carry idempotency keys or are idempotent by
their numbering), ``num_cpus=0`` and SPREAD across nodes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from actors.monitor.alerting import AlertManager
from actors.monitor.evaluator import RuleEngine, Transition
from actors.monitor.receivers import Notifier
from actors.monitor.settings import MonitorSettings
from actors.runtime.clock import every
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards
from actors.runtime.supervision import Restart, recover, remote_actor

log = logging.getLogger(__name__)

EVALUATOR_PREFIX = "monitor-eval"
MANAGER_PREFIX = "monitor-alerts"


class _EvaluatorProcess(RuleEngine):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        config = MonitorSettings.of(settings)
        self.name = name
        self.managers = Shards(ManagerActor, MANAGER_PREFIX, config.managers, settings)
        super().__init__(config, send=self._send, logs=_logs(settings))
        self.restarts = await recover(self, settings, name)
        self._warm = asyncio.create_task(self._reach_managers())
        self._loop = asyncio.create_task(self.run(config.eval_interval_ms / 1000))

    async def _reach_managers(self) -> None:
        """Find the alert managers and call each once as this evaluator starts: the
        first call from a process resolves the actor's name and address (blocking
        calls to Ray's GCS), which would otherwise fall on the first alert sent."""
        try:
            await self.managers.start()
        except Exception as error:  # the first send finds them then
            log.warning("%s: alert managers not reached at start: %r", self.name, error)

    async def _send(self, batch: list[Transition]) -> None:
        by_shard: dict[int, list[Transition]] = {}
        for transition in batch:
            by_shard.setdefault(self.managers.index(transition.owner), []).append(transition)
        for index, part in by_shard.items():
            await self.managers[index].call("transitions", self.name, part)

    async def ping(self) -> int:
        return len(self.rules)

    async def put_rule(self, rule: Any, *, key: str | None = None) -> bool:
        return bool(await self.execute("put_rule", key=key, rule=rule))

    async def delete_rule(self, owner: str, rule: str) -> bool:
        return bool(await self.execute("delete_rule", owner=owner, rule=rule, at=self.clock.time()))

    async def ingest(self, owner: str, samples: list[Any], *, key: str | None = None) -> int:
        return int(await self.execute("ingest", key=key, owner=owner, samples=samples))

    async def events(self, owner: str, events: list[Any], *, key: str | None = None) -> int:
        return int(await self.execute("events", key=key, owner=owner, events=events))

    async def alerts_of(self, owner: str) -> list[dict[str, Any]]:
        return await self.after_commit(self.list_alerts(owner))

    async def rules_of(self, owner: str) -> list[Any]:
        return self.list_rules(owner)

    async def rule(self, owner: str, rule: str) -> Any:
        return self.get_rule(owner, rule)

    async def stats_of(self) -> dict[str, Any]:
        return {**self.stats(), "restarts": self.restarts}

    async def series_of(self, owner: str, name: str) -> list[dict[str, Any]]:
        return [
            {"labels": s.labels, "samples": list(s.samples)}
            for s in self.store.series.get((owner, name), {}).values()
        ]

    async def evaluate_now(self) -> int:
        return len(await self.evaluate())


class _ManagerProcess(AlertManager):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        config = MonitorSettings.of(settings)
        self.notifier = Notifier(settings, config)
        super().__init__(config, notify=self.notifier)
        self.restarts = await recover(self, settings, name)
        await self.notifier.start()
        self._loop = every(self.clock, config.flush_interval_ms / 1000, self.flush)

    async def ping(self) -> int:
        return len(self.tenants)

    async def transitions(self, source: str, transitions: list[Transition]) -> int:
        return int(
            await self.execute(
                "transitions", source=source, transitions=transitions, at=self.clock.time()
            )
        )

    async def call_op(self, op: str, key: str | None = None, **args: Any) -> Any:
        """A journaled operation; ``at`` is this actor's time when the op takes one."""
        if op in ("configure", "post", "expire_silence", "ack"):
            args["at"] = self.clock.time()
        return await self.execute(op, key=key, **args)

    async def read(self, what: str, owner: str) -> Any:
        now = self.clock.time()
        if what == "alerts":
            return self.list_alerts(owner, now)
        if what == "silences":
            return self.list_silences(owner, now)
        if what == "groups":
            return self.list_groups(owner)
        return self.configuration(owner)

    async def stats_of(self) -> dict[str, Any]:
        return {
            "tenants": len(self.tenants),
            "sent": self.sent,
            "failed": self.failed,
            "restarts": self.restarts,
        }


def _logs(settings: Settings) -> Any:
    """The logs service's LogQL metric queries, when it is part of this deployment."""
    import importlib.util

    if importlib.util.find_spec("actors.logs.client") is None:
        return None
    from actors.monitor.logql import LogsQuery

    return LogsQuery(settings)


EvaluatorActor = remote_actor(
    _EvaluatorProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD"
)
ManagerActor = remote_actor(
    _ManagerProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD"
)

__all__ = ["EVALUATOR_PREFIX", "MANAGER_PREFIX", "EvaluatorActor", "ManagerActor"]
