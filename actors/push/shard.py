"""A push shard: the devices, outboxes and in-app inboxes of the users it owns.

Users are spread over ``REALM_PUSH_SHARDS`` shard actors by rendezvous hashing
of their id. A shard holds, for its users:

- their **devices** (and an index of the topics they follow);
- the **outbox** of the notifications they sent: each with one ``Delivery``
  per device it reaches, in batches of one platform, each batch a job on the
  task queue (``actors.push.jobs:deliver``);
- the **inboxes** of their in-app devices: what arrived for them, kept
  within TTL and bounds until the device acknowledges it.

Everything is journaled (``Durable``): a notification is accepted once its
record is committed, and only then are its jobs enqueued, with idempotency
keys made of the shard, the notification and the batch, so a shard that
restarts enqueues what it had not yet and nothing twice. A job claims its
batch (the devices still pending and still worth sending: not expired, not
collapsed), sends, and reports each device's outcome; a report of a device
that already has one changes nothing. A sweep reports ``lost`` every device
still pending past the delivery deadline, so every accepted notification ends
delivered or reported failed. Quotas and latency samples are not journaled.

A notification may name a **feedback** webhook: once every device has its
result, the shard POSTs them there, signed as webhook devices are
(``Realm-Signature``) with the secret the send was answered with. That it is
due follows from the journal (finished, no feedback recorded yet), so a shard
that restarts sends it again: at least once, with ``idempotency_id`` in the
payload for the receiver to drop repeats. Attempts are bounded as deliveries
are (``max_attempts``, backoff with jitter, ``Retry-After``); the outcome is
recorded (``sent`` or ``failed:<reason>``) and shown in the notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson

from actors.push.errors import DeviceNotFound, NotificationNotFound, PushQuotaExceeded
from actors.push.model import FINAL, Device, Inbox, InboxEntry, Notification
from actors.push.providers import Outcome
from actors.push.settings import PushSettings
from actors.runtime.clock import Clock, SystemClock, every
from actors.runtime.errors import LimitReached, QueueFull
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards
from actors.runtime.supervision import Restart, recover, remote_actor

log = logging.getLogger(__name__)

SHARD_PREFIX = "push-shard"
#: Latency samples kept per provider, per app and overall.
SAMPLES = 2_000
#: How often a shard sweeps late deliveries and old results.
SWEEP_S = 1.0


@dataclass
class Report:
    device: str
    state: str
    reason: str = ""
    attempts: int = 1
    latency_ms: float | None = None


@dataclass
class Stats:
    sent: int = 0  #: notifications accepted
    deliveries: int = 0  #: devices they reached
    delivered: int = 0
    failed: dict[str, int] = field(default_factory=dict)  #: by state:reason
    dead_pruned: int = 0


@dataclass
class ShardState:
    devices: dict[str, dict[str, Device]]
    notifications: list[Notification]
    inboxes: dict[str, Inbox]
    stats: Stats


class Dispatch(Protocol):
    """What a shard does outside itself (the Ray process wires the real ones)."""

    async def enqueue(self, notification: Notification, batch: int) -> None: ...
    async def publish(self, user: str, device: str, entries: list[dict[str, Any]]) -> None: ...
    async def prune(self, user: str, device: str) -> None: ...
    async def feedback(self, url: str, secret: str, body: bytes) -> Outcome: ...


class Bucket:
    """A per-minute token bucket (not journaled: quotas restart full)."""

    def __init__(self, per_min: int, now: float) -> None:
        self.rate = per_min / 60.0
        self.capacity = float(per_min)
        self.tokens = float(per_min)
        self.at = now

    def take(self, count: int, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if count > self.tokens:
            return False
        self.tokens -= count
        return True


class PushShard(Durable):
    def __init__(
        self,
        config: PushSettings,
        *,
        shards: int = 1,
        dispatch: Dispatch | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.dispatch = dispatch
        self.app_share = max(1, config.app_quota_per_min // max(1, shards))
        self.devices: dict[str, dict[str, Device]] = {}
        self.topics: dict[str, set[tuple[str, str]]] = {}
        self.notifications: OrderedDict[str, Notification] = OrderedDict()
        self.collapse: dict[str, str] = {}
        self.inboxes: dict[str, Inbox] = {}
        self.stats = Stats()
        self.samples: dict[str, deque[float]] = {}
        self.users_quota: dict[str, Bucket] = {}
        self.apps_quota: dict[str, Bucket] = {}
        self._finished: dict[str, asyncio.Event] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._dispatching: set[str] = set()  #: notifications being handed to the queue
        #: finished notifications whose feedback webhook has not had its results yet
        self._feedback_due: set[str] = set()
        self._feedback_running: set[str] = set()

    # --- durable state --------------------------------------------------------

    def snapshot_state(self) -> ShardState:
        return ShardState(self.devices, list(self.notifications.values()), self.inboxes, self.stats)

    def state_size(self) -> int:
        return sum(len(d) for d in self.devices.values()) + sum(
            len(n.deliveries) for n in self.notifications.values()
        )

    def restore_state(self, state: ShardState) -> None:
        self.devices = state.devices
        self.notifications = OrderedDict((n.id, n) for n in state.notifications)
        self.inboxes = state.inboxes
        self.stats = state.stats
        self.topics = {}
        for user_devices in self.devices.values():
            for device in user_devices.values():
                self._index(device)
        self.collapse = {}
        self._feedback_due = set()
        for notification in self.notifications.values():
            if notification.collapse_key:
                self.collapse[_collapse(notification)] = notification.id
            if notification.feedback_due:
                self._feedback_due.add(notification.id)

    def _index(self, device: Device) -> None:
        for topic in device.topics:
            self.topics.setdefault(topic, set()).add((device.user, device.id))

    def _unindex(self, device: Device) -> None:
        for topic in device.topics:
            members = self.topics.get(topic)
            if members is not None:
                members.discard((device.user, device.id))
                if not members:
                    del self.topics[topic]

    def apply_register(self, device: Device) -> bool:
        mine = self.devices.setdefault(device.user, {})
        old = mine.get(device.id)
        device = replace(device, keys=dict(device.keys), topics=list(device.topics))
        if old is not None:
            self._unindex(old)
            device.created_at = old.created_at
            if old.platform == "webhook":
                device.keys = dict(old.keys)  # the secret stays the one the owner was given
        mine[device.id] = device
        self._index(device)
        return old is None

    def apply_unregister(self, user: str, device: str) -> bool:
        found = self.devices.get(user, {}).pop(device, None)
        if found is None:
            return False
        self._unindex(found)
        if not self.devices[user]:
            del self.devices[user]
        self.inboxes.pop(device, None)
        return True

    def apply_prune(self, user: str, device: str) -> bool:
        pruned = self.apply_unregister(user, device)
        if pruned:
            self.stats.dead_pruned += 1
        return pruned

    def apply_seen(self, user: str, device: str, at: float) -> None:
        found = self.devices.get(user, {}).get(device)
        if found is not None:
            found.last_seen = max(found.last_seen, at)

    def apply_accept(self, notification: Notification) -> str:
        self.notifications[notification.id] = notification
        if notification.collapse_key:
            key = _collapse(notification)
            older = self.collapse.get(key)
            self.collapse[key] = notification.id
            if older is not None and older in self.notifications:
                # what the older one has not sent yet is replaced by this one
                self._finish_pending(self.notifications[older], "collapsed", "replaced", None)
        self.stats.sent += 1
        self.stats.deliveries += len(notification.deliveries)
        if not notification.deliveries:
            notification.finished_at = notification.created_at
        return notification.id

    def apply_enqueued(self, notification: str) -> None:
        found = self.notifications.get(notification)
        if found is not None:
            found.enqueued = True

    def apply_report(self, notification: str, reports: list[Report], at: float) -> list[str]:
        """Each device's outcome, once (later reports of it change nothing). Answers the
        devices newly found dead."""
        found = self.notifications.get(notification)
        if found is None:
            return []
        dead: list[str] = []
        for report in reports:
            delivery = found.deliveries.get(report.device)
            if delivery is None or delivery.state != "pending" or report.state not in FINAL:
                continue
            delivery.state, delivery.reason = report.state, report.reason
            delivery.attempts, delivery.latency_ms = report.attempts, report.latency_ms
            self._count(delivery.state, delivery.reason)
            if report.state == "dead":
                dead.append(report.device)
        self._maybe_finished(found, at)
        return dead

    def apply_sweep(self, now: float) -> int:
        """Report what waited past its deadline; forget old results. Answers how many
        deliveries were reported."""
        reported = 0
        grace = self.config.request_timeout_s * 2
        for notification in list(self.notifications.values()):
            if notification.finished_at is None:
                deadline = notification.created_at + self.config.delivery_deadline_s
                if now > min(deadline, notification.expires_at + grace):
                    state = "lost" if now > deadline else "expired"
                    reported += self._finish_pending(notification, state, "deadline", now)
        keep_after = now - self.config.results_ttl_s
        finished = [n for n in self.notifications.values() if n.finished_at is not None]
        excess = len(finished) - self.config.max_notifications_kept
        for notification in finished:
            if excess <= 0 and (notification.finished_at or 0) >= keep_after:
                break
            self._forget(notification)
            excess -= 1
        for inbox in self.inboxes.values():
            self._trim_inbox(inbox, now)
        return reported

    def apply_feedback(self, notification: str, state: str) -> None:
        found = self.notifications.get(notification)
        if found is not None and not found.feedback_state:
            found.feedback_state = state
        self._feedback_due.discard(notification)

    def apply_inbox_put(
        self, user: str, device: str, entries: list[InboxEntry]
    ) -> list[InboxEntry]:
        if device not in self.devices.get(user, {}):
            return []
        inbox = self.inboxes.setdefault(device, Inbox())
        stored = []
        for entry in entries:
            entry.seq = inbox.next_seq
            inbox.next_seq += 1
            inbox.entries.append(entry)
            inbox.bytes += entry.size
            stored.append(entry)
        self._trim_inbox(inbox, None)
        return stored

    def apply_inbox_ack(self, user: str, device: str, seq: int) -> int:
        inbox = self.inboxes.get(device)
        if inbox is None or device not in self.devices.get(user, {}):
            return 0
        dropped = 0
        while inbox.entries and inbox.entries[0].seq <= seq:
            inbox.bytes -= inbox.entries.pop(0).size
            dropped += 1
        return dropped

    # --- helpers of the state -------------------------------------------------

    def _trim_inbox(self, inbox: Inbox, now: float | None) -> None:
        entries = inbox.entries
        while entries and (
            len(entries) > self.config.inbox_max
            or inbox.bytes > self.config.inbox_max_bytes
            or (now is not None and entries[0].expires_at <= now)
        ):
            inbox.bytes -= entries.pop(0).size

    def _finish_pending(
        self, notification: Notification, state: str, reason: str, at: float | None
    ) -> int:
        count = 0
        for delivery in notification.deliveries.values():
            if delivery.state == "pending":
                delivery.state, delivery.reason = state, reason
                self._count(state, reason)
                count += 1
        self._maybe_finished(notification, at if at is not None else notification.created_at)
        return count

    def _maybe_finished(self, notification: Notification, at: float) -> None:
        if notification.finished_at is None and notification.pending() == 0:
            notification.finished_at = at
            if notification.feedback_due:
                self._feedback_due.add(notification.id)
            event = self._finished.pop(notification.id, None)
            if event is not None:
                event.set()

    def _count(self, state: str, reason: str) -> None:
        if state == "delivered":
            self.stats.delivered += 1
        else:
            key = f"{state}:{reason}" if reason else state
            self.stats.failed[key] = self.stats.failed.get(key, 0) + 1

    def _forget(self, notification: Notification) -> None:
        self.notifications.pop(notification.id, None)
        self._feedback_due.discard(notification.id)
        if notification.collapse_key:
            key = _collapse(notification)
            if self.collapse.get(key) == notification.id:
                del self.collapse[key]

    # --- operations -------------------------------------------------------------

    async def ping(self) -> int:
        return len(self.devices)

    async def register(self, device: Device, *, key: str | None = None) -> dict[str, Any]:
        mine = self.devices.get(device.user, {})
        if device.id not in mine and len(mine) >= self.config.max_devices_per_user:
            raise LimitReached(
                f"a user has at most {self.config.max_devices_per_user} devices",
                limit=self.config.max_devices_per_user,
            )
        created = await self.execute("register", key=key, device=device)
        stored = self.devices[device.user][device.id]
        answer = {**stored.public(), "created": created}
        if stored.platform == "webhook" and created:
            answer["secret"] = stored.keys["secret"]
        return answer

    async def unregister(self, user: str, device: str) -> bool:
        if device not in self.devices.get(user, {}):
            raise DeviceNotFound(device=device)
        return bool(await self.execute("unregister", user=user, device=device))

    async def prune(self, user: str, device: str) -> bool:
        if device not in self.devices.get(user, {}):
            return False
        return bool(await self.execute("prune", user=user, device=device))

    async def get_device(self, user: str, device: str) -> Device:
        found = self.devices.get(user, {}).get(device)
        if found is None:
            raise DeviceNotFound(device=device)
        return found

    async def list_devices(self, user: str) -> list[dict[str, Any]]:
        return [d.public() for d in self.devices.get(user, {}).values()]

    async def devices_of(self, users: list[str], app: str | None = None) -> list[Device]:
        found: list[Device] = []
        for user in users:
            found.extend(
                d for d in self.devices.get(user, {}).values() if app is None or d.app == app
            )
        return found

    async def topic_devices(
        self, topic: str, app: str | None = None, user: str | None = None
    ) -> list[Device]:
        found = []
        for owner, device_id in self.topics.get(topic, ()):
            if user is not None and owner != user:
                continue
            device = self.devices.get(owner, {}).get(device_id)
            if device is not None and (app is None or device.app == app):
                found.append(device)
        return found

    async def send(self, notification: Notification, *, key: str | None = None) -> dict[str, Any]:
        """Accept ``notification`` (once per ``key``) and hand its batches to the queue."""
        if key is not None:
            first = await self.committed_reply(key)
            if first is not None:
                known = self.notifications.get(first[1])
                if known is None:
                    return {"id": first[1], "duplicate": True}
                return {**_accepted(known), "duplicate": True}
        self._check_quotas(notification)
        if sum(1 for n in self.notifications.values() if n.finished_at is None) >= (
            self.config.max_pending_per_shard
        ):
            raise QueueFull("too many notifications are being delivered; try again later")
        await self.execute("accept", key=key, notification=notification)
        self._spawn(self._dispatch(notification))
        self.start_feedbacks()
        return {**_accepted(notification), "duplicate": False}

    def _check_quotas(self, notification: Notification) -> None:
        now = self.clock.now()
        count = len(notification.deliveries)
        user = self.users_quota.get(notification.sender)
        if user is None:
            user = self.users_quota[notification.sender] = Bucket(
                self.config.user_quota_per_min, now
            )
        per_app: dict[str, int] = {}
        for delivery in notification.deliveries.values():
            per_app[delivery.device.app] = per_app.get(delivery.device.app, 0) + 1
        buckets = []
        for app, wanted in per_app.items():
            bucket = self.apps_quota.get(app)
            if bucket is None:
                bucket = self.apps_quota[app] = Bucket(self.app_share, now)
            buckets.append((bucket, wanted, app))
        if count > user.capacity or not user.take(count, now):
            raise PushQuotaExceeded(
                f"a sender reaches at most {self.config.user_quota_per_min} devices a minute",
                limit=self.config.user_quota_per_min,
            )
        for bucket, wanted, app in buckets:
            if not bucket.take(wanted, now):
                user.tokens += count  # nothing was sent
                raise PushQuotaExceeded("this app's quota of deliveries is used up", app=app)

    async def _dispatch(self, notification: Notification) -> None:
        """Enqueue every batch of ``notification`` (idempotent), then record that."""
        if self.dispatch is None or notification.enqueued or notification.finished_at is not None:
            return
        if notification.id in self._dispatching:
            return
        self._dispatching.add(notification.id)
        try:
            for index in range(len(notification.batches)):
                await self.dispatch.enqueue(notification, index)
            await self.execute("enqueued", notification=notification.id)
        except Exception as error:  # the queue away: the sweep tries again, then reports lost
            log.warning("notification %s not handed to the queue yet: %r", notification.id, error)
        finally:
            self._dispatching.discard(notification.id)

    def redispatch(self) -> None:
        """After a restart: hand the queue whatever was accepted but not yet enqueued,
        and send the feedbacks that are due."""
        for notification in list(self.notifications.values()):
            if not notification.enqueued and notification.finished_at is None:
                self._spawn(self._dispatch(notification))
        self.start_feedbacks()

    def start_feedbacks(self) -> None:
        """Send every feedback that is due and not under way."""
        if self.dispatch is None:
            return
        for notification in sorted(self._feedback_due - self._feedback_running):
            self._feedback_running.add(notification)
            self._spawn(self._feedback(notification))

    async def _feedback(self, notification: str) -> None:
        """POST a finished notification's results to its feedback URL, with bounded
        retries; record how it went (a crash before that sends it again)."""
        assert self.dispatch is not None
        try:
            attempts = 0
            state = "failed:retries_exhausted"
            while True:
                found = self.notifications.get(notification)
                if found is None or not found.feedback_due:
                    return
                body = orjson.dumps(feedback_payload(found))
                try:
                    outcome = await self.dispatch.feedback(
                        found.feedback_url, found.feedback_secret, body
                    )
                except Exception as error:  # timeouts, refused connections, a bad URL
                    outcome = _feedback_error(error)
                attempts += 1
                if outcome.state == "delivered":
                    state = "sent"
                    break
                if outcome.state != "retry":
                    state = f"failed:{outcome.reason or outcome.state}"
                    break
                if attempts >= self.config.max_attempts:
                    state = f"failed:{outcome.reason or 'retries_exhausted'}"
                    break
                ceiling = min(
                    self.config.retry_base_s * 2 ** (attempts - 1), self.config.retry_max_s
                )
                wait = random.uniform(0, ceiling)
                if outcome.retry_after_s is not None:
                    wait = max(wait, outcome.retry_after_s)
                if wait > self.config.retry_max_s:
                    state = f"failed:{outcome.reason}:retry_after_too_long"
                    break
                await asyncio.sleep(wait)
            if notification in self.notifications:
                await self.execute("feedback", notification=notification, state=state)
        finally:
            self._feedback_running.discard(notification)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def claim(self, notification: str, batch: int) -> dict[str, Any]:
        """What a delivery job sends: the batch's devices still pending, unless its TTL
        ran out (those are reported ``expired`` and not sent)."""
        found = self.notifications.get(notification)
        if found is None or batch >= len(found.batches):
            return {"devices": [], "message": None}
        pending = [found.deliveries[d] for d in found.batches[batch] if d in found.deliveries]
        pending = [d for d in pending if d.state == "pending"]
        if pending and self.clock.time() >= found.expires_at:
            reports = [Report(d.device.id, "expired", "ttl", 0) for d in pending]
            now = self.clock.time()
            await self.execute("report", notification=notification, reports=reports, at=now)
            return {"devices": [], "message": None}
        message = found.message()
        message["sent_at"] = self.clock.time()
        config = self.config.model_dump(mode="json")
        return {"devices": [d.device for d in pending], "message": message, "config": config}

    async def report(self, notification: str, reports: list[Report]) -> int:
        now = self.clock.time()
        found = self.notifications.get(notification)
        if found is not None:
            for report in reports:
                delivery = found.deliveries.get(report.device)
                if delivery is not None and delivery.state == "pending" and report.latency_ms:
                    self._sample(delivery.device, report.latency_ms)
        dead = await self.execute("report", notification=notification, reports=reports, at=now)
        self.start_feedbacks()
        if found is not None and self.dispatch is not None:
            for device_id in dead:
                device = found.deliveries[device_id].device
                self._spawn(self._prune(device.user, device_id))
        return len(dead)

    async def _prune(self, user: str, device: str) -> None:
        assert self.dispatch is not None
        try:
            await self.dispatch.prune(user, device)
        except Exception as error:  # it stays dead: the next send to it prunes it again
            log.warning("dead device %s not pruned: %r", device, error)

    def _sample(self, device: Device, latency_ms: float) -> None:
        for key in ("overall", f"provider:{device.platform}", f"app:{device.app}"):
            samples = self.samples.get(key)
            if samples is None:
                samples = self.samples[key] = deque(maxlen=SAMPLES)
            samples.append(latency_ms)

    async def notification(self, sender: str, notification: str) -> dict[str, Any]:
        found = self.notifications.get(notification)
        if found is None or found.sender != sender:
            raise NotificationNotFound(notification=notification)
        return await self.after_commit(found.view())

    async def wait(self, sender: str, notification: str, timeout_s: float) -> dict[str, Any]:
        """The notification once every device has an outcome, or as it is after ``timeout_s``."""
        found = self.notifications.get(notification)
        if found is None or found.sender != sender:
            raise NotificationNotFound(notification=notification)
        if found.finished_at is None:
            event = self._finished.setdefault(notification, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        return await self.after_commit(found.view())

    def _sweep_due(self, now: float) -> bool:
        """Whether a sweep would change anything (a sweep is a journal record)."""
        grace = self.config.request_timeout_s * 2
        deadline_s = self.config.delivery_deadline_s
        if len(self.notifications) > self.config.max_notifications_kept:
            return True
        for notification in self.notifications.values():
            if notification.finished_at is None:
                if now > min(notification.created_at + deadline_s, notification.expires_at + grace):
                    return True
            elif notification.finished_at < now - self.config.results_ttl_s:
                return True
        return any(
            inbox.entries and inbox.entries[0].expires_at <= now for inbox in self.inboxes.values()
        )

    async def sweep(self) -> int:
        now = self.clock.time()
        reported = 0
        if self._sweep_due(now):
            reported = int(await self.execute("sweep", now=now))
        self.redispatch()
        return reported

    async def inbox_put(self, user: str, device: str, messages: list[dict[str, Any]]) -> int:
        """Store in-app notifications for ``device`` (and publish them live). Answers how
        many were stored (0: the device is gone)."""
        now = self.clock.time()
        entries = []
        for message in messages:
            size = len(orjson.dumps(message))
            expires = float(message.get("created_at", now)) + float(message.get("ttl_s", 0))
            entries.append(InboxEntry(0, str(message.get("id", "")), message, expires, size))
        stored: list[InboxEntry] = await self.execute(
            "inbox_put", user=user, device=device, entries=entries
        )
        if stored and self.dispatch is not None:
            payload = [{"seq": e.seq, "device": device, **e.message} for e in stored]
            try:
                await self.dispatch.publish(user, device, payload)
            except Exception as error:  # it is in the inbox: the device gets it on connect
                log.warning("in-app notification not published live: %r", error)
        return len(stored)

    async def inbox_deliver(
        self, targets: list[tuple[str, str]], message: dict[str, Any]
    ) -> list[str]:
        """``inbox_put`` of one message for many devices, one commit for all: the in-app
        provider's batch. Answers the devices it was stored for (the others are gone)."""
        now = self.clock.time()
        size = len(orjson.dumps(message))
        expires = float(message.get("created_at", now)) + float(message.get("ttl_s", 0))
        stored: list[tuple[str, str, InboxEntry]] = []
        last: asyncio.Future[int] | None = None
        for user, device in targets:
            entry = InboxEntry(0, str(message.get("id", "")), message, expires, size)
            kept, last = self.record("inbox_put", user=user, device=device, entries=[entry])
            stored.extend((user, device, e) for e in kept)
        if last is not None:
            await last
        if self.dispatch is not None and stored:
            published = await asyncio.gather(
                *(
                    self.dispatch.publish(
                        user, device, [{"seq": entry.seq, "device": device, **entry.message}]
                    )
                    for user, device, entry in stored
                ),
                return_exceptions=True,
            )
            failed = [p for p in published if isinstance(p, BaseException)]
            if failed:  # they are in the inboxes: the devices get them on connect
                log.warning("in-app: %d not published live: %r", len(failed), failed[0])
        return [device for _, device, _ in stored]

    async def inbox(self, user: str, device: str) -> dict[str, Any]:
        """What ``device``'s inbox holds, in order (not yet acknowledged, within TTL)."""
        if device not in self.devices.get(user, {}):
            raise DeviceNotFound(device=device)
        now = self.clock.time()
        self.record("seen", user=user, device=device, at=now)
        inbox = self.inboxes.get(device) or Inbox()
        entries = [{"seq": e.seq, **e.message} for e in inbox.entries if e.expires_at > now]
        return await self.after_commit({"device": device, "messages": entries})

    async def inbox_ack(self, user: str, device: str, seq: int) -> int:
        if device not in self.devices.get(user, {}):
            raise DeviceNotFound(device=device)
        return int(await self.execute("inbox_ack", user=user, device=device, seq=seq))

    async def stats_of(self) -> dict[str, Any]:
        return {
            "sent": self.stats.sent,
            "deliveries": self.stats.deliveries,
            "delivered": self.stats.delivered,
            "failed": dict(self.stats.failed),
            "dead_pruned": self.stats.dead_pruned,
            "pending": sum(n.pending() for n in self.notifications.values()),
            "devices": sum(len(d) for d in self.devices.values()),
            "samples": {key: list(values) for key, values in self.samples.items()},
        }


def _collapse(notification: Notification) -> str:
    return f"{notification.sender}\0{notification.collapse_key}"


def _accepted(notification: Notification) -> dict[str, Any]:
    """What its sender is answered: the notification, and the feedback's secret."""
    answer = notification.view()
    if notification.feedback_url:
        answer["feedback_secret"] = notification.feedback_secret
    return answer


def feedback_payload(notification: Notification) -> dict[str, Any]:
    """The body of a feedback POST: every device's final result."""
    view = notification.view()
    return {
        "type": "feedback",
        "idempotency_id": f"feedback:{notification.id}",
        "notification": notification.id,
        "target": view["target"],
        "created_at": view["created_at"],
        "finished_at": view["finished_at"],
        "counts": view["counts"],
        "results": view["results"],
        "sent_at": time.time(),
    }


def _feedback_error(error: Exception) -> Outcome:
    import httpx

    from actors.push.errors import BadDevice

    if isinstance(error, httpx.TimeoutException):
        return Outcome("retry", "timeout")
    if isinstance(error, httpx.TransportError):
        return Outcome("retry", "network")
    if isinstance(error, BadDevice):
        return Outcome("failed", "bad_url")
    return Outcome("failed", f"error:{type(error).__name__}")


#: The queue delivery jobs go through, and its owner (no user id has a ':').
QUEUE_NAME = "push-deliveries"
QUEUE_OWNER = "service:push"
HANDLER = "actors.push.jobs:deliver"


class RayDispatch:
    """A shard's way out: the task queue, pub/sub and the other push shards."""

    def __init__(self, settings: Settings, name: str, config: PushSettings) -> None:
        from actors.pubsub.client import PubSubClient
        from actors.queue.client import QueueClient

        self.settings, self.name, self.config = settings, name, config
        self.queue = QueueClient(settings)
        self.pubsub = PubSubClient(settings)
        self.peers: Shards | None = None
        self._http: Any = None  #: httpx client of feedback webhooks, made on first use
        self._queue_ready = False
        self._queue_timeout_s = min(
            self.queue.config.max_job_timeout_s,
            (config.request_timeout_s * 2 + config.retry_max_s) * config.max_attempts,
        )

    async def enqueue(self, notification: Notification, batch: int) -> None:
        if not self._queue_ready:
            await self.queue.create(QUEUE_NAME, owner=QUEUE_OWNER)
            self._queue_ready = True
        await self.queue.enqueue(
            QUEUE_NAME,
            HANDLER,
            {
                "shard": self.name,
                "namespace": self.settings.namespace,
                "notification": notification.id,
                "batch": batch,
            },
            owner=QUEUE_OWNER,
            priority=9 if notification.priority == "high" else 5,
            idempotency_key=f"{self.name}:{notification.id}:{batch}",
            timeout_s=self._queue_timeout_s,
        )

    async def publish(self, user: str, device: str, entries: list[dict[str, Any]]) -> None:
        topic = f"user.{user}.{self.config.in_app_topic}"
        for entry in entries:
            await self.pubsub.publish(
                topic, orjson.dumps(entry), key=f"{device}:{entry['seq']}:{entry.get('id', '')}"
            )

    async def feedback(self, url: str, secret: str, body: bytes) -> Outcome:
        import httpx

        from actors.push.model import check_url
        from actors.push.providers import post_signed

        check_url(url, self.config, "the feedback URL")  # its address may have changed
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.config.request_timeout_s, follow_redirects=False
            )
        return await post_signed(self._http, url, secret, body)

    async def prune(self, user: str, device: str) -> None:
        if self.peers is None:
            self.peers = Shards(PushShardActor, SHARD_PREFIX, self.config.shards, self.settings)
        await self.peers.owner(user).call("prune", user, device)


class _PushShardProcess(PushShard):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        config = PushSettings.of(settings)
        super().__init__(config, shards=config.shards, dispatch=RayDispatch(settings, name, config))
        self.restarts = await recover(self, settings, name)
        self.redispatch()  # what was accepted but not handed to the queue before a crash
        self._sweeper = every(self.clock, SWEEP_S, self.sweep)

    async def info(self) -> dict[str, Any]:
        import ray

        return {"restarts": self.restarts, "node_id": ray.get_runtime_context().get_node_id()}


#: Durable; a call in flight at a crash is retried on the restarted actor (sends
#: and registrations carry idempotency keys; reports and acks are idempotent).
PushShardActor = remote_actor(
    _PushShardProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD",
    max_concurrency=20_000,
)  # fmt: skip


__all__ = [
    "QUEUE_NAME",
    "QUEUE_OWNER",
    "SHARD_PREFIX",
    "PushShard",
    "PushShardActor",
    "Report",
    "feedback_payload",
]
