"""Devices, notifications and their deliveries, and the rules every input meets.

A device is one place a user receives notifications: a platform (``webpush``,
``fcm``, ``apns``, ``webhook``, ``inapp``), its address there (a token, a Web
Push subscription, a webhook URL, or an in-app installation id), the app it
belongs to, a locale, the topics it follows and when it was last seen. A
notification is what a sender asks to deliver; it is accepted with one
``Delivery`` per device it reaches, each of which ends ``delivered``,
``failed``, ``dead`` (the token is gone: pruned), ``expired`` (its TTL ran out
before it was sent), ``collapsed`` (a newer one with the same collapse key
replaced it) or ``lost`` (no report within the delivery deadline).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from actors.push.errors import BadDevice
from actors.push.settings import PushSettings
from actors.runtime.errors import InvalidInput, TooLarge

PLATFORMS = ("webpush", "fcm", "apns", "webhook", "inapp")
PRIORITIES = ("high", "normal")
#: States a delivery ends in; ``pending`` is the only one it leaves.
FINAL = ("delivered", "failed", "dead", "expired", "collapsed", "lost")
MAX_ID_CHARS = 64
MAX_APP_CHARS = 64
MAX_TOPIC_CHARS = 64
MAX_TITLE_CHARS = 256
MAX_BODY_CHARS = 2_048
MAX_KEY_CHARS = 128
MAX_LOCALE_CHARS = 35
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
LOCALE = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,4}")
TOKEN = re.compile(r"[A-Za-z0-9_.:=+/-]{1,4096}")
B64URL = re.compile(r"[A-Za-z0-9_=-]{16,256}")


@dataclass
class Device:
    id: str
    user: str
    platform: str
    token: str  #: FCM/APNs token, Web Push endpoint, webhook URL, in-app installation id
    keys: dict[str, str]  #: Web Push p256dh/auth; webhook: the signing secret
    app: str
    locale: str
    topics: list[str]
    created_at: float
    last_seen: float

    def public(self) -> dict[str, Any]:
        """What its owner reads back (never the webhook secret)."""
        return {
            "id": self.id,
            "platform": self.platform,
            "token": self.token,
            "app": self.app,
            "locale": self.locale,
            "topics": list(self.topics),
            "created_at": self.created_at,
            "last_seen": self.last_seen,
        }


@dataclass
class Delivery:
    device: Device
    state: str = "pending"
    reason: str = ""
    attempts: int = 0
    latency_ms: float | None = None


@dataclass
class Notification:
    id: str
    sender: str
    title: str
    body: str
    data: dict[str, Any]
    ttl_s: float
    collapse_key: str
    priority: str
    target: dict[str, str]
    created_at: float
    deliveries: dict[str, Delivery]
    batches: list[list[str]]  #: device ids per delivery job
    enqueued: bool = False
    finished_at: float | None = None
    feedback_url: str = ""  #: where the per-device results are POSTed once final
    feedback_secret: str = ""  #: signs that POST (HMAC-SHA256, as webhooks are signed)
    feedback_state: str = ""  #: "" (none yet), "sent" or "failed:<reason>"

    @property
    def feedback_due(self) -> bool:
        """Every device has its result and the feedback webhook has not had them yet."""
        return bool(self.feedback_url) and self.finished_at is not None and not self.feedback_state

    @property
    def expires_at(self) -> float:
        return self.created_at + self.ttl_s

    def pending(self) -> int:
        return sum(1 for d in self.deliveries.values() if d.state == "pending")

    def message(self) -> dict[str, Any]:
        """What providers carry to the device."""
        return {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "data": self.data,
            "ttl_s": self.ttl_s,
            "collapse_key": self.collapse_key,
            "priority": self.priority,
            "created_at": self.created_at,
        }

    def feedback_view(self) -> str | None:
        """The feedback webhook's state: None (none asked), ``waiting`` (for results),
        ``due`` (being POSTed), ``sent``, or ``failed:<reason>``."""
        if not self.feedback_url:
            return None
        if self.feedback_state:
            return self.feedback_state
        return "due" if self.finished_at is not None else "waiting"

    def view(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for delivery in self.deliveries.values():
            counts[delivery.state] = counts.get(delivery.state, 0) + 1
        return {
            "id": self.id,
            "target": dict(self.target),
            "priority": self.priority,
            "collapse_key": self.collapse_key or None,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "finished": self.finished_at is not None,
            "finished_at": self.finished_at,
            "feedback": self.feedback_view(),
            "counts": counts,
            "results": [
                {
                    "device": device_id,
                    "user": d.device.user,
                    "platform": d.device.platform,
                    "app": d.device.app,
                    "state": d.state,
                    "reason": d.reason or None,
                    "attempts": d.attempts,
                    "latency_ms": d.latency_ms,
                }
                for device_id, d in self.deliveries.items()
            ],
        }


@dataclass
class InboxEntry:
    seq: int
    notification: str
    message: dict[str, Any]
    expires_at: float
    size: int


@dataclass
class Inbox:
    entries: list[InboxEntry] = field(default_factory=list)
    next_seq: int = 1
    bytes: int = 0


# --- rules ----------------------------------------------------------------------


def device_id(user: str, platform: str, token: str) -> str:
    """One device per user, platform and token: registering it again updates it."""
    digest = hashlib.blake2b(f"{user}\0{platform}\0{token}".encode(), digest_size=12)
    return digest.hexdigest()


def check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise InvalidInput(
            f"{what} is 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
        )
    return value


def check_topics(topics: object, config: PushSettings) -> list[str]:
    if not isinstance(topics, list):
        raise InvalidInput("topics is a list of names")
    if len(topics) > config.max_topics_per_device:
        raise InvalidInput(
            f"a device follows at most {config.max_topics_per_device} topics",
            limit=config.max_topics_per_device,
        )
    return sorted({check_name(topic, "a topic") for topic in topics})


def is_public_host(host: str) -> bool:
    """Whether every address ``host`` resolves to is a public one."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            return False
    return bool(infos)


def check_url(url: object, config: PushSettings, what: str, *, resolve: bool = True) -> str:
    """An http(s) URL; unless private addresses are allowed, one whose host is public,
    so that a device can never make the service call inside its own network."""
    if not isinstance(url, str) or not 1 <= len(url) <= config.max_token_bytes:
        raise BadDevice(f"{what} is a URL of at most {config.max_token_bytes} bytes")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.username:
        raise BadDevice(f"{what} is an http(s) URL with a host and no credentials")
    if not config.allow_private_addresses:
        if parts.scheme != "https":
            raise BadDevice(f"{what} must be https")
        if resolve and not is_public_host(parts.hostname):
            raise BadDevice(f"{what} must be a public address")
    return url


def check_device(
    *,
    platform: object,
    token: object,
    keys: object,
    app: object,
    locale: object,
    topics: object,
    config: PushSettings,
) -> tuple[str, str, dict[str, str], str, str, list[str]]:
    """The device's fields, checked (``BadDevice`` or ``InvalidInput`` otherwise)."""
    if platform not in PLATFORMS:
        raise InvalidInput(f"platform is one of {', '.join(PLATFORMS)}")
    assert isinstance(platform, str)
    app = check_name(app, "app")
    if not isinstance(locale, str) or not LOCALE.fullmatch(locale):
        raise InvalidInput("locale is a BCP 47 tag such as en or pt-BR")
    checked_topics = check_topics(topics, config)
    given_keys: dict[str, str] = {}
    if platform in ("webpush", "webhook"):
        token = check_url(token, config, "the endpoint")
        assert isinstance(token, str)
    elif not isinstance(token, str) or not TOKEN.fullmatch(token):
        raise BadDevice(f"a {platform} token is 1-4096 letters, digits and -_.:=+/")
    if len(token.encode()) > config.max_token_bytes:
        raise BadDevice(f"a token is at most {config.max_token_bytes} bytes")
    if platform == "webpush":
        if not isinstance(keys, dict) or set(keys) != {"p256dh", "auth"}:
            raise BadDevice("a Web Push subscription has keys p256dh and auth")
        for name in ("p256dh", "auth"):
            value = keys[name]
            if not isinstance(value, str) or not B64URL.fullmatch(value):
                raise BadDevice(f"keys.{name} is base64url")
            given_keys[name] = value
    elif keys not in (None, {}):
        raise BadDevice("only a Web Push subscription has keys")
    return platform, token, given_keys, app, locale, checked_topics


def check_notification(
    *,
    title: object,
    body: object,
    data: object,
    ttl_s: object,
    collapse_key: object,
    priority: object,
    config: PushSettings,
) -> tuple[str, str, dict[str, Any], float, str, str]:
    if not isinstance(title, str) or len(title) > MAX_TITLE_CHARS:
        raise InvalidInput(f"title is a string of at most {MAX_TITLE_CHARS} characters")
    if not isinstance(body, str) or len(body) > MAX_BODY_CHARS:
        raise InvalidInput(f"body is a string of at most {MAX_BODY_CHARS} characters")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput("data is an object")
    try:
        size = len(orjson.dumps({"title": title, "body": body, "data": data}))
    except TypeError:
        raise InvalidInput("data must be JSON") from None
    if size > config.max_payload_bytes:
        raise TooLarge(
            f"a notification is at most {config.max_payload_bytes} bytes as JSON",
            limit=config.max_payload_bytes,
            size=size,
        )
    checked: dict[str, Any] = orjson.loads(orjson.dumps(data))  # as a replay sees it
    if ttl_s is None:
        ttl_s = config.default_ttl_s
    if (
        isinstance(ttl_s, bool)
        or not isinstance(ttl_s, int | float)
        or not 0 < ttl_s <= config.max_ttl_s
    ):
        raise InvalidInput(f"ttl_s is more than 0 and at most {config.max_ttl_s}")
    if collapse_key is None:
        collapse_key = ""
    elif not isinstance(collapse_key, str) or not NAME.fullmatch(collapse_key):
        raise InvalidInput("collapse_key is 1-64 letters, digits, '_', '.', ':' or '-'")
    if priority is None:
        priority = "normal"
    if priority not in PRIORITIES:
        raise InvalidInput("priority is high or normal")
    assert isinstance(priority, str) and isinstance(collapse_key, str)
    return title, body, checked, float(ttl_s), collapse_key, priority


__all__ = [
    "FINAL",
    "PLATFORMS",
    "Delivery",
    "Device",
    "Inbox",
    "InboxEntry",
    "Notification",
    "check_device",
    "check_name",
    "check_notification",
    "check_url",
    "device_id",
]
