"""Monitoring over real HTTP through Serve: a rule's notification end to end to a
signed webhook stand-in, acknowledgement, silences, and the refusals."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import until
from tests.integration.conftest import admin_headers, error_code, service_client, sign_up
from tests.integration.test_monitor_actors import AlertSink

SERVICE = "monitor"


@pytest.fixture
async def sink() -> AsyncIterator[AlertSink]:
    served = AlertSink()
    await served.start()
    yield served
    await served.stop()


@pytest.fixture
async def alice(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(base_url, SERVICE, await sign_up(base_url)) as client:
        yield client


def config(url: str, secret: str) -> dict[str, Any]:
    return {
        "route": {"receiver": "hook", "group_by": ["alertname"], "group_wait_s": 0,
                  "group_interval_s": 0.3, "repeat_interval_s": 3600},
        "receivers": [{"name": "hook", "kind": "webhook", "target": url, "secret": secret}],
    }  # fmt: skip


async def test_rule_to_webhook_ack_and_silence(
    alice: httpx.AsyncClient, sink: AlertSink, base_url: str
) -> None:
    from tests.integration.test_monitor_actors import SECRET

    made = await alice.put("/config", json=config(f"{sink.url}/hook", SECRET))
    assert made.status_code == 200, made.text
    assert made.json()["webhook_secrets"] == {"hook": SECRET}
    rule = {"id": "hot", "alert": "Hot", "expr": "max_over_time(temp[30s]) > 50",
            "annotations": {"summary": "{{ $labels.room }} at {{ $value }}"}}  # fmt: skip
    assert (await alice.post("/rules", json=rule)).status_code == 201
    assert (await alice.post("/rules", json=rule)).status_code == 200  # replaced
    sent = await alice.post("/samples", json={"samples": [{"name": "temp", "labels": {"room": "a"},
                                                           "value": 70.0}]})  # fmt: skip
    assert sent.status_code == 202 and sent.json() == {"accepted": 1}
    await until(lambda: sink.received, what="a notification")
    alert = sink.received[0]["alerts"][0]
    assert alert["status"] == "firing" and alert["annotations"]["summary"] == "a at 70"
    listed = (await alice.get("/alerts")).json()
    fingerprint = listed["alerts"][0]["fingerprint"]
    assert (await alice.post(f"/alerts/{fingerprint}/ack")).status_code == 204
    acked = (await alice.get("/alerts")).json()["alerts"][0]
    assert acked["acked_by"] and acked["acked_at"]
    silence = {"matchers": ['alertname="Hot"'], "ends_at": time.time() + 600, "comment": "work"}
    made = await alice.post("/silences", json=silence)
    assert made.status_code == 201
    silences = (await alice.get("/silences")).json()["silences"]
    assert [s["state"] for s in silences] == ["active"]
    await until(lambda: [p for p in sink.received if p.get("kind") == "silence"], what="its notice")
    assert (await alice.delete(f"/silences/{made.json()['id']}")).status_code == 204
    assert (await alice.delete("/rules/hot")).status_code == 204
    await until(lambda: sink.seen("Hot"), lambda s: ("resolved", "") in s, what="resolved")
    notices = [p["status"] for p in sink.received if p.get("kind") == "silence"]
    assert notices == ["started", "expired"]
    assert sink.refused == []


async def test_refusals(alice: httpx.AsyncClient, base_url: str, api_key: Any) -> None:
    async with service_client(base_url, SERVICE) as anonymous:
        assert (await anonymous.get("/rules")).status_code == 401
    bad = await alice.post("/rules", json={"alert": "X", "expr": "up == 0 or down"})
    assert bad.status_code == 422 and error_code(bad) == "bad_rule"
    extra = await alice.post("/rules", json={"alert": "X", "expr": "vector(1)", "what": 1})
    assert extra.status_code == 422
    remote = await alice.put("/config", json=config("http://192.0.2.1/x", "s"))
    assert remote.status_code == 422 and error_code(remote) == "bad_target"
    unknown = await alice.put("/config", json={"route": {"receiver": "nobody"}})
    assert unknown.status_code == 422 and error_code(unknown) == "bad_rule"
    realm = await alice.get("/rules", params={"owner": "realm"})
    assert realm.status_code == 403
    assert (
        await alice.post("/rules", json={"id": "mine", "alert": "M", "expr": "vector(1)"})
    ).status_code == 201
    async with service_client(base_url, SERVICE, await sign_up(base_url)) as bob:
        assert (await bob.get("/rules/mine")).status_code == 404
        assert (await bob.delete("/rules/mine")).status_code == 404
        gone = await bob.post("/alerts/0123456789abcdef/ack")
        assert gone.status_code == 404 and error_code(gone) == "alert_not_found"
        assert (await bob.delete("/silences/nope")).status_code == 404
    reader = await api_key(["monitor:read"])
    async with service_client(base_url, SERVICE, reader) as key:
        assert (await key.get("/rules")).status_code == 200
        assert (
            await key.post("/samples", json={"samples": [{"name": "x", "value": 1.0}]})
        ).status_code == 403
    too_many = {"samples": [{"name": "x", "value": 1.0}] * 10_001}
    assert (await alice.post("/samples", json=too_many)).status_code == 422
    async with service_client(base_url, SERVICE, await admin_headers(base_url)) as admin:
        rules = (await admin.get("/rules", params={"owner": "realm"})).json()["rules"]
        assert {"RealmActorRestarting", "RealmNodeLost", "Watchdog"} <= {r["alert"] for r in rules}
        assert (await admin.get("/stats")).status_code == 200
    assert (await alice.get("/stats")).status_code == 403
