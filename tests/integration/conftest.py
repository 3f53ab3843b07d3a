"""One Ray runtime for the whole integration session, on loopback."""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import httpx
import pytest
import ray
import redis

from actors.runtime.settings import Settings
from serve_app import RAY_RUNTIME_ENV, configure_ingress, deploy, free_port
from tests.conftest import REDIS_URL, ROOT


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[None]:
    # Workers import test helpers (actor classes in tests/) by module name.
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    # The ingress `make run` uses (read when Serve starts), kept apart from any
    # other Serve on this machine.
    # Also: token auth on, uvicorn trusting no forwarded address, and (RAY_RUNTIME_ENV)
    # replicas' gRPC servers on the node's address; no dashboard.
    configure_ingress(Settings(), private_dir=tempfile.mkdtemp(prefix="rt-"))
    ray.init(
        address="local",  # a runtime of its own, never a cluster another process started
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=150 * 1024 * 1024,
        namespace="realm-tests",
        runtime_env=RAY_RUNTIME_ENV,
    )
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def _kill_namespace(namespace: str) -> None:
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == namespace:
            ray.kill(ray.get_actor(actor["name"], namespace=namespace), no_restart=True)


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
        _kill_namespace(settings.namespace)


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


#: Pub/sub limits of the HTTP tests' deployment.
PUBSUB_SEND_BUFFER = 64
PUBSUB_MAX_PAYLOAD = 256 * 1024
#: The login backoff the HTTP tests' deployment uses.
BACKOFF_BASE_S = 30.0
#: Chat limits of the HTTP tests' deployment.
CHAT_HEARTBEAT_TIMEOUT_S = 8.0
CHAT_SEND_BURST = 30
CHAT_MAX_MESSAGE_BYTES = 1024
#: Push: a device nobody reported on is reported lost this long after the send.
PUSH_DELIVERY_DEADLINE_S = 90.0
#: The admin of the HTTP tests' deployment, made from a password file as the
#: auth replicas start (registering this name is refused).
ADMIN_USERNAME = "root"
ADMIN_PASSWORD = "admin password 1"


@pytest.fixture(scope="session")
def http_settings(ray_runtime: None, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the services deployed for HTTP tests (small body limit)."""
    tag = uuid.uuid4().hex[:10]
    admin_password = tmp_path_factory.mktemp("http-secrets") / "admin-password"
    admin_password.write_text(ADMIN_PASSWORD + "\n")
    admin_password.chmod(0o600)
    return Settings(
        namespace=f"test-http-{tag}",
        store_prefix=f"test-http-{tag}",
        data_dir=tmp_path_factory.mktemp("http-data"),
        http_port=free_port(),
        max_body_bytes=3 * 1024 * 1024,
        auth_admin_username=ADMIN_USERNAME,
        auth_admin_password_file=str(admin_password),
        # Every test signs up users, maybe all from one address: no limit is reached.
        auth_register_per_address=100_000,
        auth_reset_requests_per_address=100_000,
        # Long enough that "right after a failure" holds on a loaded machine.
        auth_backoff_base_s=BACKOFF_BASE_S,
        # Small enough that a subscriber that stops reading overflows it soon.
        pubsub_send_buffer=PUBSUB_SEND_BUFFER,
        # Room for PUBSUB_SEND_BUFFER of the largest messages: the count is what binds.
        pubsub_send_buffer_bytes=PUBSUB_SEND_BUFFER * (PUBSUB_MAX_PAYLOAD + 8192),
        pubsub_max_payload_bytes=PUBSUB_MAX_PAYLOAD,
        pubsub_keepalive_s=2.0,
        # Chat: a silent WebSocket is closed soon (test clients ping every second), a
        # burst of sends meets the rate limit, and sessions are checked often.
        chat_heartbeat_timeout_s=CHAT_HEARTBEAT_TIMEOUT_S,
        chat_send_rate_per_s=1.0,
        chat_send_burst=CHAT_SEND_BURST,
        chat_max_message_bytes=CHAT_MAX_MESSAGE_BYTES,
        chat_keepalive_s=2.0,
        # Push: its delivery jobs run on the queue, and its providers' stand-ins
        # listen on loopback; a notification nobody reports is failed soon.
        queue_handler_modules="actors.queue.handlers,actors.push.jobs",
        push_allow_private_addresses=True,
        push_retry_base_s=0.05,
        push_delivery_deadline_s=PUSH_DELIVERY_DEADLINE_S,
    )


@pytest.fixture(scope="session")
def base_url(http_settings: Settings) -> Iterator[str]:
    """Every built service deployed on Serve, as `make run` does; their root URL."""
    from ray import serve

    deploy(http_settings)
    yield f"http://{http_settings.http_host}:{http_settings.http_port}"
    # Replicas first, so none re-creates an actor: every application at once
    # (one serve.delete per application waited about as long each).
    serve.shutdown()
    _kill_namespace(http_settings.namespace)


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
