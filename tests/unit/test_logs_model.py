"""Input rules, rate limits, cursors and the window sums of metric queries."""

from __future__ import annotations

import numpy as np
import pytest

from actors.logs.client import format_cursor, parse_cursor
from actors.logs.errors import BadEntry, IngestLimited
from actors.logs.model import (
    Chunk,
    RateLimiter,
    check_entry,
    check_labels,
    encode_chunk,
    stream_id,
    window_sums,
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
