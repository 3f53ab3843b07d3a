"""Resources: acquire/release cycles per second under contention, with p99 wait.

Variants, all from this driver's event loop, each with ``--concurrency``
clients looping acquire (waiting as long as it takes) then release at once:
  redis_lock_mutex       the peer: a redis-py asyncio ``Lock`` on one key of
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
The issue sets no goal for this claim; the ratio is reported as measured.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import harness  # sets loopback-only Ray before ray is imported

CLAIM = (
    "Issue (resources): acquire/release per second under contention, with p99 wait, against a "
    "redis-py Lock on the local Redis (which has no fencing); no fixed goal."
)
NAMESPACE = "realm-bench-resources"
#: The owner of Realm's pools: a user id, as the HTTP ingress passes it.
TENANT = "b3nch0000000user"


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redis-poll-ms", type=float, default=1.0)
    parser.add_argument("--capacity", type=int, default=4, help="units of the semaphore")


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


async def measure(args: argparse.Namespace) -> tuple[dict[str, harness.Sampler], dict[str, Waits]]:
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

        variants: dict[str, dict[str, Any]] = {
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
        for client in clients.values():
            await client.close()
        await r.delete(lock_key)
        await r.aclose()
        for settings in (sqlite, on_redis):
            for name in shard_names(SHARD_PREFIX, 1):
                kill_named(name, namespace=settings.namespace)
        shutil.rmtree(data_dir, ignore_errors=True)
    return samplers, waits


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__ or "", argv, duration_s=5.0, concurrency=8, extra=_add_flags)
    with harness.ray_session(namespace=NAMESPACE):
        samplers, waits = asyncio.run(measure(args))
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
    ratios = {
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
            "goals": {},
        },
    )


if __name__ == "__main__":
    main()
