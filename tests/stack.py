"""The stack the integration and fuzz tests share: one Ray runtime on loopback for
the whole pytest session, and every built service deployed on it as ``make run``
deploys them (``base_url``). The fixtures are registered by ``tests/conftest.py``,
so a session that runs ``tests/integration`` and ``tests/fuzz`` starts it once."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.runtime.settings import Settings
from serve_app import RAY_RUNTIME_ENV, configure_ingress, deploy, free_port
from tests.conftest import ROOT

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


def http_settings_for(private_dir: Path) -> Settings:
    """Settings of the services deployed for HTTP tests (small body limit), with
    their data and the admin's password file under ``private_dir``."""
    tag = uuid.uuid4().hex[:10]
    admin_password = private_dir / "admin-password"
    admin_password.write_text(ADMIN_PASSWORD + "\n")
    admin_password.chmod(0o600)
    return Settings(
        namespace=f"test-http-{tag}",
        store_prefix=f"test-http-{tag}",
        data_dir=private_dir / "data",
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


class SessionStack:
    """The session's Ray runtime and deployment, each started at most once: by the
    first fixture that needs it, or earlier, in a thread of its own
    (:meth:`start_early`), so that the minute or two of starting them passes
    while the unit tests run; the fixtures then join them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._private_dir = Path(tempfile.mkdtemp(prefix="realm-tests-"))
        self._steps: dict[str, Future[Any]] = {}
        self._stopped = threading.Event()

    def start_early(self, *after: Callable[[], object]) -> None:
        """Start Ray and deploy every service in a background thread, then run
        ``after`` there, one by one (more to start, one at a time: Ray's nodes
        give up if they cannot register within 30 s). The thread lives until
        :meth:`stop`: Ray's GCS and raylet get SIGKILL when the thread that
        started them ends (``PR_SET_PDEATHSIG`` follows the thread, not the
        process)."""

        def settle() -> None:
            with contextlib.suppress(BaseException):  # the fixture that joins it raises it
                self.deployed()
            for then in after:
                then()
            self._stopped.wait()

        threading.Thread(target=settle, name="session-stack", daemon=True).start()

    def ray(self) -> None:
        """Ray is up (started here, or joined if it is starting)."""
        self._once("ray", self._start_ray)

    def deployed(self) -> Settings:
        """Every service is deployed (here, or joined if it is deploying); its settings."""
        settings: Settings = self._once("deploy", self._deploy)
        return settings

    def _once(self, step: str, work: Callable[[], Any]) -> Any:
        with self._lock:
            mine = step not in self._steps
            if mine:
                self._steps[step] = Future()
            future = self._steps[step]
        if mine:
            try:
                future.set_result(work())
            except BaseException as error:
                future.set_exception(error)
        return future.result()

    def _deploy(self) -> Settings:
        self.ray()
        settings = http_settings_for(self._private_dir)
        deploy(settings)
        return settings

    def _start_ray(self) -> None:
        # Workers import test helpers (actor classes in tests/) by module name.
        paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        # The ingress `make run` uses (read when Serve starts), kept apart from any
        # other Serve on this machine.
        # Also: token auth on, uvicorn trusting no forwarded address, and (RAY_RUNTIME_ENV)
        # replicas' gRPC servers on the node's address; no dashboard.
        # (A directory of its own: HAProxy's socket paths must stay short.)
        configure_ingress(Settings(), private_dir=tempfile.mkdtemp(prefix="rt-"))
        RAY_INIT(
            address="local",  # a runtime of its own, never a cluster another process started
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=150 * 1024 * 1024,
            namespace="realm-tests",
            runtime_env=RAY_RUNTIME_ENV,
        )

    def stop(self) -> None:
        """Serve's replicas first, so none re-creates an actor (every application at
        once: one serve.delete per application waited about as long each), then
        the deployment's actors and Ray. Once; a stack never started is left alone."""
        with self._lock:
            steps, self._steps = self._steps, {}
        started = steps.get("ray")
        if started is None or started.exception(timeout=600) is not None:
            return
        from ray import serve

        deployed = steps.get("deploy")
        if deployed is not None:
            deployed.exception(timeout=600)  # not while it deploys
        serve.shutdown()
        if deployed is not None and deployed.exception() is None:
            kill_namespace(deployed.result().namespace)
        ray.shutdown()
        self._stopped.set()
        shutil.rmtree(self._private_dir, ignore_errors=True)


#: ``ray.init`` itself: unit tests replace it with a refusal while they run, and
#: the early start may run beside them.
RAY_INIT = ray.init
SESSION = SessionStack()


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[None]:
    """Ray on loopback for the session (joined if it is starting already)."""
    SESSION.ray()
    yield
    SESSION.stop()


@pytest.fixture(scope="session")
def http_settings(ray_runtime: None) -> Settings:
    """Settings of the services deployed for HTTP tests, once they are deployed."""
    return SESSION.deployed()


@pytest.fixture(scope="session")
def base_url(http_settings: Settings) -> str:
    """Every built service deployed on Serve, as `make run` does; their root URL."""
    return f"http://{http_settings.http_host}:{http_settings.http_port}"


def kill_namespace(namespace: str) -> None:
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == namespace:
            ray.kill(ray.get_actor(actor["name"], namespace=namespace), no_restart=True)
