"""Pub/sub fan-out: one publisher, 1,000 WebSocket subscribers, against Redis and NATS.

Peers, each with ``--subscribers`` (1,000) subscriber connections and one
publisher connection, all in this process on one asyncio loop:
  realm   Serve as ``make run`` deploys it (every service, HAProxy ingress when
          there is a binary, SQLite store); a user registered and logged in
          through /auth; each subscriber a WebSocket to /pubsub/ws (websockets'
          asyncio client, compression off) sending one ``subscribe`` frame; the
          publisher a WebSocket sending ``publish`` frames (acknowledged once
          the message is durable; the acks are read, not awaited per publish)
  redis   redis-py asyncio: one connection per subscriber (SUBSCRIBE or
          PSUBSCRIBE), PUBLISH from one more connection, awaited per publish
  nats    nats-py: one connection per subscriber, one subscription on each
          (so the server writes each message once per socket, as the others
          do), publishing from one more connection

Scenarios: ``topic`` (everyone subscribes to ``bench.x``) and ``wildcard``
(everyone subscribes to ``bench.*``; Redis: PSUBSCRIBE ``bench.*``). The
publisher always publishes to ``bench.x``. Each message's data is
``{"i": n, "t": <time.time() just before it was sent>}``; a receiver takes
``time.time() - t`` as its publish->receive latency (one process, one clock).

Modes, per peer and scenario:
  paced      ``--rate`` messages/s for ``--duration-s``, the same rate for every
             peer; then up to ``--drain-s`` for the last to arrive. The
             latency goal is judged here.
  flat_out   as fast as the slowest subscriber keeps up: the publisher sends
             message n only once every subscriber has received message
             n - ``--window`` (a closed loop, so no peer's buffers overflow
             and no subscriber is dropped), for ``--duration-s``.

delivered/s = messages received by all subscribers together / (last receipt -
first publish). In flat_out the latency is the window's queueing (about
window / messages per second) by construction; the paced figures are the path.
Goals (issue 3): p99 <= 200 ms (judged on paced, nothing lost); delivered/s >=
0.5 x Redis (judged on flat_out, where delivered/s is not set by the publish
rate).

Every variant runs ``--rounds`` times, the peers taking turns within each
scenario and mode (Ray and Serve stay up, idle, while Redis and NATS run), so
load from anything else on the shared machine falls on all of them alike; the
median round is reported, with every round's figures. Each variant also
records the CPU time its processes used per delivered message (from /proc):
this process (the 1,000 clients and the publisher), and the servers (Realm:
the pub/sub replica, the broker actors, HAProxy; Redis: redis-server; NATS:
nats-server; those two are shared with anything else using them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

import serve_app
from benchmarks import harness  # sets loopback-only Ray before ray is imported
from benchmarks.fanout import (
    Tally,
    in_batches,
    median_round,
    raise_fd_limit,
    run_mode,
    summarize,
)

CLAIM = (
    "Issue 3 (pub/sub): one publisher, 1,000 WebSocket subscribers on one topic and on a "
    "wildcard; delivered messages/s and publish->receive p50/p99 against Redis pub/sub "
    "(redis-py) and NATS (nats-py). Goals (issue 14): p99 <= 100 ms; delivered/s >= 1 x Redis."
)
NAMESPACE = "realm-bench-pubsub"
TOPIC = "bench.x"
SCENARIOS = {"topic": "bench.x", "wildcard": "bench.*"}
PEERS = ("realm", "redis", "nats")
GOAL_P99_MS = 100.0
GOAL_RATIO = 1.0


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subscribers", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=5.0, help="paced: messages/s published")
    parser.add_argument("--window", type=int, default=20, help="flat_out: messages ahead")
    parser.add_argument("--drain-s", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3, help="the median round is reported")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--modes", default="paced,flat_out")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument(
        "--redis-listen", action="store_true", help="receive with PubSub.listen() instead"
    )
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")


# --- CPU accounting: where the time goes, per delivered message ----------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def _cpu_s(pid: int) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    return 0.0


def server_processes(peer: str) -> dict[str, list[int]]:
    """The processes that serve ``peer``'s messages, by role (Realm's are this process's)."""
    if peer == "realm":
        roles = {
            "pubsub_replica": "ServeReplica:pubsub",
            "brokers": "_BrokerProcess",
            "haproxy": "haproxy",
        }
        mine = _descendants(os.getpid())
        return {r: [p for p in mine if key in _cmdline(p)] for r, key in roles.items()}
    name = {"redis": "redis-server", "nats": "nats-server"}[peer]
    pids = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
    return {name: [p for p in pids if _cmdline(p).split(" ")[0].endswith(name)]}


class CpuMeter:
    """CPU seconds used by the benchmark process and the peer's servers over a run."""

    def __init__(self, peer: str) -> None:
        self.roles = server_processes(peer) | {"bench_client": [os.getpid()]}
        self.start = self._now()

    def _now(self) -> dict[str, float]:
        return {role: sum(_cpu_s(p) for p in pids) for role, pids in self.roles.items()}

    def per_message_us(self, delivered: int) -> dict[str, float]:
        end = self._now()
        return {
            role: round((end[role] - self.start[role]) / max(delivered, 1) * 1e6, 1)
            for role in self.roles
        }


# --- peers ----------------------------------------------------------------------------------


class Peer:
    """Subscribers that feed ``tally.receive`` with each message's data, and a publisher."""

    name = ""

    async def start(self, pattern: str, n: int, tally: Tally) -> None:
        raise NotImplementedError

    async def publish(self, data: bytes) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def notes(self) -> dict[str, Any]:
        return {}


class RealmPeer(Peer):
    name = "realm"

    def __init__(self, base_url: str, token: str) -> None:
        self.url = base_url.replace("http://", "ws://") + "/pubsub/ws"
        self.headers = {"authorization": f"Bearer {token}"}
        self.subscribers: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.publisher: Any = None
        self.acks = 0
        self.errors: list[Any] = []
        self.closes: list[Any] = []

    async def _connect(self) -> Any:
        from websockets.asyncio.client import connect

        return await connect(
            self.url,
            additional_headers=self.headers,
            compression=None,
            max_size=None,
            ping_interval=None,
            open_timeout=60,
        )

    async def start(self, pattern: str, n: int, tally: Tally) -> None:
        async def subscribe(i: int) -> Any:
            ws = await self._connect()
            await ws.send(
                orjson.dumps({"type": "subscribe", "id": "s", "pattern": pattern}).decode()
            )
            answer = orjson.loads(await ws.recv())  # nothing else is sent before it
            if answer.get("type") != "subscribed":
                raise RuntimeError(f"subscribe refused: {answer}")
            return ws

        self.subscribers = await in_batches(n, subscribe)
        self.tasks = [asyncio.create_task(self._receive(ws, tally)) for ws in self.subscribers]
        self.publisher = await self._connect()
        self.tasks.append(asyncio.create_task(self._acks(self.publisher)))

    async def _receive(self, ws: Any, tally: Tally) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in ws:
                for line in raw.split("\n"):  # a frame carries one or more messages
                    frame = orjson.loads(line)
                    if frame["type"] == "message":
                        tally.receive(frame["data"])
                    else:
                        self.errors.append(frame)
        except ConnectionClosed as closed:
            self.closes.append((closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else None)

    async def _acks(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                for line in raw.split("\n"):
                    frame = orjson.loads(line)
                    if frame["type"] == "published":
                        self.acks += 1
                    else:
                        self.errors.append(frame)

    async def publish(self, data: bytes) -> None:
        await self.publisher.send(
            b'{"type":"publish","topic":"' + TOPIC.encode() + b'","data":' + data + b"}", text=True
        )

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await in_batches(len(self.subscribers), lambda i: self.subscribers[i].close())
        if self.publisher is not None:
            await self.publisher.close()

    def notes(self) -> dict[str, Any]:
        return {
            "publish_acks": self.acks,
            "error_frames": self.errors[:5],
            "closed_early": len(self.closes),
            "close_codes": sorted({str(c) for c in self.closes})[:5],
        }


class RedisPeer(Peer):
    name = "redis"

    def __init__(self, url: str, *, listen: bool = False) -> None:
        self.url = url
        self.listen = listen
        self.subscribers: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, pattern: str, n: int, tally: Tally) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(self.url, max_connections=n + 8)
        plain = "*" not in pattern
        subscribed = [asyncio.Event() for _ in range(n)]

        async def subscriber(i: int) -> Any:
            pubsub = self.client.pubsub()
            if plain:
                await pubsub.subscribe(pattern)
            else:
                await pubsub.psubscribe(pattern)
            return pubsub

        self.subscribers = await in_batches(n, subscriber)
        self.tasks = [
            asyncio.create_task(self._receive(p, tally, subscribed[i]))
            for i, p in enumerate(self.subscribers)
        ]
        await asyncio.gather(*(e.wait() for e in subscribed))

    async def _receive(self, pubsub: Any, tally: Tally, subscribed: asyncio.Event) -> None:
        if self.listen:  # the library's own loop, for comparison (--redis-listen)
            async for message in pubsub.listen():
                if message["type"] in ("message", "pmessage"):
                    tally.receive(orjson.loads(message["data"]))
                elif message["type"] in ("subscribe", "psubscribe"):
                    subscribed.set()
        # parse_response is what listen() awaits, without its handler dispatch.
        while True:
            response = await pubsub.parse_response(block=True)
            kind = response[0]
            if kind == b"message" or kind == b"pmessage":
                tally.receive(orjson.loads(response[-1]))
            elif kind == b"subscribe" or kind == b"psubscribe":
                subscribed.set()

    async def publish(self, data: bytes) -> None:
        await self.client.publish(TOPIC, data)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await in_batches(len(self.subscribers), lambda i: self.subscribers[i].aclose())
        await self.client.aclose()


class NatsPeer(Peer):
    name = "nats"

    def __init__(self, url: str) -> None:
        self.url = url
        self.connections: list[Any] = []
        self.publisher: Any = None

    async def start(self, pattern: str, n: int, tally: Tally) -> None:
        import nats

        async def on_message(msg: Any) -> None:
            tally.receive(orjson.loads(msg.data))

        async def subscriber(i: int) -> Any:
            nc = await nats.connect(self.url, allow_reconnect=False, name=f"bench-sub-{i}")
            await nc.subscribe(pattern, cb=on_message)
            await nc.flush()  # the server has the subscription
            return nc

        self.connections = await in_batches(n, subscriber)
        self.publisher = await nats.connect(self.url, allow_reconnect=False, name="bench-pub")

    async def publish(self, data: bytes) -> None:
        await self.publisher.publish(TOPIC, data)

    async def stop(self) -> None:
        await in_batches(len(self.connections), lambda i: self.connections[i].close())
        if self.publisher is not None:
            await self.publisher.close()


# --- runs -----------------------------------------------------------------------------------


async def run_variant(
    peer: Peer, scenario: str, mode: str, args: argparse.Namespace
) -> dict[str, Any]:
    pattern = SCENARIOS[scenario]
    tally = Tally(sizes=[args.subscribers])
    name = f"{peer.name}_{scenario}_{mode}"
    harness.progress(f"{name}: {args.subscribers} subscribers to {pattern!r}")
    set_up = time.time()
    load_before = os.getloadavg()[0]
    await peer.start(pattern, args.subscribers, tally)
    harness.progress(f"{name}: subscribed in {time.time() - set_up:.1f} s; publishing")
    try:
        meter = CpuMeter(peer.name)
        metrics = await run_mode(tally, lambda _, body: peer.publish(body), mode, args)
        metrics["cpu_us_per_delivery"] = meter.per_message_us(metrics["received"])
        metrics |= {
            "setup_s": round(time.time() - set_up, 1),
            "load_avg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        } | peer.notes()
    finally:
        await peer.stop()
    harness.progress(
        f"{name}: {metrics['delivered_per_s']:,.0f} delivered/s "
        f"({metrics['sent']} published, {metrics['lost']} lost), "
        f"p50 {metrics['p50_ms']} ms, p99 {metrics['p99_ms']} ms"
    )
    return metrics


async def measure(args: argparse.Namespace, base_url: str | None) -> dict[str, dict[str, Any]]:
    """Every variant, ``--rounds`` times; the peers take turns within each scenario and
    mode, so load from anything else on the machine falls on all of them alike."""
    peers: list[Peer] = []
    for name in args.peers.split(","):
        if name == "realm":
            assert base_url is not None
            peers.append(RealmPeer(base_url, await sign_up(base_url)))
        elif name == "redis":
            peers.append(RedisPeer(args.redis_url, listen=args.redis_listen))
        elif name == "nats":
            peers.append(NatsPeer(args.nats_url))
    rounds: dict[str, list[dict[str, Any]]] = {}
    for turn in range(args.rounds):
        harness.progress(f"round {turn + 1} of {args.rounds}")
        for scenario in args.scenarios.split(","):
            for mode in args.modes.split(","):
                for peer in peers:
                    metrics = await run_variant(peer, scenario, mode, args)
                    rounds.setdefault(f"{peer.name}_{scenario}_{mode}", []).append(metrics)
    return {
        name: median_round(r, "paced" if name.endswith("_paced") else "flat_out")
        for name, r in rounds.items()
    }


async def sign_up(base_url: str) -> str:
    import httpx

    name, password = f"bench-{uuid.uuid4().hex[:10]}", "correct horse battery staple"
    async with httpx.AsyncClient(base_url=f"{base_url}/auth", timeout=60) as auth:
        deadline = time.monotonic() + 120
        while True:  # routes come up a little after serve.run returns
            try:
                created = await auth.post(
                    "/register", json={"username": name, "password": password}
                )
                if created.status_code == 201:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("could not register through /auth")
            await asyncio.sleep(0.5)
        login = await auth.post("/login", json={"username": name, "password": password})
        login.raise_for_status()
        return str(login.json()["token"])


def with_realm(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    from actors.pubsub.settings import PubSubSettings
    from actors.runtime.settings import Settings
    from apps.common import MAX_STREAMS_PER_REPLICA

    private = tempfile.mkdtemp(prefix="rb-")  # short: HAProxy's socket paths are limited
    port = serve_app.free_port()
    settings = Settings(
        namespace=NAMESPACE,
        store_url="",
        data_dir=Path(private) / "data",
        http_host="127.0.0.1",
        http_port=port,
    )
    haproxy = serve_app.configure_ingress(settings, private_dir=private)
    info: dict[str, Any] = {"ingress": "HAProxy" if haproxy else "Serve's Python proxy"}
    info["store"] = "SQLite"
    try:
        with harness.ray_session(namespace=NAMESPACE):
            from ray import serve

            try:
                harness.progress(
                    f"Ray up; deploying every service on port {port} ({info['ingress']})"
                )
                serve_app.deploy(settings)
                results = asyncio.run(measure(args, f"http://127.0.0.1:{port}"))
            finally:
                serve.shutdown()  # the session's end stops Ray and every actor it started
    finally:
        shutil.rmtree(private, ignore_errors=True)
    info |= {
        "replicas": settings.replicas,
        "pubsub_max_ongoing_requests": max(settings.max_ongoing_requests, MAX_STREAMS_PER_REPLICA),
        "pubsub_brokers": PubSubSettings.of(settings).brokers,
        "pubsub_send_buffer": PubSubSettings.of(settings).send_buffer,
    }
    return results, info


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__ or "", argv, duration_s=15.0, extra=_add_flags)
    if args.quick:
        args.rounds = 1
        args.subscribers = min(args.subscribers, 50)
        args.drain_s = min(args.drain_s, 5.0)
    fd_limit = raise_fd_limit(args.subscribers * 3 + 1024)
    info: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    if "realm" in args.peers.split(","):
        results, info = with_realm(args)  # the peers run too, taking turns with Realm
    else:
        results = asyncio.run(measure(args, None))
    ratios, goals, per_round = summarize(
        results, SCENARIOS, ("redis", "nats"), goal_ratio=GOAL_RATIO, goal_p99_ms=GOAL_P99_MS
    )
    for label, met in goals.items():
        harness.progress(f"goal {label}: {'met' if met else 'NOT MET'}")
    harness.write_result(
        "pubsub",
        {
            "claim": CLAIM,
            "params": vars(args) | {"fd_limit": fd_limit, "payload": '{"i": n, "t": time}'},
            "method": __doc__,
            "realm": info,
            "variants": results,
            "ratios": ratios,
            "ratios_per_round": per_round,
            "goals": goals,
        },
    )


if __name__ == "__main__":
    main()
