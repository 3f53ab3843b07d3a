"""Side by side with Prometheus Alertmanager: the same routing tree, grouping,
silence and inhibition, the same alert sequence fed to both (Alertmanager through
its ``/api/v2/alerts``, Realm's ``AlertManager`` directly), one webhook stand-in
receiving from both; their notifications must match in grouping, order and
status. Skipped when Debian's ``prometheus-alertmanager`` is not installed
(``make test`` installs it when apt can)."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from actors.monitor.alerting import AlertIn, AlertManager, Inhibit, Receiver, Route
from actors.monitor.model import parse_matchers
from actors.monitor.receivers import Notifier
from actors.monitor.settings import MonitorSettings
from actors.runtime.settings import Settings
from actors.runtime.store import SQLiteStore
from tests.conftest import until
from tests.unit.test_push_standins import Served

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
pytestmark = pytest.mark.skipif(
    BINARY is None,
    reason="prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager; "
    "`make test` does it when apt can)",
)
GROUP_WAIT_S, GROUP_INTERVAL_S = 1.0, 2.0


class Sink(Served):
    def __init__(self) -> None:
        super().__init__()
        self.by: dict[str, list[dict[str, Any]]] = {"am": [], "realm": []}
        self.app.router.add_post("/{who}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.by[request.match_info["who"]].append(orjson.loads(await request.read()))
        return web.Response(status=200)

    def view(self, who: str) -> dict[str, list[tuple[str, list[tuple[str, str, str]]]]]:
        """Per group (its labels), the notifications in order: status and alerts."""
        groups: dict[str, list[tuple[str, list[tuple[str, str, str]]]]] = {}
        for payload in self.by[who]:
            if payload.get("kind") == "silence":
                continue  # Realm's silence notices: Alertmanager has none
            key = orjson.dumps(payload["groupLabels"], option=orjson.OPT_SORT_KEYS).decode()
            alerts = sorted(
                (
                    a["labels"]["alertname"],
                    orjson.dumps(a["labels"], option=orjson.OPT_SORT_KEYS).decode(),
                    a["status"],
                )
                for a in payload["alerts"]
            )
            groups.setdefault(key, []).append((payload["status"], alerts))
        return groups


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def am_config(hook: str) -> str:
    return f"""
route:
  receiver: hook
  group_by: [alertname]
  group_wait: {GROUP_WAIT_S:g}s
  group_interval: {GROUP_INTERVAL_S:g}s
  repeat_interval: 1h
  routes:
    - receiver: hook
      matchers: ['severity="page"']
      group_by: [alertname, team]
inhibit_rules:
  - source_matchers: ['alertname="NodeDown"']
    target_matchers: ['alertname="ActorDied"']
    equal: [node]
receivers:
  - name: hook
    webhook_configs:
      - url: {hook}
        send_resolved: true
"""


def realm_config(hook: str) -> tuple[Route, list[Receiver], list[Inhibit]]:
    route = Route(
        receiver="hook",
        group_by=["alertname"],
        group_wait_s=GROUP_WAIT_S,
        group_interval_s=GROUP_INTERVAL_S,
        repeat_interval_s=3600.0,
        routes=[
            Route(receiver="hook", matchers=['severity="page"'], group_by=["alertname", "team"])
        ],
    )
    inhibit = [Inhibit(['alertname="NodeDown"'], ['alertname="ActorDied"'], ["node"])]
    return route, [Receiver("hook", "webhook", hook)], inhibit


def rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    served = Sink()
    await served.start()
    yield served
    await served.stop()


@pytest.fixture
async def alertmanager(sink: Sink, tmp_path: Path) -> AsyncIterator[str]:
    assert BINARY is not None
    config = tmp_path / "alertmanager.yml"
    config.write_text(am_config(f"{sink.url}/am"))
    port = free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 (it starts in a moment; nothing waits)
        [
            BINARY,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(trust_env=False) as http:

            async def ready() -> bool:
                try:
                    return (await http.get(f"{url}/-/ready")).status_code == 200
                except httpx.HTTPError:
                    return False

            await until(ready, within_s=15, what="alertmanager ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_same_notifications_as_alertmanager(
    sink: Sink, alertmanager: str, tmp_path: Path
) -> None:
    config = MonitorSettings(flush_interval_ms=50, resolve_timeout_s=300.0)
    notifier = Notifier(Settings(data_dir=tmp_path), config)
    realm = AlertManager(config, notify=notifier)
    store = SQLiteStore(tmp_path / "realm.sqlite3")
    await realm.open(store, "monitor-alerts-0")
    route, receivers, inhibit = realm_config(f"{sink.url}/realm")
    await realm.execute(
        "configure", owner="o", route=route, receivers=receivers, inhibit=inhibit, at=time.time()
    )

    async def flushing() -> None:
        while True:
            await realm.flush()
            await asyncio.sleep(0.05)

    flusher = asyncio.create_task(flushing())
    http = httpx.AsyncClient(base_url=alertmanager, trust_env=False)

    async def feed(alerts: list[dict[str, Any]]) -> None:
        now = time.time()
        am = [
            {
                "labels": a["labels"],
                "annotations": {},
                "startsAt": rfc3339(a.get("starts", now)),
                **({"endsAt": rfc3339(a["ends"])} if "ends" in a else {}),
            }
            for a in alerts
        ]
        answer = await http.post("/api/v2/alerts", json=am)
        assert answer.status_code == 200, answer.text
        ours = [AlertIn(a["labels"], {}, a.get("starts", now), a.get("ends", 0.0)) for a in alerts]
        await realm.execute("post", owner="o", alerts=ours, at=time.time())

    try:
        silence_end = time.time() + 600
        made = await http.post(
            "/api/v2/silences",
            json={
                "matchers": [
                    {"name": "alertname", "value": "Noisy", "isRegex": False, "isEqual": True}
                ],
                "startsAt": rfc3339(time.time() - 1),
                "endsAt": rfc3339(silence_end),
                "createdBy": "test",
                "comment": "muted",
            },
        )
        assert made.status_code == 200, made.text
        silence = AlertManager.new_silence(
            parse_matchers(['alertname="Noisy"']), time.time() - 1, silence_end, "test", "muted"
        )
        await realm.execute("silence", owner="o", silence=silence)
        start = time.time()
        await feed(
            [
                {"labels": {"alertname": "HighCPU", "host": "h1"}},
                {"labels": {"alertname": "NodeDown", "node": "n1"}},
                {"labels": {"alertname": "ActorDied", "node": "n1"}},  # inhibited
                {"labels": {"alertname": "ActorDied", "node": "n2"}},
                {"labels": {"alertname": "Noisy"}},  # silenced
                {"labels": {"alertname": "Disk", "severity": "page", "team": "db"}},
                {"labels": {"alertname": "Disk", "severity": "page", "team": "web"}},
            ]
        )
        await asyncio.sleep(GROUP_WAIT_S / 2)
        await feed([{"labels": {"alertname": "HighCPU", "host": "h2"}}])  # same group, in time
        await until(
            lambda: len(sink.by["am"]) >= 5 and len(sink.by["realm"]) >= 5,
            within_s=10,
            what="the first flush from both",
        )
        await asyncio.sleep(max(0.0, start + GROUP_WAIT_S + GROUP_INTERVAL_S / 2 - time.time()))
        now = time.time()
        await feed(
            [
                {"labels": {"alertname": "HighCPU", "host": "h1"}, "starts": start, "ends": now},
                {"labels": {"alertname": "NodeDown", "node": "n1"}, "starts": start, "ends": now},
            ]
        )
        # the resolved ones at the next group_interval; ActorDied n1 no longer inhibited
        await until(
            lambda: len(sink.by["am"]) >= 8 and len(sink.by["realm"]) >= 8,
            within_s=12,
            what="the resolved notices from both",
        )
        await asyncio.sleep(GROUP_INTERVAL_S + 0.5)  # nothing more should come from either
    finally:
        flusher.cancel()
        await http.aclose()
        await notifier.close()
        await store.close()
    am, ours = sink.view("am"), sink.view("realm")
    assert ours == am, f"alertmanager: {am}\nrealm: {ours}"
    firsts = [n[0] for n in am.values()]
    assert all(status == "firing" for status, _ in firsts)
    assert not any("Noisy" in key for key in am)
