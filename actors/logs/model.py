"""Entries, streams and chunks: the logs service's data and its input rules.

A *stream* is a tenant's label set; its id is a hash of the tenant and the
sorted labels, so every replica routes it to the same shard. An *entry* is
``(ts_ns, seq, line, metadata)``: ``seq`` is the shard's own counter, given as
the entry is accepted, and is what a tail's cursor counts. A stream's newest
entries sit in its *head* (journaled, in memory); the head is cut into a
*chunk*: the entries in columns, MessagePack, compressed with zstd, in a file.
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice, repeat
from operator import itemgetter, le
from typing import Any

import msgspec
import xxhash

from actors.logs.errors import BadEntry, IngestLimited
from actors.logs.settings import LogsSettings

#: Realm's own tenant (its actors' and replicas' logs); only the admin reads it.
REALM_TENANT = "realm"
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Entries are (timestamp in ns, shard sequence number, line, structured metadata).
Entry = tuple[int, int, str, dict[str, str]]
#: Metadata names and values share the line's byte limit; at most this many pairs.
MAX_METADATA_PAIRS = 64
#: Columns out of rows, without a Python step per row: ``list(map(_at[i], rows))``.
_at = tuple(itemgetter(i) for i in range(4))


def columns_of(entries: Iterable[Entry]) -> list[list[Any]]:
    """Entries as four columns: timestamps, numbers, lines, metadata."""
    rows = list(entries)
    return [list(map(column, rows)) for column in _at]


@dataclass
class ChunkRef:
    """Where one chunk of a stream is, and what it covers."""

    file: str  #: name inside the shard's chunk directory
    min_ts: int
    max_ts: int
    first_seq: int
    last_seq: int
    count: int
    raw_bytes: int  #: line bytes before compression
    stored_bytes: int  #: the file's size


#: The metadata of every head entry pushed without any: one dict, shared, never changed
#: (a dict per entry would be an object per entry for the garbage collector to walk).
NO_METADATA: dict[str, str] = {}


class Head(msgspec.Struct):
    """A stream's newest entries, journaled but not yet in a chunk, as columns in
    number (``seq``) order: a push extends four lists, where a tuple per entry would
    be an object per entry to allocate and for the garbage collector to walk. Entry
    tuples are made only for the reads that want them (``entries``)."""

    ts: list[int] = msgspec.field(default_factory=list)
    seq: list[int] = msgspec.field(default_factory=list)
    lines: list[str] = msgspec.field(default_factory=list)
    metadata: list[dict[str, str]] = msgspec.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seq)

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> Head:
        return cls(*columns_of(entries))

    def add(self, columns: Columns, first: int) -> None:
        """``columns``' entries, numbered from ``first``."""
        count = len(columns.ts)
        self.ts += columns.ts
        self.seq += range(first, first + count)
        self.lines += columns.lines
        self.metadata += (
            repeat(NO_METADATA, count) if columns.metadata is None else columns.metadata
        )

    def entries(self, low: int = 0, high: int | None = None) -> list[Entry]:
        """Entries at positions ``[low, high)`` as tuples."""
        part = slice(low, high)
        return list(
            zip(self.ts[part], self.seq[part], self.lines[part], self.metadata[part], strict=True)
        )

    def after(self, seq: int) -> int:
        """The position of the first entry numbered above ``seq``."""
        return bisect.bisect_right(self.seq, seq)

    def drop_through(self, seq: int) -> None:
        """Drop the entries numbered up to ``seq`` (what a cut put in a chunk)."""
        cut = self.after(seq)
        for column in (self.ts, self.seq, self.lines, self.metadata):
            del column[:cut]

    def where(self, keep: Iterable[int]) -> Head:
        """The entries at positions ``keep`` only, in that order."""
        at = list(keep)
        ts, seq, lines, metadata = self.ts, self.seq, self.lines, self.metadata
        return Head(
            [ts[i] for i in at], [seq[i] for i in at], [lines[i] for i in at],
            [metadata[i] for i in at],
        )  # fmt: skip

    def size(self) -> int:
        """``entry_bytes`` summed over the entries."""
        return lines_bytes(self.lines) + metadata_bytes(self.metadata)

    def ordered(self) -> ChunkData:
        """The entries sorted by ``(ts, seq)``, as a chunk's columns. Usually they came in
        time order and are only copied; else a stable sort by time keeps the numbers
        of equal times in order (they ascend with position)."""
        ts = self.ts
        if all(map(le, ts, islice(ts, 1, None))):
            return ChunkData(list(ts), list(self.seq), list(self.lines), list(self.metadata))
        picked = self.where(sorted(range(len(ts)), key=ts.__getitem__))
        return ChunkData(picked.ts, picked.seq, picked.lines, picked.metadata)


@dataclass
class Stream:
    tenant: str
    labels: dict[str, str]
    head: Head = field(default_factory=Head)
    chunks: list[ChunkRef] = field(default_factory=list)
    newest_ts: int = 0
    head_bytes: int = 0
    head_since: float = 0.0  #: wall time the head's first entry arrived (0: empty)


@dataclass
class Pushed:
    """One stream's accepted entries in a push record: (ts_ns, line, metadata)."""

    labels: dict[str, str]
    entries: list[tuple[int, str, dict[str, str]]]


class Columns(msgspec.Struct, array_like=True):
    """One stream's entries in a push as columns, what travels to a shard and into its
    journal: one MessagePack array per column, encoded and decoded in C, not a Python
    object per entry. ``metadata`` is None when no entry has any."""

    labels: dict[str, str]
    ts: list[int]
    lines: list[str]
    metadata: list[dict[str, str]] | None = None

    @classmethod
    def of(cls, labels: dict[str, str], entries: list[tuple[int, str, dict[str, str]]]) -> Columns:
        metadata = list(map(_at[2], entries))
        return cls(
            labels, list(map(_at[0], entries)), list(map(_at[1], entries)),
            [pairs or {} for pairs in metadata] if any(metadata) else None,
        )  # fmt: skip

    def metadata_column(self) -> list[dict[str, str]]:
        """Each entry's metadata (a dict of its own for each, empty when none)."""
        if self.metadata is not None:
            return self.metadata
        return [{} for _ in self.ts]

    def size(self) -> int:
        """The bytes the limits count: ``entry_bytes`` summed over the entries."""
        return lines_bytes(self.lines) + (
            metadata_bytes(self.metadata) if self.metadata is not None else 0
        )

    def take(self, keep: list[int]) -> Columns:
        """The entries at positions ``keep`` only."""
        meta = self.metadata
        return Columns(
            self.labels, [self.ts[i] for i in keep], [self.lines[i] for i in keep],
            [meta[i] for i in keep] if meta is not None and any(meta[i] for i in keep) else None,
        )  # fmt: skip


#: A shard's half of a push on the wire: MessagePack bytes (Ray copies them as one
#: buffer, where pickling the entries memoizes every tuple, string and dict).
_pack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder(list[Columns])


def pack(streams: list[Columns]) -> bytes:
    return _pack.encode(streams)


def unpack(blob: bytes) -> list[Columns]:
    return _unpack.decode(blob)


def line_sizes(lines: list[str]) -> list[int]:
    """Each line's UTF-8 bytes; ASCII lines (most) counted without encoding."""
    if all(map(str.isascii, lines)):
        return list(map(len, lines))
    return list(map(len, map(str.encode, lines)))


def lines_bytes(lines: list[str]) -> int:
    """UTF-8 bytes of ``lines`` together."""
    return sum(line_sizes(lines))


def metadata_bytes(metadata: list[dict[str, str]]) -> int:
    if not any(metadata):  # the usual case: no entry has any
        return 0
    return sum(len(k) + len(v) for pairs in metadata for k, v in pairs.items())


def stream_id(tenant: str, labels: dict[str, str]) -> str:
    canonical = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return xxhash.xxh3_128_hexdigest(f"{tenant}\x02{canonical}".encode())


def labels_text(labels: dict[str, str]) -> str:
    """``{a="1", b="2"}``, as Loki writes a label set."""
    import orjson

    return (
        "{" + ", ".join(f"{k}={orjson.dumps(v).decode()}" for k, v in sorted(labels.items())) + "}"
    )


def check_labels(labels: dict[str, str], config: LogsSettings) -> dict[str, str]:
    """A stream's labels, checked: names, lengths and count (429 over the count)."""
    if not labels:
        raise BadEntry("a stream needs at least one label")
    if len(labels) > config.max_labels_per_stream:
        raise IngestLimited(
            f"a stream has at most {config.max_labels_per_stream} labels",
            reason="max_label_names_per_series", limit=config.max_labels_per_stream,
        )  # fmt: skip
    for name, value in labels.items():
        if not isinstance(name, str) or not LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise BadEntry(f"bad label name {str(name)[:64]!r}")
        if len(name) > config.max_label_name_chars:
            raise BadEntry(f"a label name has at most {config.max_label_name_chars} characters")
        if not isinstance(value, str) or not value:
            raise BadEntry(f"label {name} needs a non-empty string value")
        if len(value) > config.max_label_value_chars:
            raise BadEntry(f"a label value has at most {config.max_label_value_chars} characters")
    return dict(sorted(labels.items()))


def entry_bytes(line: str, metadata: dict[str, str]) -> int:
    return len(line.encode()) + sum(len(k) + len(v) for k, v in metadata.items())


def check_entry(
    ts_ns: Any, line: Any, metadata: Any, config: LogsSettings
) -> tuple[int, str, dict[str, str]]:
    if type(ts_ns) is not int or not 0 < ts_ns < 2**63:
        raise BadEntry("a timestamp is nanoseconds since the epoch, a positive integer")
    if not isinstance(line, str):
        raise BadEntry("a line is a string")
    metadata = metadata or {}
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_PAIRS:
        raise BadEntry(f"structured metadata is at most {MAX_METADATA_PAIRS} string pairs")
    for name, value in metadata.items():
        if not isinstance(value, str) or not LABEL_NAME.fullmatch(str(name)):
            raise BadEntry("structured metadata maps label-like names to strings")
    if entry_bytes(line, metadata) > config.max_line_bytes:
        raise IngestLimited(
            f"a line (with its metadata) has at most {config.max_line_bytes} bytes",
            reason="line_too_long", limit=config.max_line_bytes,
        )  # fmt: skip
    return ts_ns, line, metadata


def check_entries(
    labels: dict[str, str], entries: list[tuple[int, str, dict[str, str]]], config: LogsSettings
) -> tuple[Columns, int]:
    """``entries`` checked as ``check_entry`` checks each, as columns, and their bytes.
    The common push (int timestamps, str lines, no metadata) is checked column by
    column with builtins; anything else goes entry by entry, which names the fault."""
    if entries:
        try:
            if set(map(len, entries)) != {3}:
                raise ValueError("not (ts, line, metadata)")
            ts, lines = list(map(_at[0], entries)), list(map(_at[1], entries))
        except (TypeError, ValueError, LookupError):
            pass
        else:
            if (
                not any(map(_at[2], entries))
                and set(map(type, ts)) == {int}
                and min(ts) > 0
                and max(ts) < 2**63
                and set(map(type, lines)) == {str}
            ):
                sizes = line_sizes(lines)
                if max(sizes) <= config.max_line_bytes:
                    return Columns(labels, ts, lines), sum(sizes)
    kept = [check_entry(*entry, config) for entry in entries]
    return Columns.of(labels, kept), sum(entry_bytes(e[1], e[2]) for e in kept)


class Bucket:
    """A token bucket (not journaled: limits restart full)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.capacity = rate, max(burst, rate)
        self.tokens, self.at = self.capacity, now

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now

    def wait_s(self, count: float) -> float:
        """Seconds until ``count`` tokens are there (inf if never)."""
        if count > self.capacity:
            return float("inf")
        return max(0.0, (count - self.tokens) / self.rate)


class RateLimiter:
    """A tenant's bytes/s and lines/s buckets: a push takes from both, or from neither."""

    def __init__(self, config: LogsSettings, share: float = 1.0, clock: Any = time.monotonic):
        self.config, self.share, self.clock = config, share, clock
        self.buckets: dict[str, tuple[Bucket, Bucket]] = {}

    def take(self, tenant: str, lines: int, size: int, limits: dict[str, float]) -> None:
        now = self.clock()
        found = self.buckets.get(tenant)
        rates = (
            limits.get("ingest_rate_bytes_per_s", self.config.ingest_rate_bytes_per_s) * self.share,
            limits.get("ingest_burst_bytes", self.config.ingest_burst_bytes) * self.share,
            limits.get("ingest_rate_lines_per_s", self.config.ingest_rate_lines_per_s) * self.share,
            limits.get("ingest_burst_lines", self.config.ingest_burst_lines) * self.share,
        )
        if found is None or (found[0].rate, found[0].capacity, found[1].rate) != (
            rates[0], max(rates[1], rates[0]), rates[2],
        ):  # fmt: skip
            found = (Bucket(rates[0], rates[1], now), Bucket(rates[2], rates[3], now))
            self.buckets[tenant] = found
        by_bytes, by_lines = found
        by_bytes.refill(now)
        by_lines.refill(now)
        if size > by_bytes.tokens or lines > by_lines.tokens:
            wait = max(by_bytes.wait_s(size), by_lines.wait_s(lines))
            what = "bytes" if size > by_bytes.tokens else "lines"
            raise IngestLimited(
                f"ingest rate limit reached ({what} per second); nothing was kept",
                reason="rate_limited", retry_after_s=min(wait, 3_600.0),
            )  # fmt: skip
        by_bytes.tokens -= size
        by_lines.tokens -= lines


class ChunkData(msgspec.Struct, array_like=True):
    """A chunk's entries as columns, sorted by ``(ts, seq)``: what its file holds
    (``actors.logs.chunks``)."""

    ts: list[int]
    seq: list[int]
    lines: list[str]
    metadata: list[dict[str, str]]

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> ChunkData:
        return cls(*columns_of(entries))


__all__ = [
    "NO_METADATA",
    "REALM_TENANT",
    "Bucket",
    "ChunkData",
    "ChunkRef",
    "Columns",
    "Entry",
    "Head",
    "Pushed",
    "RateLimiter",
    "Stream",
    "check_entries",
    "check_entry",
    "check_labels",
    "columns_of",
    "entry_bytes",
    "labels_text",
    "lines_bytes",
    "metadata_bytes",
    "pack",
    "stream_id",
    "unpack",
]
