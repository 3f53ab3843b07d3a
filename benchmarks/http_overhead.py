"""HTTP overhead: the cache's GET route through Serve against plain uvicorn + FastAPI.

Variants, each a server in its own subprocess on its own loopback port, loaded by
``wrk -t1 -c<concurrency> -d<duration>s --latency`` on one hot key:
  uvicorn       the peer: plain uvicorn (one worker) + FastAPI, an async route answering
                from a dict of JSON bytes, spliced into the same body Realm sends
  haproxy       Realm (``serve_app.deploy`` of cache and auth) behind Serve's HAProxy ingress
  python_proxy  Realm behind Serve's Python proxy
  serve_noop    the uvicorn peer's dict app as a Serve deployment behind HAProxy:
                Serve's own ceiling here, so haproxy/serve_noop is what Realm adds

The proxy is chosen by ``RAY_SERVE_ENABLE_HA_PROXY``, which Serve reads when Ray starts,
so each Realm variant runs in a fresh process with its own Ray session: this script
re-invokes itself with ``--serve <variant> --port <port>`` (the server runner). So it
measures this machine's HTTP path even with ``--address`` (or ``RAY_ADDRESS``): a
cluster's proxy was chosen when the cluster started, and one cluster cannot be both
variants. The runners always start a local Ray of their own.
Before loading, the key is written with PUT and read back (200 and the right value).

Both sides authenticate every request with ``Authorization: Bearer <credential>``:
  Realm         an API key holding ``cache:read`` and ``cache:write``, made over HTTP
                (``POST /auth/keys``) by an admin that the server runner bootstraps from
                ``auth_admin_username`` + ``auth_admin_password_file`` (a random password
                in a mode-600 file this script writes)
  the peer      a random token; the server keeps only its SHA-256 (passed as a flag),
                looks the presented token's SHA-256 up in a dict of stored hashes, and
                checks the route's scope (401 unknown, 403 without the scope)
An anonymous GET must answer 401 on every variant before the load starts.

Besides req/s and latency, each variant reports the CPU time per answered request over
the load (``cpu_us_per_request``): of the server's whole process tree and of its Serve
replicas alone (read from the processes, user + system). The machine is shared, and CPU
per request moves much less with the other load than req/s does; ``ratios`` gives
Realm's replica CPU per request over the no-op's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
from fastapi import Body, FastAPI, Header, Response

import serve_app
from benchmarks import harness  # sets loopback-only Ray before ray is imported
from benchmarks.runner import Runner

CLAIM = (
    "DESIGN (Benchmarks): the cache GET route through Serve (HAProxy ingress and Python proxy) "
    "against plain uvicorn + FastAPI serving the same dict. Goal: Realm >= 0.5 x plain "
    "uvicorn req/s; >= 0.95 x a no-op Serve route behind the same ingress (issue 14)."
)
GOAL_RATIO = 0.5
#: Realm's route over a no-op Serve route, Serve's own ceiling (issue 14).
GOAL_CEILING = 0.95
VARIANTS = ("uvicorn", "haproxy", "python_proxy", "serve_noop")
KEY = "bench:http-overhead:hot"
VALUE = {"id": 42, "name": "hot key", "tags": ["a", "b", "c"], "score": 1.5}
READY = "HTTP_OVERHEAD_READY"
RUNNER = [sys.executable, "-m", "benchmarks.http_overhead"]
#: The services Realm's variants deploy: the cache's routes, and auth, which makes the
#: key and whose session shards the cache ingress checks it against. Other services'
#: replicas would only add startup time and background work to the measurement.
REALM_SERVICES = "cache,auth"
#: Ray + Serve + cache and auth came up in 30-45 s here at a load average of 7-15 (every
#: service took 100 s at 100); much more than this means something is stuck.
STARTUP_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
#: The admin the Realm server runner bootstraps, and the scopes of the key it makes.
ADMIN_USERNAME = "bench-admin"
KEY_SCOPES = ("cache:read", "cache:write")
AUTH = {
    "both_authenticate": True,
    "header": "Authorization: Bearer <credential>",
    "realm": "API key (cache:read, cache:write) made by a bootstrapped admin via POST /auth/keys",
    "peer": "random token; SHA-256 of the presented token looked up in a dict of stored "
    "hashes, route scope checked",
}


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {VARIANTS}"
    )
    parser.add_argument("--warmup-s", type=int, default=2, help="wrk warm-up run per variant")
    # The server runner (internal): run one variant's server until SIGTERM.
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--admin-password-file", help=argparse.SUPPRESS)
    parser.add_argument("--peer-token-sha256", help=argparse.SUPPRESS)


# --- server runners (in the child process) ----------------------------------------------


def _announce_ready(port: int) -> None:
    print(f"{READY} {port}", flush=True)


def _wait_for_sigterm() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


REQUIRED_BODY = Body(...)
AUTHORIZATION = Header(None)


def dict_app(credentials: dict[bytes, frozenset[str]]) -> FastAPI:
    """The peer: the same route shape, a dict instead of actors. ``credentials``:
    the SHA-256 digest of each accepted bearer token, and the scopes it holds."""
    app = FastAPI()
    values: dict[str, bytes] = {}

    def refusal(authorization: str | None, scope: str) -> Response | None:
        """None when the bearer token is known and holds ``scope``; else the answer."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return Response(b'{"error":"unauthorized"}', status_code=401)
        scopes = credentials.get(hashlib.sha256(token.encode()).digest())
        if scopes is None:
            return Response(b'{"error":"unauthorized"}', status_code=401)
        if scope not in scopes:
            return Response(b'{"error":"forbidden"}', status_code=403)
        return None

    # Plain builtins in the signatures: Serve may pickle these functions by value,
    # and then names in (postponed) annotations would not resolve.
    @app.get("/cache/keys/{key:path}")
    async def get_key(key: str, authorization: str | None = AUTHORIZATION) -> Response:
        refused = refusal(authorization, "cache:read")
        if refused is not None:
            return refused
        raw = values.get(key)
        if raw is None:
            return Response(b'{"error":"not found"}', status_code=404)
        body = b'{"key":' + orjson.dumps(key) + b',"value":' + raw + b"}"
        return Response(body, media_type="application/json")

    @app.put("/cache/keys/{key:path}", response_model=None)
    async def set_key(
        key: str, body: dict = REQUIRED_BODY, authorization: str | None = AUTHORIZATION
    ) -> dict | Response:
        refused = refusal(authorization, "cache:write")
        if refused is not None:
            return refused
        values[key] = orjson.dumps(body["value"])
        return {"key": key, "stored": True}

    return app


def peer_credentials(token_sha256: str | None) -> dict[bytes, frozenset[str]]:
    """The peer's credential store: one token's SHA-256 (hex) with the cache scopes."""
    if not token_sha256:
        raise SystemExit("the peer's server runner needs --peer-token-sha256")
    return {bytes.fromhex(token_sha256): frozenset(KEY_SCOPES)}


def serve_uvicorn(port: int, credentials: dict[bytes, frozenset[str]]) -> None:
    import uvicorn

    app = dict_app(credentials)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)

    # uvicorn binds in serve(); announce once it has started.
    def announce_when_started() -> None:
        _wait_started(server)
        _announce_ready(port)

    threading.Thread(target=announce_when_started, daemon=True).start()
    server.run()  # returns on SIGTERM/SIGINT


def _wait_started(server: Any) -> None:
    while not server.started:
        time.sleep(0.05)


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def serve_realm(variant: str, port: int, args: argparse.Namespace) -> None:
    """Realm's services on a fresh Ray, Serve's HTTP on ``port``, until SIGTERM
    (``serve_noop``: the peer's dict app instead)."""
    # Serve writes HAProxy's config, state and admin socket under /tmp/haproxy-serve by
    # default, shared with any other Serve on this machine: keep ours private. Serve adds a
    # 56-character directory and HAProxy takes socket paths of at most 97: keep it short.
    private = tempfile.mkdtemp(prefix="rb-")
    # Until it is ready, a stop request unwinds through the cleanup below.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        _serve_realm(variant, port, private, args)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _serve_realm(variant: str, port: int, private: str, args: argparse.Namespace) -> None:
    from actors.cache.settings import CacheSettings
    from actors.runtime.settings import Settings
    from apps.common import ingress_options

    # A near cache in the ingress is the default; said here because the result records it.
    cache = CacheSettings(shards=4, http_near_cache=True)
    # Both checked before Ray starts.
    credentials = peer_credentials(args.peer_token_sha256) if variant == "serve_noop" else {}
    if variant != "serve_noop" and not args.admin_password_file:
        raise SystemExit(f"{variant} server runner needs --admin-password-file")
    settings = Settings(
        namespace="realm-bench-http",
        store_url="",
        data_dir=Path(private) / "data",
        http_host="127.0.0.1",
        http_port=port,
        sections={"cache": cache},
        # The auth ingress makes this admin as it starts; the parent logs in as it.
        auth_admin_username=ADMIN_USERNAME,
        auth_admin_password_file=args.admin_password_file or "",
    )
    wants_haproxy = variant != "python_proxy"
    if not wants_haproxy:
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "0"
    if serve_app.configure_ingress(settings, private_dir=private) != wants_haproxy:
        raise SystemExit(f"{variant} variant: no HAProxy binary found")
    with harness.ray_session(namespace=settings.namespace):
        from ray import serve

        try:
            harness.progress(f"{variant} server: Ray up, deploying on port {port}")
            if variant == "serve_noop":
                serve.start(http_options={"host": settings.http_host, "port": port})
                # A plain function: Serve takes any other callable for an ASGI app.
                ingress: Any = serve.deployment(serve.ingress(lambda: dict_app(credentials))())
                noop = ingress.options(**ingress_options(settings)).bind()
                serve.run(noop, name="noop", route_prefix="/")
            else:
                serve_app.deploy(settings, serve_app.chosen_services(REALM_SERVICES))
            _announce_ready(port)
            _wait_for_sigterm()
        finally:
            harness.progress(f"{variant} server: shutting Serve and Ray down")
            serve.shutdown()


# --- the load side (in the parent) ------------------------------------------------------


def start_server(variant: str, port: int, extra: list[str]) -> Runner:
    """One variant's server (this module with ``--serve``), in its own process group so
    all of it (Ray's processes, HAProxy) can be stopped."""
    # A local Ray of the runner's own, whatever --address or RAY_ADDRESS say (see above).
    command = [*RUNNER, "--serve", variant, "--port", str(port), "--address", harness.LOCAL]
    return Runner([*command, *extra], ready=READY)


class Credentials:
    """What the parent holds: the Realm admin's password (in a mode-600 file, for the
    server runner) and the peer's bearer token (the peer gets only its SHA-256)."""

    def __init__(self, directory: str) -> None:
        self.admin_password = secrets.token_urlsafe(24)
        self.admin_password_file = Path(directory) / "admin-password"
        self.admin_password_file.touch(mode=0o600)
        self.admin_password_file.write_text(self.admin_password + "\n")
        self.peer_token = secrets.token_urlsafe(32)

    def runner_args(self, variant: str) -> list[str]:
        if variant in ("uvicorn", "serve_noop"):
            digest = hashlib.sha256(self.peer_token.encode()).hexdigest()
            return ["--peer-token-sha256", digest]
        return ["--admin-password-file", str(self.admin_password_file)]


def bearer_token(port: int, variant: str, credentials: Credentials) -> str:
    """The peer's token, or for Realm a new API key with the cache scopes: the admin
    logs in and makes it with ``POST /auth/keys``. Retries while routes come up."""
    import httpx

    if variant in ("uvicorn", "serve_noop"):
        return credentials.peer_token
    base = f"http://127.0.0.1:{port}/auth"
    login = {"username": ADMIN_USERNAME, "password": credentials.admin_password}
    deadline, last = time.monotonic() + 60.0, "no answer"
    with httpx.Client(timeout=30.0) as client:
        while True:
            try:
                answer = client.post(f"{base}/login", json=login)
                if answer.status_code == 200:
                    admin = {"authorization": f"Bearer {answer.json()['token']}"}
                    body = {"scopes": list(KEY_SCOPES), "name": "http_overhead benchmark"}
                    made = client.post(f"{base}/keys", json=body, headers=admin)
                    if made.status_code != 201:
                        raise RuntimeError(f"{variant}: POST /auth/keys: {made.status_code}")
                    key: str = made.json()["key"]
                    return key
                last = f"login {answer.status_code}"
                # The admin exists before the auth replica serves: a refusal is final
                # (and retrying would run into the login throttle).
                if 400 <= answer.status_code < 500 and answer.status_code != 404:
                    raise RuntimeError(f"{variant}: admin login refused: {last}")
            except httpx.HTTPError as error:
                last = repr(error)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{variant}: no API key could be made: {last}")
            time.sleep(0.5)


def preload_and_verify(port: int, variant: str, token: str) -> str:
    """PUT the key, GET it back (both with ``token``), and see an anonymous GET refused
    with 401; returns the URL to load. Retries while routes come up."""
    import httpx

    url = f"http://127.0.0.1:{port}/cache/keys/{KEY}"
    deadline, last = time.monotonic() + 60.0, "no answer"
    headers = {"authorization": f"Bearer {token}"}
    with httpx.Client(timeout=10.0) as client:
        while True:
            try:
                put = client.put(url, json={"value": VALUE}, headers=headers)
                got = client.get(url, headers=headers)
                if put.status_code == 200 and got.status_code == 200:
                    if got.json() != {"key": KEY, "value": VALUE}:
                        raise RuntimeError(f"{variant}: GET answered a wrong body: {got.text!r}")
                    anonymous = client.get(url)
                    if anonymous.status_code != 401:
                        raise RuntimeError(
                            f"{variant}: an anonymous GET answered {anonymous.status_code}, not 401"
                        )
                    return url
                last = f"PUT {put.status_code} {put.text[:200]!r}, GET {got.status_code}"
                if 400 <= put.status_code < 500 and put.status_code != 404:
                    raise RuntimeError(f"{variant}: PUT refused: {last}")
            except httpx.HTTPError as error:
                last = repr(error)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{variant}: the key could not be written and read: {last}")
            time.sleep(0.5)


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests, duration, errors and latency percentiles from ``wrk --latency`` output."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", output)
    if done is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    requests, duration_s = int(done.group(1)), _ms(done.group(2) + done.group(3)) / 1e3
    percentiles = {
        int(p): _ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", output, re.M)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    avg = re.search(r"Latency\s+([\d.]+\w+)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    failed = int(non_2xx.group(1)) if non_2xx else 0
    ok = requests - failed
    return {
        "calls": ok,
        "ops": ok,
        "duration_s": round(duration_s, 3),
        "calls_per_s": round(ok / duration_s, 1),
        "throughput_ops_s": round(ok / duration_s, 1),
        "p50_ms": round(percentiles[50], 3),
        "p90_ms": round(percentiles[90], 3),
        "p99_ms": round(percentiles[99], 3),
        "avg_ms": round(_ms(avg.group(1)), 3) if avg else float("nan"),
        "non_2xx": failed,
        "socket_errors": dict(
            zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True)
        )
        if errors
        else {},
        "wrk_requests_per_s": float(rps.group(1)) if rps else float("nan"),
    }


def run_wrk(url: str, token: str, *, duration_s: int, connections: int) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency"]
    header = ["-H", f"Authorization: Bearer {token}"]
    done = subprocess.run(
        [*command, *header, url], capture_output=True, text=True, timeout=duration_s + 60
    )
    if done.returncode != 0:
        shown = " ".join([*command, "-H 'Authorization: Bearer ...'", url])
        raise RuntimeError(f"{shown} failed ({done.returncode}): {done.stderr}")
    return parse_wrk(done.stdout)


def server_processes(server: Runner) -> list[psutil.Process]:
    """Every process of a variant's server: the runner and all it started (for Realm
    and the Serve no-op: Ray's processes, the Serve replicas, HAProxy)."""
    root = psutil.Process(server.process.pid)
    return [root, *root.children(recursive=True)]


def _is_replica(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return any("ServeReplica:" in part for part in process.cmdline())
    return False


def cpu_per_request(
    processes: list[psutil.Process],
    before: dict[int, float],
    after: dict[int, float],
    requests: int,
) -> dict[str, float | None]:
    """CPU microseconds per answered request over the load: of the whole server
    (``server``) and of its Serve replicas alone (``replicas``; None for plain
    uvicorn). CPU time is what a request costs, which the machine's other load
    distorts much less than the request rate."""
    if requests <= 0:
        return {"server": None, "replicas": None}
    spent = {pid: after[pid] - before[pid] for pid in after.keys() & before.keys()}
    replicas = [p.pid for p in processes if p.pid in spent and _is_replica(p)]
    return {
        "server": round(sum(spent.values()) / requests * 1e6, 1),
        "replicas": round(sum(spent[pid] for pid in replicas) / requests * 1e6, 1)
        if replicas
        else None,
    }


def measure(variant: str, args: argparse.Namespace, credentials: Credentials) -> dict[str, Any]:
    port = serve_app.free_port()
    harness.progress(f"{variant}: starting its server on 127.0.0.1:{port}")
    server = start_server(variant, port, credentials.runner_args(variant))
    try:
        server.wait_ready(STARTUP_TIMEOUT_S)
        token = bearer_token(port, variant, credentials)
        url = preload_and_verify(port, variant, token)
        harness.progress(
            f"{variant}: answered 200 with the value (anonymous: 401); warming up {args.warmup_s} s"
        )
        run_wrk(url, token, duration_s=args.warmup_s, connections=args.concurrency)
        duration = max(1, math.ceil(args.duration_s))
        harness.progress(f"{variant}: wrk {duration} s, {args.concurrency} connections")
        processes = server_processes(server)
        cpu_before = harness.cpu_seconds(processes)
        metrics = run_wrk(url, token, duration_s=duration, connections=args.concurrency)
        metrics["cpu_us_per_request"] = cpu_per_request(
            processes, cpu_before, harness.cpu_seconds(processes), metrics["calls"]
        )
        preload_and_verify(port, variant, token)  # still answering right after the load
    finally:
        server.stop(graceful_s=STOP_TIMEOUT_S)
    harness.progress(
        f"{variant}: {metrics['throughput_ops_s']:,.0f} req/s, p50 {metrics['p50_ms']:.2f} ms, "
        f"p99 {metrics['p99_ms']:.2f} ms, non-2xx {metrics['non_2xx']}, "
        f"socket errors {metrics['socket_errors']}, "
        f"CPU us per request {metrics['cpu_us_per_request']}"
    )
    if metrics["non_2xx"] or any(metrics["socket_errors"].values()):
        harness.progress(f"{variant}: WARNING: failed requests are not counted in req/s")
    return metrics


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(
        __doc__ or "", argv, duration_s=10.0, concurrency=32, extra=_add_flags
    )
    if args.serve is not None:
        harness.stop_niceness_sampler()  # the parent samples this runner's processes
        if args.serve == "uvicorn":
            serve_uvicorn(args.port, peer_credentials(args.peer_token_sha256))
        else:
            serve_realm(args.serve, args.port, args)
        return
    if args.quick:
        args.warmup_s = min(args.warmup_s, 1)
    load_at_start = os.getloadavg()[0]  # the machine is shared: say how busy it was
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants: {sorted(unknown)}")
    with tempfile.TemporaryDirectory(prefix="rb-auth-") as directory:
        credentials = Credentials(directory)
        metrics = {variant: measure(variant, args, credentials) for variant in variants}
    ratios, goals = {}, {}
    if "uvicorn" in metrics:
        base = metrics["uvicorn"]["throughput_ops_s"]
        for variant in ("haproxy", "python_proxy"):
            if variant in metrics:
                ratio = round(metrics[variant]["throughput_ops_s"] / base, 3)
                ratios[f"{variant}/uvicorn"] = ratio
                goals[f"{variant}/uvicorn >= {GOAL_RATIO}"] = ratio >= GOAL_RATIO
        if "serve_noop" in metrics:
            ratios["serve_noop/uvicorn"] = round(
                metrics["serve_noop"]["throughput_ops_s"] / base, 3
            )
    if "serve_noop" in metrics and "haproxy" in metrics:
        ceiling = metrics["serve_noop"]["throughput_ops_s"]
        ratios["haproxy/serve_noop"] = round(metrics["haproxy"]["throughput_ops_s"] / ceiling, 3)
        share = ratios["haproxy/serve_noop"]
        goals[f"haproxy/serve_noop >= {GOAL_CEILING}"] = share >= GOAL_CEILING
        realm_cpu = metrics["haproxy"]["cpu_us_per_request"]["replicas"]
        noop_cpu = metrics["serve_noop"]["cpu_us_per_request"]["replicas"]
        if realm_cpu and noop_cpu:
            # CPU per request of the replicas, Realm's over the no-op's (1 = no extra cost).
            ratios["replica_cpu_per_request haproxy/serve_noop"] = round(realm_cpu / noop_cpu, 3)
    for label, met in goals.items():
        ratio = ratios[label.split()[0]]
        harness.progress(f"goal {label}: {'met' if met else 'NOT MET'} ({ratio})")
    internal = ("serve", "port", "admin_password_file", "peer_token_sha256")
    params = {k: v for k, v in vars(args).items() if k not in internal}
    params |= {
        "key": KEY,
        "tool": "wrk -t1 --latency -H 'Authorization: Bearer ...'",
        "auth": AUTH,
        "realm_services": REALM_SERVICES.split(","),
        "servers_ray": "a local Ray per variant's server, also with --address",
        "realm_http_near_cache": True,
        "load_avg_1m": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
    }
    harness.write_result(
        "http_overhead",
        {"claim": CLAIM, "params": params, "variants": metrics, "ratios": ratios, "goals": goals},
    )


if __name__ == "__main__":
    main()
