"""``PushShard`` without Ray: devices, quotas, sends, reports, sweeps, inboxes, replay."""

from __future__ import annotations

import time
from typing import Any

import pytest

from actors.push.errors import DeviceNotFound, NotificationNotFound, PushQuotaExceeded
from actors.push.model import Delivery, Device, Notification, check_device, device_id
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

    async def enqueue(self, notification: Notification, batch: int) -> None:
        self.enqueued.append((notification.id, batch))

    async def publish(self, user: str, device: str, entries: list[dict[str, Any]]) -> None:
        self.published.append((user, device, entries))

    async def prune(self, user: str, device: str) -> None:
        self.pruned.append((user, device))


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
