"""The monitoring service's Python API, for its HTTP front, its watcher and other services.

    monitor = MonitorClient(settings)
    await monitor.start()
    await monitor.ingest(owner, [("cpu", {"host": "a"}, time.time(), 0.93)])
    await monitor.put_rule(owner, rule)

Rules, silences, receivers and alerts belong to their ``owner``; another owner's
are not found. Realm's own (default rules, runtime alerts) belong to
``SYSTEM_OWNER``, which the HTTP front lets the admin act as.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from actors.monitor.actors import EVALUATOR_PREFIX, MANAGER_PREFIX, EvaluatorActor, ManagerActor
from actors.monitor.alerting import AlertIn, AlertManager, Inhibit, Receiver, Route
from actors.monitor.errors import BadRule, RuleNotFound
from actors.monitor.evaluator import EventIn, Sample
from actors.monitor.model import SYSTEM_OWNER, Rule, check_rule, parse_matchers, rules_from_yaml
from actors.monitor.receivers import check_url
from actors.monitor.settings import MonitorSettings
from actors.runtime.errors import BatchTooLarge
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards


class MonitorClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = MonitorSettings.of(settings)
        self.evaluators = Shards(EvaluatorActor, EVALUATOR_PREFIX, self.config.evaluators, settings)
        self.managers = Shards(ManagerActor, MANAGER_PREFIX, self.config.managers, settings)

    async def start(self) -> None:
        await asyncio.gather(self.evaluators.start(), self.managers.start())

    async def close(self) -> None:
        return None

    # --- inputs ---------------------------------------------------------------------

    def _check_batch(self, count: int) -> None:
        if count > self.config.max_batch:
            raise BatchTooLarge(
                f"a push holds at most {self.config.max_batch} items", limit=self.config.max_batch
            )

    async def ingest(self, owner: str, samples: list[Sample], *, key: str | None = None) -> int:
        """Add samples ``(name, labels, t, value)``; answered once durable."""
        return await self._spread("ingest", owner, samples, key)

    async def events(self, owner: str, events: list[EventIn], *, key: str | None = None) -> int:
        """Add events ``(name, labels, t, data)``; answered once durable."""
        return await self._spread("events", owner, events, key)

    async def _spread(self, method: str, owner: str, items: list[Any], key: str | None) -> int:
        """Hand each evaluator the items whose name (their first field) it owns, at
        once, each part under its own idempotency key; how many were taken."""
        self._check_batch(len(items))
        key = key or uuid.uuid4().hex
        groups = self.evaluators.split([item[0] for item in items])
        counts = await asyncio.gather(
            *(
                self.evaluators[i].call(
                    method, owner, [items[p] for p in positions], key=f"{key}:{i}"
                )
                for i, positions in groups.items()
            )
        )
        return sum(counts)

    # --- rules ----------------------------------------------------------------------

    async def put_rule(self, owner: str, rule: Rule) -> dict[str, Any]:
        rule.owner = owner
        check_rule(rule, max_window_s=self.config.retention_s)
        # A rule that moved to another input leaves the evaluator it was on.
        for index, ref in enumerate(self.evaluators):
            if index != self.evaluators.index(rule.key):
                with contextlib.suppress(RuleNotFound):
                    await ref.call("delete_rule", owner, rule.id)
        created = await self.evaluators.owner(rule.key).call("put_rule", rule, key=uuid.uuid4().hex)
        return {"id": rule.id, "created": created}

    async def load_rules(self, owner: str, text: str) -> list[str]:
        rules = rules_from_yaml(
            text,
            owner,
            max_window_s=self.config.retention_s,
            max_rules=self.config.max_rules_per_owner,
        )
        for rule in rules:
            await self.put_rule(owner, rule)
        return [r.id for r in rules]

    async def rules(self, owner: str) -> list[Rule]:
        answers = await self.evaluators.call_all("rules_of", owner)
        return sorted((r for answer in answers for r in answer), key=lambda r: r.id)

    async def rule(self, owner: str, rule: str) -> Rule:
        for found in await self.rules(owner):
            if found.id == rule:
                return found
        raise RuleNotFound(rule=rule)

    async def delete_rule(self, owner: str, rule: str) -> None:
        found = await self.rule(owner, rule)
        await self.evaluators.owner(found.key).call("delete_rule", owner, rule)

    # --- alerts ---------------------------------------------------------------------

    async def post_alerts(self, owner: str, alerts: list[AlertIn]) -> int:
        self._check_batch(len(alerts))
        return int(
            await self.managers.owner(owner).call(
                "call_op", "post", key=uuid.uuid4().hex, owner=owner, alerts=alerts
            )
        )

    async def alerts(self, owner: str) -> dict[str, Any]:
        """Alerts the manager holds (firing, resolved not yet notified) and the
        evaluators' pending and firing ones."""
        managed = await self.managers.owner(owner).call("read", "alerts", owner)
        evaluated = await self.evaluators.call_all("alerts_of", owner)
        return {"alerts": managed, "rules": [a for answer in evaluated for a in answer]}

    async def groups(self, owner: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.managers.owner(owner).call("read", "groups", owner)
        return found

    async def ack(self, owner: str, fingerprint: str, who: str) -> None:
        await self.managers.owner(owner).call(
            "call_op", "ack", owner=owner, fp=fingerprint, who=who
        )

    async def silence(
        self,
        owner: str,
        *,
        matchers: list[str],
        starts_at: float | None,
        ends_at: float,
        by: str,
        comment: str,
    ) -> str:
        parsed = parse_matchers(matchers)
        if not parsed:
            raise BadRule("a silence has at least one matcher")
        starts = time.time() if starts_at is None else starts_at
        if ends_at <= starts:
            raise BadRule("a silence ends after it starts")
        made = AlertManager.new_silence(parsed, starts, ends_at, by, comment)
        return str(
            await self.managers.owner(owner).call("call_op", "silence", owner=owner, silence=made)
        )

    async def silences(self, owner: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.managers.owner(owner).call(
            "read", "silences", owner
        )
        return found

    async def expire_silence(self, owner: str, silence: str) -> None:
        await self.managers.owner(owner).call(
            "call_op", "expire_silence", owner=owner, silence=silence
        )

    async def configure(
        self, owner: str, route: Route, receivers: list[Receiver], inhibit: list[Inhibit]
    ) -> int:
        if len(receivers) > self.config.max_receivers_per_owner:
            raise BadRule(f"at most {self.config.max_receivers_per_owner} receivers")
        for receiver in receivers:
            if receiver.kind == "webhook":
                check_url(receiver.target, allow_remote=self.config.allow_remote_targets)
            for m in (*(i.source for i in inhibit), *(i.target for i in inhibit)):
                parse_matchers(m)
        return int(
            await self.managers.owner(owner).call(
                "call_op",
                "configure",
                key=uuid.uuid4().hex,
                owner=owner,
                route=route,
                receivers=receivers,
                inhibit=inhibit,
            )
        )

    async def configuration(self, owner: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.managers.owner(owner).call("read", "config", owner)
        return found

    async def stats(self) -> dict[str, Any]:
        evaluators, managers = await asyncio.gather(
            self.evaluators.call_all("stats_of"), self.managers.call_all("stats_of")
        )
        return {"evaluators": evaluators, "managers": managers}

    def __repr__(self) -> str:
        return f"<MonitorClient evaluators={len(self.evaluators)} managers={len(self.managers)}>"


__all__ = [
    "SYSTEM_OWNER",
    "AlertIn",
    "Inhibit",
    "MonitorClient",
    "Receiver",
    "Route",
    "Rule",
    "start_watcher",
]


async def start_watcher(settings: Settings) -> None:
    """Start (or find) the runtime watcher, which installs Realm's default rules."""
    from actors.monitor.watcher import WATCHER_NAME, WatcherActor
    from actors.runtime.supervision import call, get_or_create

    handle = get_or_create(WatcherActor, WATCHER_NAME, settings, namespace=settings.namespace)
    await call(handle, "ping")
