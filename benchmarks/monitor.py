"""Monitoring: rule evaluations/s, `for`-to-webhook latency, and alerts/s accepted and
notified next to Prometheus Alertmanager.

Three measurements, one after the other:

  evaluate   ``RuleEngine.evaluate`` in this process over 10,000 series (100 names x
             100 label sets, ``--samples`` points each) and 1,000 rules (10 per name,
             each matching a tenth of its series with ``zone=~"z3"``, ``avg``/``max``/
             ``rate`` over a window): rule evaluations per second (wall clock, and per
             second of this process's CPU time, which a loaded machine disturbs less),
             and series reduced per second. ``evaluate-regex`` is the same with
             ``zone=~"z3[0-9]?"``, a regex the label index cannot use: every series of
             the name is matched, as before the index
  latency    on Ray: ``--rules`` rules with ``for`` = 1 s, each fed one sample at its
             own random moment over ten evaluation intervals (so that they become
             pending at every phase of the evaluation and flush ticks); for each,
             the time from its ``for`` elapsing (its alert's ``startsAt``, the
             evaluation that first saw the condition, + 1 s) to the webhook stand-in
             receiving its first firing notification (evaluations every ``--eval-ms``,
             alert manager flushes every 50 ms, ``group_wait`` 0, one group per
             rule); also from the sample's time + 1 s (adding the wait for that first
             evaluation)
  alerts     ``--alerts`` alerts (``--names`` alertnames, grouped by alertname,
             ``group_wait`` 0.5 s, ``group_interval`` 1 s) pushed in batches of 500:
             to Realm's alert manager actor through ``MonitorClient.post_alerts``, and
             to Alertmanager (Debian's ``prometheus-alertmanager``, on loopback)
             through ``POST /api/v2/alerts``; accepted/s (pushing them all) and
             notified/s (until the webhook stand-in has seen every one)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness  # sets loopback-only Ray before ray is imported

CLAIM = (
    "Issue 13 (monitoring): rule evaluations/s with 10,000 series and 1,000 rules; p99 "
    "latency from `for` elapsing to the webhook (goal <= 1 s); alerts/s accepted and "
    "notified against Prometheus Alertmanager (goal >= 0.5x)."
)
NAMESPACE = "realm-bench-monitor"
FOR_S = 1.0  #: the latency rules' `for`


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--rules-evaluated", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=10, help="points per series")
    parser.add_argument("--passes", type=int, default=5, help="evaluation passes")
    parser.add_argument("--rules", type=int, default=50, help="latency: rules that fire")
    parser.add_argument("--eval-ms", type=int, default=200)
    parser.add_argument("--alerts", type=int, default=5_000)
    parser.add_argument("--names", type=int, default=50)
    parser.add_argument(
        "--evaluate-only", action="store_true", help="only the in-process evaluation (no Ray)"
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- evaluate --------------------------------------------------------------------


async def evaluate(args: argparse.Namespace, data_dir: str, zone: str) -> dict[str, Any]:
    """``zone`` is the matcher's regex, ``{z}`` standing for the zone's name."""
    from actors.monitor.evaluator import RuleEngine
    from actors.monitor.model import Rule, check_rule
    from actors.monitor.settings import MonitorSettings
    from actors.runtime.store import SQLiteStore

    names = 100
    per_name = max(1, args.series // names)
    engine = RuleEngine(
        MonitorSettings(
            max_series_per_owner=10_000_000, retention_s=3_600, max_bytes_per_owner=2**40
        )
    )
    store_dir = Path(tempfile.mkdtemp(dir=data_dir))  # one per run: it starts empty
    store = SQLiteStore(store_dir / "eval.sqlite3", synchronous="NORMAL")
    await engine.open(store, "bench-eval")
    now = time.time()
    for n in range(names):
        batch = [
            (
                f"m{n}",
                {"pod": f"p{i}", "zone": f"z{i % 10}"},
                now - args.samples + k,
                random.random(),
            )
            for i in range(per_name)
            for k in range(args.samples)
        ]
        await engine.execute("ingest", owner="o", samples=batch)
    fns = ["avg", "max", "rate"]
    for r in range(args.rules_evaluated):
        rule = Rule(
            f"r{r}",
            "o",
            f"A{r}",
            "threshold",
            f"m{r % names}",
            matchers=[f'zone=~"{zone.format(z=f"z{r % 10}")}"'],
            fn=fns[r % 3],
            window_s=60.0,
            threshold=2.0,
        )
        await engine.execute("put_rule", rule=check_rule(rule, max_window_s=3_600))
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.passes):
        await engine.evaluate(now)
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    await store.close()
    evaluations = args.rules_evaluated * args.passes
    series = evaluations * per_name // 10
    harness.progress(
        f"evaluate {zone}: {evaluations / took:,.0f} rule evaluations/s, "
        f"{evaluations / cpu:,.0f} per CPU second"
    )
    return {
        "rule_evaluations_per_s": evaluations / took,
        "rule_evaluations_per_cpu_s": evaluations / cpu,
        "series_reduced_per_s": series / took,
        "pass_ms": took / args.passes * 1000,
        "throughput_ops_s": evaluations / took,
    }


# --- the webhook stand-in -----------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.got: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        self.port = 0

    async def start(self) -> None:
        import orjson
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            at = time.time()
            body = orjson.loads(await request.read())
            self.got.setdefault(request.match_info["who"], []).append((at, body))
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/{who}", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def url(self, who: str) -> str:
        return f"http://127.0.0.1:{self.port}/{who}"

    def firsts(self, who: str) -> dict[str, tuple[float, float]]:
        """Each alertname's first firing notification: when it came, and the alert's
        ``startsAt`` (unix seconds)."""
        found: dict[str, tuple[float, float]] = {}
        for at, body in self.got.get(who, []):
            for alert in body.get("alerts", []):
                name = alert["labels"].get("alertname", "")
                if alert["status"] == "firing" and name not in found:
                    found[name] = (at, parse_iso(alert["startsAt"]))
        return found

    def seen(self, who: str) -> tuple[int, float]:
        """How many distinct alerts were notified, and when the last new one came."""
        found: set[str] = set()
        last = 0.0
        for at, body in self.got.get(who, []):
            for alert in body.get("alerts", []):
                key = str(sorted(alert["labels"].items()))
                if key not in found:
                    found.add(key)
                    last = at
        return len(found), last


async def wait_until(done: Any, within_s: float) -> None:
    """Poll ``done()`` every 50 ms until it holds or ``within_s`` passed."""
    deadline = time.time() + within_s
    while not done() and time.time() < deadline:  # noqa: ASYNC110 (state of another task)
        await asyncio.sleep(0.05)


def parse_iso(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- latency and alerts on Ray ------------------------------------------------------------


async def on_ray(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    from actors.monitor.alerting import AlertIn, Route
    from actors.monitor.alerting import Receiver as Sink
    from actors.monitor.client import MonitorClient
    from actors.monitor.model import Rule
    from actors.runtime.settings import Settings

    settings = Settings(
        namespace=NAMESPACE,
        store_prefix=NAMESPACE,
        data_dir=data_dir,
        sqlite_synchronous="NORMAL",
        monitor_eval_interval_ms=args.eval_ms,
        monitor_flush_interval_ms=50,
        monitor_max_alerts_per_owner=1_000_000,
    )
    receiver = Receiver()
    await receiver.start()
    client = MonitorClient(settings)
    await client.start()
    # latency
    route = Route(receiver="hook", group_by=["alertname"], group_wait_s=0.0, group_interval_s=0.05)
    await client.configure("lat", route, [Sink("hook", "webhook", receiver.url("lat"))], [])
    for r in range(args.rules):
        await client.put_rule(
            "lat",
            Rule(
                f"l{r}",
                "lat",
                f"L{r}",
                "threshold",
                f"lat{r}",
                fn="max",
                window_s=30.0,
                threshold=0.5,
                for_s=FOR_S,
            ),
        )
    # Each rule's sample at its own moment, spread over a few evaluation intervals, so
    # that the rules become pending (and fire) at every phase of the evaluation and
    # flush ticks: each latency is then a measurement of its own, not one firing seen
    # once per rule.
    spread_s = max(1.0, 10 * args.eval_ms / 1000)
    sampled: dict[str, float] = {}
    started = time.time()
    for r, offset in sorted(
        enumerate(random.uniform(0, spread_s) for _ in range(args.rules)), key=lambda x: x[1]
    ):
        await asyncio.sleep(max(0.0, started + offset - time.time()))
        at = time.time()
        sampled[f"L{r}"] = at
        await client.ingest("lat", [(f"lat{r}", {}, at, 1.0)])
    await wait_until(lambda: len(receiver.firsts("lat")) >= args.rules, 30 + spread_s)
    firsts = receiver.firsts("lat")
    # From the rule's `for` elapsing: its alert's startsAt (the evaluation that first saw
    # the condition) plus `for`. From the sample: its time plus `for`, which adds the
    # wait for that first evaluation (up to one evaluation interval).
    latencies = [(at - (starts + FOR_S)) * 1000 for name, (at, starts) in firsts.items()]
    from_sample = [(at - (sampled[name] + FOR_S)) * 1000 for name, (at, _) in firsts.items()]
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    harness.progress(
        f"latency: p50 {p50:.0f} ms, p99 {p99:.0f} ms; from the sample: p50 "
        f"{percentile(from_sample, 0.5):.0f} ms, p99 {percentile(from_sample, 0.99):.0f} ms"
    )
    # alerts/s: Realm
    route = Route(receiver="hook", group_by=["alertname"], group_wait_s=0.5, group_interval_s=1.0)
    await client.configure("bulk", route, [Sink("hook", "webhook", receiver.url("realm"))], [])
    alerts = [
        AlertIn({"alertname": f"N{i % args.names}", "i": str(i)}, {}, 0.0, 0.0)
        for i in range(args.alerts)
    ]
    started = time.time()
    for i in range(0, len(alerts), 500):
        await client.post_alerts("bulk", alerts[i : i + 500])
    accepted = time.time() - started
    await wait_until(lambda: receiver.seen("realm")[0] >= args.alerts, 60)
    count, last = receiver.seen("realm")
    realm = {
        "accepted_per_s": args.alerts / accepted,
        "notified": count,
        "notified_per_s": count / max(1e-9, last - started),
    }
    harness.progress(f"realm: {realm}")
    am = await alertmanager(args, receiver)
    return {
        "latency": {
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": max(latencies, default=float("nan")),
            "count": len(latencies),
            "from_sample_p50_ms": percentile(from_sample, 0.5),
            "from_sample_p99_ms": percentile(from_sample, 0.99),
            "throughput_ops_s": 0.0,
        },
        "realm-alerts": {**realm, "throughput_ops_s": realm["notified_per_s"]},
        **({"alertmanager-alerts": {**am, "throughput_ops_s": am["notified_per_s"]}} if am else {}),
    }


async def alertmanager(args: argparse.Namespace, receiver: Receiver) -> dict[str, Any] | None:
    import httpx

    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        harness.progress("alertmanager: not installed; its row is skipped")
        return None
    work = Path(tempfile.mkdtemp(prefix="realm-bench-am-"))
    hook = receiver.url("am")
    (work / "am.yml").write_text(
        "route: {receiver: hook, group_by: [alertname], group_wait: 500ms, group_interval: 1s,"
        f" repeat_interval: 1h}}\nreceivers: [{{name: hook, webhook_configs: [{{url: '{hook}',"
        " max_alerts: 0}]}]\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(  # noqa: ASYNC220
        [
            binary,
            f"--config.file={work / 'am.yml'}",
            f"--storage.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=30
        ) as http:
            for _ in range(200):
                try:
                    if (await http.get("/-/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            body = [
                {"labels": {"alertname": f"N{i % args.names}", "i": str(i)}}
                for i in range(args.alerts)
            ]
            started = time.time()
            for i in range(0, len(body), 500):
                answer = await http.post("/api/v2/alerts", json=body[i : i + 500])
                answer.raise_for_status()
            accepted = time.time() - started
            await wait_until(lambda: receiver.seen("am")[0] >= args.alerts, 60)
            count, last = receiver.seen("am")
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "accepted_per_s": args.alerts / accepted,
        "notified": count,
        "notified_per_s": count / max(1e-9, last - started),
    }
    harness.progress(f"alertmanager: {result}")
    return result


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__ or "", argv, extra=_add_flags)
    if args.quick:
        args.series, args.rules_evaluated, args.passes = 1_000, 100, 2
        args.rules, args.alerts = 10, 500
    data_dir = tempfile.mkdtemp(prefix="realm-bench-monitor-")
    try:
        variants = {
            "evaluate": asyncio.run(evaluate(args, data_dir, "{z}")),
            "evaluate-regex": asyncio.run(evaluate(args, data_dir, "{z}[0-9]?")),
        }
        if not args.evaluate_only:
            with harness.ray_session(namespace=NAMESPACE):
                variants |= asyncio.run(on_ray(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    ratios: dict[str, float] = {
        "indexed/regex rule evaluations per CPU s": round(
            variants["evaluate"]["rule_evaluations_per_cpu_s"]
            / variants["evaluate-regex"]["rule_evaluations_per_cpu_s"],
            3,
        )
    }
    if "latency" in variants:
        ratios["latency p99 ms / 1000 ms goal"] = round(variants["latency"]["p99_ms"] / 1000, 3)
    if "alertmanager-alerts" in variants:
        am, realm = variants["alertmanager-alerts"], variants["realm-alerts"]
        ratios["realm/alertmanager accepted/s"] = round(
            realm["accepted_per_s"] / am["accepted_per_s"], 3
        )
        ratios["realm/alertmanager notified/s"] = round(
            realm["notified_per_s"] / am["notified_per_s"], 3
        )
    harness.write_result(
        "monitor",
        {
            "claim": CLAIM,
            "params": vars(args) | {"load_avg_at_end": os.getloadavg()},
            "variants": variants,
            "ratios": ratios,
        },
    )


if __name__ == "__main__":
    main()
