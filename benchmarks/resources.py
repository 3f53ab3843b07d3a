"""Resources: acquire/release cycles per second under contention, with p99 wait.

Variants, all from this driver's event loop, each with ``--concurrency``
clients looping acquire (waiting as long as it takes) then release at once:
  etcd_lock_mutex        the peer: etcd 3.4 (Debian's ``etcd-server``), started
                         here on loopback with a data dir of its own (fsync on
                         every commit, as by default), through its v3 gRPC
                         gateway over HTTP with httpx: each client holds one
                         lease (``/v3/lease/grant``, TTL the run plus a minute),
                         then loops ``/v3/lock/lock`` (waits server-side, FIFO by
                         the key's revision) and ``/v3/lock/unlock``. Durable and
                         fenced: the store revision a lock answers with rises
                         from each holder to the next (checked), so it serves as
                         the fencing token. Skipped, with a message, when no
                         ``etcd`` binary is found (``make bench`` installs it).
  redis_lock_mutex       for reference: a redis-py asyncio ``Lock`` on one key of
                         the local Redis (SET NX PX, polled every ``--redis-poll-ms``
                         while held; release is a Lua check-and-delete). No
                         fencing, no queue: a lock whose holder pauses past its
                         timeout is taken by another while the first still writes.
  realm_mutex            ``ResourcesClient.acquire`` / ``release`` on one mutex
                         (fencing token, FIFO queue, both journaled; SQLite store)
  realm_mutex_redis      the same with the Redis store
  realm_semaphore        one semaphore of ``--capacity`` units (SQLite store)

Realm's pools belong to one owner (``tenant=``, as the HTTP ingress passes the
caller's user id).

"wait" is the time from calling acquire until it returns with the grant;
"fairness" is the fewest grants any client got over the most (FIFO hands the
lock round; a polled lock lets the releaser take it straight back).
Goal: Realm's mutex >= 1x etcd's cycles/s (etcd is the peer with the same
guarantees: durable leases, fencing); the Redis ratios are reported as measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import harness  # sets loopback-only Ray before ray is imported

CLAIM = (
    "Issue (resources): acquire/release cycles per second on one mutex under contention, with "
    "p99 wait and fairness, against etcd's lock API (durable leases, revision as fencing token; "
    "goal: Realm >= 1x etcd), and a redis-py Lock on the local Redis (no fencing) for reference."
)
GOAL_VS_ETCD = 1.0
#: etcd answers its health check within this long of starting, even on a loaded machine.
ETCD_START_TIMEOUT_S = 60.0
NAMESPACE = "realm-bench-resources"
#: The owner of Realm's pools: a user id, as the HTTP ingress passes it.
TENANT = "b3nch0000000user"


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redis-poll-ms", type=float, default=1.0)
    parser.add_argument("--capacity", type=int, default=4, help="units of the semaphore")
    parser.add_argument(
        "--etcd-binary", default=None, help="etcd to start (default: `etcd` on PATH)"
    )


class Etcd:
    """A single-member etcd of this run's own on loopback (client and peer URLs on
    free ports of 127.0.0.1, a temporary data dir), in a process group of its own."""

    def __init__(self, binary: str) -> None:
        import serve_app

        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="realm-bench-etcd-"))
        self.client_port, self.peer_port = serve_app.free_port(), serve_app.free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.log = (self.dir / "etcd.log").open("w")
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = subprocess.Popen(
            [
                binary,
                "--name=bench",
                f"--data-dir={self.dir / 'data'}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=bench={peer}",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0].split()[-1] if out else "unknown"

    def wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + ETCD_START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).json().get("health") == "true":
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd not healthy in {ETCD_START_TIMEOUT_S:g} s: {self.tail()}")
            time.sleep(0.1)

    def tail(self) -> str:
        self.log.flush()
        return (self.dir / "etcd.log").read_text()[-2000:]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def etcd_server(binary: str | None) -> Iterator[Etcd | None]:
    """etcd started and healthy, stopped (and its data dir removed) at the end; None,
    with a message, when there is no etcd binary."""
    path = binary or shutil.which("etcd")
    if not path:
        harness.progress(
            "etcd_lock_mutex: skipped, no `etcd` binary found (Debian: apt-get install "
            "etcd-server; `make bench` installs it)"
        )
        yield None
        return
    server = Etcd(path)
    try:
        server.wait_ready()
        harness.progress(f"etcd {server.version()} up on {server.url}")
        yield server
    finally:
        server.stop()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Waits:
    """Acquire latencies of one variant, and grants per client (fairness)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.per_client: dict[int, int] = {}

    def granted(self, started: float) -> None:
        self.samples.append(time.perf_counter() - started)
        client = id(asyncio.current_task())
        self.per_client[client] = self.per_client.get(client, 0) + 1

    def fairness(self) -> float:
        """Fewest grants any client got over the most (1: all alike; 0: someone starved)."""
        counts = list(self.per_client.values())
        return round(min(counts) / max(counts), 3) if counts else 0.0

    def p(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000 if ordered else 0


async def measure(
    args: argparse.Namespace, etcd: Etcd | None
) -> tuple[dict[str, harness.Sampler], dict[str, Waits], dict[str, Any]]:
    import httpx
    import redis.asyncio as aioredis

    from actors.resources.client import ResourcesClient
    from actors.resources.pool import SHARD_PREFIX
    from actors.runtime.settings import Settings
    from actors.runtime.shards import shard_names
    from actors.runtime.supervision import kill_named

    data_dir = Path(tempfile.mkdtemp(prefix="realm-bench-resources-"))
    tag = uuid.uuid4().hex[:8]
    common: dict[str, Any] = {
        "data_dir": data_dir,
        "store_prefix": f"bench-{tag}",
        "resources_shards": 1,
    }
    sqlite = Settings(namespace=f"{NAMESPACE}-sqlite", store_url="", **common)
    on_redis = Settings(namespace=f"{NAMESPACE}-redis", store_url=args.redis_url, **common)
    clients = {"sqlite": ResourcesClient(sqlite), "redis": ResourcesClient(on_redis)}
    r = aioredis.Redis.from_url(args.redis_url)
    lock_key = f"bench:resources:lock:{tag}"
    waits: dict[str, Waits] = {}
    # Lock calls wait server-side, so every client needs a connection of its own.
    etcd_http = httpx.AsyncClient(
        base_url=etcd.url if etcd else "http://127.0.0.1",
        timeout=300,
        limits=httpx.Limits(max_connections=2 * args.concurrency + 4),
    )
    #: Each grant's fencing token (the revision the lock answered with), in grant order.
    etcd_tokens: list[int] = []
    try:
        for client in clients.values():
            await client.start()
            await client.create_pool("bench-mutex", "mutex", ttl_s=30, tenant=TENANT)
            await client.create_pool(
                "bench-sem", "semaphore", args.capacity, ttl_s=30, tenant=TENANT
            )

        def realm(client: ResourcesClient, pool: str, name: str) -> Any:
            waits[name] = Waits()

            async def cycle() -> None:
                owner = "bench"
                started = time.perf_counter()
                lease = await client.acquire(pool, owner, timeout_s=300, tenant=TENANT)
                waits[name].granted(started)
                await client.release(pool, lease["token"], owner=owner, tenant=TENANT)

            return cycle

        def redis_lock(name: str) -> Any:
            waits[name] = Waits()

            async def cycle() -> None:
                lock = r.lock(lock_key, timeout=30, sleep=args.redis_poll_ms / 1000)
                started = time.perf_counter()
                assert await lock.acquire(blocking=True, blocking_timeout=300)
                waits[name].granted(started)
                await lock.release()

            return cycle

        def etcd_lock(name: str) -> Any:
            waits[name] = Waits()
            leases: dict[int, str] = {}  # one lease per client (task), as an etcd session
            lock_name = _b64(f"bench/resources/{tag}")
            ttl_s = int(args.duration_s) + 60

            async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
                answer = await etcd_http.post(path, json=body)
                answer.raise_for_status()
                doc: dict[str, Any] = answer.json()
                return doc

            async def cycle() -> None:
                client = id(asyncio.current_task())
                if client not in leases:
                    leases[client] = (await post("/v3/lease/grant", {"TTL": ttl_s}))["ID"]
                started = time.perf_counter()
                held = await post("/v3/lock/lock", {"name": lock_name, "lease": leases[client]})
                waits[name].granted(started)
                etcd_tokens.append(int(held["header"]["revision"]))
                await post("/v3/lock/unlock", {"key": held["key"]})

            return cycle

        variants: dict[str, dict[str, Any]] = {}
        if etcd is not None:
            variants["etcd_lock_mutex"] = dict(op=etcd_lock("etcd_lock_mutex"))
        variants |= {
            "redis_lock_mutex": dict(op=redis_lock("redis_lock_mutex")),
            "realm_mutex": dict(op=realm(clients["sqlite"], "bench-mutex", "realm_mutex")),
            "realm_mutex_redis": dict(
                op=realm(clients["redis"], "bench-mutex", "realm_mutex_redis")
            ),
            "realm_semaphore": dict(op=realm(clients["sqlite"], "bench-sem", "realm_semaphore")),
        }
        for kw in variants.values():
            kw["concurrency"] = args.concurrency
        samplers = await harness.run_variants(variants, duration_s=args.duration_s, warmup=5)
        for name in samplers:
            waits[name].samples = waits[name].samples[5:]  # the warm-up's
            waits[name].per_client.pop(id(asyncio.current_task()), None)  # it ran here
    finally:
        await etcd_http.aclose()
        for client in clients.values():
            await client.close()
        await r.delete(lock_key)
        await r.aclose()
        for settings in (sqlite, on_redis):
            for name in shard_names(SHARD_PREFIX, 1):
                kill_named(name, namespace=settings.namespace)
        shutil.rmtree(data_dir, ignore_errors=True)
    fencing: dict[str, Any] = {}
    if etcd is not None:
        increasing = all(a < b for a, b in itertools.pairwise(etcd_tokens))
        fencing = {
            "etcd_version": etcd.version(),
            "etcd_fencing_token": "the store revision of the lock answer",
            "etcd_tokens_strictly_increasing": increasing,
            "etcd_first_last_token": [etcd_tokens[0], etcd_tokens[-1]] if etcd_tokens else [],
        }
        harness.progress(
            f"etcd fencing tokens strictly increasing over {len(etcd_tokens)} grants: {increasing}"
        )
    return samplers, waits, fencing


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__ or "", argv, duration_s=5.0, concurrency=8, extra=_add_flags)
    load_before = os.getloadavg()
    with etcd_server(args.etcd_binary) as etcd, harness.ray_session(namespace=NAMESPACE):
        samplers, waits, fencing = asyncio.run(measure(args, etcd))
    load = {
        when: [round(x, 2) for x in values]
        for when, values in (("before", load_before), ("after", os.getloadavg()))
    }
    metrics = {}
    for name, sampler in samplers.items():
        metrics[name] = sampler.metrics() | {
            "wait_p50_ms": round(waits[name].p(50), 3),
            "wait_p99_ms": round(waits[name].p(99), 3),
            "wait_max_ms": round(waits[name].p(100), 3),
            "fairness_min_over_max_grants": waits[name].fairness(),
        }
        m = metrics[name]
        harness.progress(
            f"{name}: wait p50 {m['wait_p50_ms']:.1f} ms, p99 {m['wait_p99_ms']:.1f} ms, "
            f"max {m['wait_max_ms']:.1f} ms, fairness {m['fairness_min_over_max_grants']}"
        )
    ops = {name: m["throughput_ops_s"] for name, m in metrics.items()}
    ratios = {}
    goals: dict[str, Any] = {}
    if "etcd_lock_mutex" in ops:
        for realm in ("realm_mutex", "realm_mutex_redis"):
            ratios[f"{realm}/etcd_lock_mutex"] = round(ops[realm] / ops["etcd_lock_mutex"], 3)
        met = ratios["realm_mutex/etcd_lock_mutex"] >= GOAL_VS_ETCD
        goals["realm_mutex/etcd_lock_mutex"] = {"goal": GOAL_VS_ETCD, "met": met}
        harness.progress(
            f"realm_mutex/etcd_lock_mutex = {ratios['realm_mutex/etcd_lock_mutex']} "
            f"(goal >= {GOAL_VS_ETCD:g}: {'met' if met else 'not met'})"
        )
    else:
        goals["realm_mutex/etcd_lock_mutex"] = {"goal": GOAL_VS_ETCD, "met": None, "skipped": True}
    ratios |= {
        "realm_mutex/redis_lock_mutex": round(ops["realm_mutex"] / ops["redis_lock_mutex"], 3),
        "realm_mutex_redis/redis_lock_mutex": round(
            ops["realm_mutex_redis"] / ops["redis_lock_mutex"], 3
        ),
        "realm_semaphore/realm_mutex": round(ops["realm_semaphore"] / ops["realm_mutex"], 3),
    }
    harness.write_result(
        "resources",
        {
            "claim": CLAIM,
            "params": vars(args),
            "variants": metrics,
            "ratios": ratios,
            "goals": goals,
            "fencing": fencing,
            "load_average": load,
        },
    )


if __name__ == "__main__":
    main()
