"""The push service's Python API, for its HTTP front and for other services.

    push = PushClient(settings)
    await push.start()
    device = await push.register(user_id, platform="webhook", token="https://...", app="shop")
    sent = await push.send(user_id, to={"user": user_id}, title="Hi", body="...", wait=True)

Devices belong to their user (``owner``): every call names it, and another
user's device is a ``DeviceNotFound``. A send names its ``sender`` (who owns
the notification and alone reads its results) and a target: ``{"device": id}``
(one of the sender's), ``{"user": id}`` (every device of a user: another user
only when ``privileged``), ``{"topic": name, "app"?: app}`` (devices following
it: the sender's own unless ``privileged``) or ``{"users": [...]}`` (a segment,
``privileged`` only). ``privileged`` is the HTTP front's word for an admin or an
API key holding ``push:send``; other services (chat mentions) call with the
rights they check themselves.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from typing import Any

from actors.push.errors import DeviceNotFound, NotificationNotFound, PushQuotaExceeded
from actors.push.model import (
    Delivery,
    Device,
    Notification,
    check_device,
    check_name,
    check_notification,
    check_url,
    device_id,
)
from actors.push.settings import PushSettings
from actors.push.shard import SHARD_PREFIX, PushShardActor
from actors.runtime.errors import Forbidden, InvalidInput, TooLarge
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards

MAX_WAIT_S = 60.0
MAX_USER_CHARS = 64


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _check_user(user: object, what: str = "a user id") -> str:
    if not isinstance(user, str) or not 1 <= len(user) <= MAX_USER_CHARS:
        raise InvalidInput(f"{what} is a string of 1 to {MAX_USER_CHARS} characters")
    return user


class PushClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = PushSettings.of(settings)
        self.shards = Shards(PushShardActor, SHARD_PREFIX, self.config.shards, settings)

    async def start(self) -> None:
        await self.shards.start()

    async def close(self) -> None:
        return None

    # --- devices ----------------------------------------------------------------

    async def register(
        self,
        owner: str,
        *,
        platform: str,
        token: str,
        app: str,
        keys: dict[str, str] | None = None,
        locale: str = "en",
        topics: list[str] | None = None,
    ) -> dict[str, Any]:
        """Register (or update) a device; a webhook's answer carries its signing
        ``secret`` the first time only."""
        _check_user(owner)
        platform, token, keys, app, locale, checked = check_device(
            platform=platform,
            token=token,
            keys=keys,
            app=app,
            locale=locale,
            topics=list(topics or []),
            config=self.config,
        )
        if platform == "webhook":
            keys = {"secret": "whsec_" + secrets.token_urlsafe(32)}
        now = time.time()
        device = Device(
            device_id(owner, platform, token), owner, platform, token, keys, app, locale,
            checked, now, now,
        )  # fmt: skip
        answer: dict[str, Any] = await self.shards.owner(owner).call(
            "register", device, key=uuid.uuid4().hex
        )
        return answer

    async def unregister(self, owner: str, device: str) -> bool:
        _check_user(owner)
        return bool(await self.shards.owner(owner).call("unregister", owner, device))

    async def devices(self, owner: str) -> list[dict[str, Any]]:
        _check_user(owner)
        found: list[dict[str, Any]] = await self.shards.owner(owner).call("list_devices", owner)
        return found

    async def device(self, owner: str, device: str) -> dict[str, Any]:
        _check_user(owner)
        found: Device = await self.shards.owner(owner).call("get_device", owner, device)
        return found.public()

    # --- sending ----------------------------------------------------------------

    async def _targets(
        self, sender: str, to: dict[str, Any], privileged: bool
    ) -> tuple[list[Device], dict[str, str]]:
        if not isinstance(to, dict) or len(set(to) - {"app"}) != 1:
            raise InvalidInput("to is one of {device}, {user}, {topic, app?}, {users}")
        app = to.get("app")
        if app is not None:
            check_name(app, "app")
        if "device" in to:
            device = to["device"]
            if not isinstance(device, str) or len(device) > 64:
                raise DeviceNotFound(device=str(device)[:64])
            found: Device = await self.shards.owner(sender).call("get_device", sender, device)
            return [found], {"device": device}
        if "user" in to:
            user = _check_user(to["user"])
            if user != sender and not privileged:
                raise Forbidden("sending to another user needs the admin or a push:send key")
            devices = await self.shards.owner(user).call("devices_of", [user], app)
            return devices, {"user": user}
        if "topic" in to:
            topic = check_name(to["topic"], "a topic")
            only = None if privileged else sender
            answers = await self.shards.call_all("topic_devices", topic, app, only)
            return [d for answer in answers for d in answer], {"topic": topic}
        if "users" in to:
            users = to["users"]
            if not privileged:
                raise Forbidden("a segment send needs the admin or a push:send key")
            if not isinstance(users, list) or not 1 <= len(users) <= self.config.max_segment_users:
                raise InvalidInput(
                    f"users is a list of 1 to {self.config.max_segment_users} user ids",
                    limit=self.config.max_segment_users,
                )
            unique = sorted({_check_user(u) for u in users})
            groups = self.shards.split(unique)
            answers = await asyncio.gather(
                *(
                    self.shards[index].call("devices_of", [unique[i] for i in positions], app)
                    for index, positions in groups.items()
                )
            )
            return [d for answer in answers for d in answer], {"segment": f"{len(unique)} users"}
        raise InvalidInput("to is one of {device}, {user}, {topic, app?}, {users}")

    async def send(
        self,
        sender: str,
        *,
        to: dict[str, Any],
        title: str = "",
        body: str = "",
        data: dict[str, Any] | None = None,
        ttl_s: float | None = None,
        collapse_key: str | None = None,
        priority: str | None = None,
        idempotency_key: str | None = None,
        wait: bool = False,
        wait_timeout_s: float = 30.0,
        privileged: bool = False,
        feedback_url: str | None = None,
    ) -> dict[str, Any]:
        """Accept a notification and hand it to the delivery jobs. Answers it with its
        per-device results: as they are when accepted, or (``wait``) once every device
        has one or ``wait_timeout_s`` passed (``finished`` says which).

        ``feedback_url`` (the rules of a webhook device's URL) is POSTed every device's
        result once all are final, signed with the ``feedback_secret`` of the answer."""
        _check_user(sender, "the sender")
        title, body, data, ttl, collapse, prio = check_notification(
            title=title, body=body, data=data, ttl_s=ttl_s, collapse_key=collapse_key,
            priority=priority, config=self.config,
        )  # fmt: skip
        if idempotency_key is not None:
            check_name(idempotency_key, "an idempotency key")
        if not 0 <= wait_timeout_s <= MAX_WAIT_S:
            raise InvalidInput(f"wait_timeout_s is 0 to {MAX_WAIT_S}")
        if feedback_url is not None:
            check_url(feedback_url, self.config, "the feedback URL")
        devices, target = await self._targets(sender, to, privileged)
        if len(devices) > self.config.max_deliveries_per_send:
            raise TooLarge(
                f"a send reaches at most {self.config.max_deliveries_per_send} devices",
                limit=self.config.max_deliveries_per_send,
                devices=len(devices),
            )
        by_platform: dict[str, list[str]] = {}
        deliveries: dict[str, Delivery] = {}
        for device in devices:
            if device.id not in deliveries:
                deliveries[device.id] = Delivery(device)
                by_platform.setdefault(device.platform, []).append(device.id)
        size = self.config.batch_size
        batches = [
            ids[i : i + size]
            for _, ids in sorted(by_platform.items())
            for i in range(0, len(ids), size)
        ]
        notification = Notification(
            uuid.uuid4().hex, sender, title, body, data, ttl, collapse, prio, target,
            time.time(), deliveries, batches,
            feedback_url=feedback_url or "",
            feedback_secret="whsec_" + secrets.token_urlsafe(32) if feedback_url else "",
        )  # fmt: skip
        key = f"send:{sender}:{idempotency_key}" if idempotency_key else uuid.uuid4().hex
        shard = self.shards.owner(sender)
        answer: dict[str, Any] = await shard.call("send", notification, key=key)
        if wait and not answer.get("finished"):
            done: dict[str, Any] = await shard.call("wait", sender, answer["id"], wait_timeout_s)
            if "feedback_secret" in answer:
                done["feedback_secret"] = answer["feedback_secret"]
            return {**done, "duplicate": answer.get("duplicate", False)}
        return answer

    async def notification(self, sender: str, notification: str) -> dict[str, Any]:
        _check_user(sender)
        if not isinstance(notification, str) or len(notification) > 64:
            raise NotificationNotFound(notification=str(notification)[:64])
        found: dict[str, Any] = await self.shards.owner(sender).call(
            "notification", sender, notification
        )
        return found

    async def wait(self, sender: str, notification: str, timeout_s: float = 30.0) -> dict[str, Any]:
        if not 0 <= timeout_s <= MAX_WAIT_S:
            raise InvalidInput(f"timeout_s is 0 to {MAX_WAIT_S}")
        _check_user(sender)
        found: dict[str, Any] = await self.shards.owner(sender).call(
            "wait", sender, notification, timeout_s
        )
        return found

    # --- in-app inbox -------------------------------------------------------------

    async def inbox(self, owner: str, device: str) -> dict[str, Any]:
        """What an in-app device has not acknowledged yet, in order."""
        _check_user(owner)
        found: dict[str, Any] = await self.shards.owner(owner).call("inbox", owner, device)
        return found

    async def ack(self, owner: str, device: str, seq: int) -> int:
        """Acknowledge everything up to ``seq``: it is never replayed again."""
        _check_user(owner)
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**62:
            raise InvalidInput("seq is a non-negative integer")
        return int(await self.shards.owner(owner).call("inbox_ack", owner, device, seq))

    # --- stats ----------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        """Sent, delivered, failed by reason, dead tokens pruned, and latency (accept to
        deliver, ms) by provider, by app and overall, over every shard."""
        answers = await self.shards.call_all("stats_of")
        total: dict[str, Any] = {
            "sent": 0, "deliveries": 0, "delivered": 0, "failed": {}, "dead_pruned": 0,
            "pending": 0, "devices": 0,
        }  # fmt: skip
        samples: dict[str, list[float]] = {}
        for answer in answers:
            for name in ("sent", "deliveries", "delivered", "dead_pruned", "pending", "devices"):
                total[name] += answer[name]
            for reason, count in answer["failed"].items():
                total["failed"][reason] = total["failed"].get(reason, 0) + count
            for key, values in answer["samples"].items():
                samples.setdefault(key, []).extend(values)
        latency: dict[str, dict[str, Any]] = {}
        for key, values in sorted(samples.items()):
            latency[key] = {
                "count": len(values),
                "p50_ms": percentile(values, 0.5),
                "p99_ms": percentile(values, 0.99),
            }
        total["latency"] = latency
        return total

    def __repr__(self) -> str:
        return f"<PushClient shards={len(self.shards)}>"


__all__ = [
    "DeviceNotFound",
    "NotificationNotFound",
    "PushClient",
    "PushQuotaExceeded",
    "PushSettings",
]
