"""HTTP front of monitoring (service 9), under ``/monitor``.

Every route needs a principal: a signed-in user, or an API key holding the
route's scope (``monitor:read``, ``monitor:write`` or ``monitor:ingest``).
Rules, silences, receivers and alerts belong to the caller; another user's are
a 404. ``?owner=realm`` acts on Realm's own (default rules, runtime alerts):
the admin only. Bodies are strict (``apps.models.Body``).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Path, Query, Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from actors.auth.client import Principal
from actors.monitor.alerting import AlertIn, Inhibit, Receiver, Route
from actors.monitor.client import MonitorClient, start_watcher
from actors.monitor.model import SYSTEM_OWNER, Rule, check_labels, parse_expr
from actors.runtime.errors import Forbidden, InvalidInput, TooLarge
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.models import Body
from apps.signin import AdminUser, Scope

Reader = Annotated[Principal, Scope("monitor:read")]
Writer = Annotated[Principal, Scope("monitor:write")]
Ingester = Annotated[Principal, Scope("monitor:ingest")]
Owner = Annotated[Literal["me", "realm"], Query(description="realm: Realm's own (admin only)")]
Name = Annotated[str, Field(min_length=1, max_length=128)]
Id = Annotated[str, Path(min_length=1, max_length=200)]
LabelMap = Annotated[
    dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=1024)]],
    Field(max_length=32),
]
Matchers = Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=32)]
Seconds = Annotated[float, Field(ge=0, le=864_000)]


def check_at(at: float | None, now: float, retention_s: float) -> float:
    """A sample's or event's time: now if absent; within the retention and at most a
    minute ahead (a far-future sample would shadow every later one of its series)."""
    if at is None:
        return now
    if not now - retention_s < at <= now + 60:
        raise InvalidInput("at is unix seconds within the retention, at most 60 s ahead")
    return at


def owner_of(user: Principal, owner: str) -> str:
    if owner == "realm":
        if not user.is_admin:
            raise Forbidden("Realm's own rules and alerts are the admin's")
        return SYSTEM_OWNER
    return user.user_id


class SampleIn(Body):
    name: Name
    labels: LabelMap = Field(default_factory=dict)
    value: float
    at: float | None = Field(None, description="unix seconds; now if absent")


class Samples(Body):
    samples: list[SampleIn] = Field(..., min_length=1, max_length=10_000)


class EventBody(Body):
    name: Name
    labels: LabelMap = Field(default_factory=dict)
    severity: Literal["info", "warning", "error", "critical"] = "info"
    data: dict[str, Any] = Field(default_factory=dict, max_length=64)
    at: float | None = None


class Events(Body):
    events: list[EventBody] = Field(..., min_length=1, max_length=10_000)


class RuleIn(Body):
    id: (
        Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/\-]+$")] | None
    ) = None
    alert: Name
    expr: str | None = Field(
        None, max_length=4_096, description="PromQL-like; or give kind and fields"
    )
    kind: Literal["threshold", "absence", "event", "logql", "always"] | None = None
    input: str = Field("", max_length=128)
    matchers: Matchers = Field(default_factory=list)
    fn: Literal["avg", "max", "min", "sum", "count", "rate", "increase", "last"] = "last"
    window_s: float = Field(60.0, gt=0, le=86_400)
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">"
    threshold: float = 0.0
    by: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=32)] = Field(
        default_factory=list
    )
    query: str = Field("", max_length=4_096)
    for_s: Seconds = 0.0
    keep_firing_for_s: Seconds = 0.0
    labels: LabelMap = Field(default_factory=dict)
    annotations: LabelMap = Field(default_factory=dict)

    def rule(self, owner: str) -> Rule:
        fields: dict[str, Any] = self.model_dump(
            exclude={"id", "expr", "alert", "labels", "annotations", "for_s", "keep_firing_for_s"}
        )
        if self.expr is not None:
            fields = parse_expr(self.expr)
        elif self.kind is None:
            fields["kind"] = "threshold"
        return Rule(
            id=self.id or uuid.uuid4().hex,
            owner=owner,
            alert=self.alert,
            for_s=self.for_s,
            keep_firing_for_s=self.keep_firing_for_s,
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            **fields,
        )


class RuleFile(Body):
    yaml: str = Field(..., min_length=1, max_length=1_000_000)


class AlertBody(Body):
    """One alert, as Alertmanager's ``POST /api/v2/alerts`` takes it (times in unix seconds)."""

    labels: LabelMap
    annotations: LabelMap = Field(default_factory=dict)
    startsAt: float | None = None
    endsAt: float | None = None


class RouteIn(Body):
    receiver: str = Field("", max_length=128)
    matchers: Matchers = Field(default_factory=list)
    group_by: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=32)] = Field(
        default_factory=list
    )
    group_wait_s: Seconds | None = None
    group_interval_s: Seconds | None = None
    repeat_interval_s: Seconds | None = None
    continue_: bool = Field(False, alias="continue")
    routes: Annotated[list[RouteIn], Field(max_length=100)] = Field(default_factory=list)

    model_config = {"strict": True, "extra": "forbid", "populate_by_name": True}

    def route(self) -> Route:
        return Route(
            self.receiver,
            list(self.matchers),
            list(self.group_by),
            self.group_wait_s,
            self.group_interval_s,
            self.repeat_interval_s,
            self.continue_,
            [r.route() for r in self.routes],
        )


class ReceiverIn(Body):
    name: Name
    kind: Literal["webhook", "pubsub", "push", "chat", "none"]
    target: str = Field("", max_length=2_048, description="webhook URL, topic name or chat room id")
    secret: str = Field(
        "", max_length=256, description="webhook HMAC-SHA256 secret (one is made if empty)"
    )
    send_resolved: bool = True


class InhibitIn(Body):
    source_matchers: Matchers
    target_matchers: Matchers
    equal: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=32)] = Field(
        default_factory=list
    )


class ConfigIn(Body):
    route: RouteIn
    receivers: Annotated[list[ReceiverIn], Field(max_length=50)] = Field(default_factory=list)
    inhibit_rules: Annotated[list[InhibitIn], Field(max_length=100)] = Field(default_factory=list)


class SilenceIn(Body):
    matchers: Matchers = Field(..., min_length=1)
    starts_at: float | None = None
    ends_at: float
    comment: str = Field("", max_length=1_024)


class Accepted(BaseModel):
    accepted: int


def make_app(client: MonitorClient, settings: Settings) -> FastAPI:
    app = service_app(
        "monitor",
        description="Rules over samples, events and logs; alerts with grouping, routing, "
        "silences, inhibition and acknowledgements; Realm's own runtime as input.",
        settings=settings,
    )

    @app.post("/samples", status_code=202)
    async def samples(body: Samples, user: Ingester, owner: Owner = "me") -> Accepted:
        now = time.time()
        keep = client.config.retention_s
        batch = [
            (s.name, check_labels(dict(s.labels)), check_at(s.at, now, keep), s.value)
            for s in body.samples
        ]
        return Accepted(accepted=await client.ingest(owner_of(user, owner), batch))

    @app.post("/events", status_code=202)
    async def events(body: Events, user: Ingester, owner: Owner = "me") -> Accepted:
        now, keep, most = time.time(), client.config.retention_s, client.config.max_event_data_bytes
        batch = []
        for e in body.events:
            if len(orjson.dumps(e.data)) > most:
                raise TooLarge(f"an event's data is at most {most} bytes as JSON", limit=most)
            labels = {**check_labels(dict(e.labels)), "severity": e.severity}
            batch.append((e.name, labels, check_at(e.at, now, keep), e.data))
        return Accepted(accepted=await client.events(owner_of(user, owner), batch))

    @app.post("/rules", status_code=201)
    async def put_rule(
        body: RuleIn, user: Writer, response: Response, owner: Owner = "me"
    ) -> dict[str, Any]:
        made = await client.put_rule(owner_of(user, owner), body.rule(owner_of(user, owner)))
        if not made["created"]:
            response.status_code = 200
        return made

    @app.post("/rules/file", status_code=201)
    async def rule_file(body: RuleFile, user: Writer, owner: Owner = "me") -> dict[str, Any]:
        return {"ids": await client.load_rules(owner_of(user, owner), body.yaml)}

    @app.get("/rules")
    async def rules(user: Reader, owner: Owner = "me") -> dict[str, Any]:
        return {"rules": [vars(r) for r in await client.rules(owner_of(user, owner))]}

    @app.get("/rules/{rule_id:path}")
    async def rule(rule_id: Id, user: Reader, owner: Owner = "me") -> dict[str, Any]:
        return vars(await client.rule(owner_of(user, owner), rule_id))

    @app.delete("/rules/{rule_id:path}", status_code=204)
    async def delete_rule(rule_id: Id, user: Writer, owner: Owner = "me") -> Response:
        await client.delete_rule(owner_of(user, owner), rule_id)
        return Response(status_code=204)

    @app.post("/alerts", status_code=202)
    async def post_alerts(
        body: Annotated[list[AlertBody], Field(min_length=1, max_length=10_000)],
        user: Ingester,
        owner: Owner = "me",
    ) -> Accepted:
        alerts = [
            AlertIn(
                check_labels(dict(a.labels)),
                dict(a.annotations),
                a.startsAt or 0.0,
                a.endsAt or 0.0,
            )
            for a in body
        ]
        return Accepted(accepted=await client.post_alerts(owner_of(user, owner), alerts))

    @app.get("/alerts")
    async def alerts(user: Reader, owner: Owner = "me") -> dict[str, Any]:
        return await client.alerts(owner_of(user, owner))

    @app.post("/alerts/{fingerprint}/ack", status_code=204)
    async def ack(
        fingerprint: Annotated[str, Path(min_length=1, max_length=64)],
        user: Writer,
        owner: Owner = "me",
    ) -> Response:
        await client.ack(owner_of(user, owner), fingerprint, user.username or user.user_id)
        return Response(status_code=204)

    @app.get("/groups")
    async def groups(user: Reader, owner: Owner = "me") -> dict[str, Any]:
        return {"groups": await client.groups(owner_of(user, owner))}

    @app.put("/config")
    async def configure(body: ConfigIn, user: Writer, owner: Owner = "me") -> dict[str, Any]:
        receivers = [
            Receiver(r.name, r.kind, r.target, r.secret or uuid.uuid4().hex, r.send_resolved)
            for r in body.receivers
        ]
        inhibit = [
            Inhibit(list(i.source_matchers), list(i.target_matchers), list(i.equal))
            for i in body.inhibit_rules
        ]
        groups = await client.configure(
            owner_of(user, owner), body.route.route(), receivers, inhibit
        )
        secrets = {r.name: r.secret for r in receivers if r.kind == "webhook"}
        return {"groups": groups, "webhook_secrets": secrets}

    @app.get("/config")
    async def configuration(user: Reader, owner: Owner = "me") -> dict[str, Any]:
        found = await client.configuration(owner_of(user, owner))
        return {
            "route": found["route"],
            "receivers": [vars(r) for r in found["receivers"]],
            "inhibit_rules": [vars(i) for i in found["inhibit"]],
        }

    @app.post("/silences", status_code=201)
    async def silence(body: SilenceIn, user: Writer, owner: Owner = "me") -> dict[str, str]:
        made = await client.silence(
            owner_of(user, owner),
            matchers=list(body.matchers),
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            by=user.username or user.user_id,
            comment=body.comment,
        )
        return {"id": made}

    @app.get("/silences")
    async def silences(user: Reader, owner: Owner = "me") -> dict[str, Any]:
        return {"silences": await client.silences(owner_of(user, owner))}

    @app.delete("/silences/{silence_id}", status_code=204)
    async def expire(
        silence_id: Annotated[str, Path(min_length=1, max_length=64)],
        user: Writer,
        owner: Owner = "me",
    ) -> Response:
        await client.expire_silence(owner_of(user, owner), silence_id)
        return Response(status_code=204)

    @app.get("/stats")
    async def stats(user: AdminUser) -> dict[str, Any]:
        return await client.stats()

    return app


class _Client(MonitorClient):
    async def start(self) -> None:
        await super().start()
        await start_watcher(self.settings)


@serve.deployment
@serve.ingress()
class MonitorIngress(ClientIngress):
    make_client = staticmethod(_Client)
    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(MonitorIngress, settings)
