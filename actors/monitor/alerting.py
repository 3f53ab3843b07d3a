"""``AlertManager``: alerts, routing, grouping, silences, inhibition, acks, notices.

It follows Prometheus Alertmanager's model: an alert is a label set with a
status, deduplicated by fingerprint. Each alert is routed down its owner's
routing tree (a route matches with its matchers; the first matching child
takes it unless it says ``continue``), and lands in the aggregation group of
that route and its ``group_by`` labels. A group is first flushed
``group_wait`` after it formed, then looked at every ``group_interval``; it
notifies its receiver when its firing set grew or changed, when alerts
resolved (``send_resolved``), or ``repeat_interval`` after the last
notification. Silenced and inhibited alerts are left out. An acknowledged
alert (who, when) does not make a group repeat until it resolves. What was
notified is journaled (Alertmanager's notification log), so a restart does not
notify again what was already sent.

All times are wall-clock seconds, passed in, so replay is deterministic.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from actors.monitor.errors import (
    AlertNotFound,
    BadRule,
    MonitorLimit,
    ReceiverNotFound,
    SilenceNotFound,
)
from actors.monitor.evaluator import FIRING, RESOLVED, Transition
from actors.monitor.model import Labels, Matcher, fingerprint, matches_all, parse_matcher
from actors.monitor.settings import MonitorSettings
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.journal import Durable

log = logging.getLogger(__name__)
RECEIVER_KINDS = ("webhook", "pubsub", "push", "chat", "none")


@dataclass
class Route:
    receiver: str = ""
    matchers: list[str] = field(default_factory=list)
    group_by: list[str] = field(default_factory=list)  #: ["..."]: every label
    group_wait_s: float | None = None
    group_interval_s: float | None = None
    repeat_interval_s: float | None = None
    continue_: bool = False
    routes: list[Route] = field(default_factory=list)


@dataclass
class Receiver:
    name: str
    kind: str
    target: str = ""  #: webhook URL, topic, room id (push: the owner's own devices)
    secret: str = ""
    send_resolved: bool = True


@dataclass
class Inhibit:
    source: list[str]
    target: list[str]
    equal: list[str] = field(default_factory=list)


@dataclass
class Silence:
    id: str
    matchers: list[str]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str = ""
    started: bool = False  #: its start notice was sent
    ended: bool = False  #: its end notice was sent


@dataclass
class Alert:
    fingerprint: str
    labels: Labels
    annotations: Labels
    starts_at: float
    ends_at: float  #: 0: open (fires until resolved)
    status: str
    updated_at: float
    rule: str = ""
    acked_by: str = ""
    acked_at: float = 0.0


@dataclass
class Group:
    key: str
    route: str  #: path of the route in the tree, e.g. "0.1"
    receiver: str
    labels: Labels
    alerts: list[str]
    next_flush: float
    last_firing: list[str] = field(default_factory=list)
    last_resolved: list[str] = field(default_factory=list)
    last_notify: float = 0.0
    notified: int = 0


@dataclass
class Tenant:
    owner: str
    route: Route
    receivers: dict[str, Receiver] = field(default_factory=dict)
    inhibit: list[Inhibit] = field(default_factory=list)
    alerts: dict[str, Alert] = field(default_factory=dict)
    silences: dict[str, Silence] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)


@dataclass
class ManagerState:
    tenants: list[Tenant]
    sources: dict[str, int]


@dataclass
class AlertIn:
    labels: Labels
    annotations: Labels
    starts_at: float
    ends_at: float  #: 0: none given


Notify = Callable[[str, Receiver, dict[str, Any]], Awaitable[None]]


def effective(route: Route, parent: Route | None, config: MonitorSettings) -> Route:
    """``route`` with what it does not set taken from ``parent`` (or the defaults)."""
    base = parent or Route(
        group_wait_s=config.default_group_wait_s,
        group_interval_s=config.default_group_interval_s,
        repeat_interval_s=config.default_repeat_interval_s,
    )
    return Route(
        receiver=route.receiver or base.receiver,
        matchers=route.matchers,
        group_by=route.group_by or base.group_by,
        group_wait_s=base.group_wait_s if route.group_wait_s is None else route.group_wait_s,
        group_interval_s=base.group_interval_s
        if route.group_interval_s is None
        else route.group_interval_s,
        repeat_interval_s=base.repeat_interval_s
        if route.repeat_interval_s is None
        else route.repeat_interval_s,
        continue_=route.continue_,
        routes=route.routes,
    )


def match_routes(root: Route, labels: Labels, config: MonitorSettings) -> list[tuple[str, Route]]:
    """The routes (path, effective route) ``labels`` goes to, as Alertmanager walks them."""

    def walk(route: Route, parent: Route | None, path: str) -> list[tuple[str, Route]]:
        eff = effective(route, parent, config)
        if not matches_all([parse_matcher(m) for m in route.matchers], labels):
            return []
        found: list[tuple[str, Route]] = []
        for index, child in enumerate(route.routes):
            got = walk(child, eff, f"{path}.{index}")
            found.extend(got)
            if got and not child.continue_:
                break
        return found or [(path, eff)]

    return walk(root, None, "0")


def check_route(route: Route, receivers: dict[str, Receiver], depth: int = 0) -> int:
    """How many routes the tree holds; ``BadRule`` if it names unknown receivers."""
    if depth > 10:
        raise BadRule("a routing tree is at most 10 deep")
    if route.receiver and route.receiver not in receivers:
        raise BadRule(f"route names an unknown receiver {route.receiver[:64]!r}")
    if depth == 0 and route.matchers:
        raise BadRule("the root route matches every alert (it takes no matchers)")
    for m in route.matchers:
        parse_matcher(m)
    for value in (route.group_wait_s, route.group_interval_s, route.repeat_interval_s):
        if value is not None and not 0 <= value <= 864_000:
            raise BadRule("route timings are 0 to 864000 s")
    count = 1 + sum(check_route(child, receivers, depth + 1) for child in route.routes)
    if count > 1_000:
        raise BadRule("a routing tree holds at most 1000 routes")
    return count


def iso(t: float) -> str:
    import datetime

    if t <= 0:
        return "0001-01-01T00:00:00Z"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


class AlertManager(Durable):
    def __init__(
        self, config: MonitorSettings, *, clock: Clock | None = None, notify: Notify | None = None
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.notify = notify
        self.tenants: dict[str, Tenant] = {}
        self.sources: dict[str, int] = {}  #: evaluator -> last transition applied
        self.sent = 0  #: notifications sent
        self.failed = 0  #: notifications that failed (tried again next flush)
        self._busy: set[tuple[str, str]] = set()

    # --- durable state ---------------------------------------------------------------

    def snapshot_state(self) -> ManagerState:
        return ManagerState(list(self.tenants.values()), dict(self.sources))

    def state_size(self) -> int:
        return sum(len(t.alerts) + len(t.groups) + len(t.silences) for t in self.tenants.values())

    def restore_state(self, state: ManagerState) -> None:
        self.tenants = {t.owner: t for t in state.tenants}
        self.sources = dict(state.sources)

    def tenant(self, owner: str) -> Tenant:
        found = self.tenants.get(owner)
        if found is None:
            found = self.tenants[owner] = Tenant(owner, Route(receiver=""))
        return found

    # --- operations (journaled) ----------------------------------------------------------

    def apply_configure(
        self, owner: str, route: Route, receivers: list[Receiver], inhibit: list[Inhibit], at: float
    ) -> int:
        tenant = self.tenant(owner)
        by_name = {r.name: r for r in receivers}
        check_route(route, by_name)
        tenant.route, tenant.receivers, tenant.inhibit = route, by_name, inhibit
        tenant.groups = {}
        for alert in tenant.alerts.values():
            self._place(tenant, alert, at)
        return len(tenant.groups)

    def apply_transitions(self, source: str, transitions: list[Transition], at: float) -> int:
        """Alerts from an evaluator: each numbered transition applied once."""
        done = self.sources.get(source, 0)
        applied = 0
        for t in transitions:
            if t.seq <= done:
                continue
            done = t.seq
            applied += 1
            tenant = self.tenant(t.owner)
            ends = t.ends_at if t.status == RESOLVED else 0.0
            self._upsert(
                tenant, AlertIn(t.labels, t.annotations, t.starts_at, ends), at, rule=t.rule
            )
        self.sources[source] = done
        return applied

    def apply_post(self, owner: str, alerts: list[AlertIn], at: float) -> int:
        """Alerts pushed as to Alertmanager's ``/api/v2/alerts``: an ``ends_at`` in the
        past resolves; none means open until ``resolve_timeout_s`` after this push."""
        tenant = self.tenant(owner)
        new = sum(1 for a in alerts if fingerprint(a.labels) not in tenant.alerts)
        if len(tenant.alerts) + new > self.config.max_alerts_per_owner:
            raise MonitorLimit(f"an owner holds at most {self.config.max_alerts_per_owner} alerts")
        for alert in alerts:
            ends = alert.ends_at or at + self.config.resolve_timeout_s
            self._upsert(
                tenant, AlertIn(alert.labels, alert.annotations, alert.starts_at, ends), at
            )
        return len(alerts)

    def _upsert(self, tenant: Tenant, given: AlertIn, at: float, *, rule: str = "") -> None:
        fp = fingerprint(given.labels)
        status = RESOLVED if 0 < given.ends_at <= at else FIRING
        alert = tenant.alerts.get(fp)
        if alert is None or (alert.status == RESOLVED and status == FIRING):
            alert = Alert(
                fp,
                given.labels,
                given.annotations,
                given.starts_at or at,
                given.ends_at,
                status,
                at,
                rule,
            )
            tenant.alerts[fp] = alert
        else:
            alert.annotations, alert.ends_at, alert.updated_at = (
                given.annotations,
                given.ends_at,
                at,
            )
            if status == RESOLVED and alert.status == FIRING:
                alert.status = RESOLVED
                alert.acked_by, alert.acked_at = "", 0.0
        self._place(tenant, alert, at)

    def _place(self, tenant: Tenant, alert: Alert, at: float) -> None:
        for path, route in match_routes(tenant.route, alert.labels, self.config):
            if route.group_by == ["..."]:
                labels = dict(alert.labels)
            else:
                labels = {k: alert.labels[k] for k in route.group_by if k in alert.labels}
            key = f"{path}:{fingerprint(labels)}"
            group = tenant.groups.get(key)
            if group is None:
                if alert.status == RESOLVED:
                    continue  # a resolved alert does not open a group
                group = tenant.groups[key] = Group(
                    key, path, route.receiver, labels, [], at + (route.group_wait_s or 0.0)
                )
            if alert.fingerprint not in group.alerts:
                group.alerts.append(alert.fingerprint)

    def apply_expire_alerts(self, at: float) -> int:
        """Alerts pushed without an end resolve once their ``ends_at`` passed."""
        count = 0
        for tenant in self.tenants.values():
            for alert in tenant.alerts.values():
                if alert.status == FIRING and 0 < alert.ends_at <= at:
                    alert.status, alert.acked_by, alert.acked_at = RESOLVED, "", 0.0
                    count += 1
        return count

    def apply_silence(self, owner: str, silence: Silence) -> str:
        tenant = self.tenant(owner)
        active = sum(1 for s in tenant.silences.values() if not s.ended)
        if silence.id not in tenant.silences and active >= self.config.max_silences_per_owner:
            raise MonitorLimit(
                f"an owner holds at most {self.config.max_silences_per_owner} silences"
            )
        tenant.silences[silence.id] = silence
        return silence.id

    def apply_expire_silence(self, owner: str, silence: str, at: float) -> bool:
        found = self.tenant(owner).silences.get(silence)
        if found is None:
            raise SilenceNotFound(silence=silence)
        found.ends_at = min(found.ends_at, at)
        return True

    def apply_ack(self, owner: str, fp: str, who: str, at: float) -> bool:
        alert = self.tenant(owner).alerts.get(fp)
        if alert is None or alert.status != FIRING:
            raise AlertNotFound(fingerprint=fp)
        alert.acked_by, alert.acked_at = who, at
        return True

    def apply_notified(
        self, owner: str, group: str, firing: list[str], resolved: list[str], at: float
    ) -> int:
        tenant = self.tenant(owner)
        found = tenant.groups.get(group)
        if found is None:
            return 0
        found.last_firing, found.last_resolved, found.last_notify = firing, resolved, at
        found.notified += 1
        self._drop_resolved(tenant, found, resolved)
        return found.notified

    def apply_flushed(self, owner: str, group: str, next_flush: float, drop: list[str]) -> bool:
        tenant = self.tenant(owner)
        found = tenant.groups.get(group)
        if found is not None:
            found.next_flush = next_flush
            self._drop_resolved(tenant, found, drop)
        return True

    def apply_silence_notice(self, owner: str, silence: str, which: str) -> bool:
        found = self.tenant(owner).silences.get(silence)
        if found is not None:
            if which == "started":
                found.started = True
            else:
                found.ended = True
        return True

    def _drop_resolved(self, tenant: Tenant, group: Group, resolved: list[str]) -> None:
        gone = set(resolved)
        group.alerts = [fp for fp in group.alerts if fp not in gone]
        group.last_firing = [fp for fp in group.last_firing if fp not in gone]
        if not group.alerts:
            del tenant.groups[group.key]
        for fp in gone:
            alert = tenant.alerts.get(fp)
            if (
                alert is not None
                and alert.status == RESOLVED
                and not any(fp in g.alerts for g in tenant.groups.values())
            ):
                del tenant.alerts[fp]

    # --- suppression ----------------------------------------------------------------------

    def silenced_by(self, tenant: Tenant, alert: Alert, now: float) -> list[str]:
        return [
            s.id
            for s in tenant.silences.values()
            if s.starts_at <= now < s.ends_at
            and matches_all([parse_matcher(m) for m in s.matchers], alert.labels)
        ]

    def inhibited(self, tenant: Tenant, alert: Alert) -> bool:
        for rule in tenant.inhibit:
            target = [parse_matcher(m) for m in rule.target]
            if not matches_all(target, alert.labels):
                continue
            source = [parse_matcher(m) for m in rule.source]
            for other in tenant.alerts.values():
                if other.fingerprint == alert.fingerprint or other.status != FIRING:
                    continue
                if (
                    matches_all(source, other.labels)
                    and all(other.labels.get(k) == alert.labels.get(k) for k in rule.equal)
                    and (
                        not matches_all(target, other.labels)
                        or not matches_all(source, alert.labels)
                    )
                ):
                    return True
        return False

    def muted(self, tenant: Tenant, alert: Alert, now: float) -> bool:
        return bool(self.silenced_by(tenant, alert, now)) or self.inhibited(tenant, alert)

    # --- flushing --------------------------------------------------------------------------

    def due(
        self, now: float
    ) -> list[tuple[Tenant, Group, dict[str, Any] | None, list[str], list[str], float]]:
        """Groups whose flush time came: each with its notification (None: nothing to
        send), its firing and resolved fingerprints, and its next flush time."""
        found = []
        for tenant in self.tenants.values():
            for group in list(tenant.groups.values()):
                if group.next_flush > now or (tenant.owner, group.key) in self._busy:
                    continue
                route = self._route_of(tenant, group.route)
                receiver = tenant.receivers.get(group.receiver)
                firing: list[str] = []
                resolved: list[str] = []
                for fp in group.alerts:
                    alert = tenant.alerts.get(fp)
                    if alert is None:
                        continue
                    if alert.status == RESOLVED:
                        resolved.append(fp)
                    elif not self.muted(tenant, alert, now):
                        firing.append(fp)
                send_resolved = receiver is None or receiver.send_resolved
                was = set(group.last_firing)
                shown_resolved = [fp for fp in resolved if fp in was] if send_resolved else []
                needs = (
                    not set(firing) <= was
                    or (bool(was) and not firing)
                    or bool(shown_resolved)
                    or (
                        bool(firing)
                        and now - group.last_notify >= (route.repeat_interval_s or 0.0)
                        and any(not tenant.alerts[fp].acked_by for fp in firing)
                    )
                )
                if not firing and not shown_resolved:
                    needs = False
                payload = (
                    self.payload(tenant, group, firing, shown_resolved, receiver) if needs else None
                )
                found.append(
                    (
                        tenant,
                        group,
                        payload,
                        firing,
                        resolved,
                        now + (route.group_interval_s or 0.0),
                    )
                )
        return found

    def _route_of(self, tenant: Tenant, path: str) -> Route:
        route, eff = tenant.route, effective(tenant.route, None, self.config)
        for index in path.split(".")[1:]:
            route = route.routes[int(index)]
            eff = effective(route, eff, self.config)
        return eff

    def payload(
        self,
        tenant: Tenant,
        group: Group,
        firing: list[str],
        resolved: list[str],
        receiver: Receiver | None,
    ) -> dict[str, Any]:
        """Alertmanager's webhook body (version 4), with Realm's acknowledgements."""
        alerts = [tenant.alerts[fp] for fp in firing + resolved]
        common = dict(alerts[0].labels) if alerts else {}
        annotations = dict(alerts[0].annotations) if alerts else {}
        for alert in alerts[1:]:
            common = {k: v for k, v in common.items() if alert.labels.get(k) == v}
            annotations = {k: v for k, v in annotations.items() if alert.annotations.get(k) == v}
        return {
            "version": "4",
            "groupKey": f"{group.route}:{group.labels}",
            "truncatedAlerts": 0,
            "status": FIRING if firing else RESOLVED,
            "receiver": receiver.name if receiver else "",
            "groupLabels": group.labels,
            "commonLabels": common,
            "commonAnnotations": annotations,
            "externalURL": "",
            "alerts": [
                {
                    "status": a.status,
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": iso(a.starts_at),
                    "endsAt": iso(a.ends_at if a.status == RESOLVED else 0),
                    "generatorURL": "",
                    "fingerprint": a.fingerprint,
                    "acknowledged": {"by": a.acked_by, "at": iso(a.acked_at)}
                    if a.acked_by
                    else None,
                }
                for a in alerts
            ],
        }

    async def flush(self, now: float | None = None) -> int:
        """Expire what ended, send silence notices, and flush every due group; the
        number of notifications sent."""
        now = self.clock.time() if now is None else now
        if any(
            a.status == FIRING and 0 < a.ends_at <= now
            for t in self.tenants.values()
            for a in t.alerts.values()
        ):
            await self.execute("expire_alerts", at=now)
        sent = await self._silence_notices(now)
        jobs = []
        for tenant, group, payload, firing, resolved, next_flush in self.due(now):
            jobs.append(
                self._flush_group(tenant, group, payload, firing, resolved, next_flush, now)
            )
        results = await asyncio.gather(*jobs)
        return sent + sum(results)

    async def _flush_group(
        self,
        tenant: Tenant,
        group: Group,
        payload: dict[str, Any] | None,
        firing: list[str],
        resolved: list[str],
        next_flush: float,
        now: float,
    ) -> int:
        owner = tenant.owner
        if payload is None:
            if resolved:
                self.record(
                    "flushed", owner=owner, group=group.key, next_flush=next_flush, drop=resolved
                )
            else:
                # Only the time of the next look moves: no record for it (one per group
                # per group_interval would be most of the journal). After a restart the
                # group is looked at once more and, nothing having changed, sends nothing.
                self.apply_flushed(owner, group.key, next_flush, [])
            return 0
        receiver = tenant.receivers.get(group.receiver)
        self._busy.add((owner, group.key))
        try:
            if receiver is not None and receiver.kind != "none" and self.notify is not None:
                await self.notify(owner, receiver, payload)
            await self.execute(
                "notified", owner=owner, group=group.key, firing=firing, resolved=resolved, at=now
            )
            self.record(
                "flushed", owner=owner, group=group.key, next_flush=next_flush, drop=resolved
            )
            self.sent += 1
            return 1
        except Exception as error:
            self.failed += 1
            log.warning("notification of %s to %s failed: %r", group.key, group.receiver, error)
            return 0
        finally:
            self._busy.discard((owner, group.key))

    async def _silence_notices(self, now: float) -> int:
        sent = 0
        for tenant in list(self.tenants.values()):
            for silence in list(tenant.silences.values()):
                which = ""
                if not silence.started and silence.starts_at <= now < silence.ends_at:
                    which = "started"
                elif not silence.ended and silence.ends_at <= now:
                    which = "expired"
                if not which:
                    continue
                receiver = tenant.receivers.get(tenant.route.receiver)
                if receiver is not None and receiver.kind != "none" and self.notify is not None:
                    notice = {
                        "version": "4",
                        "kind": "silence",
                        "status": which,
                        "receiver": receiver.name,
                        "silence": self.silence_view(silence, now),
                    }
                    try:
                        await self.notify(tenant.owner, receiver, notice)
                        sent += 1
                    except Exception as error:
                        log.warning("silence notice to %s failed: %r", receiver.name, error)
                        continue
                await self.execute(
                    "silence_notice", owner=tenant.owner, silence=silence.id, which=which
                )
                if which == "expired":
                    silence.started = True
        return sent

    # --- reads ------------------------------------------------------------------------------

    def silence_view(self, silence: Silence, now: float) -> dict[str, Any]:
        state = (
            "pending"
            if now < silence.starts_at
            else "active"
            if now < silence.ends_at
            else "expired"
        )
        return {
            "id": silence.id,
            "matchers": silence.matchers,
            "starts_at": silence.starts_at,
            "ends_at": silence.ends_at,
            "created_by": silence.created_by,
            "comment": silence.comment,
            "state": state,
        }

    def list_alerts(self, owner: str, now: float) -> list[dict[str, Any]]:
        tenant = self.tenants.get(owner)
        if tenant is None:
            return []
        return [
            {
                "fingerprint": a.fingerprint,
                "labels": a.labels,
                "annotations": a.annotations,
                "status": a.status,
                "starts_at": a.starts_at,
                "ends_at": a.ends_at or None,
                "silenced_by": self.silenced_by(tenant, a, now),
                "inhibited": self.inhibited(tenant, a),
                "acked_by": a.acked_by or None,
                "acked_at": a.acked_at or None,
            }
            for a in tenant.alerts.values()
        ]

    def list_silences(self, owner: str, now: float) -> list[dict[str, Any]]:
        tenant = self.tenants.get(owner)
        return [self.silence_view(s, now) for s in tenant.silences.values()] if tenant else []

    def list_groups(self, owner: str) -> list[dict[str, Any]]:
        tenant = self.tenants.get(owner)
        if tenant is None:
            return []
        return [
            {
                "key": g.key,
                "receiver": g.receiver,
                "labels": g.labels,
                "alerts": g.alerts,
                "notified": g.notified,
            }
            for g in tenant.groups.values()
        ]

    def receiver(self, owner: str, name: str) -> Receiver:
        found = self.tenant(owner).receivers.get(name)
        if found is None:
            raise ReceiverNotFound(receiver=name)
        return found

    def configuration(self, owner: str) -> dict[str, Any]:
        tenant = self.tenant(owner)
        return {
            "route": tenant.route,
            "receivers": [
                Receiver(r.name, r.kind, r.target, "", r.send_resolved)
                for r in tenant.receivers.values()
            ],
            "inhibit": tenant.inhibit,
        }

    @staticmethod
    def new_silence(
        matchers: list[Matcher], starts_at: float, ends_at: float, by: str, comment: str
    ) -> Silence:
        return Silence(
            uuid.uuid4().hex, [str(m) for m in matchers], starts_at, ends_at, by, comment
        )

    def __repr__(self) -> str:
        return f"<AlertManager tenants={len(self.tenants)} sent={self.sent} failed={self.failed}>"


__all__ = [
    "AlertIn",
    "AlertManager",
    "Group",
    "Inhibit",
    "Receiver",
    "Route",
    "Silence",
    "Tenant",
    "iso",
    "match_routes",
]
