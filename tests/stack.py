"""The stack the integration and fuzz tests share: one Ray runtime on loopback for
the whole pytest session, and every built service deployed on it as ``make run``
deploys them (``base_url``). The fixtures are registered by ``tests/conftest.py``,
so a session that runs ``tests/integration`` and then ``tests/fuzz`` (``make
test``) starts it once."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator

import pytest
import ray

from actors.runtime.settings import Settings
from serve_app import configure_ingress, deploy, free_port
from tests.conftest import ROOT


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[None]:
    # Workers import test helpers (actor classes in tests/) by module name.
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    # The ingress `make run` uses (read when Serve starts), kept apart from any
    # other Serve on this machine.
    # Also: token auth on, uvicorn trusting no forwarded address; no dashboard.
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
    kill_namespace(http_settings.namespace)


def kill_namespace(namespace: str) -> None:
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == namespace:
            ray.kill(ray.get_actor(actor["name"], namespace=namespace), no_restart=True)
