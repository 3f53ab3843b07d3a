"""``RuleEngine``: rules, the series and events they read, and their alerts' states.

Rules and their inputs are keyed by the input's name (``Rule.key``), so a rule
and every sample it reads live in the same evaluator. Every
``eval_interval_ms`` the engine evaluates each rule over its window and moves
each of its alerts through the lifecycle:

    inactive -> pending (the condition holds; ``for`` has not elapsed)
    pending  -> firing  (it held for ``for``; at once when ``for`` is 0)
    pending  -> inactive (it stopped holding before ``for``: nothing is sent)
    firing   -> resolved (it stopped holding, and ``keep_firing_for`` elapsed)

Every change is journaled before it is sent (an outbox of numbered
transitions), and the alert manager applies each number once: a transition is
neither lost nor repeated when an evaluator or a manager restarts. Samples and
events are journaled too (an acknowledged push survives a crash); a pending
alert restarts its ``for`` from when it became pending, not from the restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from actors.monitor.errors import MonitorLimit, RuleNotFound
from actors.monitor.model import Labels, Matcher, Rule, fingerprint, matches_all, render
from actors.monitor.series import Event, SeriesStore, combine, reduce, window
from actors.monitor.settings import MonitorSettings
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.journal import Durable

log = logging.getLogger(__name__)

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"
#: ``for`` is compared to the microsecond: scheduled evaluation times (``run``) are
#: ``start + k * interval``, and float arithmetic may put ``for / interval`` ticks a
#: fraction of a microsecond short of ``for`` (3 x 0.7 s is not 2.1 s).
TIME_TOLERANCE_S = 1e-6


def rule_key(owner: str, rule: str) -> str:
    """Rules are named per owner: two owners may both have a rule ``hot``."""
    return f"{owner}/{rule}"


class LogQuery(Protocol):
    """A LogQL metric query's value now: ``[(labels, value)]`` (the logs service)."""

    async def instant(self, owner: str, query: str, at: float) -> list[tuple[Labels, float]]: ...


@dataclass
class AlertState:
    rule: str
    owner: str
    labels: Labels
    annotations: Labels
    state: str
    active_at: float
    fired_at: float = 0.0
    last_true: float = 0.0
    value: float = 0.0


@dataclass
class Transition:
    """A change the alert manager must apply once: ``seq`` numbers them per engine."""

    seq: int
    owner: str
    fingerprint: str
    status: str  #: firing or resolved
    labels: Labels
    annotations: Labels
    starts_at: float
    ends_at: float
    rule: str
    value: float


@dataclass
class Change:
    rule: str
    fingerprint: str
    state: AlertState | None  #: the new state; None when the alert is gone
    sent: str = ""  #: firing / resolved: a transition goes to the manager


@dataclass
class EngineState:
    rules: list[Rule]
    alerts: list[tuple[str, str, AlertState]]
    outbox: list[Transition]
    seq: int
    series: list[tuple[str, str, Labels, list[tuple[float, float]]]]
    events: list[tuple[str, str, list[Event]]]


Sample = tuple[str, Labels, float, float]  #: name, labels, t (wall s), value
EventIn = tuple[str, Labels, float, dict[str, Any]]  #: name, labels (with severity), t, data


class RuleEngine(Durable):
    def __init__(
        self,
        config: MonitorSettings,
        *,
        clock: Clock | None = None,
        logs: LogQuery | None = None,
        send: Callable[[list[Transition]], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.logs = logs
        self.send = send
        self.rules: dict[str, Rule] = {}
        self.owned: dict[str, int] = {}
        self.alerts: dict[tuple[str, str], AlertState] = {}  #: (rule, fp) -> state
        self.outbox: deque[Transition] = deque()
        self.seq = 0
        self.store = SeriesStore(
            max_samples=config.max_samples_per_series,
            max_series_per_owner=config.max_series_per_owner,
            max_events=config.max_events_kept,
            max_bytes=config.max_bytes_per_owner,
        )
        self._evaluating = asyncio.Lock()
        self._matchers: dict[str, list[Matcher]] = {}  #: compiled, by rule key
        self.evaluations = 0  #: rule evaluations so far
        self.evaluated_at = 0.0  #: the latest ``now`` evaluated at
        self.failures = 0  #: rule evaluations that raised

    # --- durable state ---------------------------------------------------------

    def snapshot_state(self) -> EngineState:
        return EngineState(
            list(self.rules.values()),
            [(r, fp, s) for (r, fp), s in self.alerts.items()],
            list(self.outbox),
            self.seq,
            self.store.dump(),
            self.store.dump_events(),
        )

    def state_size(self) -> int:
        # Series, not samples: counted in O(owners) on every record.
        return sum(self.store.counts.values()) + len(self.rules) + len(self.alerts)

    def restore_state(self, state: EngineState) -> None:
        for rule in state.rules:
            self.apply_put_rule(rule)
        self.alerts = {(r, fp): s for r, fp, s in state.alerts}
        self.outbox = deque(state.outbox)
        self.seq = state.seq
        for owner, name, labels, samples in state.series:
            for at, value in samples:
                self.store.add(owner, name, labels, at, value)
        for owner, name, events in state.events:
            for event in events:
                self.store.add_event(owner, name, event.labels, event.at, event.data)

    # --- operations (journaled) ---------------------------------------------------

    def apply_put_rule(self, rule: Rule) -> bool:
        """Create or replace; True if it is new."""
        key = rule_key(rule.owner, rule.id)
        new = key not in self.rules
        if new and self.owned.get(rule.owner, 0) >= self.config.max_rules_per_owner:
            raise MonitorLimit(f"an owner holds at most {self.config.max_rules_per_owner} rules")
        if new:
            self.owned[rule.owner] = self.owned.get(rule.owner, 0) + 1
        self.rules[key] = rule
        self._matchers.pop(key, None)
        return new

    def apply_delete_rule(self, owner: str, rule: str, at: float) -> bool:
        found = self.rules.get(rule_key(owner, rule))
        if found is None:
            raise RuleNotFound(rule=rule)
        del self.rules[rule_key(owner, rule)]
        self.owned[owner] -= 1
        for key in [k for k in self.alerts if k[0] == rule_key(owner, rule)]:
            state = self.alerts.pop(key)
            if state.state == FIRING:
                self._emit(key[1], state, RESOLVED, at)
        return True

    def apply_ingest(self, owner: str, samples: list[Sample]) -> int:
        return sum(self.store.add(owner, n, labels, t, v) for n, labels, t, v in samples)

    def apply_events(self, owner: str, events: list[EventIn]) -> int:
        return sum(self.store.add_event(owner, n, labels, t, data) for n, labels, t, data in events)

    def apply_changes(self, at: float, changes: list[Change]) -> int:
        for change in changes:
            key = (change.rule, change.fingerprint)
            prior = self.alerts.pop(key, None)
            if change.state is not None:
                self.alerts[key] = change.state
            state = change.state or prior
            if change.sent and state is not None:
                self._emit(change.fingerprint, state, change.sent, at)
        return len(changes)

    def apply_delivered(self, upto: int) -> int:
        while self.outbox and self.outbox[0].seq <= upto:
            self.outbox.popleft()
        return upto

    def _emit(self, fp: str, state: AlertState, status: str, at: float) -> None:
        self.seq += 1
        ends = at if status == RESOLVED else 0.0
        self.outbox.append(
            Transition(
                self.seq,
                state.owner,
                fp,
                status,
                dict(state.labels),
                dict(state.annotations),
                state.active_at,
                ends,
                state.rule,
                state.value,
            )
        )

    # --- evaluation -----------------------------------------------------------------

    async def values(self, rule: Rule, now: float) -> list[tuple[Labels, float]]:
        """What ``rule`` reads now: each active label set with its value."""
        since = now - rule.window_s
        matchers = self._matchers.get(rule_key(rule.owner, rule.id))
        if matchers is None:
            matchers = self._matchers[rule_key(rule.owner, rule.id)] = rule.compiled()
        if rule.kind == "always":
            return [({}, 1.0)]
        if rule.kind == "logql":
            if self.logs is None:
                return []
            found = await self.logs.instant(rule.owner, rule.query, now)
            return [(labels, v) for labels, v in found if rule.holds(v)]
        if rule.kind == "absence":
            seen = any(
                window(s.samples, since, now)
                for s in self.store.matching(rule.owner, rule.input, matchers)
            )
            if seen:
                return []
            labels = {m.name: m.value for m in matchers if m.op == "="}
            return [(labels, 1.0)]
        groups: dict[str, tuple[Labels, list[float]]] = {}
        if rule.kind == "event":
            for event in self.store.events_in(rule.owner, rule.input, matchers, since, now):
                labels = {k: event.labels.get(k, "") for k in rule.by}
                groups.setdefault(fingerprint(labels), (labels, []))[1].append(1.0)
            out = [(labels, float(len(v))) for labels, v in groups.values()]
            if not rule.by and not out:
                out = [({}, 0.0)]
            return [(labels, v) for labels, v in out if rule.holds(v)]
        for series in self.store.matching(rule.owner, rule.input, matchers):
            value = reduce(rule.fn, window(series.samples, since, now))
            if value is None:
                continue
            if rule.by:
                labels = {k: series.labels.get(k, "") for k in rule.by}
                groups.setdefault(fingerprint(labels), (labels, []))[1].append(value)
            else:
                groups[series.fp] = (series.labels, [value])
        results = [
            (labels, combine(rule.agg or rule.fn, vals) if rule.by else vals[0])
            for labels, vals in groups.values()
        ]
        return [(labels, v) for labels, v in results if rule.holds(v)]

    def alert_labels(self, rule: Rule, labels: Labels, value: float) -> tuple[Labels, Labels]:
        merged = {
            **labels,
            **{k: render(v, labels, value, rule.owner) for k, v in rule.labels.items()},
        }
        merged["alertname"] = rule.alert
        annotations = {k: render(v, merged, value, rule.owner) for k, v in rule.annotations.items()}
        return merged, annotations

    async def evaluate(self, now: float | None = None) -> list[Change]:
        """Evaluate every rule at ``now`` (wall seconds); journal what changed."""
        now = self.clock.time() if now is None else now
        async with self._evaluating:
            self.evaluated_at = max(self.evaluated_at, now)
            return await self._evaluate(now)

    async def run(self, interval_s: float) -> None:
        """Evaluate every ``interval_s`` on a fixed schedule, as Prometheus does: the
        k-th evaluation is due ``k * interval_s`` after the first and is made at that
        time (its ``now``), however long the ones before took and however late its
        own turn came. So ``for`` elapses at the first evaluation ``ceil(for /
        interval)`` intervals after the alert became pending, not that many passes
        (each interval plus a pass's duration) later. A tick that comes when the
        next is already due is skipped, not run back to back. Runs until cancelled."""
        start = self.clock.now()
        offset = self.clock.time() - start  #: wall minus monotonic time
        tick = 0
        while True:
            tick += 1
            due = start + tick * interval_s
            await self.clock.sleep(due - self.clock.now())
            missed = int((self.clock.now() - due) // interval_s)
            if missed > 0:
                tick += missed
                due = start + tick * interval_s
            if abs(self.clock.time() - self.clock.now() - offset) > interval_s:
                offset = self.clock.time() - self.clock.now()  # the wall clock was stepped
            try:
                async with self._evaluating:
                    # Never before an evaluation already made (``evaluate_now``).
                    self.evaluated_at = max(offset + due, self.evaluated_at)
                    await self._evaluate(self.evaluated_at)
            except Exception:  # e.g. the store away for a moment: the next tick then
                log.exception("evaluation at tick %d failed", tick)

    async def _evaluate(self, now: float) -> list[Change]:
        self.store.prune(now - self.config.retention_s)
        changes: list[Change] = []
        for key, rule in list(self.rules.items()):
            self.evaluations += 1
            try:
                active = await self.values(rule, now)
            except Exception:
                self.failures += 1
                log.exception("rule %s failed to evaluate", rule.id)
                continue
            if key not in self.rules:
                continue
            changes.extend(self._step(key, rule, active, now))
        if changes:
            _, committed = self.record("changes", at=now, changes=changes)
            await committed
        if self.outbox:
            await self.flush()
        return changes

    def _step(
        self, key: str, rule: Rule, active: list[tuple[Labels, float]], now: float
    ) -> list[Change]:
        changes: list[Change] = []
        seen: set[str] = set()
        for labels, value in active:
            merged, annotations = self.alert_labels(rule, labels, value)
            fp = fingerprint(merged)
            seen.add(fp)
            state = self.alerts.get((key, fp))
            if state is None:
                if rule.for_s <= 0:
                    state = AlertState(
                        rule.id, rule.owner, merged, annotations, FIRING, now, now, now, value
                    )
                    changes.append(Change(key, fp, state, FIRING))
                else:
                    state = AlertState(
                        rule.id, rule.owner, merged, annotations, PENDING, now, 0.0, now, value
                    )
                    changes.append(Change(key, fp, state))
                continue
            if state.state == PENDING and now - state.active_at >= rule.for_s - TIME_TOLERANCE_S:
                new = AlertState(
                    rule.id,
                    rule.owner,
                    merged,
                    annotations,
                    FIRING,
                    state.active_at,
                    now,
                    now,
                    value,
                )
                changes.append(Change(key, fp, new, FIRING))
            elif state.state == FIRING and annotations != state.annotations:
                new = AlertState(
                    rule.id,
                    rule.owner,
                    merged,
                    annotations,
                    FIRING,
                    state.active_at,
                    state.fired_at,
                    now,
                    value,
                )
                changes.append(Change(key, fp, new, FIRING))
            elif now - state.last_true >= self.config.eval_interval_ms / 1000 * 10:
                # Refresh the time it last held now and then (not every turn: each is a record).
                new = AlertState(
                    rule.id,
                    rule.owner,
                    merged,
                    annotations,
                    state.state,
                    state.active_at,
                    state.fired_at,
                    now,
                    value,
                )
                changes.append(Change(key, fp, new))
            else:
                state.last_true, state.value = now, value  # ephemeral until the next record
        for (rule_id, fp), state in list(self.alerts.items()):
            if rule_id != key or fp in seen:
                continue
            if state.state == PENDING:
                changes.append(Change(key, fp, None))
            elif now - state.last_true >= rule.keep_firing_for_s:
                changes.append(Change(key, fp, None, RESOLVED))
        return changes

    async def flush(self) -> None:
        """Hand the outbox to the alert manager; journal how far it took it."""
        if self.send is None or not self.outbox:
            return
        batch = list(self.outbox)
        await self.send(batch)
        await self.execute("delivered", upto=batch[-1].seq)

    # --- reads ----------------------------------------------------------------------

    def list_alerts(self, owner: str) -> list[dict[str, Any]]:
        return [
            {
                "fingerprint": fp,
                "rule": s.rule,
                "state": s.state,
                "labels": s.labels,
                "annotations": s.annotations,
                "active_at": s.active_at,
                "fired_at": s.fired_at or None,
                "value": s.value,
            }
            for (_, fp), s in self.alerts.items()
            if s.owner == owner
        ]

    def list_rules(self, owner: str) -> list[Rule]:
        return [r for r in self.rules.values() if r.owner == owner]

    def get_rule(self, owner: str, rule: str) -> Rule:
        found = self.rules.get(rule_key(owner, rule))
        if found is None:
            raise RuleNotFound(rule=rule)
        return found

    def stats(self) -> dict[str, Any]:
        return {
            "rules": len(self.rules),
            "alerts": len(self.alerts),
            "outbox": len(self.outbox),
            "samples": self.store.size(),
            "dropped": self.store.dropped,
            "evaluations": self.evaluations,
            "failures": self.failures,
        }

    def __repr__(self) -> str:
        return f"<RuleEngine rules={len(self.rules)} alerts={len(self.alerts)} seq={self.seq}>"


__all__ = [
    "FIRING",
    "PENDING",
    "RESOLVED",
    "AlertState",
    "Change",
    "LogQuery",
    "RuleEngine",
    "Transition",
    "matches_all",
]
