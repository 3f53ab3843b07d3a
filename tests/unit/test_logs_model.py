"""Input rules, rate limits, cursors and the window sums of metric queries."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from actors.logs.chunks import Chunk, encode_chunk, window_sums
from actors.logs.client import format_cursor, parse_cursor
from actors.logs.errors import BadEntry, IngestLimited
from actors.logs.model import (
    ChunkData,
    Columns,
    Head,
    RateLimiter,
    check_entries,
    check_entry,
    check_labels,
    entry_bytes,
    pack,
    stream_id,
    unpack,
)
from actors.logs.settings import LogsSettings
from actors.runtime.errors import InvalidInput

CONFIG = LogsSettings(max_line_bytes=100)


def test_labels_are_checked_and_sorted() -> None:
    assert list(check_labels({"b": "2", "a": "1"}, CONFIG)) == ["a", "b"]
    with pytest.raises(IngestLimited) as many:
        check_labels({f"l{i}": "v" for i in range(16)}, CONFIG)
    assert many.value.details["reason"] == "max_label_names_per_series"
    for bad in ({}, {"9a": "v"}, {"__name__": "v"}, {"a": ""}, {"a-b": "v"}):
        with pytest.raises(BadEntry):
            check_labels(bad, CONFIG)


def test_entries_are_checked() -> None:
    assert check_entry(5, "line", None, CONFIG) == (5, "line", {})
    with pytest.raises(IngestLimited) as long:
        check_entry(5, "x" * 101, {}, CONFIG)
    assert long.value.details["reason"] == "line_too_long"
    with pytest.raises(IngestLimited):  # metadata counts with the line
        check_entry(5, "x" * 90, {"trace": "y" * 10}, CONFIG)
    for ts in (0, -1, 2**63, 1.5, True):
        with pytest.raises(BadEntry):
            check_entry(ts, "x", {}, CONFIG)
    with pytest.raises(BadEntry):
        check_entry(5, "x", {"bad name": "v"}, CONFIG)


def test_entries_are_checked_by_column_as_one_by_one() -> None:
    """``check_entries`` (the push path) keeps, refuses and counts what ``check_entry``
    does, whether its column-wise fast path or the entry-by-entry one decides."""
    plain: list[Any] = [(5, "ascii line", {}), (6, "é ünïcode", None), (7, "x" * 100, {})]
    with_metadata: list[Any] = [(5, "a", {"trace": "t1"}), (6, "b", {})]
    entries: list[Any]
    for entries in (plain, with_metadata, []):
        columns, size = check_entries({"app": "a"}, entries, CONFIG)
        kept = [check_entry(e[0], e[1], e[2], CONFIG) for e in entries]
        assert list(zip(columns.ts, columns.lines, columns.metadata_column(), strict=True)) == kept
        assert size == sum(entry_bytes(line, meta) for _, line, meta in kept)
        assert columns.size() == size
    assert check_entries({"a": "1"}, plain, CONFIG)[0].metadata is None
    assert check_entries({"a": "1"}, with_metadata, CONFIG)[0].metadata == [{"trace": "t1"}, {}]
    with pytest.raises(IngestLimited) as long:  # 67 characters, 101 bytes
        check_entries({"a": "1"}, [(5, "ok", {}), (6, "é" * 34 + "x" * 33, {})], CONFIG)
    assert long.value.details["reason"] == "line_too_long"
    cases: list[Any] = [[(True, "x", {})], [(5, b"x", {})], [(0, "x", {})], [(2**63, "x", {})],
                        [(5, "x", {"bad name": "v"})], [(5, "x")]]  # fmt: skip
    for bad in cases:
        with pytest.raises((BadEntry, TypeError)):
            check_entries({"a": "1"}, bad, CONFIG)


def test_columns_travel_as_msgpack_and_count_their_bytes() -> None:
    parts = [
        Columns({"app": "a"}, [1, 2], ["one", "twö"]),
        Columns({"app": "b"}, [3], ["three"], [{"trace": "t"}]),
    ]
    assert unpack(pack(parts)) == parts
    assert parts[0].size() == 3 + 4 and parts[1].size() == 5 + 6
    assert parts[0].metadata_column() == [{}, {}]
    assert parts[1].take([]) == Columns({"app": "b"}, [], [])
    head = Head.of([(1, 10, "one", {}), (2, 11, "twö", {"k": "vv"})])
    assert head.size() == 3 + 4 + 3 and Head().size() == 0
    head.add(Columns({"app": "a"}, [0], ["zero"]), 12)
    assert head.ordered() == ChunkData([0, 1, 2], [12, 10, 11], ["zero", "one", "twö"],
                                       [{}, {}, {"k": "vv"}])  # fmt: skip
    head.drop_through(10)
    assert head.entries() == [(2, 11, "twö", {"k": "vv"}), (0, 12, "zero", {})]
    assert head.where([1]).entries() == [(0, 12, "zero", {})]


def test_stream_ids_depend_on_tenant_and_labels_not_order() -> None:
    assert stream_id("t", {"a": "1", "b": "2"}) == stream_id("t", {"b": "2", "a": "1"})
    assert stream_id("t", {"a": "1"}) != stream_id("u", {"a": "1"})
    assert stream_id("t", {"a": "1", "b": "2"}) != stream_id("t", {"a": "1b", "": "2"})


def test_the_rate_limiter_takes_all_or_nothing_and_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(
        LogsSettings(ingest_rate_lines_per_s=10, ingest_burst_lines=20,
                     ingest_rate_bytes_per_s=1_000, ingest_burst_bytes=1_000),
        clock=lambda: now[0],
    )  # fmt: skip
    limiter.take("t", 15, 100, {})
    with pytest.raises(IngestLimited) as refused:
        limiter.take("t", 10, 100, {})
    assert refused.value.details["reason"] == "rate_limited"
    assert refused.value.details["retry_after_s"] == pytest.approx(0.5)
    limiter.take("u", 20, 100, {})  # tenants have their own buckets
    now[0] = 0.5
    limiter.take("t", 10, 100, {})
    with pytest.raises(IngestLimited):
        limiter.take("t", 1, 2_000, {})  # over the bytes burst: never fits
    with pytest.raises(IngestLimited):
        limiter.take("v", 1, 100, {"ingest_burst_bytes": 50, "ingest_rate_bytes_per_s": 50})


def test_cursors_round_trip_and_refuse_others() -> None:
    assert parse_cursor(format_cursor([0, 17, 3]), 3) == [0, 17, 3]
    for bad in ("", "c1-1-2", "c2-1-2-3", "c1-a-2-3", "c1-1--3", "c1-1-2-" + "9" * 30):
        with pytest.raises(InvalidInput):
            parse_cursor(bad, 3)


def test_chunks_round_trip_and_window_sums() -> None:
    entries = [(10, 1, "a", {}), (20, 2, "bb", {"k": "v"}), (30, 3, "ccc", {})]
    chunk = Chunk(encode_chunk(entries))
    assert chunk.entries() == entries
    at = np.array([10, 20, 30, 40], dtype=np.int64)
    assert list(window_sums(chunk.ts, at, 15)) == [1, 2, 2, 1]  # (t - 15, t]
    assert list(window_sums(chunk.ts, at, 15, chunk.cumulative_bytes)) == [1, 3, 5, 3]
