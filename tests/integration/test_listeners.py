"""What listens, and who may talk to it, in the integration tests' own runtime:
Ray, Serve and HAProxy as the test session runs them (as ``make run`` does, in
this process's tree). ``test_front_door.py`` checks the same of ``make run``'s
runner itself.

psutil comes with Ray (``ray/thirdparty_files``) and imports once Ray is
imported, which the conftest does."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import psutil
import ray


def process_tree(root: psutil.Process) -> list[psutil.Process]:
    return [root, *root.children(recursive=True)]


def listeners(processes: list[psutil.Process]) -> list[tuple[psutil.Process, str, int]]:
    """Every listening TCP socket of ``processes``: (process, address, port)."""
    found = []
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.Error:
            continue  # ended meanwhile
        for connection in connections:
            if connection.status == psutil.CONN_LISTEN:
                found.append((process, connection.laddr.ip, connection.laddr.port))
    return found


def between_reloads(tree: Callable[[], list[psutil.Process]]) -> list[psutil.Process]:
    """``tree()`` once its HAProxy is not mid-reload. Serve reloads HAProxy (a new
    process takes the sockets over with ``-sf``/``-x``) whenever its replica set
    changes, a restarted replica included; for that moment no one HAProxy holds
    the three listeners (HTTP, stats, metrics)."""
    deadline = time.monotonic() + 60.0
    while True:
        processes = tree()
        haproxies = [p for p in processes if name(p) == "haproxy"]
        if len(haproxies) == 1 and len(listeners(haproxies)) == 3:
            return processes
        assert time.monotonic() < deadline, "no one HAProxy held its three listeners"
        time.sleep(0.1)


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:
        return "?"


def assert_all_on_loopback(processes: list[psutil.Process]) -> None:
    found = listeners(processes)
    names = {name(process) for process, _, _ in found}
    # The pieces that listen are all there (else this would prove nothing).
    assert {"gcs_server", "raylet", "haproxy"} <= names, names
    assert any(n.startswith("ray::ServeReplica") for n in names), names
    beyond = [(name(p), p.pid, address, port) for p, address, port in found]
    beyond = [entry for entry in beyond if not is_loopback(entry[2])]
    # Before: every Serve replica's internal gRPC server listened on [::].
    assert beyond == [], beyond


def test_every_listener_of_the_test_runtime_is_on_loopback(base_url):
    assert_all_on_loopback(between_reloads(lambda: process_tree(psutil.Process())))


def test_token_auth_is_set_explicitly_for_every_ray_process(base_url):
    # Not Ray's default for a local cluster: RAY_AUTH_MODE=token in the
    # environment the runtime's processes started with, and no other mode.
    assert os.environ["RAY_AUTH_MODE"] == "token"
    for process in process_tree(psutil.Process())[1:]:
        if name(process) in {"gcs_server", "raylet"}:
            assert process.environ().get("RAY_AUTH_MODE") == "token", name(process)


def auth_token() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    return Path(path).read_text().strip()


def call(target: str, method: str, *, token: str | None = None) -> grpc.StatusCode:
    """A unary gRPC call with an empty request; its status."""
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(method)
        try:
            stub(b"", timeout=30, metadata=metadata)
        except grpc.RpcError as refused:
            return refused.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_grpc_calls_without_the_token_are_refused(base_url):
    # The GCS: a call any driver makes first.
    gcs = ray.get_runtime_context().gcs_address
    get_cluster_id = "/ray.rpc.NodeInfoGcsService/GetClusterId"
    assert call(gcs, get_cluster_id) == grpc.StatusCode.UNAUTHENTICATED
    assert call(gcs, get_cluster_id, token="0" * 64) == grpc.StatusCode.UNAUTHENTICATED
    assert call(gcs, get_cluster_id, token=auth_token()) == grpc.StatusCode.OK

    # Every Serve replica: its internal gRPC server (the one that unpickles
    # request metadata) and its core worker's.
    replicas = [
        p for p in process_tree(psutil.Process()) if name(p).startswith("ray::ServeReplica")
    ]
    assert replicas
    for replica, address, port in listeners(replicas):
        target = f"127.0.0.1:{port}"
        try:
            httpx.get(f"http://{target}/-/healthz", timeout=10)
            continue  # the replica's HTTP server (HAProxy's way in), not gRPC
        except httpx.HTTPError:
            pass
        statuses = {
            call(target, "/ray.serve.ASGIService/HandleRequest"),
            call(target, "/ray.rpc.CoreWorkerService/GetCoreWorkerStats"),
        }
        # One of the two services is served on each port; neither answers without the token.
        assert grpc.StatusCode.UNAUTHENTICATED in statuses, (name(replica), address, port)
        assert grpc.StatusCode.OK not in statuses, (name(replica), address, port)


def test_a_driver_without_the_token_is_refused(ray_runtime):
    gcs = ray.get_runtime_context().gcs_address
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env |= {"RAY_AUTH_MODE": "disabled", "RAY_gcs_rpc_server_connect_timeout_s": "5"}
    driver = subprocess.run(
        [sys.executable, "-c", f"import ray; ray.init(address={gcs!r}); print('connected')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert driver.returncode != 0 and "connected" not in driver.stdout
    assert "Authentication token is missing or incorrect" in driver.stderr


def test_haproxy_listens_on_loopback_and_its_admin_socket_is_private(base_url):
    tree = between_reloads(lambda: process_tree(psutil.Process()))
    (haproxy,) = [p for p in tree if name(p) == "haproxy"]
    args = haproxy.cmdline()
    config = Path(args[args.index("-f") + 1]).read_text()
    assert "stats socket" in config and "mode 666" not in config
    (socket_line,) = [line for line in config.splitlines() if "stats socket" in line]
    admin_socket = Path(socket_line.split()[2])
    assert stat.S_IMODE(admin_socket.stat().st_mode) == 0o600
    ports = {int(os.environ[f"RAY_SERVE_HAPROXY_{kind}_PORT"]) for kind in ("STATS", "METRICS")}
    bound = {port: address for _, address, port in listeners([haproxy])}
    assert ports <= set(bound) and all(bound[port] == "127.0.0.1" for port in ports), bound
