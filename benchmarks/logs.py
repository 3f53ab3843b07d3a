"""Logs: Realm's log shards against SQLite FTS5 holding the same lines.

  ingest        lines/s, pushes of --batch lines (Realm: LogsClient.push, journaled
                on the shards; FTS5: one transaction per batch, WAL, synchronous=FULL);
                each side's input (Realm's push bodies, FTS5's rows) is made before
                its clock starts
  filter        {app="x"} |= "needle" over every line, every match: p50/p99, and the
                first run alone (it builds what later runs reuse: the search text of
                each chunk)
  metric        sum by (level) (count_over_time({app="x"}[1m])) over every line, step 1m
                (p50/p99, first run)
  disk          bytes on disk per line (chunks + store; FTS5 file) against the raw line bytes;
                Realm's store file keeps the pages its journal freed (SQLite reuses them,
                it does not shrink), so "chunks/raw" is the size compacted lines settle at

The lines are logfmt, ~110 bytes, over --span-s seconds, in streams of app x/y and
four levels; one line in --needle-every holds "needle". Realm runs --shards
LogShard actors on a fresh local Ray, its compactor cutting chunks during the
ingest as in service (what is left in the heads is cut before the queries);
FTS5 runs in this process (no Ray, no IPC), which favours it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness  # before anything that imports ray

CLAIM = (
    "Issue 13 (logs): ingest >= 1x SQLite FTS5's lines/s (batches of 1,000); "
    '{app="x"} |= "needle" over 1M lines p99 <= 1 s; bytes on disk per line vs raw.'
)
NAMESPACE = "realm-bench-logs"
TENANT = "bench"
LEVELS = ("debug", "info", "warn", "error")
NS = 1_000_000_000


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1_000, help="lines per push")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--span-s", type=float, default=3_600.0, help="time the lines cover")
    parser.add_argument("--needle-every", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=20, help="runs of each query")


def make_lines(args: argparse.Namespace) -> list[tuple[str, str, int, str]]:
    """(app, level, ts_ns, line) in time order."""
    rng = random.Random(args.seed)
    start = time.time_ns() - int(args.span_s * NS) - NS
    step = int(args.span_s * NS) // args.lines
    found = []
    for i in range(args.lines):
        app = "x" if rng.random() < 0.5 else "y"
        level = LEVELS[rng.randrange(4)]
        word = "needle" if i % args.needle_every == 0 else "hay"
        line = (
            f"level={level} app={app} user={rng.randrange(100_000)} dur_ms={rng.randrange(1_000)} "
            f'msg="request {word} handled path=/api/v1/items/{rng.randrange(10_000)}"'
        )
        found.append((app, level, start + i * step, line))
    return found


def batches(
    lines: list[tuple[str, str, int, str]], size: int
) -> list[list[tuple[str, str, int, str]]]:
    return [lines[i : i + size] for i in range(0, len(lines), size)]


def push_body(batch: list[tuple[str, str, int, str]]) -> list[Any]:
    """A batch as ``LogsClient.push`` takes it: (labels, [(ts, line, metadata)]) per
    stream. Made before the clock starts, as FTS5's rows are: each side times only
    what it does with lines a client already holds."""
    by_stream: dict[tuple[str, str], list[tuple[int, str, dict[str, str]]]] = {}
    for app, level, ts, line in batch:
        by_stream.setdefault((app, level), []).append((ts, line, {}))
    return [({"app": a, "level": lv}, e) for (a, lv), e in by_stream.items()]


def query_range(lines: list[tuple[str, str, int, str]]) -> tuple[int, int]:
    """``[start, end)`` holding every line: from the lines themselves, not from the
    clock (Ray may take minutes to start on a loaded machine, and a range ending
    now would then leave the oldest lines out)."""
    return lines[0][2], lines[-1][2] + NS


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "first_ms": round(samples[0] * 1000, 2),
        "runs": len(ordered),
    }


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def run_realm(args: argparse.Namespace, lines: list[Any], data_dir: Path) -> dict[str, Any]:
    from actors.logs.client import LogsClient
    from actors.logs.logql import parse
    from actors.logs.settings import LogsSettings
    from actors.runtime.settings import Settings

    config = LogsSettings(
        shards=args.shards,
        ingest_rate_bytes_per_s=1e12, ingest_burst_bytes=1e12,
        ingest_rate_lines_per_s=1e12, ingest_burst_lines=1e12,
        ship_realm_logs=False, retention_s=30 * 86_400,
    )  # fmt: skip
    settings = Settings(
        namespace=NAMESPACE, store_url="", data_dir=data_dir, sections={"logs": config}
    )
    client = LogsClient(settings)
    await client.start()
    pushes = [push_body(batch) for batch in batches(lines, args.batch)]
    harness.progress(f"realm: ingest {len(lines):,} lines in {len(pushes):,} pushes")
    in_flight = asyncio.Semaphore(args.concurrency)

    async def push(body: list[Any]) -> None:
        async with in_flight:
            await client.push(TENANT, body)

    started = time.perf_counter()
    await asyncio.gather(*(push(b) for b in pushes))
    ingest_s = time.perf_counter() - started
    harness.progress(f"realm: {len(lines) / ingest_s:,.0f} lines/s; cutting chunks")
    await client.flush()
    start, end = query_range(lines)
    needle = parse('{app="x"} |= "needle"')
    metric = parse('sum by (level) (count_over_time({app="x"}[1m]))')
    expected = sum(1 for app, _, _, line in lines if app == "x" and "needle" in line)
    filter_s, metric_s = [], []
    for _ in range(args.queries):
        t = time.perf_counter()
        found = await client.select(TENANT, needle, start_ns=start, end_ns=end, limit=5_000)  # type: ignore[arg-type]
        filter_s.append(time.perf_counter() - t)
        assert len(found) == expected, (len(found), expected)
        t = time.perf_counter()
        series = await client.metric(TENANT, metric, start_ns=start, end_ns=end, step_ns=60 * NS)  # type: ignore[arg-type]
        metric_s.append(time.perf_counter() - t)
        assert len(series) == 4
    stats = await client.stats(TENANT)
    return {
        "ingest_lines_per_s": round(len(lines) / ingest_s, 1),
        "filter": percentiles(filter_s),
        "metric": percentiles(metric_s),
        "matches": expected,
        "disk_bytes": disk_bytes(data_dir),
        "chunk_bytes": stats["chunk_bytes"],
        "entries": stats["entries"],
    }


def run_fts5(args: argparse.Namespace, lines: list[Any], data_dir: Path) -> dict[str, Any]:
    path = data_dir / "fts5.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE VIRTUAL TABLE logs USING fts5(line, app UNINDEXED, level UNINDEXED, ts UNINDEXED)"
    )
    harness.progress(f"fts5: ingest {len(lines):,} lines")
    rows = [
        [(line, app, level, ts) for app, level, ts, line in batch]
        for batch in batches(lines, args.batch)
    ]
    started = time.perf_counter()
    for batch in rows:
        db.execute("BEGIN")
        db.executemany("INSERT INTO logs (line, app, level, ts) VALUES (?, ?, ?, ?)", batch)
        db.execute("COMMIT")
    ingest_s = time.perf_counter() - started
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    harness.progress(f"fts5: {len(lines) / ingest_s:,.0f} lines/s")
    start, end = query_range(lines)
    filter_s, metric_s = [], []
    for _ in range(args.queries):
        t = time.perf_counter()
        db.execute(
            "SELECT ts, line FROM logs WHERE logs MATCH 'needle' AND app = 'x' "
            "AND ts >= ? AND ts < ? ORDER BY ts DESC LIMIT 5000",
            (start, end),
        ).fetchall()
        filter_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        db.execute(
            "SELECT level, (ts - ?) / ? AS step, count(*) FROM logs WHERE app = 'x' "
            "AND ts >= ? AND ts < ? GROUP BY level, step",
            (start, 60 * NS, start, end),
        ).fetchall()
        metric_s.append(time.perf_counter() - t)
    db.close()
    return {
        "ingest_lines_per_s": round(len(lines) / ingest_s, 1),
        "filter": percentiles(filter_s),
        "metric": percentiles(metric_s),
        "disk_bytes": disk_bytes(data_dir),
    }


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__ or "", argv, concurrency=4, extra=_add_flags)
    if args.quick:
        args.lines, args.queries = 50_000, 5
    lines = make_lines(args)
    raw = sum(len(line.encode()) for *_, line in lines)
    realm_dir = Path(tempfile.mkdtemp(prefix="realm-bench-logs-"))
    fts_dir = Path(tempfile.mkdtemp(prefix="realm-bench-fts5-"))
    try:
        fts5 = run_fts5(args, lines, fts_dir)
        with harness.ray_session(namespace=NAMESPACE):
            realm = asyncio.run(run_realm(args, lines, realm_dir))
    finally:
        shutil.rmtree(realm_dir, ignore_errors=True)
        shutil.rmtree(fts_dir, ignore_errors=True)
    for side in (realm, fts5):
        side["disk_bytes_per_line"] = round(side["disk_bytes"] / len(lines), 2)
        side["throughput_ops_s"] = side["ingest_lines_per_s"]  # what the harness plots
    raw_per_line = round(raw / len(lines), 2)
    ratios = {
        "realm/fts5 ingest lines/s": round(
            realm["ingest_lines_per_s"] / fts5["ingest_lines_per_s"], 3
        ),
        "realm/fts5 filter p99": round(
            realm["filter"]["p99_ms"] / max(fts5["filter"]["p99_ms"], 1e-3), 3
        ),
        "realm/fts5 metric p99": round(
            realm["metric"]["p99_ms"] / max(fts5["metric"]["p99_ms"], 1e-3), 3
        ),
        "realm disk/raw bytes": round(realm["disk_bytes_per_line"] / raw_per_line, 3),
        "realm chunks/raw bytes": round(realm["chunk_bytes"] / len(lines) / raw_per_line, 3),
        "fts5 disk/raw bytes": round(fts5["disk_bytes_per_line"] / raw_per_line, 3),
    }
    for name, value in ratios.items():
        harness.progress(f"{name}: {value}")
    harness.write_result(
        "logs",
        {
            "claim": CLAIM,
            "params": vars(args)
            | {"load_avg_at_end": os.getloadavg(), "raw_bytes_per_line": raw_per_line},
            "variants": {"realm": realm, "fts5": fts5},
            "ratios": ratios,
        },
    )


if __name__ == "__main__":
    main()
