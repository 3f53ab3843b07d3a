"""Providers: one small interface, one class per platform, each speaking its wire protocol.

``Provider.send(device, message)`` makes one attempt and answers an ``Outcome``:
``delivered``; ``dead`` (the token is gone: never retried, pruned);
``retry`` (429, 5xx, a timeout: ``retry_after_s`` if the provider said);
or ``failed`` (refused for good). ``send_many`` is the batch form, which
providers that can batch override (in-app: one shard call per shard).

- ``WebhookProvider``: an HTTP POST of the JSON message, signed as Stripe
  signs its webhooks: header ``Realm-Signature: t=<unix time>,v1=<hex>``,
  the HMAC-SHA256 of ``<t>.<body>`` with the device's secret.
- ``WebPushProvider``: RFC 8030 push message, payload encrypted per RFC 8291
  (``aes128gcm``, through ``pywebpush``/``http_ece``), VAPID (RFC 8292) through
  ``py_vapid``; ``TTL``, ``Urgency`` and ``Topic`` headers.
- ``FcmProvider``: FCM HTTP v1 ``projects/<id>/messages:send`` with an OAuth 2
  access token obtained from the service account (JWT bearer grant, RS256).
- ``ApnsProvider``: APNs over HTTP/2 (``/3/device/<token>``) with a provider
  token (ES256 JWT, renewed every 50 minutes).
- ``InAppProvider``: the device owner's push shard stores the message in the
  device's inbox and publishes it on pub/sub ``user.<id>.<in_app_topic>``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from actors.push.model import Device, check_url
from actors.push.settings import PushSettings

SIGNATURE_HEADER = "Realm-Signature"
#: Longest a provider token (APNs JWT, FCM access token) is reused.
TOKEN_REUSE_S = 50 * 60.0


@dataclass
class Outcome:
    state: str  #: delivered, dead, retry, failed
    reason: str = ""
    retry_after_s: float | None = None


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), if the answer has one."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def by_status(response: httpx.Response, reason: str = "") -> Outcome:
    """The outcome HTTP statuses mean for most providers."""
    status = response.status_code
    reason = reason or f"http_{status}"
    if 200 <= status < 300:
        return Outcome("delivered")
    if status in (404, 410):
        return Outcome("dead", reason)
    if status == 429 or status >= 500 or status == 408:
        return Outcome("retry", reason, retry_after(response))
    return Outcome("failed", reason)


class Provider:
    platform = ""

    async def send(self, device: Device, message: dict[str, Any]) -> Outcome:
        raise NotImplementedError

    async def send_many(
        self, devices: list[Device], message: dict[str, Any]
    ) -> list[Outcome] | None:
        """One outcome per device from one batched call, or None if this provider
        sends one by one."""
        return None

    async def close(self) -> None:
        return None


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_webhook(secret: str, header: str, body: bytes, *, tolerance_s: float = 300.0) -> bool:
    """What a receiver does: the signature matches and is recent."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    expected = sign_webhook(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookProvider(Provider):
    platform = "webhook"

    def __init__(self, config: PushSettings, http: httpx.AsyncClient) -> None:
        self.config, self.http = config, http

    async def send(self, device: Device, message: dict[str, Any]) -> Outcome:
        check_url(device.token, self.config, "the webhook")  # its address may have changed
        body = orjson.dumps({"type": "notification", "device": device.id, **message})
        return await post_signed(self.http, device.token, device.keys["secret"], body)


async def post_signed(http: httpx.AsyncClient, url: str, secret: str, body: bytes) -> Outcome:
    """POST ``body`` (JSON) to ``url`` signed with ``secret``: a webhook device's
    notification, and a notification's feedback. The URL is checked by the caller."""
    headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: sign_webhook(secret, int(time.time()), body),
    }
    response = await http.post(url, content=body, headers=headers)
    return by_status(response)


class WebPushProvider(Provider):
    platform = "webpush"

    def __init__(self, config: PushSettings, http: httpx.AsyncClient) -> None:
        self.config, self.http = config, http
        self._vapid: Any = None

    def _signer(self) -> Any:
        if self._vapid is None:
            from py_vapid import Vapid

            key = self.config.vapid_private_key.strip()
            if not key:
                raise ValueError("REALM_PUSH_VAPID_PRIVATE_KEY is not set")
            self._vapid = (
                Vapid.from_pem(key.encode()) if key.startswith("-----") else Vapid.from_string(key)
            )
        return self._vapid

    async def send(self, device: Device, message: dict[str, Any]) -> Outcome:
        from pywebpush import WebPusher

        check_url(device.token, self.config, "the endpoint")
        subscription = {"endpoint": device.token, "keys": dict(device.keys)}
        encoded = WebPusher(subscription).encode(orjson.dumps(message), "aes128gcm")
        parts = urlsplit(device.token)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(time.time()) + 12 * 3600,
            "sub": self.config.vapid_subject,
        }
        headers = {k.lower(): v for k, v in self._signer().sign(claims).items()}
        headers.update(
            {
                "ttl": str(max(0, int(message["created_at"] + message["ttl_s"] - time.time()))),
                "content-encoding": "aes128gcm",
                "content-type": "application/octet-stream",
                "urgency": "high" if message["priority"] == "high" else "normal",
            }
        )
        if message.get("collapse_key"):
            topic = base64.urlsafe_b64encode(
                hashlib.sha256(message["collapse_key"].encode()).digest()[:24]
            ).decode()
            headers["topic"] = topic  # at most 32 base64url characters (RFC 8030 5.4)
        response = await self.http.post(device.token, content=encoded["body"], headers=headers)
        return by_status(response)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_sign(header: dict[str, Any], claims: dict[str, Any], key: Any, alg: str) -> str:
    """A compact JWS (RS256 or ES256) with ``cryptography``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    signing_input = (
        f"{_b64url(json.dumps(header, separators=(',', ':')).encode())}."
        f"{_b64url(json.dumps(claims, separators=(',', ':')).encode())}"
    ).encode()
    if alg == "RS256":
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        raise ValueError(f"unsupported JWT algorithm {alg}")
    return f"{signing_input.decode()}.{_b64url(signature)}"


def _load_private_key(pem: str | bytes) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password=None)


class FcmProvider(Provider):
    platform = "fcm"
    SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

    def __init__(self, config: PushSettings, http: httpx.AsyncClient) -> None:
        self.config, self.http = config, http
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    async def _access_token(self) -> str:
        async with self._lock:
            if self._token is not None and self._token[1] > time.time() + 60:
                return self._token[0]
            path = Path(self.config.fcm_credentials_file)
            account = json.loads(await asyncio.to_thread(path.read_text))
            now = int(time.time())
            assertion = jwt_sign(
                {"alg": "RS256", "typ": "JWT", "kid": account.get("private_key_id", "")},
                {
                    "iss": account["client_email"],
                    "scope": self.SCOPE,
                    "aud": account["token_uri"],
                    "iat": now,
                    "exp": now + 3600,
                },
                _load_private_key(account["private_key"]),
                "RS256",
            )
            response = await self.http.post(
                account["token_uri"],
                data={
                    "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    "assertion": assertion,
                },
            )
            response.raise_for_status()
            answer = response.json()
            expires = time.time() + min(float(answer.get("expires_in", 3600)), TOKEN_REUSE_S)
            self._token = (str(answer["access_token"]), expires)
            return self._token[0]

    async def send(self, device: Device, message: dict[str, Any]) -> Outcome:
        ttl = max(0, int(message["created_at"] + message["ttl_s"] - time.time()))
        android: dict[str, Any] = {
            "ttl": f"{ttl}s",
            "priority": "HIGH" if message["priority"] == "high" else "NORMAL",
        }
        if message.get("collapse_key"):
            android["collapse_key"] = message["collapse_key"]
        body = {
            "message": {
                "token": device.token,
                "notification": {"title": message["title"], "body": message["body"]},
                # FCM data values are strings
                "data": {
                    "id": message["id"],
                    **{str(k): v if isinstance(v, str) else json.dumps(v)
                       for k, v in message["data"].items()},
                },
                "android": android,
            }
        }  # fmt: skip
        url = (
            f"{self.config.fcm_endpoint.rstrip('/')}/v1/projects/"
            f"{self.config.fcm_project_id}/messages:send"
        )
        token = await self._access_token()
        response = await self.http.post(
            url, content=orjson.dumps(body), headers={
                "authorization": f"Bearer {token}", "content-type": "application/json",
            },
        )  # fmt: skip
        if response.status_code == 401:
            self._token = None
            return Outcome("retry", "auth")
        code = _fcm_error_code(response)
        if code in ("UNREGISTERED", "SENDER_ID_MISMATCH") or response.status_code == 404:
            return Outcome("dead", code or "not_found")
        return by_status(response, code.lower() if code else "")


def _fcm_error_code(response: httpx.Response) -> str:
    if response.status_code < 400:
        return ""
    try:
        error = response.json().get("error", {})
    except ValueError:
        return ""
    for detail in error.get("details", []) or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status", ""))


class ApnsProvider(Provider):
    platform = "apns"
    DEAD = ("BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic", "ExpiredToken")

    def __init__(self, config: PushSettings) -> None:
        self.config = config
        plain = config.apns_endpoint.startswith("http://")
        # HTTP/2 only: over TLS by ALPN; over plain http (a stand-in) with prior knowledge
        self.http = httpx.AsyncClient(http2=True, http1=not plain, timeout=config.request_timeout_s)
        self._jwt: tuple[str, float] | None = None

    def _token(self) -> str:
        if self._jwt is None or self._jwt[1] < time.time():
            key = _load_private_key(Path(self.config.apns_key_file).read_bytes())
            token = jwt_sign(
                {"alg": "ES256", "kid": self.config.apns_key_id},
                {"iss": self.config.apns_team_id, "iat": int(time.time())},
                key,
                "ES256",
            )
            self._jwt = (token, time.time() + TOKEN_REUSE_S)
        return self._jwt[0]

    async def send(self, device: Device, message: dict[str, Any]) -> Outcome:
        body = {
            "aps": {"alert": {"title": message["title"], "body": message["body"]}},
            "id": message["id"],
            **{k: v for k, v in message["data"].items() if k not in ("aps", "id")},
        }
        headers = {
            "authorization": f"bearer {self._token()}",
            "apns-topic": self.config.apns_topic,
            "apns-push-type": "alert",
            "apns-priority": "10" if message["priority"] == "high" else "5",
            "apns-expiration": str(int(message["created_at"] + message["ttl_s"])),
            "apns-id": _apns_id(message["id"]),
        }
        if message.get("collapse_key"):
            headers["apns-collapse-id"] = message["collapse_key"]
        url = f"{self.config.apns_endpoint.rstrip('/')}/3/device/{device.token}"
        response = await self.http.post(url, content=orjson.dumps(body), headers=headers)
        if response.status_code == 200:
            return Outcome("delivered")
        try:
            reason = str(response.json().get("reason", ""))
        except ValueError:
            reason = ""
        if response.status_code == 410 or reason in self.DEAD:
            return Outcome("dead", reason or "Unregistered")
        if response.status_code == 403 and reason == "ExpiredProviderToken":
            self._jwt = None
            return Outcome("retry", reason)
        return by_status(response, reason)

    async def close(self) -> None:
        await self.http.aclose()


def _apns_id(notification: str) -> str:
    digest = hashlib.sha256(notification.encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


#: ``inbox_deliver`` on the shard owning a user: (shard index, targets, message) -> stored.
InboxCall = Callable[[str, list[tuple[str, str]], dict[str, Any]], Awaitable[list[str]]]


class InAppProvider(Provider):
    platform = "inapp"

    def __init__(self, deliver: InboxCall, owner_of: Callable[[str], str]) -> None:
        self.deliver, self.owner_of = deliver, owner_of

    async def send(self, device: Device, message: dict[str, Any]) -> Outcome:
        [outcome] = await self.send_many([device], message) or [Outcome("failed")]
        return outcome

    async def send_many(self, devices: list[Device], message: dict[str, Any]) -> list[Outcome]:
        by_shard: dict[str, list[Device]] = {}
        for device in devices:
            by_shard.setdefault(self.owner_of(device.user), []).append(device)

        async def one(shard: str, group: list[Device]) -> dict[str, Outcome]:
            try:
                stored = set(await self.deliver(shard, [(d.user, d.id) for d in group], message))
            except Exception:
                return {d.id: Outcome("retry", "shard_unavailable") for d in group}
            return {
                d.id: Outcome("delivered") if d.id in stored else Outcome("dead", "unregistered")
                for d in group
            }

        found: dict[str, Outcome] = {}
        for answer in await asyncio.gather(*(one(s, g) for s, g in by_shard.items())):
            found.update(answer)
        return [found[d.id] for d in devices]


__all__ = [
    "SIGNATURE_HEADER",
    "ApnsProvider",
    "FcmProvider",
    "InAppProvider",
    "Outcome",
    "Provider",
    "WebPushProvider",
    "WebhookProvider",
    "jwt_sign",
    "post_signed",
    "retry_after",
    "sign_webhook",
    "verify_webhook",
]
