"""Webhook signing, target checks, notification text, Prometheus text parsing,
the watcher's scrapes and Realm's default rules, without Ray."""

from __future__ import annotations

import time

import pytest

from actors.monitor.errors import BadTarget
from actors.monitor.model import SYSTEM_OWNER
from actors.monitor.receivers import check_url, sign, text_of, verify
from actors.monitor.settings import MonitorSettings
from actors.monitor.watcher import default_rules, parse_prometheus, realm_series


def test_signature_round_trip_and_refusals() -> None:
    body = b'{"status":"firing"}'
    header = sign("s3cret", body, 1_000)
    assert verify("s3cret", body, header, now=1_010)
    assert not verify("other", body, header, now=1_010)  # wrong secret
    assert not verify("s3cret", body + b" ", header, now=1_010)  # body changed
    assert not verify("s3cret", body, header, now=2_000)  # too old: a replay
    assert not verify("s3cret", body, "garbage", now=1_000)


@pytest.mark.parametrize(
    ("url", "remote", "ok"),
    [
        ("http://127.0.0.1:9000/x", False, True),
        ("http://localhost/x", False, True),
        ("http://10.0.0.1/x", False, False),
        ("https://example.com/x", False, False),
        ("https://example.com/x", True, True),
        ("ftp://127.0.0.1/x", True, False),
        ("not a url", True, False),
    ],
)
def test_targets(url: str, remote: bool, ok: bool) -> None:
    if ok:
        assert check_url(url, allow_remote=remote) == url
    else:
        with pytest.raises(BadTarget):
            check_url(url, allow_remote=remote)


def test_text_for_people() -> None:
    payload = {
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "Hot", "host": "a"},
                "annotations": {"summary": "97%"},
            },
        ],
    }
    title, body = text_of(payload)
    assert title == "[FIRING] Hot" and "host=a" in body and "97%" in body


def test_prometheus_text() -> None:
    text = (
        "# HELP req_total Requests.\n# TYPE req_total counter\n"
        'req_total{route="/a",status="200"} 12\nup 1\n'
    )
    samples = parse_prometheus(text, 5.0)
    assert ("req_total", {"route": "/a", "status": "200"}, 5.0, 12.0) in samples
    assert ("up", {}, 5.0, 1.0) in samples


def test_realm_series_keeps_only_realms_own() -> None:
    text = (
        "# HELP ray_realm_queue_jobs Jobs.\n# TYPE ray_realm_queue_jobs gauge\n"
        'ray_realm_queue_jobs{queue="q",state="dead"} 2\n'
        "# TYPE ray_realm_http_request_seconds histogram\n"
        'ray_realm_http_request_seconds_bucket{le="0.1",service="cache"} 4\n'
        'ray_realm_http_request_seconds_count{service="cache"} 4\n'
        "# HELP ray_grpc_server_req_total Ray's own.\n# TYPE ray_grpc_server_req_total counter\n"
        'ray_grpc_server_req_total{Method="x"} 99\n'
        'ray_tasks{State="RUNNING"} 3\n'
    )
    samples = parse_prometheus(realm_series(text), 5.0)
    names = {name for name, _, _, _ in samples}
    assert names == {"ray_realm_queue_jobs", "ray_realm_http_request_seconds_count"}
    assert ("ray_realm_queue_jobs", {"queue": "q", "state": "dead"}, 5.0, 2.0) in samples


def test_default_rules() -> None:
    rules = {
        r.alert: r for r in default_rules(MonitorSettings(restart_limit=2, restart_window_s=30))
    }
    assert set(rules) == {
        "RealmActorRestarting",
        "RealmNodeLost",
        "RealmActorDied",
        "RealmStoreUnavailable",
        "RealmQueueDeadLetters",
        "RealmReplicaErrors",
        "Watchdog",
    }
    restarting = rules["RealmActorRestarting"]
    assert (restarting.fn, restarting.window_s, restarting.threshold) == ("increase", 30.0, 2.0)
    assert all(r.owner == SYSTEM_OWNER for r in rules.values())
    assert rules["Watchdog"].kind == "always"


def test_default_rules_read_series_that_exist() -> None:
    # Before: two rules read names nothing exported (realm_queue_dead_letters,
    # serve_num_http_error_requests_total), so they could never fire.
    from actors.runtime.metrics import Metric

    scraped = {f"ray_{name}" for name in Metric.registry}  # Ray prefixes every exported name
    polled = {"realm_actor_restarts_total", "realm_store_up"}  # the watcher's own samples
    for rule in default_rules(MonitorSettings()):
        if rule.kind == "threshold":
            assert rule.input in scraped | polled, (rule.alert, rule.input)


async def test_the_watcher_scrapes_every_target_with_one_client(tmp_path):
    from aiohttp import web

    from actors.monitor.watcher import RuntimeWatcher
    from actors.runtime.settings import Settings
    from tests.unit.test_push_standins import Served

    async def metrics_page(request: web.Request) -> web.Response:
        exporter.hit("metrics")
        return web.Response(text='# TYPE jobs_total counter\njobs_total{queue="a"} 7\n')

    exporter = Served()
    exporter.app.router.add_get("/metrics", metrics_page)
    await exporter.start()
    port = exporter.port
    target, dead = f"http://127.0.0.1:{port}/metrics", "http://127.0.0.1:9/metrics"
    config = MonitorSettings(scrape_realm=False, scrape_targets=f"{target},{dead}")
    settings = Settings(data_dir=tmp_path, store_url="", sections={"monitor": config})
    watcher = RuntimeWatcher(settings, client=None)  # type: ignore[arg-type]
    try:
        # When it scrapes twice
        first = await watcher.scrape(1.0)
        client = watcher._http
        second = await watcher.scrape(2.0)

        # Then each scrape has the target's samples and both targets' `up`,
        # and the second reused the first's client (a new one per scrape leaks)
        for now, found in ((1.0, first), (2.0, second)):
            assert ("jobs_total", {"queue": "a"}, now, 7.0) in found
            assert ("up", {"instance": target}, now, 1.0) in found
            assert ("up", {"instance": dead}, now, 0.0) in found
        assert client is not None and watcher._http is client and exporter.hits["metrics"] == 2
    finally:
        await watcher.close()
        await exporter.stop()


async def test_the_notifier_makes_its_client_at_start_and_signs_with_it(tmp_path):
    from aiohttp import web

    from actors.monitor.alerting import Receiver
    from actors.monitor.receivers import SIGNATURE_HEADER, Notifier
    from actors.runtime.settings import Settings
    from tests.unit.test_push_standins import Served

    got: list[tuple[bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.read(), request.headers[SIGNATURE_HEADER]))
        return web.Response(status=200)

    receiver = Served()
    receiver.app.router.add_post("/hook", hook)
    await receiver.start()
    config = MonitorSettings()
    notifier = Notifier(Settings(data_dir=tmp_path, sections={"monitor": config}), config)
    try:
        # When it starts (as its alert manager does), then notifies twice
        await notifier.start()
        made = notifier._http
        sink = Receiver("hook", "webhook", f"{receiver.url}/hook", secret="s")
        for n in range(2):
            await notifier(SYSTEM_OWNER, sink, {"version": "4", "alerts": [], "n": n})

        # Then the client the notifications used was made at start, not by the first
        # of them, and each came signed
        assert made is not None and notifier._http is made
        assert [verify("s", body, header, now=time.time()) for body, header in got] == [True] * 2
    finally:
        await notifier.close()
        await receiver.stop()
