"""The stack the fuzz run works on: every built service deployed on a Ray runtime
of its own, as ``make run`` deploys them, and the users the runs sign in as."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from actors.runtime.settings import Settings
from serve_app import RAY_RUNTIME_ENV, SERVICES, configure_ingress, deploy, free_port
from tests.conftest import ROOT


@dataclass(frozen=True)
class Stack:
    #: Root URL of every service (``<base_url>/cache``...).
    base_url: str
    #: The ``Authorization`` header each service's run signs in with, by service
    #: name: one user for every service but auth, whose run signs its user out
    #: and so has a user of its own. Both sign up before any run starts (the
    #: runs may get sign-ups and sign-ins from this address throttled).
    users: dict[str, str]


def users(base_url: str) -> dict[str, str]:
    shared, own = sign_up(base_url), sign_up(base_url)
    return {service.name: own if service.name == "auth" else shared for service in SERVICES}


def start(data_dir: Path) -> Stack:
    """Start Ray on loopback, deploy every service, sign the users up."""
    import ray

    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    configure_ingress(Settings(), private_dir=tempfile.mkdtemp(prefix="rf-"))
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=150 * 1024 * 1024,
        namespace="realm-fuzz",
        runtime_env=RAY_RUNTIME_ENV,
    )
    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        namespace=f"fuzz-{tag}",
        store_prefix=f"fuzz-{tag}",
        store_url="",
        data_dir=data_dir,
        http_port=free_port(),
        # An acquire's wait is a long poll: keep the fuzzed ones short.
        resources_max_wait_s=1.0,
    )
    deploy(settings)
    base_url = f"http://{settings.http_host}:{settings.http_port}"
    return Stack(base_url, users(base_url))


def stop() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def sign_up(base_url: str, *, within_s: float = 60.0) -> str:
    """Register a new user and log in; their ``Authorization`` header."""
    username = f"fuzz-{uuid.uuid4().hex[:12]}"
    password = "correct horse battery staple"
    account = {"username": username, "password": password}
    deadline = time.monotonic() + within_s
    with httpx.Client(base_url=f"{base_url}/auth", timeout=30) as auth:
        while True:  # the ingress may still be taking its routes
            try:
                created = auth.post("/register", json=account)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert created.status_code == 201, created.text
        answer = auth.post("/login", json=account)
        assert answer.status_code == 200, answer.text
    return f"Bearer {answer.json()['token']}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack; ``REALM_FUZZ_URL`` (say ``http://127.0.0.1:8000`` of ``make run``)
    fuzzes one that runs already instead of starting one."""
    running = os.environ.get("REALM_FUZZ_URL", "").rstrip("/")
    if running:
        yield Stack(running, users(running))
        return
    import ray

    if ray.is_initialized():
        pytest.skip("tests/fuzz starts a Ray of its own: run it in a pytest process of its own")
    yield start(tmp_path_factory.mktemp("fuzz-data"))
    stop()


__all__ = ["SERVICES", "Stack", "start", "stop"]
