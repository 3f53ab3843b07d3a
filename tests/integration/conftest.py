"""One Ray runtime for the whole integration session, on loopback."""

from __future__ import annotations

import os
import random
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import ray
import redis

from actors.runtime.settings import Settings
from serve_app import SERVICES, configure_ingress, deploy, free_port
from tests.conftest import REDIS_URL, ROOT


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[None]:
    # Workers import test helpers (actor classes in tests/) by module name.
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    # The ingress `make run` uses (read when Serve starts), kept apart from any
    # other Serve on this machine.
    configure_ingress(Settings(), private_dir=tempfile.mkdtemp(prefix="rt-"))
    ray.init(
        address="local",  # a runtime of its own, never a cluster another process started
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=150 * 1024 * 1024,
        namespace="realm-tests",
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


@pytest.fixture(scope="session")
def http_settings(ray_runtime: None, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the services deployed for HTTP tests (small body limit)."""
    tag = uuid.uuid4().hex[:10]
    return Settings(
        namespace=f"test-http-{tag}",
        store_prefix=f"test-http-{tag}",
        data_dir=tmp_path_factory.mktemp("http-data"),
        http_port=free_port(),
        max_body_bytes=3 * 1024 * 1024,
        auth_admin_username="root",
        # Long enough that "right after a failure" holds on a loaded machine.
        auth_backoff_base_s=BACKOFF_BASE_S,
        # Small enough that a subscriber that stops reading overflows it soon.
        pubsub_send_buffer=PUBSUB_SEND_BUFFER,
        pubsub_max_payload_bytes=PUBSUB_MAX_PAYLOAD,
        pubsub_keepalive_s=2.0,
    )


@pytest.fixture(scope="session")
def base_url(http_settings: Settings) -> Iterator[str]:
    """Every built service deployed on Serve, as `make run` does; their root URL."""
    from ray import serve

    deploy(http_settings)
    yield f"http://{http_settings.http_host}:{http_settings.http_port}"
    for service in SERVICES:  # replicas first, so none re-creates an actor
        serve.delete(service.name)
    _kill_namespace(http_settings.namespace)


def client_address() -> str:
    """A fresh client address, sent as ``X-Forwarded-For`` (the ingress trusts it
    from loopback, where the proxy in front of the replica lives): failed logins
    are throttled per address, so each client speaks as its own."""
    return "10.{}.{}.{}".format(*(random.randrange(1, 255) for _ in range(3)))


def service_client(
    base_url: str, service: str, headers: dict[str, str] | None = None, *, timeout_s: float = 60
) -> httpx.AsyncClient:
    """An HTTP client of one service's routes (``<base_url>/<service>``), from a
    client address of its own; anonymous unless ``headers`` sign it in."""
    own = {"x-forwarded-for": client_address(), "user-agent": "realm-tests"}
    return httpx.AsyncClient(
        base_url=f"{base_url}/{service}", timeout=timeout_s, headers={**own, **(headers or {})}
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
    ``{"error": {"code": ..., "message": ..., "details": ...}}`` and nothing else."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return str(body["error"]["code"])
