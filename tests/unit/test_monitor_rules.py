"""``RuleEngine`` without Ray: rule parsing, windows, and every lifecycle transition
with a fake clock, and exactly-once transitions across a restart."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from actors.monitor.errors import BadRule, MonitorLimit, RuleNotFound
from actors.monitor.evaluator import RuleEngine, Transition
from actors.monitor.model import (
    Matcher,
    Rule,
    check_rule,
    matches_all,
    parse_expr,
    parse_matcher,
    render,
    rules_from_yaml,
)
from actors.monitor.series import SeriesStore
from actors.monitor.settings import MonitorSettings
from actors.runtime.clock import FakeClock
from actors.runtime.store import SQLiteStore
from tests.unit.conftest import cancel, settle


class Outbox:
    def __init__(self) -> None:
        self.got: list[Transition] = []
        self.fail = False

    async def __call__(self, batch: list[Transition]) -> None:
        if self.fail:
            raise ConnectionError("manager away")
        seen = {t.seq for t in self.got}
        self.got.extend(t for t in batch if t.seq not in seen)

    def statuses(self) -> list[tuple[str, str]]:
        return [(t.labels["alertname"], t.status) for t in self.got]


async def engine(store: SQLiteStore, clock: FakeClock, out: Outbox, **config: Any) -> RuleEngine:
    made = RuleEngine(MonitorSettings(**config), clock=clock, send=out)
    await made.open(store, "monitor-eval-0")
    return made


def rule(**fields: Any) -> Rule:
    base: dict[str, Any] = {
        "id": "r1",
        "owner": "u1",
        "alert": "High",
        "kind": "threshold",
        "input": "cpu",
        "fn": "avg",
        "window_s": 60.0,
        "op": ">",
        "threshold": 0.9,
    }
    return check_rule(Rule(**{**base, **fields}), max_window_s=3600)


def test_matchers_and_templates() -> None:
    assert parse_matcher('job="api"').matches({"job": "api"})
    assert parse_matcher('job!="api"').matches({"job": "web"})
    assert parse_matcher('job=~"ap.*"').matches({"job": "api"})
    assert not parse_matcher('job=~"ap"').matches({"job": "api"})  # anchored
    assert parse_matcher('job!~"a.*"').matches({})
    assert parse_matcher({"name": "a", "value": "b", "isRegex": False, "isEqual": False}).op == "!="
    for bad in ("job", 'job=="x"', 'job=~"("', '1a="x"'):
        with pytest.raises(BadRule):
            parse_matcher(bad)
    assert (
        render("{{ $labels.job }} at {{ $value }} ({{$owner}})", {"job": "api"}, 0.5, "u")
        == "api at 0.5 (u)"
    )
    with pytest.raises(BadRule):
        check_rule(
            Rule("x", "u", "A", "threshold", "cpu", annotations={"a": "{{ .Foo }}"}),
            max_window_s=60,
        )


def test_expressions_and_yaml() -> None:
    got = parse_expr('max by (node) (rate(errors_total{job="api"}[5m])) > 0.5')
    assert got["fn"] == "rate" and got["by"] == ["node"] and got["window_s"] == 300
    assert got["matchers"] == ['job="api"'] and got["threshold"] == 0.5
    assert parse_expr('absent_over_time(up{job="x"}[1m])')["kind"] == "absence"
    assert parse_expr('events(actor_restart{service="q"}[30s]) > 3')["kind"] == "event"
    assert parse_expr("vector(1)")["kind"] == "always"
    assert parse_expr('sum by (q) (delta(jobs{state="dead"}[5m])) > 0')["fn"] == "delta"
    assert parse_expr('logql:sum(count_over_time({app="x"}[1m])) > 10')["kind"] == "logql"
    with pytest.raises(BadRule):
        parse_expr("up == 0 or something")
    rules = rules_from_yaml(
        """
groups:
  - name: api
    rules:
      - alert: HighErrors
        expr: avg_over_time(errors{job="api"}[1m]) > 5
        for: 1m30s
        keep_firing_for: 10s
        labels: {severity: page}
        annotations: {summary: "{{ $labels.job }} errs {{ $value }}"}
""",
        "u1",
        max_window_s=3600,
        max_rules=10,
    )
    assert rules[0].for_s == 90 and rules[0].keep_firing_for_s == 10 and rules[0].group == "api"
    for bad in ("groups: 3", "groups: [{name: a, rules: [{record: x, expr: up}]}]", ":"):
        with pytest.raises(BadRule):
            rules_from_yaml(bad, "u1", max_window_s=3600, max_rules=10)


async def test_lifecycle_pending_firing_resolved(store: SQLiteStore, clock: FakeClock) -> None:
    out = Outbox()
    eng = await engine(store, clock, out)
    await eng.execute("put_rule", rule=rule(for_s=30.0, annotations={"s": "{{ $value }}"}))
    t0 = clock.time()
    await eng.execute("ingest", owner="u1", samples=[("cpu", {"host": "a"}, t0, 0.95)])
    await eng.evaluate(t0)
    assert [a["state"] for a in eng.list_alerts("u1")] == ["pending"] and out.got == []
    await eng.evaluate(t0 + 29)  # still within for
    assert eng.list_alerts("u1")[0]["state"] == "pending"
    await eng.execute("ingest", owner="u1", samples=[("cpu", {"host": "a"}, t0 + 30, 0.95)])
    await eng.evaluate(t0 + 30)
    assert eng.list_alerts("u1")[0]["state"] == "firing"
    assert out.statuses() == [("High", "firing")]
    assert out.got[0].labels == {"host": "a", "alertname": "High"} and out.got[0].starts_at == t0
    await eng.evaluate(t0 + 95)  # window empty: no value, resolves
    assert (
        out.statuses() == [("High", "firing"), ("High", "resolved")] and eng.list_alerts("u1") == []
    )


async def test_pending_that_stops_holding_sends_nothing(
    store: SQLiteStore, clock: FakeClock
) -> None:
    out = Outbox()
    eng = await engine(store, clock, out)
    await eng.execute("put_rule", rule=rule(for_s=30.0))
    t0 = clock.time()
    await eng.execute("ingest", owner="u1", samples=[("cpu", {}, t0, 0.95)])
    await eng.evaluate(t0)
    await eng.execute("ingest", owner="u1", samples=[("cpu", {}, t0 + 1, 0.1)])  # avg drops below
    await eng.evaluate(t0 + 2)
    assert eng.list_alerts("u1") == [] and out.got == []


async def test_for_zero_fires_at_once_and_keep_firing_for(
    store: SQLiteStore, clock: FakeClock
) -> None:
    out = Outbox()
    eng = await engine(store, clock, out)
    await eng.execute("put_rule", rule=rule(fn="max", window_s=10.0, keep_firing_for_s=20.0))
    t0 = clock.time()
    await eng.execute("ingest", owner="u1", samples=[("cpu", {}, t0, 1.0)])
    await eng.evaluate(t0)
    assert out.statuses() == [("High", "firing")]
    await eng.evaluate(t0 + 15)  # no longer holds, but keep_firing_for
    assert eng.list_alerts("u1")[0]["state"] == "firing" and len(out.got) == 1
    await eng.evaluate(t0 + 21)
    assert out.statuses()[-1] == ("High", "resolved")


async def test_functions_by_and_rate(store: SQLiteStore, clock: FakeClock) -> None:
    out = Outbox()
    eng = await engine(store, clock, out)
    t0 = clock.time()
    samples = [
        ("req", {"node": "n1", "pod": p}, t0 + i, float(10 * i))
        for p in ("a", "b")
        for i in range(5)
    ]
    samples += [
        ("req", {"node": "n1", "pod": "c"}, t0, 100.0),
        ("req", {"node": "n1", "pod": "c"}, t0 + 4, 5.0),
    ]
    await eng.execute("ingest", owner="u1", samples=samples)
    await eng.execute("put_rule", rule=rule(input="req", fn="rate", by=["node"], threshold=20.0))
    await eng.execute(
        "put_rule", rule=rule(id="r2", input="req", fn="increase", alert="Inc", threshold=39.0)
    )
    await eng.execute(
        "put_rule", rule=rule(id="r3", input="req", fn="count", alert="Cnt", op="==", threshold=2.0)
    )
    await eng.evaluate(t0 + 4)
    # rate per pod: 10/s, 10/s, and c reset to 5 over 4 s (1.25/s): 21.25 by node
    assert {a["labels"]["alertname"]: a["value"] for a in eng.list_alerts("u1")} == {
        "High": 21.25,
        "Inc": 40.0,
        "Cnt": 2.0,
    }
    assert len([a for a in eng.list_alerts("u1") if a["labels"]["alertname"] == "Inc"]) == 2


async def test_absence_events_and_watchdog(store: SQLiteStore, clock: FakeClock) -> None:
    out = Outbox()
    eng = await engine(store, clock, out)
    t0 = clock.time()
    await eng.execute(
        "put_rule",
        rule=rule(
            id="abs",
            alert="Gone",
            kind="absence",
            input="up",
            matchers=['job="api"'],
            window_s=30.0,
        ),
    )
    await eng.execute(
        "put_rule",
        rule=rule(
            id="ev",
            alert="Restarts",
            kind="event",
            input="restart",
            by=["actor"],
            threshold=2.0,
            window_s=60.0,
        ),
    )
    await eng.execute("put_rule", rule=rule(id="dog", alert="Watchdog", kind="always", input=""))
    await eng.execute("ingest", owner="u1", samples=[("up", {"job": "api"}, t0, 1.0)])
    for i in range(3):
        await eng.execute("events", owner="u1", events=[("restart", {"actor": "q"}, t0 + i, {})])
    await eng.execute("events", owner="u1", events=[("restart", {"actor": "other"}, t0, {})])
    await eng.evaluate(t0 + 5)
    names = sorted(
        a["labels"]["alertname"] + a["labels"].get("actor", "") for a in eng.list_alerts("u1")
    )
    assert names == ["Restartsq", "Watchdog"]
    await eng.evaluate(t0 + 40)  # up absent now
    firing = {a["labels"]["alertname"]: a["labels"] for a in eng.list_alerts("u1")}
    assert firing["Gone"] == {"job": "api", "alertname": "Gone"}
    await eng.evaluate(t0 + 70)  # restarts left the window
    assert "Restarts" not in {a["labels"]["alertname"] for a in eng.list_alerts("u1")}
    assert ("Restarts", "resolved") in out.statuses()


async def test_tenancy_limits_and_delete(store: SQLiteStore, clock: FakeClock) -> None:
    out = Outbox()
    eng = await engine(store, clock, out, max_rules_per_owner=1)
    await eng.execute("put_rule", rule=rule())
    with pytest.raises(MonitorLimit):
        await eng.execute("put_rule", rule=rule(id="r2"))
    t0 = clock.time()
    await eng.execute(
        "ingest", owner="u2", samples=[("cpu", {}, t0, 5.0)]
    )  # another owner's series
    await eng.evaluate(t0)
    assert eng.list_alerts("u1") == []
    with pytest.raises(RuleNotFound):
        eng.get_rule("u2", "r1")
    with pytest.raises(RuleNotFound):
        await eng.execute("delete_rule", owner="u2", rule="r1", at=t0)
    await eng.execute("put_rule", rule=rule(owner="u2", alert="Theirs"))  # same id, another owner
    assert eng.get_rule("u1", "r1").alert == "High" and eng.get_rule("u2", "r1").alert == "Theirs"
    await eng.execute("ingest", owner="u1", samples=[("cpu", {}, t0, 5.0)])
    await eng.evaluate(t0 + 1)
    assert [a["labels"]["alertname"] for a in eng.list_alerts("u2")] == ["Theirs"]
    await eng.execute("delete_rule", owner="u1", rule="r1", at=t0 + 2)
    await eng.flush()
    assert [(t.owner, *s) for t, s in zip(out.got, out.statuses(), strict=True)] == [
        ("u1", "High", "firing"),
        ("u2", "Theirs", "firing"),
        ("u1", "High", "resolved"),
    ]


async def test_byte_limit_drops_and_counts(store: SQLiteStore, clock: FakeClock) -> None:
    out = Outbox()
    # room for two series of 40 samples (64 + 3 + 2 + 16 * 40 bytes each) and nothing more
    eng = await engine(store, clock, out, max_samples_per_series=40, max_bytes_per_owner=1_500)
    t0 = clock.time()
    got = await eng.execute(
        "ingest", owner="u1", samples=[("cpu", {"h": str(i)}, t0, 1.0) for i in range(4)]
    )
    assert got == 2 and eng.store.dropped == 2
    assert await eng.execute("events", owner="u1", events=[("e", {}, t0, {"x": "y" * 500})]) == 0
    assert await eng.execute("ingest", owner="u2", samples=[("cpu", {}, t0, 1.0)]) == 1  # per owner
    await eng.evaluate(t0 + 4_000)  # everything left the retention: the bytes are free again
    assert eng.store.bytes["u1"] == 0
    assert (
        await eng.execute("ingest", owner="u1", samples=[("cpu", {"h": "9"}, t0 + 4_000, 1.0)]) == 1
    )


class SlowLogs:
    """A LogQL source whose every query takes ``took_s`` of the fake clock, so that an
    evaluation pass with a LogQL rule lasts that long; it notes the ``now`` of each."""

    def __init__(self, clock: FakeClock, took_s: float) -> None:
        self.clock, self.took_s = clock, took_s
        self.asked: list[float] = []

    async def instant(
        self, owner: str, query: str, at: float
    ) -> list[tuple[dict[str, str], float]]:
        self.asked.append(at)
        await self.clock.sleep(self.took_s)
        return []


async def run_engine(eng: RuleEngine, clock: FakeClock, interval_s: float, for_s: float) -> None:
    """``eng.run(interval_s)`` for ``for_s`` of the fake clock, in 10 ms steps, letting
    every evaluation and commit that is due finish at each step."""
    task = asyncio.create_task(eng.run(interval_s))
    await settle()  # its schedule starts now
    for _ in range(round(for_s / 0.01)):
        clock.advance(0.01)
        for _ in range(5):
            await settle()
            await eng.journal.drain()
    await cancel(task)


async def test_evaluations_keep_their_schedule_however_long_a_pass_takes(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """A pass takes 50 ms of a 200 ms interval. Evaluations still come every 200 ms,
    each at its scheduled time, so a rule with ``for`` 1 s fires at the fifth evaluation
    after it became pending, 1 s after it did: a loop that sleeps an interval after
    each pass would evaluate every 250 ms and fire 1.25 s after."""
    out = Outbox()
    logs = SlowLogs(clock, 0.05)
    eng = RuleEngine(MonitorSettings(), clock=clock, send=out, logs=logs)
    await eng.open(store, "monitor-eval-0")
    await eng.execute("put_rule", rule=rule(fn="max", for_s=1.0))
    await eng.execute("put_rule", rule=rule(id="slow", kind="logql", input="", query="q"))
    t0 = clock.time()
    await eng.execute("ingest", owner="u1", samples=[("cpu", {}, t0, 1.0)])
    await run_engine(eng, clock, 0.2, 2.1)
    assert [round(at - t0, 6) for at in logs.asked] == [round(0.2 * k, 6) for k in range(1, 11)]
    (alert,) = eng.list_alerts("u1")
    assert alert["state"] == "firing" and alert["active_at"] == pytest.approx(t0 + 0.2)
    assert alert["fired_at"] == pytest.approx(t0 + 1.2)
    assert out.statuses() == [("High", "firing")] and out.got[0].starts_at == alert["active_at"]


async def test_a_tick_already_passed_is_skipped(store: SQLiteStore, clock: FakeClock) -> None:
    """A pass longer than the interval: the evaluations that came due meanwhile are not
    made late one after another; the next is the latest tick due, at its time."""
    logs = SlowLogs(clock, 0.45)
    eng = RuleEngine(MonitorSettings(), clock=clock, send=Outbox(), logs=logs)
    await eng.open(store, "monitor-eval-0")
    await eng.execute("put_rule", rule=rule(id="slow", kind="logql", input="", query="q"))
    t0 = clock.time()
    await run_engine(eng, clock, 0.2, 2.0)
    ticks = [(at - t0) / 0.2 for at in logs.asked]
    assert ticks == sorted(set(ticks)) and ticks[0] == pytest.approx(1)
    assert all(tick == pytest.approx(round(tick)) for tick in ticks)  # on the schedule
    assert len(ticks) <= 2.0 / 0.45 + 1  # one pass at a time, none caught up


async def test_restart_mid_for_keeps_pending_and_sends_once(
    store: SQLiteStore, clock: FakeClock
) -> None:
    out = Outbox()
    eng = await engine(store, clock, out)
    await eng.execute("put_rule", rule=rule(for_s=30.0))
    t0 = clock.time()
    await eng.execute("ingest", owner="u1", samples=[("cpu", {}, t0, 1.0)])
    await eng.evaluate(t0)
    # restart: a new engine on the same store
    again = await engine(store, clock, out)
    assert again.list_alerts("u1")[0]["active_at"] == t0
    out.fail = True  # the manager is away when it fires: the transition stays in the outbox
    with pytest.raises(ConnectionError):
        await again.evaluate(t0 + 30)
    third = await engine(store, clock, out)  # and it restarts once more
    assert [t.status for t in third.outbox] == ["firing"]
    out.fail = False
    await third.evaluate(t0 + 31)
    await third.evaluate(t0 + 32)
    assert out.statuses() == [("High", "firing")] and not third.outbox
    fourth = await engine(store, clock, out)
    assert not fourth.outbox and fourth.list_alerts("u1")[0]["state"] == "firing"


def _brute(store: SeriesStore, owner: str, name: str, matchers: list[Matcher]) -> list[str]:
    by_fp = store.series.get((owner, name), {})
    return [fp for fp, s in by_fp.items() if matches_all(matchers, s.labels)]


def test_label_index_answers_as_a_full_scan() -> None:
    """The index by ``label=value`` finds exactly what matching every series would, in
    the same order, for every kind of matcher, through adds, evictions and prunes."""
    rng = random.Random(7)
    values = ["a", "b", "c", "a.b", ""]
    ops = ["=", "!=", "=~", "!~"]
    patterns = ["a", "a|b", "b|c", "a.*", ".*", "a|", "(?i)A", "a\\.b", "a.b"]
    store = SeriesStore(max_samples=8, max_series_per_owner=10_000, max_events=40, max_bytes=2**30)
    for round_ in range(30):
        for _ in range(40):
            labels = {k: v for k in ("x", "y", "z") if (v := rng.choice(values))}
            at = round_ * 10 + rng.random() * 10
            store.add("o", rng.choice(["m", "n"]), labels, at, 1.0)
            store.add_event("o", rng.choice(["e", "f"]), labels, at, {})
        if round_ % 5 == 4:
            store.prune(round_ * 10 - 15)
        for _ in range(60):
            matchers = [
                Matcher(
                    rng.choice(["x", "y", "z", "w"]),
                    op := rng.choice(ops),
                    rng.choice(patterns if op in ("=~", "!~") else values),
                )
                for _ in range(rng.randint(0, 3))
            ]
            name = rng.choice(["m", "n", "none"])
            assert [s.fp for s in store.matching("o", name, matchers)] == _brute(
                store, "o", name, matchers
            ), matchers
            since = rng.random() * 300 - 20
            until = since + rng.random() * 100
            event_name = rng.choice(["e", "f"])
            expected = [
                e
                for e in store.events.get(("o", event_name), ())
                if since < e.at <= until and matches_all(matchers, e.labels)
            ]
            got = list(store.events_in("o", event_name, matchers, since, until))
            assert [id(e) for e in got] == [id(e) for e in expected], matchers
    assert Matcher("x", "=~", "a|b").required == {"a", "b"}
    assert Matcher("x", "=~", "a|").required is None  # matches the empty value too
    assert Matcher("x", "=~", "a.*").required is None
    assert Matcher("x", "=", "").required is None
    assert Matcher("x", "!=", "a").required is None
