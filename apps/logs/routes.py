"""HTTP routes of the logs service: push, query, labels, deletes, retention, limits.

Two shapes: Realm's own (``/logs/push``, ``/logs/query``...), and Loki's HTTP API
where it is cheap (``/logs/loki/api/v1/push``, ``query``, ``query_range``,
``labels``, ``label/{name}/values``), so Loki's clients and Grafana can point at
Realm. The tenant is the caller (the user, or the API key's user); the admin may
name Realm's own tenant, ``realm``, with ``?tenant=realm`` or Loki's
``X-Scope-OrgID: realm``.
"""

from __future__ import annotations

import gzip
import time
import zlib
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from actors.auth.client import Principal
from actors.logs.client import LIMIT_NAMES, LogsClient
from actors.logs.errors import BadEntry, BadQuery
from actors.logs.logql import (
    MAX_QUERY_CHARS,
    LogQuery,
    MetricQuery,
    parse,
    parse_duration,
    parse_log,
)
from actors.logs.model import REALM_TENANT
from actors.logs.settings import LogsSettings
from actors.runtime.errors import Forbidden, InvalidInput
from apps.logs import loki_proto
from apps.models import Body
from apps.signin import AdminUser, Scope

Pusher = Annotated[Principal, Scope("logs:push")]
Reader = Annotated[Principal, Scope("logs:read")]
Deleter = Annotated[Principal, Scope("logs:delete")]
NS = 1_000_000_000
LabelName = Annotated[
    str, Field(min_length=1, max_length=1_024, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
LabelValue = Annotated[str, Field(min_length=1, max_length=2_048)]
Line = Annotated[str, Field(max_length=16 * 1024 * 1024)]
QueryText = Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)]
TimeText = Annotated[str | None, Query(max_length=40)]
TenantParam = Annotated[
    str | None,
    Query(max_length=64, description="the admin only: `realm`, Realm's own logs"),
]
OrgHeader = Annotated[str | None, Header(alias="X-Scope-OrgID", max_length=64)]
Limit = Annotated[int, Query(ge=1, le=100_000, description="at most REALM_LOGS_MAX_QUERY_ENTRIES")]
Direction = Annotated[Literal["forward", "backward"], Query()]


def tenant_of(principal: Principal, *asked: str | None) -> str:
    """The caller's tenant, or Realm's own for the admin who asks for it."""
    wanted = next((a for a in asked if a), None)
    if wanted is None or wanted == principal.user_id:
        return principal.user_id
    if wanted == REALM_TENANT and principal.is_admin:
        return REALM_TENANT
    raise Forbidden("a caller reads its own logs; the admin may read tenant 'realm'")


def parse_time(text: str | None, default_ns: int) -> int:
    """Nanoseconds since the epoch from Loki's forms: nanoseconds (an integer of 16 or
    more digits), seconds (a number), or RFC 3339."""
    if text is None or text == "":
        return default_ns
    try:
        if text.isdigit() and len(text) >= 16:
            return int(text)
        return int(float(text) * NS)
    except ValueError:
        pass
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * NS)
    except ValueError:
        raise InvalidInput(f"not a time: {text[:40]!r}") from None


def parse_step(text: str | None, start_ns: int, end_ns: int) -> int:
    if not text:
        return max(NS, (end_ns - start_ns) // 250 // NS * NS)  # about 250 points, Grafana-like
    try:
        seconds = float(text)
    except ValueError:
        seconds = parse_duration(text)
    if not 0 < seconds < 1e9:
        raise BadQuery("step is a positive duration")
    return int(seconds * NS)


# --- bodies -------------------------------------------------------------------------


class EntryIn(Body):
    ts: int | None = Field(
        None, gt=0, lt=2**63, description="nanoseconds since the epoch; now if omitted"
    )
    line: Line
    metadata: dict[LabelName, Annotated[str, Field(max_length=2_048)]] | None = Field(
        None, max_length=64
    )


class StreamIn(Body):
    labels: dict[LabelName, LabelValue] = Field(..., min_length=1, max_length=64)
    entries: list[EntryIn] = Field(..., max_length=1_000_000)


class PushIn(Body):
    streams: list[StreamIn] = Field(..., max_length=10_000)


class PushOut(BaseModel):
    accepted: int
    too_far_behind: int = 0
    too_far_ahead: int = 0


class LokiStream(Body):
    stream: dict[LabelName, LabelValue] = Field(..., min_length=1, max_length=64)
    values: list[Annotated[list[str | dict[str, str]], Field(min_length=2, max_length=3)]] = Field(
        ..., max_length=1_000_000, description='[["<ns>", "line"], ["<ns>", "line", {metadata}]]'
    )


class LokiPush(Body):
    streams: list[LokiStream] = Field(..., max_length=10_000)


LOKI_PUSH = TypeAdapter(LokiPush)


class DeleteIn(Body):
    query: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS)
    start: int = Field(..., ge=0, lt=2**63, description="nanoseconds since the epoch")
    end: int = Field(..., gt=0, lt=2**63, description="nanoseconds since the epoch (excluded)")


class RuleIn(Body):
    selector: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS)
    retention_s: float = Field(..., gt=0, le=1e10)


class RetentionIn(Body):
    retention_s: float | None = Field(None, gt=0, le=1e10)
    rules: list[RuleIn] = Field(default_factory=list, max_length=1_000)


class LimitsIn(Body):
    limits: dict[Literal[LIMIT_NAMES], Annotated[float, Field(gt=0, le=1e15)]] = Field(  # type: ignore[valid-type]
        default_factory=dict
    )


def _results(
    found: list[tuple[dict[str, str], int, str, dict[str, str], int]],
) -> list[dict[str, Any]]:
    """Entries grouped into Loki's streams (each stream's values in the given order)."""
    streams: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
    for labels, ts, line, metadata, _ in found:
        value: list[Any] = [str(ts), line]
        if metadata:
            value.append(metadata)
        streams.setdefault(tuple(sorted(labels.items())), []).append(value)
    return [{"stream": dict(key), "values": values} for key, values in streams.items()]


def router(client: LogsClient, config: LogsSettings) -> APIRouter:
    routes = APIRouter()

    async def do_push(
        tenant: str, streams: list[tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]]
    ) -> dict[str, int]:
        return await client.push(tenant, streams)

    @routes.post("/push", response_model=PushOut)
    async def push(body: PushIn, user: Pusher) -> dict[str, int]:
        """Push entries, stream by stream; acknowledged once journaled on their shards."""
        now = time.time_ns()
        streams = [
            (s.labels, [(e.ts or now, e.line, e.metadata or {}) for e in s.entries])
            for s in body.streams
        ]
        return await do_push(user.user_id, streams)

    @routes.post(
        "/loki/api/v1/push",
        status_code=204,
        responses={422: {"description": "Not a Loki push body, or an entry breaks a rule."}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _inlined(LokiPush.model_json_schema())},
                    "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def loki_push(request: Request, user: Pusher) -> Response:
        """Loki's push API: JSON (optionally gzip-compressed), or the snappy-compressed
        protobuf ``PushRequest`` Promtail and Alloy send by default; 204 once journaled."""
        raw = await request.body()
        encoding = request.headers.get("content-encoding", "").lower()
        if encoding in ("gzip", "deflate"):
            raw = _inflate(raw, encoding, limit=8 * len(raw) + 1_024 * 1_024)
        elif encoding not in ("", "identity"):
            raise BadEntry(f"content encoding {encoding[:20]!r} is not supported (gzip is)")
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if kind not in ("application/json", "application/x-protobuf", ""):
            raise BadEntry("a Loki push is application/json or application/x-protobuf")
        try:
            if kind == "application/x-protobuf":
                inflated = loki_proto.decompress(raw, limit=8 * len(raw) + 1_024 * 1_024)
                body = LOKI_PUSH.validate_python(loki_proto.push_request(inflated))
            else:
                body = LOKI_PUSH.validate_json(raw)
        except ValidationError as error:
            raise InvalidInput(
                "not a Loki push body",
                errors=error.errors(include_url=False, include_input=False)[:5],
            ) from None
        streams = []
        for stream in body.streams:
            entries = []
            for value in stream.values:
                ts, line, *more = value
                metadata = more[0] if more else {}
                if not isinstance(ts, str) or not ts.isdigit() or len(ts) > 19:
                    raise BadEntry("a Loki timestamp is a string of nanoseconds")
                if not isinstance(line, str) or not isinstance(metadata, dict):
                    raise BadEntry(
                        "a Loki value is [timestamp, line] or [timestamp, line, {metadata}]"
                    )
                entries.append((int(ts), line, metadata))
            streams.append((stream.stream, entries))
        await do_push(user.user_id, streams)
        return Response(status_code=204)

    def parse_query(text: str) -> Any:
        return parse(text)

    async def run_query(
        tenant: str,
        text: str,
        start_ns: int,
        end_ns: int,
        limit: int,
        direction: str,
        step: str | None,
        instant: bool = False,
    ) -> dict[str, Any]:
        query = parse_query(text)
        if isinstance(query, MetricQuery):
            step_ns = 1 if instant else parse_step(step, start_ns, end_ns)
            first = end_ns if instant else start_ns
            series = await client.metric(
                tenant, query, start_ns=first, end_ns=end_ns, step_ns=step_ns
            )
            if instant:
                vector = [
                    {"metric": labels, "value": [t, _number(v)]}
                    for labels, points in series
                    for t, v in points
                ]
                return {"status": "success", "data": {"resultType": "vector", "result": vector}}
            matrix = [
                {"metric": labels, "values": [[t, _number(v)] for t, v in points]}
                for labels, points in series
            ]
            return {"status": "success", "data": {"resultType": "matrix", "result": matrix}}
        assert isinstance(query, LogQuery)
        found = await client.select(
            tenant,
            query,
            start_ns=start_ns,
            end_ns=end_ns,
            limit=limit,
            forward=direction == "forward",
        )
        return {"status": "success", "data": {"resultType": "streams", "result": _results(found)}}

    @routes.get("/loki/api/v1/query_range")
    @routes.get("/query")
    async def query_range(
        user: Reader,
        query: QueryText,
        start: TimeText = None,
        end: TimeText = None,
        since: Annotated[str | None, Query(max_length=20)] = None,
        step: Annotated[str | None, Query(max_length=20)] = None,
        limit: Limit = 100,
        direction: Direction = "backward",
        tenant: TenantParam = None,
        org: OrgHeader = None,
    ) -> dict[str, Any]:
        """A log query (entries, ``resultType: streams``) or a metric query evaluated at
        each ``step`` (``resultType: matrix``), over ``[start, end)`` (default: the last hour,
        or ``since``)."""
        who = tenant_of(user, tenant, org)
        end_ns = parse_time(end, time.time_ns())
        back = parse_duration(since) if since else 3_600.0
        start_ns = parse_time(start, end_ns - int(back * NS))
        return await run_query(who, query, start_ns, end_ns, limit, direction, step)

    @routes.get("/loki/api/v1/query")
    async def instant_query(
        user: Reader,
        query: QueryText,
        time_: Annotated[str | None, Query(alias="time", max_length=40)] = None,
        limit: Limit = 100,
        direction: Direction = "backward",
        tenant: TenantParam = None,
        org: OrgHeader = None,
    ) -> dict[str, Any]:
        """Loki's instant query: a metric query at ``time`` (``vector``), or a log query
        over the hour before it."""
        who = tenant_of(user, tenant, org)
        at_ns = parse_time(time_, time.time_ns())
        return await run_query(
            who, query, at_ns - 3_600 * NS, at_ns, limit, direction, None, instant=True
        )

    @routes.get("/loki/api/v1/labels")
    @routes.get("/labels")
    async def labels(
        user: Reader, start: TimeText = None, end: TimeText = None,
        tenant: TenantParam = None, org: OrgHeader = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Label names of the tenant's streams with entries in the range (default: 6 hours)."""
        who = tenant_of(user, tenant, org)
        end_ns = parse_time(end, time.time_ns())
        start_ns = parse_time(start, end_ns - 6 * 3_600 * NS)
        return {
            "status": "success",
            "data": await client.labels(who, start_ns=start_ns, end_ns=end_ns),
        }

    @routes.get("/loki/api/v1/label/{name}/values")
    @routes.get("/labels/{name}/values")
    async def label_values(
        user: Reader,
        name: Annotated[str, Path(min_length=1, max_length=1_024)],
        start: TimeText = None,
        end: TimeText = None,
        query: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS)] = None,
        tenant: TenantParam = None,
        org: OrgHeader = None,
    ) -> dict[str, Any]:
        """Values of label ``name`` (of the streams ``query`` selects, if given)."""
        who = tenant_of(user, tenant, org)
        end_ns = parse_time(end, time.time_ns())
        start_ns = parse_time(start, end_ns - 6 * 3_600 * NS)
        selector = parse_log(query) if query else None
        values = await client.label_values(
            who, name, start_ns=start_ns, end_ns=end_ns, query=selector
        )
        return {"status": "success", "data": values}

    @routes.get("/stats")
    async def stats(user: Reader, tenant: TenantParam = None) -> dict[str, Any]:
        """The tenant's streams, entries, bytes (raw and stored) and discarded entries by reason."""
        return await client.stats(tenant_of(user, tenant))

    @routes.post("/deletes", status_code=202)
    async def delete(body: DeleteIn, user: Deleter) -> dict[str, Any]:
        """Delete the entries a log query selects in ``[start, end)``, pushed so far. At once
        they are hidden from queries; the compactor removes them (see the status)."""
        request = await client.delete(
            user.user_id, body.query, start_ns=body.start, end_ns=body.end
        )
        return await client.delete_status(user.user_id, request)

    @routes.get("/deletes")
    async def deletes(user: Deleter) -> dict[str, Any]:
        return {"deletes": await client.deletes(user.user_id)}

    @routes.get("/deletes/{request}")
    async def delete_status(
        user: Deleter, request: Annotated[str, Path(min_length=1, max_length=32)]
    ) -> dict[str, Any]:
        """A delete's status: ``pending`` (hidden, not yet removed everywhere) or ``done``."""
        return await client.delete_status(user.user_id, request)

    @routes.put("/retention")
    async def set_retention(body: RetentionIn, user: Deleter) -> dict[str, Any]:
        """The tenant's retention (at most the global one), and per-selector rules (the
        shortest matching rule wins). The compactor removes what falls out of it."""
        await client.set_retention(
            user.user_id, body.retention_s, [(r.selector, r.retention_s) for r in body.rules]
        )
        return await client.retention(user.user_id)

    @routes.get("/retention")
    async def retention(user: Reader) -> dict[str, Any]:
        return await client.retention(user.user_id)

    @routes.put("/admin/limits/{user_id}")
    async def set_limits(
        body: LimitsIn, admin: AdminUser, user_id: Annotated[str, Path(min_length=1, max_length=64)]
    ) -> dict[str, Any]:
        """The admin sets a tenant's limit overrides (an empty map: the service's defaults)."""
        await client.set_limits(user_id, dict(body.limits))
        return {"tenant": user_id, "limits": await client.limits_of(user_id)}

    return routes


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` written in place of their references (the
    route's body is documented by hand, outside the document's components)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    inlined: dict[str, Any] = resolve(schema)
    return inlined


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _inflate(raw: bytes, encoding: str, *, limit: int) -> bytes:
    try:
        if encoding == "gzip":
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            decompressor = zlib.decompressobj()
        out = decompressor.decompress(raw, limit)
        if decompressor.unconsumed_tail:
            raise BadEntry("the decompressed body is too large")
        return out
    except (zlib.error, gzip.BadGzipFile):
        raise BadEntry("the body does not decompress") from None
