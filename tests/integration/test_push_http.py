"""Push over real HTTP through Serve, delivery jobs on the real task queue, and
the providers' stand-ins on loopback (``tests/unit/test_push_standins.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import ray
from aiohttp import web

from actors.push.providers import SIGNATURE_HEADER, verify_webhook
from actors.runtime.settings import Settings
from tests.conftest import until
from tests.integration.conftest import error_code, service_client, sign_up
from tests.unit.test_push_standins import Served, WebhookReceiver

SERVICE = "push"


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    served = WebhookReceiver()
    await served.start()
    yield served
    await served.stop()


@pytest.fixture
async def alice(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(base_url, SERVICE, await sign_up(base_url)) as client:
        yield client


async def webhook(
    client: httpx.AsyncClient, receiver: WebhookReceiver, path: str, **more: Any
) -> dict[str, Any]:
    made = await client.post(
        "/devices",
        json={"platform": "webhook", "token": f"{receiver.url}/{path}", "app": "shop", **more},
    )
    assert made.status_code == 201, made.text
    device: dict[str, Any] = made.json()
    receiver.secrets[device["id"]] = device["secret"]
    return device


async def finished(client: httpx.AsyncClient, notification: str) -> dict[str, Any]:
    async def fetch() -> dict[str, Any]:
        answer = await client.get(f"/notifications/{notification}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    done: dict[str, Any] = await until(
        fetch, lambda n: n["finished"], within_s=240, what="every device reported"
    )
    return done


async def test_devices_are_their_owners(alice: httpx.AsyncClient, base_url: str) -> None:
    made = await alice.post(
        "/devices",
        json={"platform": "fcm", "token": "tok-1", "app": "shop", "topics": ["news"]},
    )
    assert made.status_code == 201, made.text
    device = made.json()
    again = await alice.post(
        "/devices", json={"platform": "fcm", "token": "tok-1", "app": "shop", "locale": "pt-BR"}
    )
    assert again.status_code == 200 and again.json()["id"] == device["id"]
    listed = (await alice.get("/devices")).json()["devices"]
    assert [d["id"] for d in listed] == [device["id"]] and listed[0]["locale"] == "pt-BR"
    async with service_client(base_url, SERVICE, await sign_up(base_url)) as bob:
        for answer in (
            await bob.get(f"/devices/{device['id']}"),
            await bob.delete(f"/devices/{device['id']}"),
            await bob.get(f"/devices/{device['id']}/inbox"),
            await bob.post("/send", json={"to": {"device": device["id"]}, "title": "x"}),
        ):
            assert answer.status_code == 404 and error_code(answer) == "device_not_found"
        other = await bob.post("/send", json={"to": {"user": "someone-else"}, "title": "x"})
        assert other.status_code == 403
        segment = await bob.post("/send", json={"to": {"users": ["a", "b"]}, "title": "x"})
        assert segment.status_code == 403
    bad = await alice.post("/devices", json={"platform": "fcm", "token": 5, "app": "shop"})
    assert bad.status_code == 422
    extra = await alice.post(
        "/devices", json={"platform": "fcm", "token": "t", "app": "shop", "owner": "x"}
    )
    assert extra.status_code == 422
    private = await alice.post("/devices", json={"platform": "sms", "token": "t", "app": "shop"})
    assert private.status_code == 422
    assert (await alice.delete(f"/devices/{device['id']}")).status_code == 204
    assert (await alice.get(f"/devices/{device['id']}")).status_code == 404


async def test_webhook_end_to_end_with_dead_token_and_retry_after(
    alice: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    ok = await webhook(alice, receiver, "ok")
    dead = await webhook(alice, receiver, "dead")
    busy = await webhook(alice, receiver, "busy")
    receiver.retry_after = "2"
    sent = await alice.post(
        "/send",
        json={"to": {"topic": "x"}, "title": "t"},
    )
    assert sent.status_code == 202 and sent.json()["devices"] == 0  # nobody follows x
    me = (await alice.get("/devices")).json()["devices"]
    assert len(me) == 3
    answer = await alice.post(
        "/send",
        json={
            "to": {"device": ok["id"]},
            "title": "Hello",
            "body": "there",
            "data": {"order": 42},
            "priority": "high",
            "mode": "sync",
            "wait_timeout_s": 60,
        },
    )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["finished"] and result["results"][0]["state"] == "delivered"
    [got] = [r for r in receiver.received if r["path"] == "ok"]
    assert got["title"] == "Hello" and got["body"] == "there" and got["data"] == {"order": 42}
    assert got["id"] == result["id"] and got["device"] == ok["id"]
    assert receiver.refused == []  # every request carried a good signature

    everyone = await alice.post(
        "/send", json={"to": {"user": await my_id(alice)}, "title": "All", "idempotency_key": "k1"}
    )
    assert everyone.status_code == 202, everyone.text
    notification = everyone.json()["id"]
    repeat = await alice.post(
        "/send", json={"to": {"user": await my_id(alice)}, "title": "All", "idempotency_key": "k1"}
    )
    assert repeat.json() == {**everyone.json(), "duplicate": True}
    done = await finished(alice, notification)
    states = {r["device"]: (r["state"], r["reason"], r["attempts"]) for r in done["results"]}
    assert states[ok["id"]] == ("delivered", None, 1)
    assert states[dead["id"]] == ("dead", "http_410", 1)
    assert states[busy["id"]] == ("delivered", None, 2)
    assert receiver.hits["dead"] == 1  # never retried
    busy_hits = [r for r in receiver.received if r["path"] == "busy"]
    assert len(busy_hits) == 1
    # pruned from the registry; the next send does not reach it
    await until(lambda: alice.get(f"/devices/{dead['id']}"), lambda r: r.status_code == 404)
    again = await alice.post("/send", json={"to": {"user": await my_id(alice)}, "title": "2"})
    done = await finished(alice, again.json()["id"])
    assert dead["id"] not in {r["device"] for r in done["results"]}
    assert receiver.hits["dead"] == 1


async def my_id(client: httpx.AsyncClient) -> str:
    """The id of the user ``client`` is signed in as."""
    base = str(client.base_url).rstrip("/").removesuffix(f"/{SERVICE}")
    async with httpx.AsyncClient(base_url=base, headers=dict(client.headers)) as auth:
        me = await auth.get("/auth/me")
        assert me.status_code == 200, me.text
        return str(me.json()["id"])


async def test_retry_after_is_waited_for(
    alice: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    await webhook(alice, receiver, "busy")
    receiver.retry_after = "3"
    sent = await alice.post("/send", json={"to": {"user": await my_id(alice)}, "title": "r"})
    done = await finished(alice, sent.json()["id"])
    assert done["results"][0]["state"] == "delivered" and done["results"][0]["attempts"] == 2
    [first, second] = receiver.hit_times["busy"]
    assert second - first >= 3.0  # the provider's Retry-After, not the 50 ms backoff


async def test_offline_in_app_inbox_on_connect_in_order_exactly_once(
    alice: httpx.AsyncClient,
) -> None:
    made = await alice.post(
        "/devices", json={"platform": "inapp", "token": "install-1", "app": "shop"}
    )
    device = made.json()["id"]
    me = await my_id(alice)
    for n in range(3):
        sent = await alice.post("/send", json={"to": {"user": me}, "title": f"m{n}"})
        await finished(alice, sent.json()["id"])
    inbox = (await alice.get(f"/devices/{device}/inbox")).json()["messages"]
    assert [m["title"] for m in inbox] == ["m0", "m1", "m2"]
    assert [m["seq"] for m in inbox] == sorted(m["seq"] for m in inbox)
    acked = await alice.post(f"/devices/{device}/inbox/ack", json={"seq": inbox[-1]["seq"]})
    assert acked.json()["dropped"] == 3
    assert (await alice.get(f"/devices/{device}/inbox")).json()["messages"] == []
    sent = await alice.post("/send", json={"to": {"device": device}, "title": "later"})
    await finished(alice, sent.json()["id"])
    again = (await alice.get(f"/devices/{device}/inbox")).json()["messages"]
    assert [m["title"] for m in again] == ["later"]  # nothing acknowledged comes back


async def test_stats_are_the_admins(alice: httpx.AsyncClient, base_url: str) -> None:
    from tests.integration.conftest import admin_headers

    assert (await alice.get("/stats")).status_code == 403
    async with service_client(base_url, SERVICE, await admin_headers(base_url)) as admin:
        stats = (await admin.get("/stats")).json()
    assert {"sent", "delivered", "failed", "dead_pruned", "latency"} <= set(stats)


async def _kill_workers(settings: Settings) -> int:
    """Crash every worker of the push delivery queue (Ray restarts them)."""
    from actors.push.shard import QUEUE_NAME, QUEUE_OWNER
    from actors.queue.client import QueueClient

    name = await QueueClient(settings).actor_name(QUEUE_NAME, owner=QUEUE_OWNER)
    queue = ray.get_actor(name, namespace=settings.namespace)
    workers = await queue.workers.remote()
    for handle in workers["handles"]:
        ray.kill(handle, no_restart=False)
    return len(workers["handles"])


async def test_shard_and_workers_killed_mid_send_lose_nothing(
    alice: httpx.AsyncClient, receiver: WebhookReceiver, http_settings: Settings
) -> None:
    receiver.delay_s = 0.2  # slow enough to be killed in the middle
    me = await my_id(alice)
    for n in range(8):
        await webhook(alice, receiver, f"slow-{n}")
    accepted = []
    for n in range(6):
        sent = await alice.post(
            "/send", json={"to": {"user": me}, "title": f"k{n}", "idempotency_key": f"kill-{n}"}
        )
        assert sent.status_code == 202, sent.text
        accepted.append(sent.json()["id"])
        if n == 2:
            await until(lambda: len(receiver.received), lambda c: c > 0, within_s=120)
            assert await _kill_workers(http_settings) > 0
            for actor in ray.util.list_named_actors(all_namespaces=True):
                if actor["namespace"] == http_settings.namespace and actor["name"].startswith(
                    "push-shard-"
                ):
                    handle = ray.get_actor(actor["name"], namespace=http_settings.namespace)
                    ray.kill(handle, no_restart=False)
    delivered = 0
    for notification in accepted:
        done = await finished(alice, notification)
        states = [r["state"] for r in done["results"]]
        assert len(states) == 8 and set(states) <= {"delivered", "failed", "lost"}, done
        delivered += states.count("delivered")
    titles = {r["title"] for r in receiver.received}
    assert delivered > 0 and titles <= {f"k{n}" for n in range(6)}


class FeedbackReceiver(Served):
    """A sender's feedback endpoint: checks the signature with the secret its send was
    answered with; one it does not know yet is answered 503 (it is sent again)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, str] = {}  #: notification id -> feedback secret
        self.raw: list[tuple[str, bytes]] = []  #: signature header and body of each accepted
        self.app.router.add_post("/{path}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload = orjson.loads(body)
        secret = self.secrets.get(payload.get("notification", ""))
        if secret is None:
            return web.Response(status=503)
        header = request.headers.get(SIGNATURE_HEADER, "")
        if not verify_webhook(secret, header, body):
            self.refused.append(payload["notification"])
            return web.Response(status=400)
        self.received.append(payload)
        self.raw.append((header, body))
        return web.Response(status=204)


async def test_async_feedback_webhook_is_signed_and_reports_dead_tokens(
    alice: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    feedback = FeedbackReceiver()
    await feedback.start()
    try:
        ok = await webhook(alice, receiver, "fb-ok")
        dead = await webhook(alice, receiver, "fb-dead")
        to = {"user": await my_id(alice)}
        for bad in ("ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/x", "not a url"):
            refused = await alice.post("/send", json={"to": to, "feedback_url": bad})
            assert refused.status_code == 422, refused.text
        sent = await alice.post(
            "/send", json={"to": to, "title": "fb", "feedback_url": f"{feedback.url}/hook"}
        )
        assert sent.status_code == 202, sent.text
        accepted = sent.json()
        assert accepted["feedback_secret"].startswith("whsec_")
        feedback.secrets[accepted["id"]] = accepted["feedback_secret"]
        [payload] = await until(lambda: feedback.received, within_s=60, what="the feedback")
        assert feedback.refused == []
        header, body = feedback.raw[0]
        assert not verify_webhook("whsec_another", header, body)  # the secret matters
        assert payload["idempotency_id"] == f"feedback:{accepted['id']}"
        states = {r["device"]: (r["state"], r["reason"]) for r in payload["results"]}
        assert states == {ok["id"]: ("delivered", None), dead["id"]: ("dead", "http_410")}
        done = await until(
            lambda: alice.get(f"/notifications/{accepted['id']}"),
            lambda r: r.json()["feedback"] == "sent",
            within_s=60,
        )
        assert done.json()["counts"] == {"delivered": 1, "dead": 1}
        assert "feedback_secret" not in done.json() or done.json()["feedback_secret"] is None
    finally:
        await feedback.stop()
