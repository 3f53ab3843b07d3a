"""Cache client: Realm's CacheClient against redis-py's asyncio client on the same data.

Every variant runs from this driver's event loop with --concurrency workers in flight;
both sides return the stored JSON bytes undecoded (Realm ``get_raw``/``mget_raw``).
Realm's keys belong to one owner (``owner=``, as the HTTP ingress passes the caller's
user id), so every figure includes the owner's keyspace and its per-owner accounting.
  redis_get        redis-py GET, keys taken in turn from --keys preloaded keys
  redis_mget_<n>   redis-py MGET of n keys, for each n in --batch-sizes
  realm_get        CacheClient.get_raw without near cache, keys in turn
  realm_near_get   CacheClient.get_raw with near cache, one hot key
  realm_mget_<n>   CacheClient.mget_raw of n keys, without near cache

Realm runs --shards CacheShard actors on a fresh local Ray; Redis is the server on
127.0.0.1:6379, its keys under ``bench:cache_client:`` (deleted at the end).

With ``--address`` (an existing cluster), the shards spread over its nodes and
Realm's variants run from one load generator actor per node
(``benchmarks/loadgen.py``), the --concurrency calls in flight split between
them, each with clients of its own (so one near cache per node); Redis's
variants still run from this driver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from benchmarks import harness  # before anything that imports ray

# isort: split
from benchmarks import loadgen

CLAIM = (
    "DESIGN (Benchmarks, cache): batched keys/s >= redis-py MGET; hot-key reads with the near "
    "cache >= 100 x redis-py GET/s (issue 14; it was 10 x)."
)
#: Hot-key reads with the near cache over redis-py GET (issue 14 raised it from 10).
GOAL_NEAR = 100
REDIS_PREFIX = "bench:cache_client:"
REALM_PREFIX = "bench:"
NAMESPACE = "realm-bench"
#: The owner of Realm's keys: a user id, as the HTTP ingress passes it.
OWNER = "b3nch0000000user"


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--shards", type=int, default=4, help="Realm cache shards")
    parser.add_argument("--keys", type=int, default=1000, help="preloaded keys")
    parser.add_argument(
        "--batch-sizes", default="100,1000", help="comma-separated keys per MGET / mget"
    )


def value_of(i: int) -> bytes:
    return orjson.dumps({"id": i, "name": f"user-{i}", "score": i * 1.5, "tags": ["a", "b"]})


async def realm_get_load(
    settings: Any, keys: list[str], *, near_cache: bool = False
) -> tuple[loadgen.Op, Any]:
    """In a load generator: ``get_raw`` of ``keys`` in turn (one key: a hot key)."""
    from actors.cache.client import CacheClient

    client = CacheClient.connect(settings, near_cache=near_cache)
    cycle = itertools.cycle(keys)
    return (lambda: client.get_raw(next(cycle), owner=OWNER)), client.close


async def realm_mget_load(settings: Any, keys: list[str]) -> tuple[loadgen.Op, Any]:
    """In a load generator: ``mget_raw`` of ``keys``."""
    from actors.cache.client import CacheClient

    client = CacheClient.connect(settings)
    return partial(client.mget_raw, keys, owner=OWNER), client.close


async def measure(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    import redis.asyncio as aioredis

    from actors.cache.client import CacheClient
    from actors.cache.settings import CacheSettings
    from actors.cache.shard import SHARDS_PREFIX
    from actors.runtime.settings import Settings
    from actors.runtime.shards import shard_names
    from actors.runtime.supervision import kill_named

    names = [f"k{i}" for i in range(args.keys)]
    values = [value_of(i) for i in range(args.keys)]
    sizes = [int(n) for n in args.batch_sizes.split(",")]
    hot = names[0]
    redis_keys = [REDIS_PREFIX + n for n in names]
    realm_keys = [REALM_PREFIX + n for n in names]

    data_dir = Path(tempfile.mkdtemp(prefix="realm-bench-cache-"))
    cache = CacheSettings(shards=args.shards)
    settings = Settings(
        namespace=NAMESPACE, store_url="", data_dir=data_dir, sections={"cache": cache}
    )
    r = aioredis.Redis.from_url(args.redis_url, max_connections=args.concurrency + 4)
    plain = near = None
    spread = contextlib.AsyncExitStack()
    try:
        # --- preload and check that both sides answer the same bytes ---------------------
        await r.mset(dict(zip(redis_keys, values, strict=True)))
        plain = CacheClient.connect(settings)
        near = CacheClient.connect(settings, near_cache=True)
        step = plain.config.max_batch_keys
        for start in range(0, args.keys, step):
            chosen = range(start, min(start + step, args.keys))
            await plain.mset({realm_keys[i]: orjson.loads(values[i]) for i in chosen}, owner=OWNER)
        redis_batch = {n: redis_keys[:n] for n in sizes}
        realm_batch = {n: realm_keys[:n] for n in sizes}
        expected = values[: sizes[0]]
        checks = {
            "redis mget": await r.mget(redis_batch[sizes[0]]),
            "realm mget": await plain.mget_raw(realm_batch[sizes[0]], owner=OWNER),
            "realm get": [await plain.get_raw(k, owner=OWNER) for k in realm_batch[sizes[0]]],
            "realm near get": [await near.get_raw(k, owner=OWNER) for k in realm_batch[sizes[0]]],
        }
        for label, got in checks.items():
            # Realm stores what orjson makes of the decoded value: the same bytes here.
            if got != expected:
                raise RuntimeError(f"{label} answered other values than were stored")

        # --- the variants ------------------------------------------------------------------
        redis_cycle = itertools.cycle(redis_keys)
        realm_cycle = itertools.cycle(realm_keys)
        hot_key = REALM_PREFIX + hot
        # A variant with a factory runs from the load generators on a cluster.
        variants: dict[str, dict[str, Any]] = {
            "redis_get": dict(op=lambda: r.get(next(redis_cycle))),
            "realm_get": dict(
                op=lambda: plain.get_raw(next(realm_cycle), owner=OWNER),
                factory=partial(realm_get_load, settings, realm_keys),
            ),
            "realm_near_get": dict(
                op=lambda: near.get_raw(hot_key, owner=OWNER),
                factory=partial(realm_get_load, settings, [hot_key], near_cache=True),
            ),
        }
        for n in sizes:
            variants[f"redis_mget_{n}"] = dict(op=partial(r.mget, redis_batch[n]), ops_per_call=n)
            variants[f"realm_mget_{n}"] = dict(
                op=partial(plain.mget_raw, realm_batch[n], owner=OWNER),
                factory=partial(realm_mget_load, settings, realm_batch[n]),
                ops_per_call=n,
            )
        for kw in variants.values():
            kw.setdefault("concurrency", args.concurrency)
        generators = None
        if harness.on_cluster():
            generators = await spread.enter_async_context(loadgen.LoadGenerators())
        samplers = await loadgen.run_variants(
            variants, duration_s=args.duration_s, warmup=50, generators=generators
        )
        await spread.aclose()
        stats = await near.stats()
        extra = {"near_cache": stats["near"], "shard_totals": stats["total"]}
        if generators is not None:
            extra["near_cache_of"] = "this driver's client (the load generators had their own)"
        harness.progress(f"near cache of realm_near_get: {stats['near']}")
    finally:
        await spread.aclose()
        for client in (near, plain):
            if client is not None:
                await client.close()
        deleted = await r.delete(*redis_keys)
        await r.aclose()
        harness.progress(f"deleted {deleted} Redis keys under {REDIS_PREFIX}")
        for name in shard_names(SHARDS_PREFIX, args.shards):
            kill_named(name, namespace=NAMESPACE)  # detached: would outlive us
        shutil.rmtree(data_dir, ignore_errors=True)
    return samplers, extra


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__ or "", argv, duration_s=5.0, concurrency=16, extra=_add_flags)
    if args.keys < max(int(n) for n in args.batch_sizes.split(",")):
        raise SystemExit("--keys must be at least the largest batch size")
    load_at_start = os.getloadavg()[0]  # the machine is shared: say how busy it was
    harness.progress("starting Ray")
    with harness.ray_session(namespace=NAMESPACE):
        samplers, extra = asyncio.run(measure(args))
    metrics = {name: s.metrics() for name, s in samplers.items()}
    ops = {name: m["throughput_ops_s"] for name, m in metrics.items()}
    ratios = {
        "realm_near_get/redis_get": round(ops["realm_near_get"] / ops["redis_get"], 2),
        "realm_get/redis_get": round(ops["realm_get"] / ops["redis_get"], 3),
    }
    goals = {
        f"realm_near_get/redis_get >= {GOAL_NEAR}": ratios["realm_near_get/redis_get"] >= GOAL_NEAR
    }
    for n in (int(n) for n in args.batch_sizes.split(",")):
        label = f"realm_mget_{n}/redis_mget_{n} keys"
        ratios[label] = round(ops[f"realm_mget_{n}"] / ops[f"redis_mget_{n}"], 3)
        goals[f"{label} >= 1"] = ratios[label] >= 1
    for label, met in goals.items():
        harness.progress(f"goal {label}: {'met' if met else 'NOT MET'}")
    harness.write_result(
        "cache",
        {
            "claim": CLAIM,
            "params": vars(args)
            | {"load_avg_1m": [round(load_at_start, 2), round(os.getloadavg()[0], 2)]},
            "variants": metrics,
            "ratios": ratios,
            "goals": goals,
            **extra,
        },
    )


if __name__ == "__main__":
    main()
