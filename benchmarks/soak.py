"""Soak: mixed, paced load over HTTP and WebSocket against Realm as ``make run`` deploys it.

``python serve_app.py`` (every registered service, HAProxy ingress when there is a
binary, the SQLite store) is started here in a process group of its own, on a free
loopback port with a temporary ``REALM_DATA_DIR`` and an admin bootstrapped from
``REALM_AUTH_ADMIN_USERNAME`` + ``REALM_AUTH_ADMIN_PASSWORD_FILE`` (a random password
in a mode-600 file); its whole process tree is killed at the end.

One user (registered, logged in) drives, concurrently for ``--duration-s`` seconds,
each route at a steady rate (``--rate-scale`` multiplies them all), so the run
measures drift rather than saturation. Each route is paced open-loop: a request
starts every 1/rate seconds whatever the earlier ones do; when a route already
has ``MAX_IN_FLIGHT`` requests waiting, the slot is counted as ``shed`` instead.

  cache_get, cache_put       a bounded key set (``KEYS`` keys)
  auth_login, auth_logout    a login (argon2id) about once a second, then the
                             session it made is ended (sessions stay bounded)
  auth_me                    token checks (``GET /auth/me``)
  pubsub_publish             to one topic with ``SUBSCRIBERS`` WebSocket
                             subscribers; every delivery is counted
  queue_enqueue              no-op jobs on one queue; jobs done are read from
                             the queue's stats every window
  scheduler                  ``SCHEDULES`` interval schedules (every 1 s) whose
                             target publishes to a topic one more WebSocket
                             subscribes to: firings are counted where they land
  ledger_transfer            between the user's own two accounts, both ways
  resources_acquire/release  lease cycles on one mutex pool
  chat_send                  messages in one room the user owns
  push_send, push_inbox_ack  notifications to the user's in-app device; its
                             inbox is read and acknowledged

Every window (30 s; scaled in --quick) it records per route the calls, errors,
shed slots and p50/p99 latency, the RSS of every process of the runner's tree
(keyed by its Ray name, e.g. ``ray::ServeReplica:cache:CacheIngress``, and pid),
and the size on disk of the data dir (per file). Results:
``benchmarks/results/soak.json`` and ``soak.png`` (``soak.quick.*`` for --quick).

Verdict against the goals, with "a minute" = 60 s (``duration_s / 6`` when the run
is shorter than 6 minutes, as in --quick):
  throughput   all routes' successful calls/s in the last minute >= 0.9x the second
  rss          every Ray actor/replica process: growth from the end of the second
               minute to the end < 10%
  errors       errors / calls < 0.1%
  disk         the data dir's growth in the last minute, leaving out the ledger
               (which keeps every transfer by design), is at most half that of the
               second minute, or under 1 MiB: retention has capped it
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

import serve_app
from benchmarks import harness
from benchmarks.runner import Runner as MakeRun
from benchmarks.runner import make_run_env, serve_app_command

CLAIM = (
    "Issue (soak): mixed paced load over HTTP and WebSocket against `make run`'s deployment. "
    "Goals: throughput in the last minute >= 0.9x the second minute; RSS growth after the "
    "first 2 minutes < 10% per actor; error rate < 0.1%; disk bounded by retention."
)
#: Requests per second of each route at ``--rate-scale 1``: about 115 calls/s in all,
#: plus 500 WebSocket deliveries/s. That saturates 2 cores with the load generator
#: beside the deployment (55 slots a second shed after the warm-up), so the default
#: scale is ``DEFAULT_RATE_SCALE``: a soak measures drift, not saturation.
DEFAULT_RATE_SCALE = 0.3
RATES: dict[str, float] = {
    "cache_get": 40.0,
    "cache_put": 15.0,
    "auth_login": 1.0,  # argon2id: about a core-second here; logout follows each
    "auth_me": 20.0,
    "pubsub_publish": 5.0,  # x SUBSCRIBERS deliveries
    "queue_enqueue": 10.0,
    "ledger_transfer": 5.0,
    "resources_cycle": 5.0,  # acquire + release
    "chat_send": 5.0,
    "push_send": 2.0,
    "push_inbox_ack": 0.5,
}
MAX_IN_FLIGHT = 16
#: Routes allowed fewer: two logins to one account at once get one 429; lease cycles
#: on one mutex queue behind each other, so more would only wait longer.
IN_FLIGHT = {"auth_login": 1, "resources_cycle": 2}
KEYS = 200
SUBSCRIBERS = 100
SCHEDULES = 3
TOPIC = "soak.feed"
FIRED_TOPIC = "soak.fired"
ADMIN_USERNAME = "soak-admin"
PASSWORD = "soak: correct horse battery staple"
#: ``make run`` deploys every service; at a load average of 50+ that took minutes.
READY_WITHIN_S = 900.0
REQUEST_TIMEOUT_S = 30.0
#: Starts of the runner before giving up (see ``start_runner``).
STARTS = 3
#: Goals.
THROUGHPUT_RATIO_GOAL = 0.9
RSS_GROWTH_GOAL = 0.10
ERROR_RATE_GOAL = 0.001
DISK_FLAT_BYTES = 1 << 20
#: The services the soak drives: ``--services`` must deploy each of them.
DRIVEN = ("auth", "cache", "pubsub", "queue", "scheduler", "ledger", "resources", "chat", "push")


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rate-scale", type=float, default=DEFAULT_RATE_SCALE, help="multiplies every rate"
    )
    parser.add_argument(
        "--services",
        default=None,
        help=f"deploy only these (default: all, as `make run`); at least {','.join(DRIVEN)}",
    )


# --- the runner: `python serve_app.py` ------------------------------------------------


class Runner(MakeRun):
    """``python serve_app.py`` as ``make run`` starts it, plus a port, a data dir and an
    admin of its own (a random password in a mode-600 file)."""

    def __init__(self, work: Path, port: int, services: str | None) -> None:
        self.data_dir = work / "data"
        self.port = port
        self.admin_password = secrets.token_urlsafe(24)
        password_file = work / "admin-password"
        password_file.touch(mode=0o600)
        password_file.write_text(self.admin_password + "\n")
        env = make_run_env(
            port,
            self.data_dir,
            "realm-soak",
            REALM_AUTH_ADMIN_USERNAME=ADMIN_USERNAME,
            REALM_AUTH_ADMIN_PASSWORD_FILE=str(password_file),
        )
        args = ["--services", services] if services else []
        super().__init__(serve_app_command(args), env, log_path=work / "runner.log")


def process_label(process: psutil.Process) -> str:
    """``ray::<what>`` for Ray's processes (their title), else the program's name."""
    with contextlib.suppress(psutil.Error):
        command = process.cmdline()
        if command and command[0].startswith("ray::"):
            # A worker's title names the method it runs now (ray::Class.method): drop it.
            return command[0].strip().split(".", 1)[0]
        return process.name()
    return "?"


def rss_by_process(runner: Runner) -> dict[str, int]:
    rss = {}
    for process in runner.tree():
        with contextlib.suppress(psutil.Error):
            rss[f"{process_label(process)} [{process.pid}]"] = process.memory_info().rss
    return rss


def disk_by_file(data_dir: Path) -> dict[str, int]:
    sizes = {}
    for path in data_dir.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                sizes[str(path.relative_to(data_dir))] = path.stat().st_size
    return sizes


# --- the load side -------------------------------------------------------------------


@dataclass
class RouteWindow:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    shed: int = 0

    def metrics(self, window_s: float) -> dict[str, Any]:
        calls = len(self.latencies_s)
        ordered = sorted(self.latencies_s)

        def pct(q: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000, 2)

        return {
            "calls": calls,
            "errors": self.errors,
            "shed": self.shed,
            "ok_per_s": round((calls - self.errors) / window_s, 2),
            "p50_ms": pct(50),
            "p99_ms": pct(99),
        }


class Tally:
    """What happened in the current window, and counters over the whole run."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteWindow] = defaultdict(RouteWindow)
        self.error_samples: dict[str, list[str]] = defaultdict(list)
        self.delivered = 0  # pub/sub messages received over all subscribers
        self.fired = 0  # scheduler firings seen on FIRED_TOPIC
        self.published_ok = 0
        self.ws_closes: list[str] = []

    def record(self, route: str, latency_s: float, error: str | None) -> None:
        window = self.routes[route]
        window.latencies_s.append(latency_s)
        if error is not None:
            window.errors += 1
            if len(self.error_samples[route]) < 5:
                self.error_samples[route].append(error[:300])

    def roll(self, window_s: float) -> dict[str, Any]:
        routes, self.routes = self.routes, defaultdict(RouteWindow)
        return {name: w.metrics(window_s) for name, w in sorted(routes.items())}


Op = Callable[[], Awaitable[None]]


class Refused(Exception):
    """A route answered with a status it should not have."""


def expect(answer: httpx.Response, *codes: int) -> httpx.Response:
    if answer.status_code not in (codes or (200,)):
        raise Refused(
            f"{answer.request.method} {answer.request.url.path}: "
            f"{answer.status_code} {answer.text[:200]}"
        )
    return answer


async def paced(route: str, rate: float, op: Op, tally: Tally, stop_at: float) -> None:
    """Start ``op`` every 1/rate s until ``stop_at`` (open loop, at most MAX_IN_FLIGHT)."""
    in_flight: set[asyncio.Task[None]] = set()
    limit = IN_FLIGHT.get(route, MAX_IN_FLIGHT)

    async def one() -> None:
        started = time.perf_counter()
        error = None
        try:
            await asyncio.wait_for(op(), REQUEST_TIMEOUT_S)
        except Exception as failed:  # every failure is counted, not raised
            error = f"{type(failed).__name__}: {failed}"
        tally.record(route, time.perf_counter() - started, error)

    interval = 1.0 / rate
    next_at = time.monotonic() + interval * (hash(route) % 1000) / 1000  # spread the starts
    while next_at < stop_at:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if len(in_flight) >= limit:
            tally.routes[route].shed += 1
        else:
            task = asyncio.create_task(one())
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        next_at += interval
    if in_flight:
        await asyncio.wait(in_flight, timeout=REQUEST_TIMEOUT_S + 5)


class Soak:
    def __init__(self, base_url: str, args: argparse.Namespace) -> None:
        self.ws_url = base_url.replace("http://", "ws://")
        self.args = args
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=REQUEST_TIMEOUT_S,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
        )
        self.tally = Tally()
        self.username = f"soak-{uuid.uuid4().hex[:10]}"
        self.headers: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self.sequence = 0
        self.sockets: list[Any] = []
        self.readers: list[asyncio.Task[None]] = []

    def next_id(self, prefix: str) -> str:
        self.sequence += 1
        return f"{prefix}-{self.sequence}-{uuid.uuid4().hex[:8]}"

    async def call(self, method: str, path: str, *codes: int, **kw: Any) -> Any:
        kw.setdefault("headers", self.headers)
        answer = expect(await self.http.request(method, path, **kw), *codes)
        return answer.json() if answer.content else None

    # -- setup ------------------------------------------------------------------------

    async def until_up(self) -> None:
        """Registration and login, retried while routes finish coming up."""
        deadline = time.monotonic() + 120
        credentials = {"username": self.username, "password": PASSWORD}
        while True:
            try:
                await self.call("POST", "/auth/register", 201, json=credentials, headers={})
                break
            except (Refused, httpx.HTTPError) as failed:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot register: {failed}") from failed
                await asyncio.sleep(1.0)
        login = await self.call("POST", "/auth/login", 200, json=credentials, headers={})
        self.headers = {"authorization": f"Bearer {login['token']}"}
        admin = {"username": ADMIN_USERNAME, "password": self.args.admin_password}
        await self.call("POST", "/auth/login", 200, json=admin, headers={})  # bootstrapped
        self.ids["user"] = (await self.call("GET", "/auth/me"))["id"]

    async def setup(self) -> None:
        await self.until_up()
        await self.call("PUT", "/queue/soak", 200, 201)
        accounts = [{"id": self.next_id("soak-acct"), "ledger": 1} for _ in range(2)]
        made = await self.call("POST", "/ledger/accounts", 200, 201, json={"accounts": accounts})
        if any(one.get("error") for one in made["results"]):
            raise RuntimeError(f"ledger accounts refused: {made}")
        self.ids["accounts"] = json.dumps([a["id"] for a in accounts])
        await self.call(
            "PUT", "/resources/pools/soak", 200, 201, json={"kind": "mutex", "ttl_s": 30}
        )
        room = await self.call("POST", "/chat/rooms", 201, json={"kind": "public", "name": "soak"})
        self.ids["room"] = room["id"]
        device = await self.call(
            "POST",
            "/push/devices",
            200,
            201,
            json={"platform": "inapp", "token": f"soak-{uuid.uuid4().hex[:8]}", "app": "soak"},
        )
        self.ids["device"] = device["id"]
        for i in range(KEYS):  # the key set exists before the gets begin
            await self.call("PUT", f"/cache/keys/soak:{i}", 200, json={"value": {"i": i}})
        await self.subscribe()
        for i in range(SCHEDULES):
            await self.call(
                "POST",
                "/scheduler/schedules",
                201,
                json={
                    "every_s": 1,
                    "name": f"soak-{i}",
                    "target": {"type": "pubsub", "topic": FIRED_TOPIC, "payload": {"i": i}},
                },
            )

    async def subscribe(self) -> None:
        from websockets.asyncio.client import connect

        async def one(pattern: str, counter: str) -> None:
            ws = await connect(
                f"{self.ws_url}/pubsub/ws",
                additional_headers=self.headers,
                compression=None,
                max_size=None,
                open_timeout=120,
            )
            await ws.send(
                orjson.dumps({"type": "subscribe", "id": "s", "pattern": pattern}).decode()
            )
            answer = orjson.loads(await ws.recv())
            if answer.get("type") != "subscribed":
                raise RuntimeError(f"subscribe refused: {answer}")
            self.sockets.append(ws)
            self.readers.append(asyncio.create_task(self.read(ws, counter)))

        for start in range(0, SUBSCRIBERS, 20):  # in batches: the replica admits them
            await asyncio.gather(*(one(TOPIC, "delivered") for _ in range(start, start + 20)))
        await one(FIRED_TOPIC, "fired")

    async def read(self, ws: Any, counter: str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in ws:
                for line in raw.split("\n"):
                    if orjson.loads(line).get("type") == "message":
                        setattr(self.tally, counter, getattr(self.tally, counter) + 1)
        except ConnectionClosed as closed:
            self.tally.ws_closes.append(f"{counter}: {closed}")

    # -- the routes ---------------------------------------------------------------------

    def ops(self) -> dict[str, Op]:
        accounts = json.loads(self.ids["accounts"])
        draw = secrets.SystemRandom()

        async def cache_get() -> None:
            await self.call("GET", f"/cache/keys/soak:{draw.randrange(KEYS)}")

        async def cache_put() -> None:
            i = draw.randrange(KEYS)
            await self.call(
                "PUT", f"/cache/keys/soak:{i}", json={"value": {"i": i, "t": time.time()}}
            )

        async def auth_login() -> None:
            body = {"username": self.username, "password": PASSWORD}
            login = await self.call("POST", "/auth/login", 200, json=body, headers={})
            started = time.perf_counter()
            error = None
            try:
                await self.call(
                    "POST",
                    "/auth/logout",
                    200,
                    204,
                    headers={"authorization": f"Bearer {login['token']}"},
                )
            except Exception as failed:  # counted under its own route
                error = f"{type(failed).__name__}: {failed}"
            self.tally.record("auth_logout", time.perf_counter() - started, error)

        async def auth_me() -> None:
            await self.call("GET", "/auth/me")

        async def pubsub_publish() -> None:
            await self.call(
                "POST", "/pubsub/publish", json={"topic": TOPIC, "data": {"t": time.time()}}
            )
            self.tally.published_ok += 1

        async def queue_enqueue() -> None:
            await self.call(
                "POST", "/queue/soak/jobs", 201, json={"handler": "actors.queue.handlers:noop"}
            )

        async def ledger_transfer() -> None:
            debit, credit = draw.sample(accounts, 2)
            body = {
                "id": self.next_id("soak-tx"),
                "debit_account_id": debit,
                "credit_account_id": credit,
                "amount": 1 + draw.randrange(100),
                "ledger": 1,
            }
            await self.call("POST", "/ledger/transfers", 201, json=body)

        async def resources_cycle() -> None:
            started = time.perf_counter()
            lease = await self.call("POST", "/resources/pools/soak/acquire", json={"timeout_s": 20})
            self.tally.record("resources_acquire", time.perf_counter() - started, None)
            await self.call("DELETE", f"/resources/pools/soak/leases/{lease['token']}", 200, 204)

        async def chat_send() -> None:
            await self.call(
                "POST",
                f"/chat/rooms/{self.ids['room']}/messages",
                201,
                json={"text": f"soak {time.time():.3f}", "client_id": self.next_id("c")},
            )

        async def push_send() -> None:
            body = {"to": {"device": self.ids["device"]}, "title": "soak", "body": "tick"}
            await self.call("POST", "/push/send", 202, json=body)

        async def push_inbox_ack() -> None:
            device = self.ids["device"]
            inbox = await self.call("GET", f"/push/devices/{device}/inbox")
            seqs = [message["seq"] for message in inbox["messages"]]
            if seqs:
                await self.call(
                    "POST", f"/push/devices/{device}/inbox/ack", 200, 204, json={"seq": max(seqs)}
                )

        return {
            "cache_get": cache_get,
            "cache_put": cache_put,
            "auth_login": auth_login,
            "auth_me": auth_me,
            "pubsub_publish": pubsub_publish,
            "queue_enqueue": queue_enqueue,
            "ledger_transfer": ledger_transfer,
            "resources_cycle": resources_cycle,
            "chat_send": chat_send,
            "push_send": push_send,
            "push_inbox_ack": push_inbox_ack,
        }

    async def queue_completed(self) -> int | None:
        with contextlib.suppress(Exception):
            stats = await self.call("GET", "/queue/soak/stats")
            return int(stats["completed"])
        return None

    async def close(self) -> None:
        for ws in self.sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        for reader in self.readers:
            reader.cancel()
        await self.http.aclose()


# --- the run -------------------------------------------------------------------------


def minute_of(duration_s: float) -> float:
    """What "a minute" means for the verdict: 60 s, or a sixth of a shorter run."""
    return 60.0 if duration_s >= 360 else duration_s / 6


async def drive(soak: Soak, runner: Runner, args: argparse.Namespace) -> list[dict[str, Any]]:
    duration_s = args.duration_s
    window_s = min(30.0, minute_of(duration_s) / 2)
    await soak.setup()
    harness.progress(
        f"set up: {SUBSCRIBERS} subscribers, {SCHEDULES} schedules; load for {duration_s:g} s, "
        f"a window every {window_s:g} s"
    )
    started = time.monotonic()
    stop_at = started + duration_s
    ops = soak.ops()
    load = [
        asyncio.create_task(paced(name, RATES[name] * args.rate_scale, op, soak.tally, stop_at))
        for name, op in ops.items()
    ]
    windows: list[dict[str, Any]] = []
    last_delivered = last_fired = last_published = 0
    last_completed = await soak.queue_completed()
    rolled = started
    while rolled < stop_at - window_s / 2:
        # The next tick on the grid (a loaded machine may have missed one).
        tick = started + window_s * (1 + (time.monotonic() - started) // window_s)
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
        now = time.monotonic()
        length = now - rolled
        routes = soak.tally.roll(length)  # rates over the window as it really was
        rolled = now
        completed = await soak.queue_completed()
        rss = await asyncio.to_thread(rss_by_process, runner)
        disk = await asyncio.to_thread(disk_by_file, runner.data_dir)
        t = soak.tally
        disk_bytes = sum(disk.values())
        load_average = [round(x, 2) for x in os.getloadavg()]
        window: dict[str, Any] = {
            "t_s": round(now - started, 1),
            "window_s": round(length, 2),
            "routes": routes,
            "deliveries": t.delivered - last_delivered,
            "deliveries_expected": (t.published_ok - last_published) * SUBSCRIBERS,
            "firings": t.fired - last_fired,
            "firings_expected": round(SCHEDULES * length),
            "jobs_done": (
                completed - last_completed
                if completed is not None and last_completed is not None
                else None
            ),
            "rss_bytes": rss,
            "disk_bytes": disk_bytes,
            "disk_files": disk,
            "load_average": load_average,
        }
        last_delivered, last_fired, last_published = t.delivered, t.fired, t.published_ok
        last_completed = completed
        windows.append(window)
        calls = sum(r["calls"] for r in routes.values())
        errors = sum(r["errors"] for r in routes.values())
        shed = sum(r["shed"] for r in routes.values())
        ok = sum(r["ok_per_s"] for r in routes.values())
        harness.progress(
            f"t={window['t_s']:>6.1f}s {ok:7.1f} ok/s, {errors}/{calls} errors, {shed} shed, "
            f"deliveries {window['deliveries']}/{window['deliveries_expected']}, "
            f"firings {window['firings']}, jobs done {window['jobs_done']}, "
            f"RSS {sum(rss.values()) / 2**20:,.0f} MiB, disk {disk_bytes / 2**20:,.1f} MiB, "
            f"load {load_average[0]}"
        )
    await asyncio.gather(*load)
    return windows


def verdict(
    windows: list[dict[str, Any]], duration_s: float, rates: dict[str, float]
) -> dict[str, Any]:
    minute = minute_of(duration_s)

    # A window is stamped when it ends (a little late): half a window of slack.
    slack = min(30.0, minute / 2) / 2

    def within(lo: float, hi: float) -> list[dict[str, Any]]:
        return [w for w in windows if lo + slack < w["t_s"] <= hi + slack]

    second = within(minute, 2 * minute)
    last = within(duration_s - minute, duration_s)

    def ok_per_s(ws: list[dict[str, Any]]) -> float:
        return sum(r["ok_per_s"] for w in ws for r in w["routes"].values()) / max(1, len(ws))

    def per_route(ws: list[dict[str, Any]]) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for w in ws:
            for name, r in w["routes"].items():
                out[name] += r["ok_per_s"] / len(ws)
        return out

    tp_second, tp_last = ok_per_s(second), ok_per_s(last)
    # auth_logout and resources_acquire are recorded beside the calls that make them.
    offered = sum(rates.values()) + rates["auth_login"] + rates["resources_cycle"]
    tp_ratio = tp_last / tp_second if tp_second else 0.0
    second_routes, last_routes = per_route(second), per_route(last)
    route_ratios = {
        name: round(last_routes.get(name, 0.0) / value, 3)
        for name, value in sorted(second_routes.items())
        if value
    }

    # RSS: every Ray actor/replica process alive at the end of the second minute and at the end.
    base = second[-1]["rss_bytes"] if second else windows[0]["rss_bytes"]
    end = windows[-1]["rss_bytes"]
    base_t = second[-1]["t_s"] if second else windows[0]["t_s"]
    span_min = max(1e-9, (windows[-1]["t_s"] - base_t) / 60)
    growth: dict[str, dict[str, float]] = {}
    others: dict[str, dict[str, float]] = {}
    for key, before in base.items():
        if key not in end or key.startswith("ray::IDLE"):
            continue
        # Actors and replicas are judged; Ray's own daemons (gcs_server, raylet), HAProxy
        # and the runner are reported beside them.
        (growth if key.startswith("ray::") else others)[key] = {
            "rss_mib_before": round(before / 2**20, 1),
            "rss_mib_end": round(end[key] / 2**20, 1),
            "growth": round(end[key] / before - 1, 4),
            "mib_per_min": round((end[key] - before) / 2**20 / span_min, 2),
        }
    grown = {k: v for k, v in growth.items() if v["growth"] >= RSS_GROWTH_GOAL}
    gone = sorted(k for k in base if k.startswith("ray::") and k not in end)

    calls = sum(r["calls"] for w in windows for r in w["routes"].values())
    errors = sum(r["errors"] for w in windows for r in w["routes"].values())
    shed = sum(r["shed"] for w in windows for r in w["routes"].values())
    error_rate = errors / calls if calls else 1.0

    # Disk: growth per window of everything but the ledger's files.
    def disk(w: dict[str, Any], ledger: bool) -> int:
        return sum(v for k, v in w["disk_files"].items() if ("ledger" in k) == ledger)

    def grew(ws: list[dict[str, Any]], before: dict[str, Any] | None, ledger: bool) -> int:
        if not ws:
            return 0
        start = disk(before, ledger) if before else disk(ws[0], ledger)
        return disk(ws[-1], ledger) - start

    def preceding(ws: list[dict[str, Any]]) -> dict[str, Any] | None:
        i = windows.index(ws[0]) if ws else 0
        return windows[i - 1] if i > 0 else None

    disk_second = grew(second, preceding(second), False)
    disk_last = grew(last, preceding(last), False)
    ledger_last = grew(last, preceding(last), True)
    transfers_last = sum(w["routes"].get("ledger_transfer", {}).get("calls", 0) for w in last)
    disk_ok = disk_last <= max(DISK_FLAT_BYTES, 0.5 * disk_second)
    return {
        "minute_s": minute,
        "throughput": {
            "second_minute_ok_per_s": round(tp_second, 2),
            "last_minute_ok_per_s": round(tp_last, 2),
            "ratio": round(tp_ratio, 3),
            # Not a goal: what the routes offered; far above what was served, the
            # deployment was saturated and the ratio measures that, not drift.
            "offered_per_s": round(offered, 2),
            "goal": THROUGHPUT_RATIO_GOAL,
            "met": tp_ratio >= THROUGHPUT_RATIO_GOAL,
            "per_route_ratio": route_ratios,
        },
        "rss": {
            "goal_growth_below": RSS_GROWTH_GOAL,
            "from_t_s": base_t,
            "met": not grown and bool(growth),
            "grown": grown,
            "processes_gone": gone,
            "per_process": growth,
            "other_processes": others,
        },
        "errors": {
            "calls": calls,
            "errors": errors,
            "rate": round(error_rate, 6),
            "goal_below": ERROR_RATE_GOAL,
            "met": error_rate < ERROR_RATE_GOAL,
            # Not a goal: slots not started because the route had its limit in flight.
            "shed": shed,
            "shed_share_of_slots": round(shed / (calls + shed), 4) if calls + shed else 0.0,
        },
        "disk": {
            "end_bytes": windows[-1]["disk_bytes"],
            "growth_second_minute_bytes_without_ledger": disk_second,
            "growth_last_minute_bytes_without_ledger": disk_last,
            "ledger_growth_last_minute_bytes": ledger_last,
            "ledger_bytes_per_transfer": round(ledger_last / transfers_last, 1)
            if transfers_last
            else None,
            "met": disk_ok,
        },
    }


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = doc["windows"]
    t = [w["t_s"] for w in windows]
    fig, (rss_ax, tp_ax) = plt.subplots(2, 1, figsize=(11, 9), layout="constrained", sharex=True)
    keys = {k for w in windows for k in w["rss_bytes"]}
    biggest = sorted(keys, key=lambda k: -max(w["rss_bytes"].get(k, 0) for w in windows))[:14]
    for key in biggest:
        rss_ax.plot(
            t,
            [w["rss_bytes"].get(key, float("nan")) / 2**20 for w in windows],
            label=key[:60],
            linewidth=1,
        )
    rss_ax.set_ylabel("RSS (MiB)")
    rss_ax.legend(fontsize=6, loc="upper left", ncol=2)
    rss_ax.set_title(f"RSS per process (the {len(biggest)} largest of {len(keys)})", fontsize=9)
    routes = sorted({name for w in windows for name in w["routes"]})
    for name in routes:
        tp_ax.plot(
            t,
            [w["routes"].get(name, {}).get("ok_per_s", 0) for w in windows],
            label=name,
            linewidth=1,
        )
    tp_ax.plot(
        t,
        [w["deliveries"] / w["window_s"] / SUBSCRIBERS for w in windows],
        "k--",
        label=f"deliveries/s / {SUBSCRIBERS}",
        linewidth=1,
    )
    tp_ax.set_ylabel("successful calls/s")
    tp_ax.set_xlabel("seconds into the load")
    tp_ax.legend(fontsize=6, loc="upper left", ncol=3)
    v = doc["verdict"]
    tp_ax.set_title(
        f"throughput last/second minute {v['throughput']['ratio']}, errors "
        f"{v['errors']['rate']:.4%}, RSS grown >10%: {len(v['rss']['grown'])}, disk "
        f"{'bounded' if v['disk']['met'] else 'growing'}",
        fontsize=9,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def start_runner(work: Path, services: str | None) -> Runner:
    """A ready runner. Ray gives its raylet 30 s to register, fixed, which a loaded
    machine can miss: a runner that exits before it is ready is started again."""
    for attempt in range(1, STARTS + 1):
        port = serve_app.free_port()
        harness.progress(f"starting `python serve_app.py` on 127.0.0.1:{port}, data in {work}")
        started = Runner(work, port, services)
        try:
            started.wait_ready(READY_WITHIN_S)
            return started
        except RuntimeError:
            started.stop()
            if attempt == STARTS:
                print("the runner said:\n" + started.said(40), file=sys.stderr)
                shutil.rmtree(work, ignore_errors=True)
                raise
            harness.progress(f"the runner exited before it was ready ({started.lines[-1:]}); again")
            shutil.rmtree(started.data_dir, ignore_errors=True)
        except BaseException:
            started.stop()
            shutil.rmtree(work, ignore_errors=True)
            raise
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__ or "", argv, duration_s=600.0, extra=_add_flags)
    if args.quick:  # parse_args shortens --quick to a blink; a soak's quick run is a minute
        args.duration_s = 60.0
    missing = [name for name in DRIVEN if args.services and name not in args.services.split(",")]
    if missing:
        raise SystemExit(f"--services leaves out {', '.join(missing)}, which the soak drives")
    work = Path(tempfile.mkdtemp(prefix="realm-soak-"))
    started = time.monotonic()
    stack = start_runner(work, args.services)
    args.admin_password = stack.admin_password
    try:
        startup_s = time.monotonic() - started
        harness.progress(f"ready after {startup_s:.0f} s, {len(stack.tree())} processes")
        niceness = sorted({p.nice() for p in stack.tree() if process_label(p).startswith("ray::")})
        soak = Soak(f"http://127.0.0.1:{stack.port}", args)

        async def run() -> list[dict[str, Any]]:
            try:
                return await drive(soak, stack, args)
            finally:
                await soak.close()

        windows = asyncio.run(run())
        tally = soak.tally
    except BaseException:
        print("the runner said:\n" + stack.said(40), file=sys.stderr)
        raise
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    del args.admin_password
    rates = {name: rate * args.rate_scale for name, rate in RATES.items()}
    result = verdict(windows, args.duration_s, rates)
    doc = {
        "name": "soak",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": harness.machine_info(),
        "niceness": {"ray_workers": niceness, "driver": [os.getpriority(os.PRIO_PROCESS, 0)]},
        "claim": CLAIM,
        "params": vars(args)
        | {
            "rates_per_s": RATES,
            "subscribers": SUBSCRIBERS,
            "schedules": SCHEDULES,
            "keys": KEYS,
            "max_in_flight": MAX_IN_FLIGHT,
        },
        "startup_s": round(startup_s, 1),
        "verdict": result,
        "totals": {
            "deliveries": tally.delivered,
            "deliveries_expected": tally.published_ok * SUBSCRIBERS,
            "firings": tally.fired,
            "websocket_closes": tally.ws_closes[:20],
            "error_samples": dict(tally.error_samples),
        },
        "windows": windows,
    }
    stem = "soak.quick" if args.quick else "soak"
    path = harness.write_json(doc, stem)
    plot(doc, path.with_suffix(".png"))
    harness.progress(f"wrote {path} and .png")
    print_verdict(doc)


def print_verdict(doc: dict[str, Any]) -> None:
    v = doc["verdict"]
    tp, rss, err, disk = v["throughput"], v["rss"], v["errors"], v["disk"]

    def mark(met: bool) -> str:
        return "met" if met else "NOT MET"

    print(
        f"Soak verdict ({doc['params']['duration_s']:g} s, a minute = {v['minute_s']:g} s, "
        f"load average at the end {doc['windows'][-1]['load_average']}):"
    )
    print(
        f"  throughput  last/second minute {tp['last_minute_ok_per_s']}/"
        f"{tp['second_minute_ok_per_s']} ok/s = {tp['ratio']} (>= {tp['goal']}): {mark(tp['met'])}"
    )
    if tp["last_minute_ok_per_s"] < 0.9 * tp["offered_per_s"]:
        print(
            f"              (offered {tp['offered_per_s']} calls/s: the deployment was saturated, "
            "so this measures saturation, not drift; lower --rate-scale)"
        )
    print(
        f"  RSS         {len(rss['grown'])} of {len(rss['per_process'])} Ray processes grew "
        f">= {rss['goal_growth_below']:.0%} after t={rss['from_t_s']} s: {mark(rss['met'])}"
    )
    for key, g in sorted(rss["grown"].items(), key=lambda kv: -kv[1]["growth"]):
        print(
            f"              {key}: {g['rss_mib_before']} -> {g['rss_mib_end']} MiB "
            f"({g['growth']:+.1%}, {g['mib_per_min']} MiB/min)"
        )
    print(
        f"  errors      {err['errors']}/{err['calls']} = {err['rate']:.4%} "
        f"(< {err['goal_below']:.1%}): {mark(err['met'])}; {err['shed']} slots shed "
        f"({err['shed_share_of_slots']:.1%}: the route had its limit in flight)"
    )
    print(
        f"  disk        {disk['end_bytes'] / 2**20:.1f} MiB at the end; growth without the "
        f"ledger {disk['growth_second_minute_bytes_without_ledger'] / 2**10:.0f} KiB in the "
        f"second minute, {disk['growth_last_minute_bytes_without_ledger'] / 2**10:.0f} KiB in "
        f"the last; ledger {disk['ledger_bytes_per_transfer']} B/transfer: {mark(disk['met'])}"
    )


if __name__ == "__main__":
    main()
