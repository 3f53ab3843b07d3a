"""The front door without Ray: the HAProxy wrapper (apps/haproxy-loopback) on the
config Serve renders, its parent-death signal, and what serve_app does before it
starts Ray (a stale HAProxy cleared, a busy port named, token auth required).

psutil comes with Ray (``ray/thirdparty_files``) and imports once Ray is
imported, which the conftest does."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

import serve_app
from serve_app import HAPROXY_WRAPPER

NODE_ID = "3cd7a1bee1336fe568161a31948867a0d8a43270262469bcfbdee785"


def haproxy() -> str:
    binary = serve_app.haproxy_binary()
    assert binary is not None, "ray[serve] bundles HAProxy on Linux"
    return binary


def render_serve_config(directory: Path, *, host: str = "0.0.0.0", port: int = 8000) -> Path:
    """The haproxy.cfg Serve's HAProxyManager writes, rendered by Serve's own code."""
    from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig
    from ray.serve.config import HTTPOptions

    node = directory / NODE_ID
    node.mkdir(parents=True)
    config = HAProxyConfig(
        http_options=HTTPOptions(host=host, port=port),
        socket_path=str(node / "admin.sock"),
        server_state_base=str(node),
        server_state_file=str(node / "server-state"),
        metrics_socket_path=str(node / "metrics.sock"),
        stats_port=serve_app.free_port(),
        metrics_port=serve_app.free_port(),
    )
    api = HAProxyApi(cfg=config, config_file_path=str(node / "haproxy.cfg"))
    api._generate_config_file_internal()
    return node / "haproxy.cfg"


def wrapper_env(binary: str) -> dict[str, str]:
    return {**os.environ, "REALM_HAPROXY_BINARY": binary}


def sections(config: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current = ""
    for line in config.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            current = line.strip()
            found[current] = []
        elif line.strip():
            found.setdefault(current, []).append(line.strip())
    return found


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: HAProxy's socket paths are limited to 97 characters."""
    directory = Path(tempfile.mkdtemp(prefix="ri-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_the_wrapper_secures_the_config_serve_writes_and_haproxy_accepts_it(short_dir):
    config = render_serve_config(short_dir)
    before = sections(config.read_text())
    # Serve's own config: stats and metrics on every interface, a socket anyone may command.
    assert any(line.startswith("bind *:") for line in before["listen stats"])
    assert any(line.startswith("bind :") for line in before["frontend prometheus"])
    assert any("mode 666 level admin" in line for line in before["global"])

    checked = subprocess.run(
        ["sh", str(HAPROXY_WRAPPER), "-c", "-f", str(config)],
        env=wrapper_env(haproxy()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr  # `haproxy -c`: the edited config is valid
    after = sections(config.read_text())
    for section in ("listen stats", "frontend prometheus"):
        binds = [line for line in after[section] if line.startswith("bind ")]
        assert binds and all(line.startswith("bind 127.0.0.1:") for line in binds), binds
    socket_lines = [line for line in after["global"] if line.startswith("stats socket ")]
    assert len(socket_lines) == 1 and " mode 600 level admin " in socket_lines[0]
    frontend = after["frontend http_frontend"]
    assert frontend[0] == "bind *:8000"  # the HTTP host is the setting's, untouched
    assert frontend[1:4] == [
        "http-request del-header forwarded",
        "http-request del-header x-real-ip",
        "http-request set-header x-forwarded-for %[src]",
    ]
    # Run again over the same file (a reload whose config did not change): same result.
    edited = config.read_text()
    again = subprocess.run(
        ["sh", str(HAPROXY_WRAPPER), "-c", "-f", str(config)],
        env=wrapper_env(haproxy()),
        capture_output=True,
        timeout=60,
    )
    assert again.returncode == 0 and config.read_text() == edited


def test_the_wrapper_refuses_a_config_it_cannot_secure(tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text("global\n    maxconn 10\nfrontend other\n    bind *:8000\n")
    ran = tmp_path / "ran"
    fake = tmp_path / "fake-haproxy"
    fake.write_text(f"#!/bin/sh\ntouch {ran}\n")
    fake.chmod(0o755)
    refused = subprocess.run(
        ["sh", str(HAPROXY_WRAPPER), "-db", "-f", str(config)],
        env=wrapper_env(str(fake)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "Realm knows how to secure" in refused.stderr
    assert not ran.exists()


def test_haproxy_ends_when_the_process_that_started_it_is_killed(tmp_path):
    # Before: Serve's HAProxy outlived `ray stop --force` and kept the port.
    config = render_serve_config(tmp_path)
    fake = tmp_path / "haproxy"
    fake.write_text("#!/bin/sh\nexec sleep 600\n")
    fake.chmod(0o755)
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "child = subprocess.Popen(sys.argv[1:])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(600)\n",
            "sh",
            str(HAPROXY_WRAPPER),
            "-db",
            "-f",
            str(config),
        ],
        env=wrapper_env(str(fake)),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None
    child = psutil.Process(int(starter.stdout.readline()))
    try:
        wait_for(lambda: child.cmdline()[:2] == ["sleep", "600"], "the wrapper to become HAProxy")
        starter.kill()  # as `ray stop --force` kills Serve's HAProxyManager
        starter.wait()
        wait_for(lambda: not alive(child), "HAProxy to end with its parent")
    finally:
        starter.kill()
        starter.wait()
        if alive(child):
            child.kill()


# --- serve_app before Ray starts ---------------------------------------------------


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_for(condition: Callable[[], object], what: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            if condition():
                return
        except psutil.Error:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within_s} s")
        time.sleep(0.05)


def minimal_config(directory: Path, port: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "haproxy.cfg"
    config.write_text(
        "global\n    maxconn 100\n"
        "defaults\n    mode http\n    timeout connect 1s\n"
        "    timeout client 1s\n    timeout server 1s\n"
        f"frontend http_frontend\n    bind 127.0.0.1:{port}\n"
        "    http-request return status 500\n"
    )
    return config


@pytest.fixture
def started() -> Iterator[list[psutil.Process]]:
    """Processes a test starts; killed at its end, whatever happened."""
    processes: list[psutil.Process] = []
    yield processes
    for process in processes:
        if alive(process):
            process.kill()


def orphaned_haproxy(config: Path, port: int, started: list[psutil.Process]) -> psutil.Process:
    """A real HAProxy on ``config`` whose parent has exited, as one left by a
    Ray stopped hard."""
    launched = subprocess.run(
        ["sh", "-c", f'"{haproxy()}" -db -f "{config}" </dev/null >/dev/null 2>&1 & echo $!'],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    process = psutil.Process(int(launched.stdout))
    started.append(process)
    wait_for(lambda: serve_app.port_holder("127.0.0.1", port) is not None, "HAProxy to listen")
    return process


def test_a_stale_serve_haproxy_on_the_port_is_cleared(tmp_path, started):
    port = serve_app.free_port()
    stale = orphaned_haproxy(minimal_config(tmp_path / NODE_ID, port), port, started)
    assert serve_app.clear_stale_ingress(port) == [stale.pid]
    assert not alive(stale)
    assert serve_app.port_holder("127.0.0.1", port) is None


def test_nothing_but_an_orphaned_serve_haproxy_is_cleared(tmp_path, started):
    # An HAProxy of the machine's own (not Serve's config path): named, kept.
    port = serve_app.free_port()
    own = orphaned_haproxy(minimal_config(tmp_path / "etc-haproxy", port), port, started)
    assert serve_app.clear_stale_ingress(port) == []
    assert alive(own)
    holder = serve_app.port_holder("127.0.0.1", port)
    assert holder is not None and f"haproxy (pid {own.pid})" in holder

    # A live Serve's HAProxy: its parent is Ray's HAProxyManager.
    port = serve_app.free_port()
    config = minimal_config(tmp_path / "live" / NODE_ID, port)
    manager = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import ctypes, subprocess, sys, time\n"
            "ctypes.CDLL(None).prctl(15, b'ray::HAProxyMan', 0, 0, 0)\n"  # PR_SET_NAME
            "subprocess.Popen(sys.argv[1:])\n"
            "time.sleep(600)\n",
            haproxy(),
            "-db",
            "-f",
            str(config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started.append(psutil.Process(manager.pid))
    wait_for(lambda: serve_app.port_holder("127.0.0.1", port) is not None, "HAProxy to listen")
    (live,) = serve_app.listening_on(port)
    started.append(live)
    assert live.parent().name().startswith("ray::")
    assert serve_app.clear_stale_ingress(port) == []
    assert alive(live)

    # Any other process on the port.
    port = serve_app.free_port()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        assert serve_app.clear_stale_ingress(port) == []
        holder = serve_app.port_holder("127.0.0.1", port)
        assert holder is not None and f"(pid {os.getpid()})" in holder


def test_a_free_port_has_no_holder_even_right_after_a_connection_closed():
    port = serve_app.free_port()
    assert serve_app.port_holder("127.0.0.1", port) is None
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = server.accept()
            accepted.close()  # the server's side closes first: TIME_WAIT on the port
    assert serve_app.port_holder("127.0.0.1", port) is None


def test_the_haproxy_binary_is_never_the_wrapper_itself(monkeypatch, tmp_path):
    # After configure_ingress, Serve's choice is the wrapper; asking again (a
    # second configure_ingress in one process) must still find the real binary,
    # or the wrapper would run itself.
    real = haproxy()
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(HAPROXY_WRAPPER))
    monkeypatch.setenv("REALM_HAPROXY_BINARY", real)
    assert serve_app.haproxy_binary() == real
    monkeypatch.delenv("REALM_HAPROXY_BINARY")
    assert serve_app.haproxy_binary() == real
    assert os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(HAPROXY_WRAPPER)

    config = tmp_path / "haproxy.cfg"
    config.write_text("global\n")
    looped = subprocess.run(
        ["sh", str(HAPROXY_WRAPPER), "-c", "-f", str(config)],
        env=wrapper_env(str(HAPROXY_WRAPPER)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert looped.returncode == 1 and "names this wrapper" in looped.stderr


def test_services_can_be_chosen_by_name():
    assert [s.name for s in serve_app.chosen_services(None)] == [s.name for s in serve_app.SERVICES]
    assert [s.name for s in serve_app.chosen_services(" auth,cache ")] == ["cache", "auth"]
    for wrong in ("", "cache,nope", ","):
        with pytest.raises(ValueError, match="--services"):
            serve_app.chosen_services(wrong)


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "ray" / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    return path


def test_token_auth_is_required_explicitly(monkeypatch, token_env):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(serve_app.TokenAuthRefused, match="RAY_AUTH_MODE=disabled"):
        serve_app.require_token_auth()
    assert not token_env.exists()

    monkeypatch.delenv("RAY_AUTH_MODE")
    serve_app.require_token_auth()
    assert os.environ["RAY_AUTH_MODE"] == "token"  # set, not left to Ray's default
    from ray import _raylet

    assert _raylet.get_authentication_mode() == _raylet.AuthenticationMode.TOKEN


def test_a_new_token_file_is_private_and_an_open_one_is_closed(monkeypatch, token_env):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    serve_app.require_token_auth(make_token=False)  # joining a cluster: no token is made
    assert not token_env.exists()
    serve_app.require_token_auth()
    token = token_env.read_text()
    assert len(token) >= 32 and stat.S_IMODE(token_env.stat().st_mode) == 0o600
    serve_app.require_token_auth()
    assert token_env.read_text() == token  # never replaced
    token_env.chmod(0o644)
    serve_app.require_token_auth()
    assert stat.S_IMODE(token_env.stat().st_mode) == 0o600
    assert token_env.read_text() == token
