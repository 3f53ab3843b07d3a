"""Each provider against its loopback stand-in, payload checked end to end; retries,
Retry-After and dead tokens (``actors.push.delivery``)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from actors.push.delivery import send_batch
from actors.push.model import Device
from actors.push.providers import (
    ApnsProvider,
    FcmProvider,
    InAppProvider,
    Provider,
    WebhookProvider,
    WebPushProvider,
    sign_webhook,
    verify_webhook,
)
from actors.push.settings import PushSettings
from actors.push.shard import Report
from tests.unit.test_push_standins import (
    ApnsStandIn,
    FcmStandIn,
    WebhookReceiver,
    WebPushEndpoint,
)


def message(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "n1",
        "title": "Hello",
        "body": "a body",
        "data": {"k": "v", "n": 3},
        "ttl_s": 600.0,
        "collapse_key": "",
        "priority": "high",
        "created_at": time.time(),
        **overrides,
    }


def device(platform: str, token: str, keys: dict[str, str] | None = None, **more: Any) -> Device:
    now = time.time()
    return Device(
        more.get("id", token[-12:]), more.get("user", "u1"), platform, token, keys or {},
        "shop", "en", [], now, now,
    )  # fmt: skip


def config(**overrides: Any) -> PushSettings:
    values: dict[str, Any] = {"allow_private_addresses": True, "retry_base_s": 0.01}
    return PushSettings(**{**values, **overrides})


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def run(
    providers: dict[str, Provider], devices: list[Device], msg: dict[str, Any], cfg: PushSettings
) -> tuple[list[Report], Sleeps, list[list[Report]]]:
    sleeps = Sleeps()
    reported: list[list[Report]] = []

    async def report(reports: list[Report]) -> None:
        reported.append(reports)

    done = await send_batch(providers, devices, msg, cfg, report, sleep=sleeps)
    return done, sleeps, reported


def test_webhook_signature_round_trip() -> None:
    body = b'{"a":1}'
    now = int(time.time())
    header = sign_webhook("s3cret", now, body)
    assert verify_webhook("s3cret", header, body)
    assert not verify_webhook("other", header, body)
    assert not verify_webhook("s3cret", header, body + b" ")
    assert not verify_webhook("s3cret", sign_webhook("s3cret", now - 3600, body), body)


async def test_webhook_delivers_signed_and_reports_dead_and_busy() -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        cfg = config()
        devices = [
            device("webhook", f"{receiver.url}/{name}", {"secret": f"whsec_{name}"}, id=name)
            for name in ("ok", "dead", "busy")
        ]
        receiver.secrets = {d.id: d.keys["secret"] for d in devices}
        receiver.retry_after = "7"
        async with httpx.AsyncClient() as http:
            done, sleeps, reported = await run(
                {"webhook": WebhookProvider(cfg, http)}, devices, message(), cfg
            )
        states = {r.device: (r.state, r.attempts) for r in done}
        assert states == {"ok": ("delivered", 1), "dead": ("dead", 1), "busy": ("delivered", 2)}
        assert receiver.hits["dead"] == 1  # a dead token is never retried
        assert sleeps.waits == [7.0]  # Retry-After honoured over the (tiny) backoff
        assert receiver.refused == []
        got = {r["path"]: r for r in receiver.received}
        assert got["ok"]["title"] == "Hello" and got["ok"]["data"] == {"k": "v", "n": 3}
        assert reported and sum(len(r) for r in reported) == 3
    finally:
        await receiver.stop()


async def test_webhook_retries_are_bounded() -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        cfg = config(max_attempts=3)
        receiver.busy_times = 100
        one = device("webhook", f"{receiver.url}/flaky", {"secret": "x"}, id="flaky")
        receiver.secrets = {"flaky": "x"}
        async with httpx.AsyncClient() as http:
            done, sleeps, _ = await run(
                {"webhook": WebhookProvider(cfg, http)}, [one], message(), cfg
            )
        assert (done[0].state, done[0].reason, done[0].attempts) == ("failed", "http_503", 3)
        assert receiver.hits["flaky"] == 3 and len(sleeps.waits) == 2
        assert all(0 <= w <= cfg.retry_base_s * 2 for w in sleeps.waits)
    finally:
        await receiver.stop()


async def test_retry_after_beyond_the_ttl_is_not_waited_for() -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        cfg = config()
        receiver.retry_after = "30"
        one = device("webhook", f"{receiver.url}/busy", {"secret": "x"}, id="busy")
        receiver.secrets = {"busy": "x"}
        async with httpx.AsyncClient() as http:
            done, sleeps, _ = await run(
                {"webhook": WebhookProvider(cfg, http)}, [one], message(ttl_s=5.0), cfg
            )
        assert done[0].state == "expired" and sleeps.waits == []
    finally:
        await receiver.stop()


def test_webhook_refuses_private_addresses_unless_allowed() -> None:
    from actors.push.errors import BadDevice
    from actors.push.model import check_url

    strict = PushSettings()
    for url in (
        "http://127.0.0.1:9/x",
        "https://127.0.0.1/x",
        "https://10.0.0.1/x",
        "https://localhost/x",
        "https://user:pw@example.com/x",
        "ftp://example.com/",
    ):
        with pytest.raises(BadDevice):
            check_url(url, strict, "the webhook")
    assert check_url("http://127.0.0.1:9/x", config(), "the webhook")


def vapid_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def test_web_push_encrypts_for_the_subscriber_with_vapid() -> None:
    endpoint = WebPushEndpoint()
    await endpoint.start()
    try:
        cfg = config(vapid_private_key=vapid_key(), vapid_subject="mailto:ops@example.com")
        alice = endpoint.subscribe("alice")
        gone = endpoint.subscribe("dead-bob")
        busy = endpoint.subscribe("busy-carol")
        devices = [device("webpush", s.endpoint, s.keys, id=n)
                   for n, s in (("alice", alice), ("bob", gone), ("carol", busy))]  # fmt: skip
        async with httpx.AsyncClient() as http:
            done, sleeps, _ = await run(
                {"webpush": WebPushProvider(cfg, http)},
                devices,
                message(collapse_key="score", priority="normal"),
                cfg,
            )
        states = {r.device: r.state for r in done}
        assert states == {"alice": "delivered", "bob": "dead", "carol": "delivered"}
        assert endpoint.refused == []
        [first, *_] = endpoint.received
        assert first["subscriber"] == "alice" and first["title"] == "Hello"
        assert first["data"] == {"k": "v", "n": 3} and first["urgency"] == "normal"
        assert 0 < first["ttl"] <= 600 and first["sub"] == "mailto:ops@example.com"
        assert first["topic"] and len(first["topic"]) <= 32
        assert sleeps.waits == [1.0]
    finally:
        await endpoint.stop()


async def test_fcm_v1_with_service_account(tmp_path: Path) -> None:
    fcm = FcmStandIn()
    await fcm.start()
    try:
        credentials = tmp_path / "sa.json"
        credentials.write_text(json.dumps(fcm.service_account()))
        cfg = config(
            fcm_project_id=fcm.project,
            fcm_credentials_file=str(credentials),
            fcm_endpoint=fcm.url,
        )
        devices = [device("fcm", t, id=t) for t in ("tok-a", "tok-dead", "tok-busy")]
        async with httpx.AsyncClient() as http:
            done, sleeps, _ = await run(
                {"fcm": FcmProvider(cfg, http)}, devices, message(collapse_key="c1"), cfg
            )
        states = {r.device: (r.state, r.reason) for r in done}
        assert states == {
            "tok-a": ("delivered", ""),
            "tok-dead": ("dead", "UNREGISTERED"),
            "tok-busy": ("delivered", ""),
        }
        assert fcm.hits["tok-dead"] == 1 and sleeps.waits == [1.0]
        assert fcm.refused == [] and fcm.token_requests == 1  # the access token is reused
        sent = next(m for m in fcm.received if m["token"] == "tok-a")
        assert sent["notification"] == {"title": "Hello", "body": "a body"}
        assert sent["data"] == {"id": "n1", "k": "v", "n": "3"}
        assert sent["android"]["priority"] == "HIGH" and sent["android"]["collapse_key"] == "c1"
    finally:
        await fcm.stop()


async def test_apns_over_http2_with_a_provider_token(tmp_path: Path) -> None:
    apns = ApnsStandIn()
    await apns.start()
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_bytes(apns.key_pem())
    cfg = config(
        apns_key_file=str(key_file),
        apns_key_id=apns.key_id,
        apns_team_id=apns.team_id,
        apns_topic="com.example.shop",
        apns_endpoint=apns.url,
    )
    provider = ApnsProvider(cfg)
    try:
        tokens = ["a1b2", "dead01", "bad02", "busy03"]
        devices = [device("apns", t, id=t) for t in tokens]
        done, sleeps, _ = await run({"apns": provider}, devices, message(collapse_key="k"), cfg)
        states = {r.device: (r.state, r.reason) for r in done}
        assert states == {
            "a1b2": ("delivered", ""),
            "dead01": ("dead", "Unregistered"),
            "bad02": ("dead", "BadDeviceToken"),
            "busy03": ("delivered", ""),
        }
        assert apns.hits["dead01"] == 1 and apns.hits["bad02"] == 1
        assert apns.refused == [] and sleeps.waits == [1.0]
        sent = next(m for m in apns.received if m["token"] == "a1b2")
        assert sent["aps"] == {"alert": {"title": "Hello", "body": "a body"}}
        assert sent["k"] == "v" and sent["headers"]["apns-topic"] == "com.example.shop"
        assert sent["headers"]["apns-priority"] == "10"
        assert sent["headers"]["apns-collapse-id"] == "k"
        assert len(apns.protocols) == 1  # every request on one HTTP/2 connection
    finally:
        await provider.close()
        await apns.stop()


async def test_in_app_batches_per_shard_and_reports_gone_devices() -> None:
    calls: list[tuple[str, list[tuple[str, str]]]] = []

    async def deliver(shard: str, targets: list[tuple[str, str]], msg: dict[str, Any]) -> list[str]:
        calls.append((shard, targets))
        return [d for _, d in targets if d != "gone"]

    provider = InAppProvider(deliver, lambda user: f"s-{user[-1]}")
    devices = [device("inapp", f"i{n}", id=n, user=u)
               for n, u in (("a", "u1"), ("b", "u1"), ("gone", "u2"), ("c", "u2"))]  # fmt: skip
    done, _, _ = await run({"inapp": provider}, devices, message(), config())
    assert {r.device: r.state for r in done} == {
        "a": "delivered", "b": "delivered", "gone": "dead", "c": "delivered",
    }  # fmt: skip
    assert sorted(len(t) for _, t in calls) == [2, 2]  # one call per shard


async def test_an_unconfigured_platform_fails_without_retrying() -> None:
    done, sleeps, _ = await run({}, [device("fcm", "t1", id="t1")], message(), config())
    assert (done[0].state, done[0].reason) == ("failed", "platform_not_configured")
    assert sleeps.waits == []


def test_b64_helpers_are_unpadded() -> None:
    assert "=" not in base64.urlsafe_b64encode(b"x").rstrip(b"=").decode()
