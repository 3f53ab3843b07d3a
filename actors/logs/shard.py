"""A log shard: the streams it owns, their heads, chunks and index.

Streams are spread over ``REALM_LOGS_SHARDS`` shard actors by rendezvous
hashing of their id (tenant + labels). A push is journaled (``Durable``, group
commit) before it is acknowledged: the journal is the durable form of the
heads. A compactor (a timer on the shard's clock) cuts heads into chunks,
zstd-compressed files under ``<data_dir>/<store_prefix>/<shard>.chunks/``, and
journals each cut (the chunk's reference joins the stream's index and its
entries leave the head), so the journal stays short and a snapshot holds the
index and the heads only. The same timer enforces retention and carries out
delete requests; until a delete is done its tombstone hides what it deletes.

Chunk files are written (and fsynced) before their cut is journaled: a crash
in between leaves the entries in the head and an orphan file, removed at the
next start. Files a journaled operation drops are unlinked once it commits.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actors.logs import logql
from actors.logs.chunks import LINE_SEP, Chunk, encoded_chunk, window_sums
from actors.logs.errors import BadQuery, DeleteNotFound, IngestLimited
from actors.logs.logql import LineFilter, LogQuery, MetricQuery
from actors.logs.model import (
    ChunkData,
    ChunkRef,
    Columns,
    Entry,
    Pushed,
    Stream,
    lines_bytes,
    metadata_bytes,
    stream_id,
    unpack,
)
from actors.logs.settings import LogsSettings
from actors.runtime.clock import Clock, SystemClock, every
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.store import open_store
from actors.runtime.supervision import Restart, remote_actor, report_start, run_start_hooks

log = logging.getLogger(__name__)

SHARD_PREFIX = "logs-shard"
#: Raw bytes of decoded chunks a shard keeps in memory for queries.
CHUNK_CACHE_BYTES = 256 * 1024 * 1024
#: Journal records (pushes, cuts) between snapshots at most; a push carries many entries.
SNAPSHOT_EVERY = 500
#: Journal records since the last snapshot that make a compaction's cut take one.
SNAPSHOT_AFTER_CUT = 8
NS = 1_000_000_000

#: An entry as a query answers it: (labels, ts_ns, line, metadata, seq).
Found = tuple[dict[str, str], int, str, dict[str, str], int]


@dataclass
class RetentionRule:
    query: str  #: a log selector (line filters allowed)
    retention_s: float


@dataclass
class TenantRetention:
    retention_s: float | None = None
    rules: list[RetentionRule] = field(default_factory=list)


@dataclass
class DeleteRequest:
    id: str
    tenant: str
    query: str
    start_ns: int
    end_ns: int
    #: Entries up to this shard sequence number are deleted (those pushed later are not).
    watermark: int
    created_at: float
    state: str = "pending"  #: "pending", then "done"
    removed: int = 0
    done_at: float | None = None


@dataclass
class ShardState:
    streams: dict[str, Stream]
    next_seq: int
    retention: dict[str, TenantRetention]
    limits: dict[str, dict[str, float]]
    deletes: list[DeleteRequest]


class LogShard(Durable):
    #: 2: a stream's head is columns (``Head``) and a push is journaled as ``ingest``
    #: (``Columns``); version 1's records replay as they are (``apply_push``), its
    #: snapshots' heads (entry tuples) are turned into columns.
    schema_version = 2

    def __init__(
        self, config: LogsSettings, *, directory: Path, shards: int = 1, clock: Clock | None = None
    ) -> None:
        self.config = config
        self.directory = Path(directory)
        self.clock = clock or SystemClock()
        self.shards = shards
        self.streams: dict[str, Stream] = {}
        self.by_tenant: dict[str, set[str]] = {}
        self.next_seq = 1
        self.retention: dict[str, TenantRetention] = {}
        self.limits: dict[str, dict[str, float]] = {}
        self.deletes: OrderedDict[str, DeleteRequest] = OrderedDict()
        #: Entries refused or dropped, by tenant and reason (not journaled).
        self.discarded: dict[str, dict[str, int]] = {}
        self._cache: OrderedDict[str, Chunk] = OrderedDict()
        self._cached_bytes = 0
        self._queries: dict[str, LogQuery] = {}
        self._lock = asyncio.Lock()
        self._unlink: list[str] = []

    # --- durable state ------------------------------------------------------------

    def snapshot_state(self) -> ShardState:
        return ShardState(
            self.streams, self.next_seq, self.retention, self.limits, list(self.deletes.values())
        )

    def state_size(self) -> int:
        return len(self.streams) + sum(
            len(s.chunks) + len(s.head) // 100 for s in self.streams.values()
        )

    def upgrade_record(
        self, version: int, op: str, args: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        if version == 1:
            return op, args
        return super().upgrade_record(version, op, args)

    def upgrade_state(self, version: int, state: Any) -> Any:
        if version == 1:
            for stream in state["streams"].values():
                rows = stream["head"]
                stream["head"] = {
                    name: [row[i] for row in rows]
                    for i, name in enumerate(("ts", "seq", "lines", "metadata"))
                }
            return state
        return super().upgrade_state(version, state)

    def restore_state(self, state: ShardState) -> None:
        self.streams = state.streams
        self.by_tenant = {}
        for sid, stream in self.streams.items():
            self.by_tenant.setdefault(stream.tenant, set()).add(sid)
        self.next_seq = state.next_seq
        self.retention = state.retention
        self.limits = state.limits
        self.deletes = OrderedDict((d.id, d) for d in state.deletes)

    def apply_ingest(
        self, tenant: str, streams: list[Columns], discarded: dict[str, int], now: float
    ) -> dict[str, int]:
        """A push's accepted entries join their streams' heads, numbered in order: whole
        columns at a time (no object per entry), the bytes counted once here
        (``Stream.head_bytes``), never per entry again."""
        accepted = 0
        for columns in streams:
            count = len(columns.ts)
            if not count:
                continue
            sid = stream_id(tenant, columns.labels)
            stream = self.streams.get(sid)
            if stream is None:
                stream = self.streams[sid] = Stream(tenant, columns.labels)
                self.by_tenant.setdefault(tenant, set()).add(sid)
            if not stream.head:
                stream.head_since = now
            stream.head.add(columns, self.next_seq)
            self.next_seq += count
            stream.head_bytes += columns.size()
            stream.newest_ts = max(stream.newest_ts, max(columns.ts))
            accepted += count
        return {"accepted": accepted, **discarded}

    def apply_push(
        self, tenant: str, streams: list[Pushed], discarded: dict[str, int], now: float
    ) -> dict[str, int]:
        """A push as journals written before ``ingest`` hold it (replayed only)."""
        columns = [Columns.of(p.labels, p.entries) for p in streams]
        return self.apply_ingest(tenant, columns, discarded, now)

    def apply_cut(self, stream: str, chunk: ChunkRef, now: float) -> None:
        found = self.streams[stream]
        found.head.drop_through(chunk.last_seq)
        found.head_bytes = found.head.size()
        found.head_since = now if found.head else 0.0
        found.chunks.append(chunk)

    def apply_drop(self, stream: str, files: list[str], before_ns: int) -> None:
        """Drop chunks ``files`` and head entries older than ``before_ns`` (retention)."""
        found = self.streams.get(stream)
        if found is None:
            return
        found.chunks = [c for c in found.chunks if c.file not in files]
        if before_ns:
            found.head = found.head.where(
                i for i, ts in enumerate(found.head.ts) if ts >= before_ns
            )
            found.head_bytes = found.head.size()
        self._forget_if_empty(stream)

    def apply_replace(self, stream: str, old: str, new: ChunkRef | None) -> None:
        found = self.streams.get(stream)
        if found is None:
            return
        chunks = []
        for chunk in found.chunks:
            if chunk.file != old:
                chunks.append(chunk)
            elif new is not None:
                chunks.append(new)
        found.chunks = chunks
        self._forget_if_empty(stream)

    def apply_delete_request(self, request: DeleteRequest) -> None:
        self.deletes[request.id] = request
        while len(self.deletes) > self.config.deletes_kept:
            oldest = next((k for k, d in self.deletes.items() if d.state == "done"), None)
            if oldest is None:
                break
            del self.deletes[oldest]

    def apply_delete_head(self, request: str) -> int:
        found = self.deletes[request]
        query = self._query(found.query)
        removed = 0
        for sid in list(self.by_tenant.get(found.tenant, ())):
            stream = self.streams[sid]
            if not query.selects(stream.labels):
                continue
            entries = stream.head.entries()
            kept = [
                i for i, e in enumerate(entries) if not _deleted(found, query, stream.labels, e)
            ]
            removed += len(entries) - len(kept)
            stream.head = stream.head.where(kept)
            stream.head_bytes = stream.head.size()
            self._forget_if_empty(sid)
        found.removed += removed
        return removed

    def apply_delete_done(self, request: str, removed: int, now: float) -> None:
        found = self.deletes[request]
        found.removed += removed
        found.state = "done"
        found.done_at = now

    def apply_set_retention(self, tenant: str, retention: TenantRetention) -> None:
        self.retention[tenant] = retention

    def apply_set_limits(self, tenant: str, limits: dict[str, float]) -> None:
        if limits:
            self.limits[tenant] = limits
        else:
            self.limits.pop(tenant, None)

    def _forget_if_empty(self, sid: str) -> None:
        stream = self.streams.get(sid)
        if stream is not None and not stream.head and not stream.chunks:
            del self.streams[sid]
            self.by_tenant.get(stream.tenant, set()).discard(sid)

    # --- ingest -------------------------------------------------------------------

    def _count_discarded(self, tenant: str, reason: str, count: int) -> None:
        if count:
            reasons = self.discarded.setdefault(tenant, {})
            reasons[reason] = reasons.get(reason, 0) + count

    async def push(
        self,
        tenant: str,
        streams: list[Pushed] | bytes,
        *,
        max_streams: int,
        key: str | None = None,
    ) -> dict[str, int]:
        """Keep ``streams``' entries (``Pushed``, or ``Columns`` packed by
        ``model.pack``, as ``LogsClient`` sends them), once journaled. Entries too far
        behind their stream's newest (or ahead of the clock) are discarded and
        counted; a push that would pass the tenant's stream limit is refused whole."""
        if key is not None and self.knows(key):
            reply = await self.committed_reply(key)
            assert reply is not None
            answer: dict[str, int] = reply[1]
            return answer
        if isinstance(streams, bytes):
            columns = unpack(streams)
        else:
            columns = [Columns.of(p.labels, p.entries) for p in streams]
        sids = [stream_id(tenant, c.labels) for c in columns]
        share = -(-max_streams // self.shards) + (1 if self.shards > 1 else 0)
        known = self.by_tenant.get(tenant, set())
        new = set(sids) - known
        if new and len(known) + len(new) > share:
            total = sum(len(c.ts) for c in columns)
            self._count_discarded(tenant, "stream_limit", total)
            raise IngestLimited(
                f"the tenant has its limit of {max_streams} active streams; nothing was kept",
                reason="stream_limit", limit=max_streams, discarded=total,
            )  # fmt: skip
        now = self.clock.time()
        future_ns = int((now + self.config.max_future_s) * NS)
        window_ns = int(self.config.out_of_order_window_s * NS)
        accepted: list[Columns] = []
        behind = ahead = 0
        for sid, part in zip(sids, columns, strict=True):
            if not part.ts:
                continue
            stream = self.streams.get(sid)
            newest = stream.newest_ts if stream is not None else 0
            highest = max(part.ts)
            if highest <= future_ns and min(part.ts) >= max(newest, highest) - window_ns:
                # Every entry is kept (the usual push): none is checked one by one.
                accepted.append(part)
                continue
            keep = []
            for index, ts in enumerate(part.ts):
                if ts > future_ns:
                    ahead += 1
                elif newest and ts < newest - window_ns:
                    behind += 1
                else:
                    keep.append(index)
                    newest = max(newest, ts)
            if keep:
                accepted.append(part.take(keep))
        discarded = {k: v for k, v in (("too_far_behind", behind), ("too_far_ahead", ahead)) if v}
        for reason, count in discarded.items():
            self._count_discarded(tenant, reason, count)
        result: dict[str, int] = await self.execute(
            "ingest", key=key, tenant=tenant, streams=accepted, discarded=discarded, now=now
        )
        return result

    # --- reading ------------------------------------------------------------------

    def _query(self, text: str) -> LogQuery:
        found = self._queries.get(text)
        if found is None:
            found = self._queries[text] = logql.parse_log(text)
        return found

    def _chunk(self, sid: str, ref: ChunkRef) -> Chunk:
        found = self._cache.get(ref.file)
        if found is not None:
            self._cache.move_to_end(ref.file)
            return found
        chunk = Chunk((self.chunk_dir / ref.file).read_bytes())
        self._cache_put(ref.file, chunk)
        return chunk

    def _cache_put(self, file: str, chunk: Chunk) -> None:
        self._cache[file] = chunk
        self._cached_bytes += chunk.size
        while self._cached_bytes > CHUNK_CACHE_BYTES and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= dropped.size

    @property
    def chunk_dir(self) -> Path:
        return self.directory

    def retention_s(self, tenant: str, labels: dict[str, str]) -> float:
        config = self.retention.get(tenant)
        found = self.config.retention_s
        if config is None:
            return found
        if config.retention_s is not None:
            found = min(found, config.retention_s)
        matching = [r.retention_s for r in config.rules if self._query(r.query).selects(labels)]
        return min(found, *matching) if matching else found

    def _cutoff_ns(self, tenant: str, labels: dict[str, str], now: float) -> int:
        return int((now - self.retention_s(tenant, labels)) * NS)

    def _tombstones(self, tenant: str) -> list[tuple[DeleteRequest, LogQuery]]:
        return [
            (d, self._query(d.query))
            for d in self.deletes.values()
            if d.tenant == tenant and d.state == "pending"
        ]

    def _matching(self, tenant: str, query: LogQuery) -> Iterator[tuple[str, Stream]]:
        for sid in self.by_tenant.get(tenant, ()):
            stream = self.streams[sid]
            if query.selects(stream.labels):
                yield sid, stream

    def _entries(
        self, sid: str, stream: Stream, query: LogQuery, start_ns: int, end_ns: int, now: float
    ) -> Iterator[Found]:
        """Entries of ``stream`` in ``[start, end)`` through ``query``'s pipeline,
        chunk by chunk (each sorted by time), then the head (in arrival order)."""
        start_ns = max(start_ns, self._cutoff_ns(stream.tenant, stream.labels, now))
        stones = [t for t in self._tombstones(stream.tenant) if t[1].selects(stream.labels)]
        prefilters = query.line_filters()
        for ref in stream.chunks:
            if ref.max_ts < start_ns or ref.min_ts >= end_ns:
                continue
            entries = _filtered(self._chunk(sid, ref), start_ns, end_ns, prefilters)
            yield from self._pipe(stream.labels, query, stones, entries, filtered=True)
        head = [e for e in stream.head.entries() if start_ns <= e[0] < end_ns]
        yield from self._pipe(stream.labels, query, stones, head)

    def _pipe(
        self,
        labels: dict[str, str],
        query: LogQuery,
        stones: list[tuple[DeleteRequest, LogQuery]],
        entries: Any,
        *,
        filtered: bool = False,
    ) -> Iterator[Found]:
        """``entries`` through ``query``'s pipeline (``filtered``: its leading line
        filters already applied), minus what a pending delete hides."""
        prefilters = query.line_filters()
        for line_filter in [] if filtered else prefilters:
            if line_filter.op == "|=":
                needle = line_filter.value
                entries = [e for e in entries if needle in e[2]]
            else:
                entries = [e for e in entries if line_filter.keeps(e[2])]
        simple = len(prefilters) == len(query.stages)
        for entry in entries:
            if stones and any(_deleted(d, q, labels, entry) for d, q in stones):
                continue
            out = labels if simple else query.run(entry[2], labels)
            if out is not None:
                yield out, entry[0], entry[2], entry[3], entry[1]

    async def select(
        self,
        tenant: str,
        query: LogQuery,
        *,
        start_ns: int,
        end_ns: int,
        limit: int,
        forward: bool = False,
    ) -> list[Found]:
        """Up to ``limit`` entries in ``[start, end)``: the oldest (``forward``) or the newest."""
        now = self.clock.time()
        best: list[tuple[Any, ...]] = []  # a heap whose top is the worst kept
        sign = -1 if forward else 1
        tie = 0
        for sid, stream in self._matching(tenant, query):
            for found in self._entries(sid, stream, query, start_ns, end_ns, now):
                tie += 1
                item = (sign * found[1], sign * found[4], tie, found)
                if len(best) < limit:
                    heapq.heappush(best, item)
                elif item > best[0]:
                    heapq.heapreplace(best, item)
        ordered = sorted(best, reverse=True)
        return [item[3] for item in ordered]

    async def metric(
        self, tenant: str, query: MetricQuery, *, start_ns: int, end_ns: int, step_ns: int
    ) -> dict[tuple[tuple[str, str], ...], np.ndarray[Any, Any]]:
        """Per series, the count (or bytes) of entries in ``(t - range, t]`` at each step
        ``t`` from ``start`` to ``end``: summed by the query's ``by`` labels if it has them."""
        now = self.clock.time()
        at = np.arange(start_ns, end_ns + 1, step_ns, dtype=np.int64)
        range_ns = int(query.range_s * NS)
        by_bytes = query.function == "bytes_over_time"
        series: dict[tuple[tuple[str, str], ...], np.ndarray[Any, Any]] = {}
        log_query = query.log
        low, high = start_ns - range_ns, end_ns + 1

        def add(key: tuple[tuple[str, str], ...], values: np.ndarray[Any, Any]) -> None:
            if key in series:
                series[key] += values
            else:
                if len(series) >= self.config.max_series:
                    raise BadQuery(f"the query makes more than {self.config.max_series} series")
                series[key] = values

        for sid, stream in self._matching(tenant, log_query):
            cutoff = self._cutoff_ns(tenant, stream.labels, now)
            stones = any(t[1].selects(stream.labels) for t in self._tombstones(tenant))
            plain = not log_query.stages and not stones
            slow: list[Entry] = []
            for ref in stream.chunks:
                if ref.max_ts < low or ref.min_ts >= high:
                    continue
                chunk = self._chunk(sid, ref)
                if plain and ref.min_ts >= cutoff:
                    cum = chunk.cumulative_bytes if by_bytes else None
                    add(_key(stream.labels, query.by), window_sums(chunk.ts, at, range_ns, cum))
                else:
                    slow.extend(_ranged(chunk.data, max(low, cutoff), high))
            slow.extend(e for e in stream.head.entries() if max(low, cutoff) <= e[0] < high)
            if not slow:
                continue
            stones_here = [t for t in self._tombstones(tenant) if t[1].selects(stream.labels)]
            grouped: dict[tuple[tuple[str, str], ...], list[tuple[int, int]]] = {}
            for labels, ts, line, _, _ in self._pipe(stream.labels, log_query, stones_here, slow):
                size = len(line.encode()) if by_bytes else 1
                grouped.setdefault(_key(labels, query.by), []).append((ts, size))
            for key, points in grouped.items():
                points.sort()
                ts_array = np.fromiter((p[0] for p in points), np.int64, len(points))
                cum = None
                if by_bytes:
                    sizes = np.fromiter((p[1] for p in points), np.int64, len(points))
                    cum = np.concatenate(([0], np.cumsum(sizes)))
                add(key, window_sums(ts_array, at, range_ns, cum))
        return series

    async def tail(
        self, tenant: str, query: LogQuery, *, after: int, limit: int
    ) -> tuple[list[Found], int]:
        """Entries numbered after ``after`` (in number order, at most ``limit``), and the
        number to resume after; only committed entries, so a number is never reused."""
        high = self.next_seq - 1
        now = self.clock.time()
        found: list[Found] = []
        if after < high:
            for _sid, stream in self._matching(tenant, query):
                cutoff = self._cutoff_ns(tenant, stream.labels, now)
                stones = [t for t in self._tombstones(tenant) if t[1].selects(stream.labels)]
                candidates: list[Entry] = []
                for ref in stream.chunks:
                    if ref.last_seq > after:
                        data = self._chunk(_sid, ref).data
                        candidates.extend(
                            e for e in _columns(data) if after < e[1] <= high
                        )  # fmt: skip
                head = stream.head  # in number order
                candidates.extend(head.entries(head.after(after), head.after(high)))
                candidates = [e for e in candidates if e[0] >= cutoff]
                found.extend(self._pipe(stream.labels, query, stones, candidates))
            found.sort(key=lambda f: f[4])
            if len(found) > limit:
                found = found[:limit]
                high = found[-1][4]
        return await self.after_commit((found, high))

    async def position(self) -> int:
        """The number of the last entry committed here (a tail starting now resumes after it)."""
        return await self.after_commit(self.next_seq - 1)

    async def labels(self, tenant: str, *, start_ns: int, end_ns: int) -> list[str]:
        names: set[str] = set()
        for stream in self._streams_in(tenant, start_ns, end_ns):
            names.update(stream.labels)
        return sorted(names)

    async def label_values(
        self, tenant: str, name: str, *, start_ns: int, end_ns: int, query: LogQuery | None
    ) -> list[str]:
        values: set[str] = set()
        for stream in self._streams_in(tenant, start_ns, end_ns):
            if name in stream.labels and (query is None or query.selects(stream.labels)):
                values.add(stream.labels[name])
        return sorted(values)

    def _streams_in(self, tenant: str, start_ns: int, end_ns: int) -> Iterator[Stream]:
        for sid in self.by_tenant.get(tenant, ()):
            stream = self.streams[sid]
            spans = [(c.min_ts, c.max_ts) for c in stream.chunks]
            if stream.head:
                spans.append((min(stream.head.ts), stream.newest_ts))
            if any(lo < end_ns and hi >= start_ns for lo, hi in spans):
                yield stream

    async def stats(self, tenant: str) -> dict[str, Any]:
        streams = [self.streams[s] for s in self.by_tenant.get(tenant, ())]
        return {
            "streams": len(streams),
            "entries": sum(len(s.head) + sum(c.count for c in s.chunks) for s in streams),
            "chunks": sum(len(s.chunks) for s in streams),
            "raw_bytes": sum(s.head_bytes + sum(c.raw_bytes for c in s.chunks) for s in streams),
            "chunk_bytes": sum(c.stored_bytes for s in streams for c in s.chunks),
            "discarded": dict(self.discarded.get(tenant, {})),
        }

    # --- settings kept per tenant -----------------------------------------------------

    async def set_retention(self, tenant: str, retention: TenantRetention, key: str) -> None:
        for rule in retention.rules:
            self._query(rule.query)
        await self.execute("set_retention", key=key, tenant=tenant, retention=retention)

    async def get_retention(self, tenant: str) -> TenantRetention:
        return self.retention.get(tenant) or TenantRetention()

    async def set_limits(self, tenant: str, limits: dict[str, float], key: str) -> None:
        await self.execute("set_limits", key=key, tenant=tenant, limits=limits)

    async def limits_of(self, tenant: str) -> dict[str, float]:
        return dict(self.limits.get(tenant, {}))

    # --- deletes ------------------------------------------------------------------------

    async def request_delete(
        self, tenant: str, request_id: str, query: str, *, start_ns: int, end_ns: int, key: str
    ) -> None:
        self._query(query)
        if request_id in self.deletes:
            return
        pending = sum(
            1 for d in self.deletes.values() if d.tenant == tenant and d.state == "pending"
        )
        if pending >= self.config.max_pending_deletes:
            raise IngestLimited(
                f"a tenant has at most {self.config.max_pending_deletes} unfinished deletes",
                reason="pending_deletes", limit=self.config.max_pending_deletes,
            )  # fmt: skip
        request = DeleteRequest(
            request_id, tenant, query, start_ns, end_ns, self.next_seq - 1, self.clock.time()
        )
        await self.execute("delete_request", key=key, request=request)

    async def delete_status(self, tenant: str, request_id: str) -> DeleteRequest:
        found = self.deletes.get(request_id)
        if found is None or found.tenant != tenant:
            raise DeleteNotFound(id=request_id)
        return found

    async def delete_list(self, tenant: str) -> list[DeleteRequest]:
        return [d for d in self.deletes.values() if d.tenant == tenant]

    # --- the compactor ----------------------------------------------------------------

    async def compact(self, *, cut_all: bool = False) -> dict[str, int]:
        """Cut heads due (or every head), apply retention, carry out deletes."""
        async with self._lock:
            now = self.clock.time()
            cuts = await self._cut(now, cut_all)
            dropped = await self._retain(now)
            deleted = await self._run_deletes(now)
            await self.journal.synced()
            self._unlink_dropped()
            if cuts and self.journal.assigned - self._snapshot_seq >= SNAPSHOT_AFTER_CUT:
                # Right after a cut the heads are small: a snapshot now is cheap, and
                # it lets the store drop the journal records the chunks now hold.
                self._take_snapshot(self.journal.assigned)
            return {"cut": cuts, "dropped": dropped, "deleted": deleted}

    async def flush(self) -> dict[str, int]:
        """Cut every head into a chunk now (tests and benchmarks)."""
        return await self.compact(cut_all=True)

    def _due(self, stream: Stream, now: float) -> bool:
        if not stream.head:
            return False
        if stream.head_bytes >= self.config.chunk_target_bytes:
            return True
        if now - stream.head_since >= self.config.head_max_age_s:
            return True
        oldest = min(stream.head.ts)
        return stream.newest_ts - oldest >= self.config.chunk_window_s * NS

    async def _cut(self, now: float, cut_all: bool) -> int:
        due = [
            (sid, s) for sid, s in self.streams.items() if s.head and (cut_all or self._due(s, now))
        ]
        cuts = 0
        for sid, stream in due:
            # Pushes go on while the file is written: the cut takes the head as it is now.
            first, last = stream.head.seq[0], stream.head.seq[-1]
            ref = await self._write(sid, stream.head.ordered(), f"{first}-{last}")
            ref.first_seq, ref.last_seq = first, last
            self.record("cut", stream=sid, chunk=ref, now=now)
            cuts += 1
        return cuts

    async def _write(self, sid: str, entries: list[Entry] | ChunkData, name: str) -> ChunkRef:
        blob, chunk = encoded_chunk(entries)
        file = f"{sid[:2]}/{sid}-{name}.zst"
        path = self.chunk_dir / file
        await asyncio.to_thread(_write_file, path, blob)
        # The newest chunks are what queries and tails read most: keep the one just
        # written as a read of its file would give it (as Loki's ingesters keep theirs).
        self._cache_put(file, chunk)
        data = chunk.data
        return ChunkRef(
            file=file,
            min_ts=data.ts[0],
            max_ts=data.ts[-1],
            first_seq=min(data.seq),
            last_seq=max(data.seq),
            count=len(data.ts),
            raw_bytes=lines_bytes(data.lines) + metadata_bytes(data.metadata),
            stored_bytes=len(blob),
        )

    async def _retain(self, now: float) -> int:
        dropped = 0
        for sid, stream in list(self.streams.items()):
            cutoff = self._cutoff_ns(stream.tenant, stream.labels, now)
            old = [c.file for c in stream.chunks if c.max_ts < cutoff]
            expired_head = bool(stream.head) and min(stream.head.ts) < cutoff
            if old or expired_head:
                dropped += sum(c.count for c in stream.chunks if c.file in old)
                self.record("drop", stream=sid, files=old, before_ns=cutoff if expired_head else 0)
                self._unlink.extend(old)
        return dropped

    async def _run_deletes(self, now: float) -> int:
        removed_total = 0
        for request in [d for d in self.deletes.values() if d.state == "pending"]:
            query = self._query(request.query)
            removed = 0
            for sid, stream in list(self._matching(request.tenant, query)):
                for ref in list(stream.chunks):
                    if ref.first_seq > request.watermark:
                        continue
                    if ref.max_ts < request.start_ns or ref.min_ts >= request.end_ns:
                        continue
                    entries = self._chunk(sid, ref).entries()
                    kept = [e for e in entries if not _deleted(request, query, stream.labels, e)]
                    if len(kept) == len(entries):
                        continue
                    removed += len(entries) - len(kept)
                    new = None
                    if kept:
                        new = await self._write(
                            sid, kept, f"{ref.first_seq}-{ref.last_seq}-{uuid.uuid4().hex[:8]}"
                        )
                        new.first_seq, new.last_seq = ref.first_seq, ref.last_seq
                    self.record("replace", stream=sid, old=ref.file, new=new)
                    self._unlink.append(ref.file)
            removed_head, _ = self.record("delete_head", request=request.id)
            self.record("delete_done", request=request.id, removed=removed, now=now)
            removed_total += removed + removed_head
        return removed_total

    def _unlink_dropped(self) -> None:
        for file in self._unlink:
            self._cache.pop(file, None)
            (self.chunk_dir / file).unlink(missing_ok=True)
        self._cache_size_again()
        self._unlink.clear()

    def _cache_size_again(self) -> None:
        self._cached_bytes = sum(c.size for c in self._cache.values())

    def remove_orphans(self) -> int:
        """Remove chunk files no stream refers to (a crash between write and cut)."""
        known = {c.file for s in self.streams.values() for c in s.chunks}
        removed = 0
        if not self.chunk_dir.exists():
            return 0
        for path in self.chunk_dir.glob("*/*.zst"):
            if str(path.relative_to(self.chunk_dir)) not in known:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def __repr__(self) -> str:
        return (
            f"<LogShard streams={len(self.streams)} next_seq={self.next_seq} "
            f"deletes={len(self.deletes)} cached={self._cached_bytes}>"
        )


def _ranged(data: Any, start_ns: int, end_ns: int) -> list[Entry]:
    """A chunk's entries (sorted by time) with ``start <= ts < end``."""
    import bisect

    low = bisect.bisect_left(data.ts, start_ns)
    high = bisect.bisect_left(data.ts, end_ns)
    return list(
        zip(
            data.ts[low:high],
            data.seq[low:high],
            data.lines[low:high],
            data.metadata[low:high],
            strict=True,
        )
    )


def _filtered(chunk: Chunk, start_ns: int, end_ns: int, filters: list[LineFilter]) -> list[Entry]:
    """A chunk's entries in ``[start, end)`` that pass ``filters``, testing the lines
    column before building any entry (most filtered-out lines cost one test; a first
    ``|=`` costs one substring search over the chunk's text, ``_containing``)."""
    import bisect

    data = chunk.data
    low = bisect.bisect_left(data.ts, start_ns)
    high = bisect.bisect_left(data.ts, end_ns)
    lines = data.lines
    keep: Any = range(low, high)
    for line_filter in filters:
        if (
            line_filter.op == "|="
            and isinstance(keep, range)
            and line_filter.value
            and LINE_SEP not in line_filter.value
        ):
            keep = _containing(chunk, line_filter.value, low, high)
        elif line_filter.op == "|=":
            needle = line_filter.value
            keep = [i for i in keep if needle in lines[i]]
        else:
            keep = [i for i in keep if line_filter.keeps(lines[i])]
    if isinstance(keep, range):
        return _ranged(data, start_ns, end_ns)
    ts, seq, metadata = data.ts, data.seq, data.metadata
    return [(ts[i], seq[i], lines[i], metadata[i]) for i in keep]


def _containing(chunk: Chunk, needle: str, low: int, high: int) -> list[int]:
    """Indexes in ``[low, high)`` of the chunk's lines that contain ``needle`` (which
    holds no ``LINE_SEP``), found by ``str.find`` over the joined lines."""
    text, starts = chunk.text()
    found: list[int] = []
    at, stop = int(starts[low]), int(starts[high])
    while True:
        at = text.find(needle, at, stop)
        if at < 0:
            return found
        line = int(np.searchsorted(starts, at, side="right")) - 1
        found.append(line)
        at = int(starts[line + 1])  # the next line: one hit per line


def _columns(data: Any) -> Iterator[Entry]:
    return zip(data.ts, data.seq, data.lines, data.metadata, strict=True)


def _deleted(request: DeleteRequest, query: LogQuery, labels: dict[str, str], entry: Entry) -> bool:
    return (
        entry[1] <= request.watermark
        and request.start_ns <= entry[0] < request.end_ns
        and query.run(entry[2], labels) is not None
    )


def _key(labels: dict[str, str], by: tuple[str, ...] | None) -> tuple[tuple[str, str], ...]:
    if by is None:
        return tuple(sorted(labels.items()))
    return tuple((name, labels[name]) for name in by if labels.get(name))


def _write_file(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as out:
        out.write(blob)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def chunk_directory(settings: Settings, name: str) -> Path:
    return Path(settings.data_dir) / settings.store_prefix / f"{name}.chunks"


class _LogShardProcess(LogShard):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        run_start_hooks(settings, "logs", name)  # its logs stay its own (``handler.install``)
        config = LogsSettings.of(settings)
        super().__init__(config, directory=chunk_directory(settings, name), shards=config.shards)
        store = open_store(settings, name)
        await self.open(
            store, name, snapshot_every=min(settings.snapshot_every, SNAPSHOT_EVERY),
            max_batch=settings.group_commit_max,
        )  # fmt: skip
        self.restarts = await report_start(store, name)
        self.orphans = self.remove_orphans()
        self._compactor = every(self.clock, config.cut_every_s, self.compact)

    async def ping(self) -> bool:
        return True

    async def info(self) -> dict[str, Any]:
        import ray

        return {
            "restarts": self.restarts,
            "orphans": self.orphans,
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
        }


#: Durable; a call in flight at a crash is retried on the restarted actor (pushes
#: and settings carry idempotency keys; the rest only read).
LogShardActor = remote_actor(
    _LogShardProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD",
    max_concurrency=10_000,
)  # fmt: skip


__all__ = [
    "SHARD_PREFIX",
    "DeleteRequest",
    "LogShard",
    "LogShardActor",
    "RetentionRule",
    "TenantRetention",
    "chunk_directory",
]
