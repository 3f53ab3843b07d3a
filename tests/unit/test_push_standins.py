"""Local stand-ins that speak each push provider's protocol, on loopback.

Used by the unit tests of the providers (``test_push_providers.py``) and by
the integration tests; nothing leaves the machine.

- ``WebhookReceiver``: checks ``Realm-Signature`` (HMAC-SHA256 of ``t.body``).
- ``WebPushEndpoint``: checks the VAPID ``Authorization`` (ES256 JWT whose key
  is in ``k=``, audience the endpoint's origin) and decrypts the RFC 8291
  payload with the subscriber's private key and auth secret.
- ``FcmStandIn``: the OAuth 2 token endpoint (checks the service account's
  RS256 assertion) and ``/v1/projects/<id>/messages:send``.
- ``ApnsStandIn``: HTTP/2 (cleartext, prior knowledge) ``/3/device/<token>``,
  checking the ES256 provider token.

Each records what it accepted, and answers by the token or path it is sent
to: a token or path containing ``dead`` is gone (410 / UNREGISTERED /
Unregistered), ``busy`` answers 429 with ``Retry-After`` for its first
``busy_times`` hits.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import http_ece
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from actors.push.providers import verify_webhook


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def verify_jwt(token: str, public_key: Any) -> dict[str, Any]:
    """The claims of an RS256 or ES256 compact JWS, or ValueError."""
    head, claims, signature = token.split(".")
    header = json.loads(b64url_decode(head))
    signed = f"{head}.{claims}".encode()
    raw = b64url_decode(signature)
    if header["alg"] == "ES256":
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        public_key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
    elif header["alg"] == "RS256":
        public_key.verify(raw, signed, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise ValueError(header["alg"])
    decoded: dict[str, Any] = json.loads(b64url_decode(claims))
    return decoded


class Served:
    """An aiohttp app on a loopback port."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.received: list[dict[str, Any]] = []
        self.hits: dict[str, int] = {}
        self.refused: list[str] = []
        self.busy_times = 1
        self.retry_after = "1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def hit(self, name: str) -> int:
        self.hits[name] = self.hits.get(name, 0) + 1
        return self.hits[name]


class WebhookReceiver(Served):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, str] = {}  #: device id -> secret
        self.hit_times: dict[str, list[float]] = {}
        self.delay_s = 0.0  #: how long each answer takes
        self.app.router.add_post("/{path}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        count = self.hit(path)
        self.hit_times.setdefault(path, []).append(time.time())
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        body = await request.read()
        message = json.loads(body)
        secret = self.secrets.get(message.get("device", ""))
        header = request.headers.get("Realm-Signature", "")
        if secret is None or not verify_webhook(secret, header, body):
            self.refused.append(path)
            return web.Response(status=400, text="bad signature")
        if "dead" in path:
            return web.Response(status=410)
        if "busy" in path and count <= self.busy_times:
            return web.Response(status=429, headers={"Retry-After": self.retry_after})
        if "flaky" in path and count <= self.busy_times:
            return web.Response(status=503)
        self.received.append({"path": path, "at": time.time(), **message})
        return web.Response(status=200)


class Subscriber:
    """A browser's Web Push subscription: its keys, and the endpoint it was given."""

    def __init__(self, endpoint: str) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        self.endpoint = endpoint
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.keys = {"p256dh": b64url(public), "auth": b64url(self.auth)}


class WebPushEndpoint(Served):
    def __init__(self) -> None:
        super().__init__()
        self.subscribers: dict[str, Subscriber] = {}
        self.app.router.add_post("/push/{id}", self.handle)

    def subscribe(self, name: str) -> Subscriber:
        subscriber = Subscriber(f"{self.url}/push/{name}")
        self.subscribers[name] = subscriber
        return subscriber

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["id"]
        count = self.hit(name)
        subscriber = self.subscribers.get(name)
        if subscriber is None or "dead" in name:
            return web.Response(status=410)
        try:  # RFC 8292: vapid t=<JWT>,k=<public key>
            scheme, _, params = request.headers["Authorization"].partition(" ")
            fields = dict(p.strip().split("=", 1) for p in params.split(","))
            key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b64url_decode(fields["k"])
            )
            claims = verify_jwt(fields["t"], key)
            assert scheme == "vapid" and claims["aud"] == self.url and claims["exp"] > time.time()
            assert request.headers["Content-Encoding"] == "aes128gcm"
            ttl = int(request.headers["TTL"])
            plain = http_ece.decrypt(
                await request.read(),
                private_key=subscriber.private_key,
                auth_secret=subscriber.auth,
                version="aes128gcm",
            )
        except Exception as error:
            self.refused.append(f"{name}: {error!r}")
            return web.Response(status=400)
        if "busy" in name and count <= self.busy_times:
            return web.Response(status=429, headers={"Retry-After": self.retry_after})
        self.received.append(
            {
                "subscriber": name,
                "ttl": ttl,
                "urgency": request.headers.get("Urgency"),
                "topic": request.headers.get("Topic"),
                "sub": claims.get("sub"),
                **json.loads(plain),
            }
        )
        return web.Response(status=201)


class FcmStandIn(Served):
    def __init__(self, project: str = "realm-test") -> None:
        super().__init__()
        self.project = project
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.app.router.add_post("/token", self.token)
        self.app.router.add_post("/v1/projects/{project}/messages:send", self.send)

    def service_account(self) -> dict[str, str]:
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "client_email": "realm@realm-test.iam.gserviceaccount.com",
            "private_key_id": "k1",
            "private_key": pem,
            "token_uri": f"{self.url}/token",
        }

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
            claims = verify_jwt(str(form["assertion"]), self.key.public_key())
            assert claims["aud"] == f"{self.url}/token"
            assert "firebase.messaging" in claims["scope"]
        except Exception as error:
            self.refused.append(repr(error))
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.token_requests += 1
        token = b64url(os.urandom(24))
        self.tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": 3600})

    async def send(self, request: web.Request) -> web.Response:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in self.tokens or request.match_info["project"] != self.project:
            error = {"code": 401, "status": "UNAUTHENTICATED"}
            return web.json_response({"error": error}, status=401)
        message = (await request.json())["message"]
        token = message["token"]
        count = self.hit(token)
        if "dead" in token:
            error = {
                "code": 404, "status": "NOT_FOUND",
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                             "errorCode": "UNREGISTERED"}],
            }  # fmt: skip
            return web.json_response({"error": error}, status=404)
        if "busy" in token and count <= self.busy_times:
            error = {"code": 429, "status": "RESOURCE_EXHAUSTED"}
            return web.json_response(
                {"error": error}, status=429, headers={"Retry-After": self.retry_after}
            )
        self.received.append(message)
        name = f"projects/{self.project}/messages/{len(self.received)}"
        return web.json_response({"name": name})


class ApnsStandIn:
    """APNs over HTTP/2 without TLS (prior knowledge), with the ``h2`` library."""

    def __init__(self, team_id: str = "TEAM123456", key_id: str = "KEY1234567") -> None:
        self.team_id, self.key_id = team_id, key_id
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.received: list[dict[str, Any]] = []
        self.hits: dict[str, int] = {}
        self.refused: list[str] = []
        self.protocols: list[str] = []
        self.busy_times = 1
        self.retry_after = "1"
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, dict[str, Any]] = {}
        self.protocols.append("h2")
        try:
            while True:
                data = await reader.read(65_536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        headers = {
                            (k.decode() if isinstance(k, bytes) else k): (
                                v.decode() if isinstance(v, bytes) else v
                            )
                            for k, v in event.headers
                        }
                        streams[event.stream_id] = {"headers": headers, "body": b""}
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id]["body"] += event.data
                        conn.acknowledge_received_data(len(event.data), event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        status, body, extra = self._answer(streams.pop(event.stream_id))
                        response = [(":status", str(status)), *extra]
                        conn.send_headers(event.stream_id, response, end_stream=not body)
                        if body:
                            conn.send_data(event.stream_id, body, end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()

    def _answer(self, stream: dict[str, Any]) -> tuple[int, bytes, list[tuple[str, str]]]:
        headers = stream["headers"]
        path = headers.get(":path", "")
        if headers.get(":method") != "POST" or not path.startswith("/3/device/"):
            return 404, b'{"reason":"BadPath"}', []
        token = path.removeprefix("/3/device/")
        try:
            scheme, _, jwt = headers["authorization"].partition(" ")
            claims = verify_jwt(jwt, self.key.public_key())
            header = json.loads(b64url_decode(jwt.split(".")[0]))
            assert scheme == "bearer" and claims["iss"] == self.team_id
            assert header["kid"] == self.key_id
        except Exception as error:
            self.refused.append(repr(error))
            return 403, b'{"reason":"InvalidProviderToken"}', []
        count = self.hits[token] = self.hits.get(token, 0) + 1
        if "dead" in token:
            return 410, b'{"reason":"Unregistered","timestamp":0}', []
        if "bad" in token:
            return 400, b'{"reason":"BadDeviceToken"}', []
        if "busy" in token and count <= self.busy_times:
            return 429, b'{"reason":"TooManyRequests"}', [("retry-after", self.retry_after)]
        self.received.append({"token": token, "headers": headers, **json.loads(stream["body"])})
        return 200, b"", [("apns-id", headers.get("apns-id", ""))]
