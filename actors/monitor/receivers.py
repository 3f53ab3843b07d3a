"""Where notifications go: signed webhooks, a pub/sub topic, push, a chat room.

A webhook gets Alertmanager's JSON body (version 4) and a signature header,
``X-Realm-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``,
so a receiver checks who sent it and refuses old replays. Only loopback URLs
are allowed unless ``allow_remote_targets`` is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from actors.monitor.alerting import Receiver
from actors.monitor.errors import BadTarget
from actors.monitor.settings import MonitorSettings
from actors.runtime.settings import Settings

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Realm-Signature"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def sign(secret: str, body: bytes, at: int) -> str:
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def verify(
    secret: str, body: bytes, header: str, *, now: float, tolerance_s: float = 300.0
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance_s`` of ``now``."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        at = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - at) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, at), header)


def check_url(url: str, *, allow_remote: bool) -> str:
    """``url`` if it is an http(s) URL this deployment may call; ``BadTarget`` otherwise."""
    if not isinstance(url, str) or len(url) > 2_048:
        raise BadTarget("a URL is a string of at most 2048 characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadTarget("a URL is http:// or https:// with a host")
    if not allow_remote and parts.hostname not in LOOPBACK:
        raise BadTarget("only loopback URLs are allowed here (REALM_MONITOR_ALLOW_REMOTE_TARGETS)")
    return url


def text_of(payload: dict[str, Any]) -> tuple[str, str]:
    """A title and a body for people (push, chat)."""
    if payload.get("kind") == "silence":
        silence = payload["silence"]
        return (
            f"Silence {payload['status']}",
            f"{', '.join(silence['matchers'])} ({silence['comment']})",
        )
    alerts = payload["alerts"]
    names = sorted({a["labels"].get("alertname", "") for a in alerts})
    title = f"[{payload['status'].upper()}] {', '.join(names)[:120]}"
    lines = [
        f"{a['status']}: "
        + ", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()))[:200]
        + (f" — {a['annotations']['summary']}" if "summary" in a["annotations"] else "")
        for a in alerts[:20]
    ]
    return title, "\n".join(lines)[:3_500]


class Notifier:
    """Sends one notification to one receiver (raises when it could not)."""

    def __init__(self, settings: Settings, config: MonitorSettings) -> None:
        self.settings, self.config = settings, config
        self._http: httpx.AsyncClient | None = None
        self._pubsub: Any = None
        self._push: Any = None
        self._chat: Any = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.config.webhook_timeout_s, trust_env=False)
        return self._http

    async def start(self) -> None:
        """Make the HTTP client now, as the alert manager starts, not on its first
        notification. Making it imports httpx's transport (httpcore, h2) and loads
        the CA bundle into an SSL context, and its first request imports anyio's
        asyncio backend: together most of a second of the event loop in a fresh
        process, which the first notification after every start would otherwise
        wait for (and every other call to the manager with it)."""
        import anyio.lowlevel

        self.http  # noqa: B018 (made on first use)
        await anyio.lowlevel.checkpoint()  # imports anyio's backend, as a first request would

    async def __call__(self, owner: str, receiver: Receiver, payload: dict[str, Any]) -> None:
        if receiver.kind == "webhook":
            await self.webhook(receiver, payload)
        elif receiver.kind == "pubsub":
            from actors.pubsub.client import PubSubClient

            self._pubsub = self._pubsub or PubSubClient(self.settings)
            await self._pubsub.publish(f"monitor.{owner}.{receiver.target}", orjson.dumps(payload))
        elif receiver.kind == "push":
            from actors.push.client import PushClient

            self._push = self._push or PushClient(self.settings)
            title, body = text_of(payload)
            await self._push.send(
                owner,
                to={"user": owner},
                title=title[:200],
                body=body[:1_000],
                data={"groupKey": str(payload.get("groupKey", ""))},
            )
        elif receiver.kind == "chat":
            from actors.chat.client import ChatClient

            self._chat = self._chat or ChatClient(self.settings)
            title, body = text_of(payload)
            await self._chat.send(receiver.target, owner, f"{title}\n{body}")

    async def webhook(self, receiver: Receiver, payload: dict[str, Any]) -> None:
        check_url(receiver.target, allow_remote=self.config.allow_remote_targets)
        body = orjson.dumps(payload)
        for attempt in range(self.config.webhook_attempts):
            headers = {"Content-Type": "application/json", "User-Agent": "Realm-Monitor"}
            if receiver.secret:
                headers[SIGNATURE_HEADER] = sign(receiver.secret, body, int(time.time()))
            try:
                answer = await self.http.post(receiver.target, content=body, headers=headers)
                if answer.status_code < 300:
                    return
                if answer.status_code < 500 and answer.status_code != 429:
                    raise RuntimeError(f"webhook answered {answer.status_code}")
            except httpx.HTTPError as error:
                log.info("webhook %s attempt %d failed: %r", receiver.name, attempt + 1, error)
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        raise RuntimeError(
            f"webhook {receiver.name} failed after {self.config.webhook_attempts} attempts"
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()


__all__ = ["SIGNATURE_HEADER", "Notifier", "check_url", "sign", "text_of", "verify"]
