"""Helpers of the integration tests: clients of the session's stack (``tests/stack.py``),
sign-ups, API keys, per-test actor settings and stores."""

from __future__ import annotations

import asyncio
import random
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import httpx
import pytest
import redis

from actors.runtime.settings import Settings
from tests.conftest import REDIS_URL
from tests.stack import (  # noqa: F401  (constants the tests import from here)
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    BACKOFF_BASE_S,
    CHAT_HEARTBEAT_TIMEOUT_S,
    CHAT_MAX_MESSAGE_BYTES,
    CHAT_SEND_BURST,
    PUBSUB_MAX_PAYLOAD,
    PUBSUB_SEND_BUFFER,
    PUSH_DELIVERY_DEADLINE_S,
    kill_namespace,
)


@pytest.fixture
def ray_settings(
    ray_runtime: None, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., Settings]]:
    """Settings for a test that starts named actors; they are killed afterwards."""
    made: list[Settings] = []

    def make(**overrides: Any) -> Settings:
        settings = make_settings(**overrides)
        made.append(settings)
        return settings

    yield make
    for settings in made:
        kill_namespace(settings.namespace)


def redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.exceptions.RedisError:
        return False


@pytest.fixture(params=["sqlite", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Runs a test once per store; Redis must answer (CI starts it)."""
    if request.param == "redis" and not redis_available():
        pytest.fail(f"Redis does not answer at {REDIS_URL}; start it (see .ci/run)")
    return str(request.param)


def store_overrides(kind: str) -> dict[str, Any]:
    return {"store_url": REDIS_URL} if kind == "redis" else {"store_url": ""}


#: The store of a service's actor-kill tests: SQLite, ``make run``'s default. The
#: journal's guarantees are proven on both stores (test_durable_kill,
#: test_store_contract, test_store_restart); the services whose nodes tests/cluster
#: removes (auth, queue, ledger, resources, cache, chat, game) are killed there on Redis.
ON_SQLITE = store_overrides("sqlite")


def client_address() -> str:
    """A fresh loopback address for a client to connect from (127.x.y.z, never
    127.0.0.1; Linux routes all of 127/8 to loopback): failed logins are
    throttled per address, so each client speaks as its own. The ingress sees
    it as the client's address; a header cannot claim another one."""
    return "127.{}.{}.{}".format(*(random.randrange(1, 255) for _ in range(3)))


def service_client(
    base_url: str,
    service: str,
    headers: dict[str, str] | None = None,
    *,
    timeout_s: float = 60,
    address: str | None = None,
) -> httpx.AsyncClient:
    """An HTTP client of one service's routes (``<base_url>/<service>``), whose
    connections come from ``address`` (default: a ``client_address()`` of its
    own); anonymous unless ``headers`` sign it in."""
    transport = httpx.AsyncHTTPTransport(local_address=address or client_address())
    return httpx.AsyncClient(
        base_url=f"{base_url}/{service}",
        timeout=timeout_s,
        headers={"user-agent": "realm-tests", **(headers or {})},
        transport=transport,
    )


async def sign_up(base_url: str, username: str | None = None) -> dict[str, str]:
    """Register a new user through ``/auth`` and log in; their Bearer headers."""
    username = username or f"user-{uuid.uuid4().hex[:12]}"
    password = "correct horse battery staple"
    async with service_client(base_url, "auth") as auth:
        created = await auth.post("/register", json={"username": username, "password": password})
        assert created.status_code == 201, created.text
        answer = await auth.post("/login", json={"username": username, "password": password})
        assert answer.status_code == 200, answer.text
    return {"authorization": f"Bearer {answer.json()['token']}"}


_admin_sessions: dict[str, dict[str, str]] = {}
_admin_logins: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def admin_headers(base_url: str, *, fresh: bool = False) -> dict[str, str]:
    """Bearer headers of the deployment's admin: one session, shared (logins to
    one account at the same moment are throttled), unless ``fresh``."""
    lock = _admin_logins.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        if fresh or base_url not in _admin_sessions:
            credentials = {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
            async with service_client(base_url, "auth") as auth:
                answer = await auth.post("/login", json=credentials)
                assert answer.status_code == 200, answer.text
            _admin_sessions[base_url] = {"authorization": f"Bearer {answer.json()['token']}"}
        return _admin_sessions[base_url]


async def make_api_key(
    base_url: str,
    scopes: Iterable[str],
    *,
    owner: dict[str, str] | None = None,
    expires_in_s: float | None = None,
) -> dict[str, str]:
    """Bearer headers of a new API key holding ``scopes``, made by the admin and
    acting for ``owner`` (the Bearer headers of a user, e.g. from ``sign_up``;
    default: the admin), who owns whatever the key creates."""
    body: dict[str, Any] = {"scopes": list(scopes), "name": "tests"}
    if expires_in_s is not None:
        body["expires_in_s"] = expires_in_s
    async with service_client(base_url, "auth") as auth:
        if owner is not None:
            me = await auth.get("/me", headers=owner)
            assert me.status_code == 200, me.text
            body["user_id"] = me.json()["id"]
        made = await auth.post("/keys", json=body, headers=await admin_headers(base_url))
        if made.status_code == 401:  # a test ended the shared admin session
            admin = await admin_headers(base_url, fresh=True)
            made = await auth.post("/keys", json=body, headers=admin)
        assert made.status_code == 201, made.text
    return {"authorization": f"Bearer {made.json()['key']}"}


@pytest.fixture
def api_key(base_url: str) -> Callable[..., Awaitable[dict[str, str]]]:
    """``await api_key(["queue:enqueue"], owner=headers)``: ``make_api_key`` on
    the deployment under test."""

    def make(scopes: Iterable[str], **options: Any) -> Awaitable[dict[str, str]]:
        return make_api_key(base_url, scopes, **options)

    return make


@pytest.fixture(scope="session")
async def user_headers(base_url: str) -> dict[str, str]:
    """Bearer headers of one user, shared by the session's HTTP tests."""
    return await sign_up(base_url)


@pytest.fixture
async def http(
    request: pytest.FixtureRequest, base_url: str, user_headers: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the test module's service, named by the module's ``SERVICE``
    (``"cache"`` for ``/cache``); signed in as the session's user unless the
    module sets ``SIGNED_IN = False``."""
    service = getattr(request.module, "SERVICE", None)
    if not isinstance(service, str):
        pytest.fail(f"{request.module.__name__} uses the `http` fixture but names no SERVICE")
    headers = user_headers if getattr(request.module, "SIGNED_IN", True) else None
    async with service_client(base_url, service, headers) as client:
        yield client


def error_code(response: httpx.Response) -> str:
    """The code of an answer in the error envelope, checking the envelope's shape:
    ``{"error": {"code", "message", "details", "request_id"}}`` and nothing else, a
    fault (5xx) with no details, and the request id Serve answers as ``X-Request-ID``."""
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}, body
    assert isinstance(error["request_id"], str) and error["request_id"], body
    if "x-request-id" in response.headers:
        assert error["request_id"] == response.headers["x-request-id"], body
    if response.status_code >= 500:
        assert error["details"] == {}, body
    return str(error["code"])
