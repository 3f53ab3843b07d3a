"""One Ray runtime for the whole integration session, on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray
import redis

from actors.settings import Settings
from tests.conftest import REDIS_URL, ROOT


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[None]:
    # Workers import test helpers (actor classes in tests/) by module name.
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    ray.init(
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
