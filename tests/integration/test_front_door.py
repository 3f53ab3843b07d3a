"""The front door: ``make run``'s runner (``python serve_app.py``) started as
``make run`` starts it, on a free port, killed hard, and started again; and the
client address every way a request reaches a replica.

Every runner here is this test's own: it runs in a session of its own, and
every process of its tree is killed at the end; no Ray other than its own is
touched. psutil comes with Ray (``ray/thirdparty_files``) and imports once Ray
is imported, which the conftest does."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

import serve_app
from benchmarks.runner import Runner, make_run_env, run_serve_app
from tests.integration.conftest import client_address, service_client
from tests.integration.test_listeners import (
    assert_all_on_loopback,
    between_reloads,
    name,
)

#: The port every runner of this module serves on (a free one, not 8000): the
#: second start reuses the port the first left.
PORT = serve_app.free_port()


def until(condition: Callable[[], Any], what: str, within_s: float = 60.0) -> Any:
    """Poll ``condition()`` until it is truthy; its value (a join, not a timing)."""
    deadline = time.monotonic() + within_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never held within {within_s} s")
        time.sleep(0.1)


def make_run(data_dir: Path, *args: str, port: int = PORT, **env: str) -> Runner:
    """``python serve_app.py [args]`` with the environment ``make run`` gives it
    (nothing of this test session's Ray or Serve), in a session of its own."""
    return run_serve_app(args, make_run_env(port, data_dir, "front-door", **env))


@pytest.fixture
def runners(tmp_path: Path) -> Iterator[list[Runner]]:
    """Start runners with ``runners.append(make_run(...))``; all are ended after the test."""
    started: list[Runner] = []
    yield started
    for runner in started:
        runner.stop()


def listening(port: int) -> list[psutil.Process]:
    return serve_app.listening_on(port)


def kill_ray_hard(runner: Runner) -> list[psutil.Process]:
    """What ``ray stop --force`` does to the runner's Ray: SIGKILL to every Ray
    process (all of the runner's tree but the runner and HAProxy, which is not
    Ray's). Returns the HAProxy processes it left."""
    processes = runner.tree()[1:]
    haproxies = [p for p in processes if name(p) == "haproxy"]
    for process in processes:
        if process not in haproxies:
            with contextlib.suppress(psutil.Error):
                process.kill()
    return haproxies


def gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def orphaned_serve_haproxy(port: int, directory: Path) -> psutil.Process:
    """An HAProxy like one a Serve left before the wrapper tied it to its
    parent: Serve's config path, its parent gone, holding ``port``."""
    binary = serve_app.haproxy_binary()
    assert binary is not None
    config = directory / ("0" * 56) / "haproxy.cfg"  # <dir>/<node id>/haproxy.cfg
    config.parent.mkdir(parents=True)
    config.write_text(
        "global\n    maxconn 100\n"
        "defaults\n    mode http\n    timeout connect 1s\n"
        "    timeout client 1s\n    timeout server 1s\n"
        f"frontend http_frontend\n    bind 127.0.0.1:{port}\n"
        "    http-request return status 500\n"
    )
    log = directory / "haproxy.log"
    launched = subprocess.run(
        ["sh", "-c", f'"{binary}" -db -f "{config}" </dev/null >"{log}" 2>&1 & echo $!'],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    stale = psutil.Process(int(launched.stdout))
    until(lambda: listening(port) or gone(stale), "the stale HAProxy to listen or fail")
    assert not gone(stale), f"the stale HAProxy did not start: {log.read_text()[-2000:]}"
    return stale


@dataclass
class FullStack:
    runner: Runner
    #: The stale HAProxy the start found on its port.
    stale: psutil.Process

    @property
    def stale_pid(self) -> int:
        return int(self.stale.pid)


#: The services the runners here deploy. ``make run`` deploys every one through the
#: same ``deploy`` that the session's stack uses (every service is served there, and
#: fuzzed); what is the runner's own (its Ray, ingress, priority, exit) does not
#: depend on how many there are, and a second whole stack beside the session's
#: cost minutes on two cores.
RUNNER_SERVICES = "auth"


def start_full_stack(directory: Path) -> FullStack:
    """A stale HAProxy on PORT, then a runner started as ``make run`` starts it
    (not waited for)."""
    stale = orphaned_serve_haproxy(PORT, directory / "stale")
    return FullStack(
        make_run(directory / "front-door" / "data", "--services", RUNNER_SERVICES), stale
    )


@pytest.fixture(scope="module")
def full_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullStack]:
    """The runner, started as ``make run`` starts it, on the port an earlier run
    left to a stale HAProxy."""
    stack = start_full_stack(tmp_path_factory.mktemp("full-stack"))
    try:
        stack.runner.wait_ready()
        yield stack
    finally:
        stack.runner.stop()
        if not gone(stack.stale):
            stack.stale.kill()


def test_a_second_start_clears_the_stale_ingress_and_serves(full_stack):
    # Before: "HAProxy crashed during startup", and the stale one answered 500.
    output = full_stack.runner.output
    said = re.search(r"Stopped a stale HAProxy \(pid (\d+)\)", output)
    assert said and int(said.group(1)) == full_stack.stale_pid, output[-3000:]
    for service in serve_app.chosen_services(RUNNER_SERVICES):
        docs = httpx.get(f"http://127.0.0.1:{PORT}{service.prefix}/docs", timeout=60)
        assert docs.status_code == 200, (service.name, docs.status_code)


def test_every_listener_of_make_run_is_on_loopback(full_stack):
    # HAProxy's HTTP, stats and metrics listeners are among those checked: the
    # tree is taken once all three are up.
    tree = between_reloads(full_stack.runner.tree)
    assert_all_on_loopback(tree)
    # Token authentication was set by serve_app itself (the runner's
    # environment had no RAY_AUTH_MODE), for every Ray process.
    assert "RAY_AUTH_MODE" not in full_stack.runner.env
    ray_processes = [p for p in tree if name(p) in {"gcs_server", "raylet"}]
    assert ray_processes
    for process in ray_processes:
        assert process.environ().get("RAY_AUTH_MODE") == "token"


def test_make_run_runs_realms_actors_and_replicas_at_default_priority(full_stack):
    # Ray's default would start them at nice 15, below every other process here.
    assert "RAY_worker_niceness" not in full_stack.runner.env
    workers = [p for p in full_stack.runner.tree() if name(p).startswith("ray::")]
    levels = {name(p): p.nice() for p in workers if "Agent" not in name(p)}
    assert any(n.startswith("ray::ServeReplica") for n in levels), sorted(levels)
    assert set(levels.values()) == {0}, levels


async def test_behind_haproxy_a_client_cannot_claim_another_address(base_url):
    # Before: HAProxy passed the client's X-Forwarded-For on and the replica's
    # uvicorn believed it (it came from loopback): every request could pick its
    # own address for the login throttle and the session record.
    await assert_address_is_the_connections(base_url, client_address())


async def assert_address_is_the_connections(base_url: str, address: str) -> None:
    username = f"addr-{uuid.uuid4().hex[:12]}"
    credentials = {"username": username, "password": "correct horse battery"}
    async with service_client(base_url, "auth", address=address) as auth:
        assert (await auth.post("/register", json=credentials)).status_code == 201
        for header, claimed in [
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", f"203.0.113.9, {address}"),
            ("forwarded", "for=203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
        ]:
            login = await auth.post("/login", json=credentials, headers={header: claimed})
            assert login.status_code == 200, login.text
            assert login.json()["session"]["address"] == address, (header, claimed)


async def test_behind_serves_python_proxy_a_client_cannot_claim_another_address(tmp_path, runners):
    # Serve's Python proxy hands the replica the address that connected to it.
    # Before: its uvicorn believed X-Forwarded-For from 127.0.0.1.
    port = serve_app.free_port()
    runner = make_run(
        tmp_path / "data", "--services", RUNNER_SERVICES, port=port, RAY_SERVE_ENABLE_HA_PROXY="0"
    )
    runners.append(runner)
    runner.wait_ready()
    assert "ingress: Serve's Python proxy" in runner.output
    await assert_address_is_the_connections(f"http://127.0.0.1:{port}", "127.0.0.1")


def test_a_ray_killed_hard_takes_the_ingress_and_the_runner_with_it(ray_runtime, full_stack):
    # Last in this module: it ends the full stack's runner (the fixture's
    # teardown then finds it gone).
    # Before: HAProxy outlived `ray stop --force`, holding the port and answering
    # 500; the runner went on waiting for Ctrl-C as if nothing had happened.
    runner = full_stack.runner
    # A Ray of its own, although this session's runs on the machine (before:
    # `ray.init()` joined whatever Ray it found).
    assert {"gcs_server", "raylet"} <= {name(p) for p in runner.tree()}
    assert httpx.get(f"http://127.0.0.1:{PORT}/auth/docs", timeout=30).status_code == 200
    haproxies = kill_ray_hard(runner)
    assert haproxies, "HAProxy was the ingress"

    assert runner.process.wait(timeout=120) == 1
    until(lambda: "Ray is gone" in runner.output, "the runner to say why it stopped", 10)
    assert "Exiting; `make run` starts them again." in runner.output
    until(lambda: all(gone(p) for p in haproxies), "HAProxy to end with its Ray")
    until(lambda: not listening(PORT), f"port {PORT} to be free")
