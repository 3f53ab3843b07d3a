"""One Ray runtime for the whole integration session, on loopback."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

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


async def sign_up(base_url: str, username: str | None = None) -> dict[str, str]:
    """Register a new user through ``/auth`` and log in; their Bearer headers."""
    import httpx

    username = username or f"user-{uuid.uuid4().hex[:12]}"
    password = "correct horse battery staple"
    # A fresh client address each time, so no test is throttled by another's logins.
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    async with httpx.AsyncClient(
        base_url=f"{base_url}/auth", timeout=30, headers={"x-forwarded-for": address}
    ) as auth:
        created = await auth.post("/register", json={"username": username, "password": password})
        assert created.status_code == 201, created.text
        answer = await auth.post("/login", json={"username": username, "password": password})
        assert answer.status_code == 200, answer.text
    return {"authorization": f"Bearer {answer.json()['token']}"}


@pytest.fixture(scope="session")
async def user_headers(base_url: str) -> dict[str, str]:
    """Bearer headers of one user, shared by the session's HTTP tests."""
    return await sign_up(base_url)


async def until(
    fetch: Callable[[], Any], condition: Callable[[Any], bool], within_s: float = 30.0
) -> Any:
    """Poll ``await fetch()`` until ``condition`` holds of its value (a join, not a
    timing check); fail if it has not within ``within_s``."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        value = await fetch()
        if condition(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.05)
