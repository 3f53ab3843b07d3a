"""The logs service's Python API, for its HTTP front, its log handler and other services.

    logs = LogsClient(settings)
    await logs.start()
    await logs.push(tenant, [({"app": "shop"}, [(time.time_ns(), "hello", {})])])
    found = await logs.query(tenant, '{app="shop"} |= "hello"', start_ns=..., end_ns=...)

A tenant is the owner of what it pushes (the user, or the API key's user);
every call names it and sees only its streams. Queries fan out to every shard
in parallel and merge; a tail asks every shard for what came after a cursor.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import numpy as np

from actors.logs import logql
from actors.logs.errors import BadEntry, BadQuery, DeleteNotFound, IngestLimited
from actors.logs.logql import LogQuery, MetricQuery
from actors.logs.model import (
    REALM_TENANT,
    Columns,
    RateLimiter,
    check_entries,
    check_labels,
    pack,
    stream_id,
)
from actors.logs.settings import LogsSettings
from actors.logs.shard import (
    SHARD_PREFIX,
    DeleteRequest,
    LogShardActor,
    RetentionRule,
    TenantRetention,
)
from actors.runtime.errors import InvalidInput
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards

NS = 1_000_000_000
#: How long a replica trusts its copy of a tenant's limit overrides.
LIMITS_CACHE_S = 5.0
#: Limits a tenant's override may set (the others are the service's).
LIMIT_NAMES = (
    "ingest_rate_bytes_per_s",
    "ingest_burst_bytes",
    "ingest_rate_lines_per_s",
    "ingest_burst_lines",
    "max_streams_per_tenant",
)
CURSOR_PREFIX = "c1"

#: What a push takes: (labels, [(ts_ns, line, metadata), ...]) per stream.
StreamIn = tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]


def format_cursor(positions: list[int]) -> str:
    return "-".join([CURSOR_PREFIX, *map(str, positions)])


def parse_cursor(text: str, shards: int) -> list[int]:
    parts = text.split("-")
    if (
        parts[0] != CURSOR_PREFIX
        or len(parts) != shards + 1
        or not all(p.isdigit() and len(p) < 19 for p in parts[1:])
    ):
        raise InvalidInput("not a cursor this service gave out (or the shard count changed)")
    return [int(p) for p in parts[1:]]


class LogsClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = LogsSettings.of(settings)
        self.shards = Shards(LogShardActor, SHARD_PREFIX, self.config.shards, settings)
        self.limiter = RateLimiter(self.config, share=1.0 / settings.replicas)
        self._limits: dict[str, tuple[float, dict[str, float]]] = {}
        #: Entries this replica refused before they reached a shard, by tenant and reason.
        self.discarded: dict[str, dict[str, int]] = {}
        #: Idempotency keys of pushes: this client's own prefix, then a counter.
        self._keys = (f"{uuid.uuid4().hex}:{n}" for n in itertools.count())

    async def start(self) -> None:
        await self.shards.start()

    async def close(self) -> None:
        return None

    # --- ingest -----------------------------------------------------------------------

    async def limits_of(self, tenant: str) -> dict[str, float]:
        now = time.monotonic()
        cached = self._limits.get(tenant)
        if cached is not None and cached[0] > now:
            return cached[1]
        limits: dict[str, float] = await self.shards.owner(f"tenant:{tenant}").call(
            "limits_of", tenant
        )
        self._limits[tenant] = (now + LIMITS_CACHE_S, limits)
        return limits

    def _count(self, tenant: str, reason: str, count: int) -> None:
        reasons = self.discarded.setdefault(tenant, {})
        reasons[reason] = reasons.get(reason, 0) + count

    async def push(self, tenant: str, streams: list[StreamIn]) -> dict[str, int]:
        """Keep the entries of ``streams`` (once journaled on their shards). A push over
        a limit is refused whole (``IngestLimited``, 429, with the reason)."""
        total = sum(len(entries) for _, entries in streams)
        if total > self.config.max_entries_per_push:
            raise BadEntry(f"a push carries at most {self.config.max_entries_per_push} entries")
        checked: dict[str, Columns] = {}
        size = 0
        try:
            for labels, entries in streams:
                labels = check_labels(labels, self.config)
                columns, stream_size = check_entries(labels, entries, self.config)
                size += stream_size
                sid = stream_id(tenant, labels)
                if sid in checked:
                    checked[sid] = _joined(checked[sid], columns)
                else:
                    checked[sid] = columns
            limits = await self.limits_of(tenant)
            self.limiter.take(tenant, total, size, limits)
        except IngestLimited as error:
            self._count(tenant, str(error.details.get("reason", "limit")), total)
            error.details["discarded"] = total
            raise
        by_shard: dict[int, list[Columns]] = {}
        for sid, columns in checked.items():
            if columns.ts:
                by_shard.setdefault(self.shards.index(sid), []).append(columns)
        max_streams = int(limits.get("max_streams_per_tenant", self.config.max_streams_per_tenant))
        key = next(self._keys)
        answers = await asyncio.gather(
            *(
                self.shards[index].call(
                    "push", tenant, pack(part), max_streams=max_streams, key=f"{key}:{index}"
                )
                for index, part in by_shard.items()
            )
        )
        result: dict[str, int] = {"accepted": 0}
        for answer in answers:
            for name, count in answer.items():
                result[name] = result.get(name, 0) + count
        return result

    # --- queries ----------------------------------------------------------------------

    def _range(self, start_ns: int, end_ns: int) -> None:
        if end_ns <= start_ns:
            raise BadQuery("the end of a query's range comes after its start")
        if end_ns - start_ns > self.config.max_query_range_s * NS:
            raise BadQuery(f"a query covers at most {self.config.max_query_range_s} s")

    async def select(
        self,
        tenant: str,
        query: LogQuery,
        *,
        start_ns: int,
        end_ns: int,
        limit: int = 100,
        forward: bool = False,
    ) -> list[tuple[dict[str, str], int, str, dict[str, str], int]]:
        """Up to ``limit`` entries, merged over the shards, newest first (or oldest)."""
        self._range(start_ns, end_ns)
        if not 1 <= limit <= self.config.max_query_entries:
            raise BadQuery(f"limit is 1 to {self.config.max_query_entries}")
        parts = await self.shards.call_all(
            "select", tenant, query, start_ns=start_ns, end_ns=end_ns, limit=limit, forward=forward
        )
        merged = [found for part in parts for found in part]
        merged.sort(key=lambda f: (f[1], f[4]), reverse=not forward)
        return merged[:limit]

    async def metric(
        self, tenant: str, query: MetricQuery, *, start_ns: int, end_ns: int, step_ns: int
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """Each series' points ``(unix seconds, value)`` at every step with a value."""
        self._range(start_ns, end_ns + 1)
        if step_ns <= 0:
            raise BadQuery("step is positive")
        points = (end_ns - start_ns) // step_ns + 1
        if points > self.config.max_query_points:
            raise BadQuery(
                f"a query evaluates at most {self.config.max_query_points} steps; raise the step"
            )
        parts = await self.shards.call_all(
            "metric", tenant, query, start_ns=start_ns, end_ns=end_ns, step_ns=step_ns
        )
        series: dict[tuple[tuple[str, str], ...], np.ndarray[Any, Any]] = {}
        for part in parts:
            for key, values in part.items():
                series[key] = series[key] + values if key in series else values
        if len(series) > self.config.max_series:
            raise BadQuery(f"the query makes more than {self.config.max_series} series")
        at = np.arange(start_ns, end_ns + 1, step_ns, dtype=np.int64)
        answer = []
        for key in sorted(series):
            values = series[key]
            if query.function == "rate":
                values = values / query.range_s
            kept = [(int(t) / NS, float(v)) for t, v in zip(at, values, strict=True) if v != 0]
            if kept:
                answer.append((dict(key), kept))
        return answer

    async def labels(self, tenant: str, *, start_ns: int, end_ns: int) -> list[str]:
        parts = await self.shards.call_all("labels", tenant, start_ns=start_ns, end_ns=end_ns)
        return sorted({name for part in parts for name in part})

    async def label_values(
        self, tenant: str, name: str, *, start_ns: int, end_ns: int, query: LogQuery | None = None
    ) -> list[str]:
        parts = await self.shards.call_all(
            "label_values", tenant, name, start_ns=start_ns, end_ns=end_ns, query=query
        )
        return sorted({value for part in parts for value in part})

    async def stats(self, tenant: str) -> dict[str, Any]:
        parts = await self.shards.call_all("stats", tenant)
        total: dict[str, Any] = {"discarded": dict(self.discarded.get(tenant, {}))}
        for part in parts:
            for name, value in part.items():
                if name == "discarded":
                    for reason, count in value.items():
                        total["discarded"][reason] = total["discarded"].get(reason, 0) + count
                else:
                    total[name] = total.get(name, 0) + value
        return total

    # --- tail -------------------------------------------------------------------------

    async def tail_start(self) -> str:
        """A cursor at the newest entry of every shard: a tail from now on."""
        return format_cursor(await self.shards.call_all("position"))

    async def tail_next(
        self, tenant: str, query: LogQuery, cursor: str
    ) -> tuple[list[tuple[dict[str, str], int, str, dict[str, str], str]], str]:
        """What came after ``cursor``: entries, each with the cursor that resumes after
        it, in each shard's order (shards interleaved), and the cursor after them all."""
        positions = parse_cursor(cursor, len(self.shards))
        parts = await asyncio.gather(
            *(
                ref.call("tail", tenant, query, after=after, limit=self.config.tail_batch)
                for ref, after in zip(self.shards, positions, strict=True)
            )
        )
        entries = []
        current = list(positions)
        for index, (found, _) in enumerate(parts):
            for labels, ts, line, metadata, seq in found:
                current[index] = seq
                entries.append((labels, ts, line, metadata, format_cursor(current)))
        for index, (_, high) in enumerate(parts):
            current[index] = max(current[index], high)
        return entries, format_cursor(current)

    # --- retention, limits, deletes ----------------------------------------------------

    async def set_retention(
        self, tenant: str, retention_s: float | None, rules: list[tuple[str, float]]
    ) -> None:
        if len(rules) > self.config.max_retention_rules:
            raise InvalidInput(f"at most {self.config.max_retention_rules} retention rules")
        for text, _ in rules:
            logql.parse_log(text)
        retention = TenantRetention(retention_s, [RetentionRule(q, s) for q, s in rules])
        key = uuid.uuid4().hex
        await self.shards.call_all("set_retention", tenant, retention, key)

    async def retention(self, tenant: str) -> dict[str, Any]:
        found: TenantRetention = await self.shards[0].call("get_retention", tenant)
        return {
            "global_s": self.config.retention_s,
            "retention_s": found.retention_s,
            "rules": [{"selector": r.query, "retention_s": r.retention_s} for r in found.rules],
        }

    async def set_limits(self, tenant: str, limits: dict[str, float]) -> None:
        unknown = set(limits) - set(LIMIT_NAMES)
        if unknown:
            raise InvalidInput(f"no such limit: {', '.join(sorted(unknown))}")
        await self.shards.call_all("set_limits", tenant, limits, uuid.uuid4().hex)
        self._limits.pop(tenant, None)

    async def delete(self, tenant: str, query: str, *, start_ns: int, end_ns: int) -> str:
        """Ask for every entry matching ``query`` in ``[start, end)`` pushed so far to
        go; answers the request's id (its status: ``delete_status``)."""
        logql.parse_log(query)
        if end_ns <= start_ns:
            raise InvalidInput("the end of a delete's range comes after its start")
        request = uuid.uuid4().hex[:16]
        await self.shards.call_all(
            "request_delete", tenant, request, query, start_ns=start_ns, end_ns=end_ns,
            key=f"delete:{request}",
        )  # fmt: skip
        return request

    async def delete_status(self, tenant: str, request: str) -> dict[str, Any]:
        parts: list[DeleteRequest] = await self.shards.call_all("delete_status", tenant, request)
        return _merge_delete(parts)

    async def deletes(self, tenant: str) -> list[dict[str, Any]]:
        parts = await self.shards.call_all("delete_list", tenant)
        by_id: dict[str, list[DeleteRequest]] = {}
        for part in parts:
            for request in part:
                by_id.setdefault(request.id, []).append(request)
        return [_merge_delete(requests) for requests in by_id.values()]

    async def flush(self) -> None:
        """Cut every shard's heads into chunks now (tests, benchmarks)."""
        await self.shards.call_all("flush")

    async def compact(self) -> None:
        await self.shards.call_all("compact")


def _joined(first: Columns, second: Columns) -> Columns:
    """Two parts of one stream in a push, as one."""
    metadata = None
    if first.metadata is not None or second.metadata is not None:
        metadata = first.metadata_column() + second.metadata_column()
    return Columns(first.labels, first.ts + second.ts, first.lines + second.lines, metadata)


def _merge_delete(parts: list[DeleteRequest]) -> dict[str, Any]:
    if not parts:
        raise DeleteNotFound()
    first = parts[0]
    done = all(p.state == "done" for p in parts)
    return {
        "id": first.id,
        "query": first.query,
        "start_ns": first.start_ns,
        "end_ns": first.end_ns,
        "created_at": first.created_at,
        "state": "done" if done else "pending",
        "removed": sum(p.removed for p in parts),
        "done_at": max(p.done_at or 0.0 for p in parts) if done else None,
    }


__all__ = [
    "LIMIT_NAMES",
    "REALM_TENANT",
    "LogsClient",
    "format_cursor",
    "parse_cursor",
]
