"""``PushShard`` without Ray: devices, quotas, sends, reports, sweeps, inboxes, replay."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from actors.push.errors import DeviceNotFound, NotificationNotFound, PushQuotaExceeded
from actors.push.model import Delivery, Device, Notification, check_device, device_id
from actors.push.providers import Outcome
from actors.push.settings import PushSettings
from actors.push.shard import PushShard, Report
from actors.runtime.clock import FakeClock
from actors.runtime.errors import InvalidInput, LimitReached
from actors.runtime.store import SQLiteStore
from tests.unit.conftest import settle


class FakeDispatch:
    def __init__(self) -> None:
        self.enqueued: list[tuple[str, int]] = []
        self.published: list[tuple[str, str, list[dict[str, Any]]]] = []
        self.pruned: list[tuple[str, str]] = []
        self.feedbacks: list[tuple[str, str, dict[str, Any]]] = []
        self.feedback_outcomes: list[Outcome] = []  #: answers of the next feedback POSTs

    async def enqueue(self, notification: Notification, batch: int) -> None:
        self.enqueued.append((notification.id, batch))

    async def publish(self, user: str, device: str, entries: list[dict[str, Any]]) -> None:
        self.published.append((user, device, entries))

    async def prune(self, user: str, device: str) -> None:
        self.pruned.append((user, device))

    async def feedback(self, url: str, secret: str, body: bytes) -> Outcome:
        self.feedbacks.append((url, secret, json.loads(body)))
        return self.feedback_outcomes.pop(0) if self.feedback_outcomes else Outcome("delivered")


def make_device(
    user: str, token: str, platform: str = "fcm", topics: list[str] | None = None
) -> Device:
    now = time.time()
    keys = {"secret": "whsec_x"} if platform == "webhook" else {}
    return Device(device_id(user, platform, token), user, platform, token, keys, "shop", "en",
                  topics or [], now, now)  # fmt: skip


def make_notification(
    sender: str, devices: list[Device], *, nid: str = "n1", collapse: str = "", ttl_s: float = 600
) -> Notification:
    return Notification(
        nid, sender, "t", "b", {}, ttl_s, collapse, "normal", {"user": sender}, time.time(),
        {d.id: Delivery(d) for d in devices}, [[d.id for d in devices]],
    )  # fmt: skip


async def open_shard(
    store: SQLiteStore, clock: FakeClock, dispatch: FakeDispatch | None = None, **config: Any
) -> PushShard:
    shard = PushShard(PushSettings(**config), dispatch=dispatch, clock=clock)
    await shard.open(store, "push-shard-0")
    return shard


async def test_devices_belong_to_their_owner_within_a_cap(
    store: SQLiteStore, clock: FakeClock
) -> None:
    shard = await open_shard(store, clock, max_devices_per_user=2)
    first = await shard.register(make_device("u1", "t1", topics=["news"]))
    again = await shard.register(make_device("u1", "t1", topics=["sport"]))
    assert first["created"] and not again["created"] and again["topics"] == ["sport"]
    await shard.register(make_device("u1", "t2"))
    with pytest.raises(LimitReached):
        await shard.register(make_device("u1", "t3"))
    await shard.register(make_device("u2", "t3"))  # another user has their own cap
    with pytest.raises(DeviceNotFound):
        await shard.get_device("u2", first["id"])  # u1's device is not u2's
    with pytest.raises(DeviceNotFound):
        await shard.unregister("u2", first["id"])
    assert [d.id for d in await shard.topic_devices("sport")] == [first["id"]]
    assert await shard.topic_devices("news") == []
    assert await shard.unregister("u1", first["id"])
    assert await shard.topic_devices("sport") == []


async def test_webhook_secret_is_given_once_and_kept(store: SQLiteStore, clock: FakeClock) -> None:
    shard = await open_shard(store, clock)
    made = await shard.register(make_device("u1", "https://example.com/h", "webhook"))
    assert made["secret"] == "whsec_x"
    other = make_device("u1", "https://example.com/h", "webhook")
    other.keys = {"secret": "whsec_new"}
    again = await shard.register(other)
    assert "secret" not in again
    assert shard.devices["u1"][made["id"]].keys == {"secret": "whsec_x"}
    assert "secret" not in str(await shard.list_devices("u1"))


def test_device_input_is_checked() -> None:
    config = PushSettings(allow_private_addresses=True, max_topics_per_device=1)
    good: dict[str, Any] = {"platform": "fcm", "token": "abc", "keys": None, "app": "shop",
                            "locale": "en", "topics": []}  # fmt: skip
    check_device(**good, config=config)
    for bad in (
        {"platform": "sms"},
        {"token": "a b"},
        {"app": "../x"},
        {"locale": "english!"},
        {"topics": ["a", "b"]},
        {"keys": {"p256dh": "x"}},
        {"platform": "webpush", "token": "http://127.0.0.1/x", "keys": {"auth": "x"}},
    ):
        with pytest.raises(InvalidInput):
            check_device(**{**good, **bad}, config=config)


async def test_send_enqueues_batches_once_and_reports_settle_it(
    store: SQLiteStore, clock: FakeClock
) -> None:
    dispatch = FakeDispatch()
    shard = await open_shard(store, clock, dispatch)
    devices = [make_device("u1", "a"), make_device("u1", "b")]
    sent = await shard.send(make_notification("u1", devices), key="send:u1:k1")
    await settle()
    assert dispatch.enqueued == [("n1", 0)] and shard.notifications["n1"].enqueued
    repeat = await shard.send(make_notification("u1", devices, nid="n2"), key="send:u1:k1")
    assert repeat["id"] == "n1" and repeat["duplicate"] and sent["duplicate"] is False
    claim = await shard.claim("n1", 0)
    assert [d.id for d in claim["devices"]] == [d.id for d in devices]
    await shard.report("n1", [Report(devices[0].id, "delivered", "", 1, 5.0)])
    await shard.report("n1", [Report(devices[0].id, "failed", "late")])  # once only
    await shard.report("n1", [Report(devices[1].id, "dead", "Unregistered")])
    await settle()
    view = await shard.notification("u1", "n1")
    assert view["finished"] and view["counts"] == {"delivered": 1, "dead": 1}
    assert dispatch.pruned == [("u1", devices[1].id)]
    assert (await shard.claim("n1", 0))["devices"] == []  # a job run again sends nothing
    with pytest.raises(NotificationNotFound):
        await shard.notification("u2", "n1")  # only its sender reads it
    stats = await shard.stats_of()
    assert stats["delivered"] == 1 and stats["failed"] == {"dead:Unregistered": 1}


async def test_expired_notifications_are_not_sent(store: SQLiteStore, clock: FakeClock) -> None:
    shard = await open_shard(store, clock, FakeDispatch())
    devices = [make_device("u1", "a")]
    notification = make_notification("u1", devices, ttl_s=1)
    notification.created_at = clock.time() - 5
    await shard.send(notification)
    assert (await shard.claim("n1", 0))["devices"] == []
    view = await shard.notification("u1", "n1")
    assert view["results"][0]["state"] == "expired" and view["finished"]


async def test_a_newer_collapse_key_replaces_a_queued_older_one(
    store: SQLiteStore, clock: FakeClock
) -> None:
    shard = await open_shard(store, clock, FakeDispatch())
    devices = [make_device("u1", "a")]
    await shard.send(make_notification("u1", devices, nid="old", collapse="score"))
    await shard.send(make_notification("u1", devices, nid="new", collapse="score"))
    assert (await shard.claim("old", 0))["devices"] == []
    assert len((await shard.claim("new", 0))["devices"]) == 1
    old = await shard.notification("u1", "old")
    assert old["results"][0]["state"] == "collapsed"


async def test_quotas_per_sender_refuse_and_take_nothing(
    store: SQLiteStore, clock: FakeClock
) -> None:
    shard = await open_shard(store, clock, FakeDispatch(), user_quota_per_min=2)
    devices = [make_device("u1", "a"), make_device("u1", "b")]
    await shard.send(make_notification("u1", devices, nid="n1"))
    with pytest.raises(PushQuotaExceeded):
        await shard.send(make_notification("u1", devices[:1], nid="n2"))
    assert "n2" not in shard.notifications
    clock.advance(60)
    await shard.send(make_notification("u1", devices[:1], nid="n3"))


async def test_the_sweep_reports_what_was_never_reported(
    store: SQLiteStore, clock: FakeClock
) -> None:
    shard = await open_shard(store, clock, FakeDispatch(), delivery_deadline_s=30)
    notification = make_notification("u1", [make_device("u1", "a")])
    notification.created_at = clock.time()
    await shard.send(notification)
    assert await shard.sweep() == 0
    clock.advance(31)
    assert await shard.sweep() == 1
    view = await shard.notification("u1", "n1")
    assert view["finished"] and view["results"][0]["state"] == "lost"


async def test_inbox_is_replayed_in_order_until_acknowledged(
    store: SQLiteStore, clock: FakeClock
) -> None:
    dispatch = FakeDispatch()
    shard = await open_shard(store, clock, dispatch, inbox_max=3)
    device = make_device("u1", "inst-1", "inapp")
    await shard.register(device)
    for n in range(5):
        message = {"id": f"n{n}", "title": str(n), "created_at": clock.time(), "ttl_s": 600.0}
        assert await shard.inbox_deliver([("u1", device.id)], message) == [device.id]
    inbox = await shard.inbox("u1", device.id)
    assert [m["title"] for m in inbox["messages"]] == ["2", "3", "4"]  # bounded: oldest dropped
    assert [m["seq"] for m in inbox["messages"]] == [3, 4, 5]
    assert len(dispatch.published) == 5
    assert await shard.inbox_ack("u1", device.id, 4) == 2
    assert [m["seq"] for m in (await shard.inbox("u1", device.id))["messages"]] == [5]
    with pytest.raises(DeviceNotFound):
        await shard.inbox("u2", device.id)
    assert await shard.inbox_deliver([("u1", "gone")], {"id": "x"}) == []


async def test_everything_comes_back_after_a_restart(store: SQLiteStore, clock: FakeClock) -> None:
    shard = await open_shard(store, clock, FakeDispatch())
    device = make_device("u1", "inst", "inapp", topics=["news"])
    await shard.register(device)
    await shard.inbox_deliver(
        [("u1", device.id)], {"id": "m", "created_at": clock.time(), "ttl_s": 60.0}
    )
    notification = make_notification("u1", [device], collapse="c")
    await shard.send(notification, key="send:u1:once")
    await shard.journal.drain()
    again_dispatch = FakeDispatch()
    again = await open_shard(store, clock, again_dispatch)
    assert again.devices == shard.devices and again.topics == shard.topics
    assert again.inboxes == shard.inboxes
    assert again.notifications["n1"].deliveries == shard.notifications["n1"].deliveries
    assert again.collapse == shard.collapse
    repeat = await again.send(make_notification("u1", [device], nid="n9"), key="send:u1:once")
    assert repeat["id"] == "n1" and repeat["duplicate"]
    # accepted and already enqueued: a restart does not enqueue it again
    again.redispatch()
    await settle()
    assert again_dispatch.enqueued == []


async def test_accepted_but_not_enqueued_is_enqueued_after_a_restart(
    store: SQLiteStore, clock: FakeClock
) -> None:
    class QueueAway(FakeDispatch):
        async def enqueue(self, notification: Notification, batch: int) -> None:
            raise ConnectionError("the queue is away")

    shard = await open_shard(store, clock, QueueAway())
    await shard.send(make_notification("u1", [make_device("u1", "a")]))
    await settle()
    assert not shard.notifications["n1"].enqueued
    await shard.journal.drain()
    dispatch = FakeDispatch()
    again = await open_shard(store, clock, dispatch)
    again.redispatch()
    await settle()
    assert dispatch.enqueued == [("n1", 0)] and again.notifications["n1"].enqueued


async def test_the_app_quota_refuses_and_gives_the_senders_back(
    store: SQLiteStore, clock: FakeClock
) -> None:
    shard = await open_shard(store, clock, FakeDispatch(), app_quota_per_min=1)
    device = make_device("u1", "a")
    await shard.send(make_notification("u1", [device], nid="n1"))
    with pytest.raises(PushQuotaExceeded):
        await shard.send(make_notification("u2", [device], nid="n2"))
    assert "n2" not in shard.notifications
    assert shard.users_quota["u2"].tokens == shard.users_quota["u2"].capacity


async def test_feedback_is_posted_once_every_result_is_final(
    store: SQLiteStore, clock: FakeClock
) -> None:
    dispatch = FakeDispatch()
    dispatch.feedback_outcomes = [Outcome("retry", "http_503", 0.0)]  # then delivered
    shard = await open_shard(store, clock, dispatch, retry_base_s=0)
    devices = [make_device("u1", "a"), make_device("u1", "b")]
    notification = make_notification("u1", devices)
    notification.feedback_url, notification.feedback_secret = "https://h.example/f", "whsec_f"
    sent = await shard.send(notification, key="send:u1:f")
    assert sent["feedback_secret"] == "whsec_f" and sent["feedback"] == "waiting"
    await shard.report("n1", [Report(devices[0].id, "delivered", "", 1, 5.0)])
    await settle()
    assert dispatch.feedbacks == []  # one device still pending
    await shard.report("n1", [Report(devices[1].id, "dead", "Unregistered")])
    await shard.journal.drain()
    for _ in range(5):
        await settle()
    assert len(dispatch.feedbacks) == 2  # the 503, then the retry
    url, secret, payload = dispatch.feedbacks[-1]
    assert (url, secret) == ("https://h.example/f", "whsec_f")
    assert payload["type"] == "feedback" and payload["idempotency_id"] == "feedback:n1"
    states = {r["device"]: (r["state"], r["reason"]) for r in payload["results"]}
    assert states == {devices[0].id: ("delivered", None), devices[1].id: ("dead", "Unregistered")}
    assert (await shard.notification("u1", "n1"))["feedback"] == "sent"
    repeat = await shard.send(make_notification("u1", devices, nid="n2"), key="send:u1:f")
    assert repeat["feedback_secret"] == "whsec_f" and repeat["duplicate"]
    # sent and recorded: a restart does not send it again
    await shard.journal.drain()
    again_dispatch = FakeDispatch()
    again = await open_shard(store, clock, again_dispatch)
    again.redispatch()
    await settle()
    assert again_dispatch.feedbacks == []


async def test_a_due_feedback_survives_a_restart_and_failures_are_recorded(
    store: SQLiteStore, clock: FakeClock
) -> None:
    class ReceiverAway(FakeDispatch):
        async def feedback(self, url: str, secret: str, body: bytes) -> Outcome:
            raise ConnectionError("the shard dies before it can POST")

    shard = await open_shard(store, clock, None)  # no way out: the feedback stays due
    device = make_device("u1", "a")
    notification = make_notification("u1", [device])
    notification.feedback_url, notification.feedback_secret = "https://h.example/f", "s"
    await shard.send(notification)
    await shard.report("n1", [Report(device.id, "delivered")])
    await shard.journal.drain()
    assert shard.notifications["n1"].feedback_due
    dispatch = FakeDispatch()
    again = await open_shard(store, clock, dispatch)
    again.redispatch()
    for _ in range(3):
        await settle()
    assert [p["notification"] for _, _, p in dispatch.feedbacks] == ["n1"]
    assert again.notifications["n1"].feedback_state == "sent"
    # a receiver that refuses for good is recorded as such, and not retried
    broken = FakeDispatch()
    broken.feedback_outcomes = [Outcome("failed", "http_400")]
    third = await open_shard(store, clock, broken)
    second = make_notification("u1", [device], nid="n2")
    second.feedback_url, second.feedback_secret = "https://h.example/g", "s"
    await third.send(second)
    await third.report("n2", [Report(device.id, "failed", "http_500")])
    for _ in range(3):
        await settle()
    assert len(broken.feedbacks) == 1
    assert (await third.notification("u1", "n2"))["feedback"] == "failed:http_400"
    away = await open_shard(store, clock, ReceiverAway())
    away.redispatch()
    await settle()
    assert away.notifications["n1"].feedback_state == "sent"  # nothing more is due
