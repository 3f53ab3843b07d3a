"""A log shard in-process: ingest, durability across a restart, chunks, queries,
tail cursors, retention and deletes, on a fake clock and a real SQLite store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.logs.errors import DeleteNotFound, IngestLimited
from actors.logs.logql import MetricQuery, parse, parse_log
from actors.logs.model import Columns, Pushed, pack, stream_id
from actors.logs.settings import LogsSettings
from actors.logs.shard import LogShard, RetentionRule, TenantRetention
from actors.runtime import codec
from actors.runtime.clock import FakeClock
from actors.runtime.store import SQLiteStore

NS = 1_000_000_000


async def open_shard(
    store: SQLiteStore, clock: FakeClock, directory: Path, **config: Any
) -> LogShard:
    shard = LogShard(LogsSettings(**config), directory=directory, clock=clock)
    await shard.open(store, "logs-shard-0")
    shard.remove_orphans()
    return shard


def at(clock: FakeClock, seconds: float = 0.0) -> int:
    return int((clock.time() + seconds) * NS)


async def push(
    shard: LogShard, tenant: str, labels: dict[str, str], *entries: tuple[int, str]
) -> dict[str, int]:
    return await shard.push(
        tenant, [Pushed(labels, [(ts, line, {}) for ts, line in entries])], max_streams=100
    )


def lines(found: list[Any]) -> list[str]:
    return [f[2] for f in found]


async def select(
    shard: LogShard, tenant: str, text: str, clock: FakeClock, **options: Any
) -> list[Any]:
    return await shard.select(
        tenant,
        parse_log(text),
        start_ns=at(clock, -3_600),
        end_ns=at(clock, 1),
        **{"limit": 100, **options},
    )


async def test_pushed_entries_survive_a_restart_before_and_after_a_cut(
    store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    shard = await open_shard(store, clock, tmp_path)
    await push(shard, "t", {"app": "a"}, (at(clock, -2), "one"), (at(clock, -1), "two"))
    again = await open_shard(store, clock, tmp_path)  # a restart: memory gone, store kept
    assert lines(await select(again, "t", '{app="a"}', clock)) == ["two", "one"]
    await again.flush()
    assert again.streams and all(not s.head and s.chunks for s in again.streams.values())
    await push(again, "t", {"app": "a"}, (at(clock), "three"))
    third = await open_shard(store, clock, tmp_path)
    assert lines(await select(third, "t", '{app="a"}', clock, forward=True)) == [
        "one",
        "two",
        "three",
    ]


async def test_an_idempotency_key_keeps_a_push_once(
    store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    shard = await open_shard(store, clock, tmp_path)
    batch = [Pushed({"app": "a"}, [(at(clock), "x", {})])]
    first = await shard.push("t", batch, max_streams=10, key="k1")
    second = await shard.push("t", batch, max_streams=10, key="k1")
    assert first == second == {"accepted": 1}
    assert len(await select(shard, "t", '{app="a"}', clock)) == 1


async def test_a_packed_push_is_kept_as_a_pushed_one_and_replays(
    store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    """What ``LogsClient`` sends (columns packed as bytes) and what the log handler
    sends (``Pushed``) land alike, survive a restart, and filter alike; a journal
    written before columns (op ``push``) still replays."""
    shard = await open_shard(store, clock, tmp_path, out_of_order_window_s=60, max_future_s=5)
    packed = pack(
        [
            Columns({"app": "a"}, [at(clock, -2), at(clock, -1)], ["one", "two"]),
            Columns({"app": "b"}, [at(clock), at(clock, -61), at(clock, 6)], ["b1", "old", "f"],
                    [{"trace": "t"}, {}, {}]),
        ]
    )  # fmt: skip
    answer = await shard.push("t", packed, max_streams=10, key="p1")
    assert answer == {"accepted": 3, "too_far_behind": 1, "too_far_ahead": 1}
    assert await shard.push("t", packed, max_streams=10, key="p1") == answer
    shard.record("push", tenant="t", streams=[Pushed({"app": "a"}, [(at(clock), "three", {})])],
                 discarded={}, now=clock.time())  # fmt: skip
    await shard.journal.synced()
    again = await open_shard(store, clock, tmp_path)
    assert lines(await select(again, "t", '{app="a"}', clock, forward=True)) == [
        "one", "two", "three",
    ]  # fmt: skip
    found = await select(again, "t", '{app="b"}', clock)
    assert [(f[2], f[3]) for f in found] == [("b1", {"trace": "t"})]
    assert sorted(seq for s in again.streams.values() for seq in s.head.seq) == [1, 2, 3, 4]
    sizes = {s.labels["app"]: s.head_bytes for s in again.streams.values()}
    assert sizes == {"a": 3 + 3 + 5, "b": 2 + 6}
    await again.push("t", [Pushed({"app": "a"}, [(at(clock), "four", {})])], max_streams=10)
    await again.flush()  # a cut while the head holds every kind of push
    assert all(not s.head and s.head_bytes == 0 for s in again.streams.values())
    assert (await again.stats("t"))["raw_bytes"] == 3 + 3 + 5 + 4 + 2 + 6


async def test_a_version_1_snapshot_and_journal_still_restore(
    store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    """Heads as entry tuples (snapshot) and pushes as ``Pushed`` (journal), as schema
    version 1 wrote them, come back as version 2's columns."""
    sid = stream_id("t", {"app": "a"})
    state = {
        "streams": {
            sid: {"tenant": "t", "labels": {"app": "a"}, "head": [[at(clock, -2), 1, "one", {}]],
                  "chunks": [], "newest_ts": at(clock, -2), "head_bytes": 3,
                  "head_since": clock.time()},
        },
        "next_seq": 2, "retention": {}, "limits": {}, "deletes": [],
    }  # fmt: skip
    await store.append(
        "logs-shard-0", 0, [codec.encode([1, "set_limits", {"tenant": "t", "limits": {}}, None])]
    )
    await store.write_snapshot(
        "logs-shard-0", 1, codec.encode({"version": 1, "state": state, "replies": []})
    )
    record = [1, "push", {"tenant": "t", "streams": [{"labels": {"app": "a"},
              "entries": [[at(clock, -1), "two", {"k": "v"}]]}], "discarded": {},
              "now": clock.time()}, "key-1"]  # fmt: skip
    await store.append("logs-shard-0", 1, [codec.encode(record)])
    shard = await open_shard(store, clock, tmp_path)
    found = await select(shard, "t", '{app="a"}', clock, forward=True)
    assert [(f[2], f[3], f[4]) for f in found] == [("one", {}, 1), ("two", {"k": "v"}, 2)]
    assert shard.streams[sid].head_bytes == 3 + 3 + 2 and shard.knows("key-1")


async def test_tenants_see_only_their_own(
    store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    shard = await open_shard(store, clock, tmp_path)
    await push(shard, "alice", {"app": "a"}, (at(clock), "alice's"))
    await push(shard, "bob", {"app": "a"}, (at(clock), "bob's"))
    assert lines(await select(shard, "alice", '{app="a"}', clock)) == ["alice's"]
    assert await shard.labels("bob", start_ns=at(clock, -10), end_ns=at(clock, 10)) == ["app"]
    assert await shard.labels("carol", start_ns=at(clock, -10), end_ns=at(clock, 10)) == []


async def test_out_of_order_within_the_window_is_kept_beyond_it_counted(
    store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    shard = await open_shard(store, clock, tmp_path, out_of_order_window_s=60, max_future_s=5)
    answer = await push(
        shard, "t", {"app": "a"},
        (at(clock), "newest"), (at(clock, -30), "late but in"), (at(clock, -61), "too late"),
        (at(clock, 6), "from the future"),
    )  # fmt: skip
    assert answer == {"accepted": 2, "too_far_behind": 1, "too_far_ahead": 1}
    assert lines(await select(shard, "t", '{app="a"}', clock)) == ["newest", "late but in"]
    assert (await shard.stats("t"))["discarded"] == {"too_far_behind": 1, "too_far_ahead": 1}


async def test_the_stream_limit_refuses_a_push_whole(
    store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    shard = await open_shard(store, clock, tmp_path)
    for n in range(3):
        await shard.push("t", [Pushed({"n": str(n)}, [(at(clock), "x", {})])], max_streams=3)
    with pytest.raises(IngestLimited) as refused:
        await shard.push(
            "t",
            [
                Pushed({"n": "0"}, [(at(clock), "y", {})]),
                Pushed({"n": "9"}, [(at(clock), "z", {})]),
            ],
            max_streams=3,
        )
    assert refused.value.details["reason"] == "stream_limit"
    assert lines(await select(shard, "t", '{n=~".+"}', clock)) == ["x", "x", "x"]
    await shard.push("t", [Pushed({"n": "0"}, [(at(clock), "known stream", {})])], max_streams=3)


async def test_filters_limits_and_direction_over_chunks_and_head(
    store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    shard = await open_shard(store, clock, tmp_path)
    await push(
        shard,
        "t",
        {"app": "a"},
        *[(at(clock, -100 + i), f"line {i} {'needle' if i % 10 == 0 else ''}") for i in range(50)],
    )
    await shard.flush()
    await push(
        shard,
        "t",
        {"app": "a"},
        *[
            (at(clock, -50 + i), f"line {50 + i} {'needle' if i % 10 == 0 else ''}")
            for i in range(50)
        ],
    )
    found = await select(shard, "t", '{app="a"} |= "needle"', clock)
    assert [f[2].split()[1] for f in found] == [
        "90",
        "80",
        "70",
        "60",
        "50",
        "40",
        "30",
        "20",
        "10",
        "0",
    ]
    oldest = await select(shard, "t", '{app="a"}', clock, limit=3, forward=True)
    assert [f[2].split()[1] for f in oldest] == ["0", "1", "2"]
    newest = await select(shard, "t", '{app="a"} != "needle"', clock, limit=2)
    assert [f[2].split()[1] for f in newest] == ["99", "98"]
    window = await shard.select(
        "t", parse_log('{app="a"}'), start_ns=at(clock, -60), end_ns=at(clock, -55), limit=100
    )
    assert [f[2].split()[1] for f in window] == ["44", "43", "42", "41", "40"]


async def test_metric_queries_count_in_windows_at_steps(
    store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    shard = await open_shard(store, clock, tmp_path)
    base = at(clock, -600)
    await push(
        shard, "t", {"app": "a", "level": "info"}, *[(base + i * NS, "i") for i in range(120)]
    )
    await push(
        shard,
        "t",
        {"app": "a", "level": "error"},
        *[(base + i * NS, "error!") for i in range(0, 120, 2)],
    )
    await shard.flush()
    await push(shard, "t", {"app": "a", "level": "error"}, (base + 119 * NS, "late error"))
    query = parse('sum by (level) (count_over_time({app="a"}[1m]))')
    assert isinstance(query, MetricQuery)
    series = await shard.metric(
        "t", query, start_ns=base + 59 * NS, end_ns=base + 119 * NS, step_ns=60 * NS
    )
    assert {k: list(v) for k, v in series.items()} == {
        (("level", "info"),): [60.0, 60.0],
        (("level", "error"),): [30.0, 31.0],
    }
    sized = parse('sum(bytes_over_time({app="a"} |= "error" [1m]))')
    assert isinstance(sized, MetricQuery)
    total = await shard.metric(
        "t", sized, start_ns=base + 119 * NS, end_ns=base + 119 * NS, step_ns=NS
    )
    assert list(total[()]) == [30 * 6 + 10]
    by_json = parse('count_over_time({app="a"} | logfmt | level="x" [1m])')
    assert isinstance(by_json, MetricQuery)
    assert (
        await shard.metric("t", by_json, start_ns=base, end_ns=base + 60 * NS, step_ns=60 * NS)
        == {}
    )


async def test_tail_cursor_resumes_without_gap_or_duplicate(
    store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    shard = await open_shard(store, clock, tmp_path)
    start = await shard.position()
    query = parse_log('{app="a"} |= "keep"')
    await push(shard, "t", {"app": "a"}, *[(at(clock), f"keep {i}") for i in range(5)])
    await push(shard, "t", {"app": "b"}, (at(clock), "keep other stream"))
    first, after = await shard.tail("t", query, after=start, limit=3)
    assert lines(first) == ["keep 0", "keep 1", "keep 2"]
    await shard.flush()  # the rest moves into a chunk: the cursor still finds it
    await push(shard, "t", {"app": "a"}, (at(clock), "drop me"), (at(clock), "keep 5"))
    again = await open_shard(store, clock, tmp_path)
    rest, end = await again.tail("t", query, after=after, limit=100)
    assert lines(rest) == ["keep 3", "keep 4", "keep 5"]
    assert await again.tail("t", query, after=end, limit=100) == ([], end)


async def test_retention_global_tenant_and_selector(
    store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    shard = await open_shard(store, clock, tmp_path, retention_s=1_000)
    await shard.set_retention(
        "t", TenantRetention(500.0, [RetentionRule('{app="short"}', 100.0)]), key="r1"
    )
    for app in ("short", "long"):
        await push(shard, "t", {"app": app}, (at(clock, -10), f"{app} old"))
        await push(shard, "u", {"app": app}, (at(clock, -10), f"{app} old"))
    await shard.flush()
    clock.advance(200)
    await shard.compact()
    assert lines(await select(shard, "t", '{app=~".+"}', clock)) == ["long old"]
    assert len(await select(shard, "u", '{app=~".+"}', clock)) == 2
    clock.advance(400)
    await shard.compact()
    assert await select(shard, "t", '{app=~".+"}', clock) == []
    kept = {c.file for s in shard.streams.values() for c in s.chunks}
    assert len(kept) == 2 and all(s.tenant == "u" for s in shard.streams.values())


async def test_delete_hides_at_once_and_the_compactor_removes(
    store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    shard = await open_shard(store, clock, tmp_path)
    await push(
        shard,
        "t",
        {"app": "a"},
        *[(at(clock, -10 + i), f"secret {i}" if i % 2 else f"public {i}") for i in range(10)],
    )
    await shard.flush()
    await push(shard, "t", {"app": "a"}, (at(clock, -0.5), "secret in head"))
    await shard.request_delete(
        "t", "d1", '{app="a"} |= "secret"', start_ns=at(clock, -100), end_ns=at(clock, 1), key="d1"
    )
    assert (await shard.delete_status("t", "d1")).state == "pending"
    assert all("secret" not in line for line in lines(await select(shard, "t", '{app="a"}', clock)))
    await push(shard, "t", {"app": "a"}, (at(clock, -0.2), "secret after the request"))
    await shard.compact()
    status = await shard.delete_status("t", "d1")
    assert (status.state, status.removed) == ("done", 6)
    again = await open_shard(store, clock, tmp_path)
    remaining = lines(await select(again, "t", '{app="a"}', clock, forward=True))
    assert remaining == [
        "public 0",
        "public 2",
        "public 4",
        "public 6",
        "public 8",
        "secret after the request",
    ]
    with pytest.raises(DeleteNotFound):
        await again.delete_status("other", "d1")


async def test_orphan_chunk_files_are_removed_at_start(
    store: SQLiteStore, clock: FakeClock, tmp_path: Path
) -> None:
    shard = await open_shard(store, clock, tmp_path)
    await push(shard, "t", {"app": "a"}, (at(clock), "x"))
    await shard.flush()
    orphan = tmp_path / "zz" / "orphan.zst"
    orphan.parent.mkdir()
    orphan.write_bytes(b"x")
    again = await open_shard(store, clock, tmp_path)
    assert not orphan.exists()
    assert lines(await select(again, "t", '{app="a"}', clock)) == ["x"]
