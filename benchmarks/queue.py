"""Task queue: no-op jobs end to end (enqueue -> run -> ack) against Celery on Redis.

Variants, one after the other in one run on this machine:
  realm         ``QueueClient.enqueue`` one job per call, ``--concurrency`` calls in
                flight from this driver (the client coalesces them into batched
                actor calls); the queue journals to SQLite (synchronous=FULL) and
                hands jobs to its 2 worker actors in batches
  realm_batch   the same with ``enqueue_many``, ``--batch`` jobs per call
  celery        Celery 5 with the local Redis as broker (db 5, flushed), a worker
                started here with ``-c 2`` (prefork: one process per core, like
                Realm's 2 worker actors), ``apply_async`` from ``--producers``
                threads of a producer process of its own

  *_paced       the same two at a steady ``--paced-rate`` well below either's
                capacity, so the latency is the path's, not a backlog's

Ray and the Celery worker are both up throughout; the burst variants run
``--rounds`` times, alternating, and the median round of each is reported
(every round's figure is in the JSON). Throughput is jobs / (first enqueue ->
last job done). The latency is enqueue
-> start of the job (the client's clock at the call to the worker's clock at
the start): for Realm every job's, from its record; for Celery one job in 100
(and each producer's last) records it, which is also how the end is seen.

With ``--address`` (an existing cluster), the queue's actors spread over its
nodes and the burst variants' producers run as one load generator actor per
node (``benchmarks/loadgen.py``), the --concurrency producers split between
them, each with a client of its own; the paced variants and Celery's side
still run from this machine.

Goal (from the issue): Realm >= 2x Celery's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import harness  # sets loopback-only Ray before ray is imported

# isort: split
from benchmarks import loadgen

CLAIM = (
    "Issue 14 (task queue): no-op jobs end to end >= 5x Celery's throughput (Redis broker), "
    "with a paced start p99 <= Celery's."
)
#: Throughput over Celery's (issue 14 raised it from 2).
GOAL_RATIO = 5
NAMESPACE = "realm-bench-queue"
NOOP = "actors.queue.handlers:noop"
#: The owner of the benchmark's queues (queues belong to a user).
OWNER = "bench"
ROOT = Path(__file__).resolve().parent.parent
SAMPLE_EVERY = 100


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per variant")
    parser.add_argument("--batch", type=int, default=100, help="jobs per enqueue_many call")
    parser.add_argument("--producers", type=int, default=4, help="Celery producer threads")
    parser.add_argument("--celery-concurrency", type=int, default=2)
    parser.add_argument("--celery-broker", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--paced-rate", type=float, default=200.0, help="jobs/s, latency runs")
    parser.add_argument("--paced-jobs", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating burst rounds")


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    at = [ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000 for q in (50, 99)]
    return {"p50_ms": round(at[0], 3), "p99_ms": round(at[1], 3), "latency_samples": len(ordered)}


def _metrics(jobs: int, elapsed_s: float, latencies: list[float]) -> dict[str, Any]:
    return {
        "ops": jobs,
        "duration_s": round(elapsed_s, 3),
        "throughput_ops_s": round(jobs / elapsed_s, 1),
        **_percentiles(latencies),
    }


async def _completed(client: Any, queue: str) -> int:
    return int((await client.stats(queue, owner=OWNER))["completed"])


async def _wait_completed(client: Any, queue: str, count: int, timeout_s: float = 600) -> float:
    deadline = time.monotonic() + timeout_s
    while await _completed(client, queue) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{queue}: fewer than {count} jobs done in {timeout_s} s")
        await asyncio.sleep(0.05)  # stats sorts its latency samples: not too often
    return time.perf_counter()


async def enqueue_load(settings: Any, queue: str, batch: int) -> tuple[loadgen.Op, Any]:
    """In a load generator: one call enqueues ``batch`` no-op jobs (one: ``enqueue``)."""
    from actors.queue.client import QueueClient

    client = QueueClient(settings)
    await client.start()

    async def op() -> Any:
        if batch == 1:
            return await client.enqueue(queue, NOOP, {"t": time.time()}, owner=OWNER)
        now = time.time()
        jobs = [{"handler": NOOP, "args": {"t": now}} for _ in range(batch)]
        return await client.enqueue_many(queue, jobs, owner=OWNER)

    return op, client.close


async def run_realm(
    args: argparse.Namespace, settings: Any, queue: str, batch: int, *, paced: bool = False
) -> dict:
    if harness.on_cluster() and not paced:
        async with loadgen.LoadGenerators() as generators:
            return await _run_realm(args, settings, queue, batch, generators=generators)
    return await _run_realm(args, settings, queue, batch, paced=paced)


async def _run_realm(
    args: argparse.Namespace,
    settings: Any,
    queue: str,
    batch: int,
    *,
    paced: bool = False,
    generators: loadgen.LoadGenerators | None = None,
) -> dict:
    from actors.queue.client import QueueClient

    client = QueueClient(settings)
    await client.start()
    await client.create(queue, owner=OWNER)
    # Warm-up: the queue actor and its workers start, handlers import.
    await asyncio.gather(*(client.enqueue(queue, NOOP, owner=OWNER) for _ in range(200)))
    await _wait_completed(client, queue, 200)
    base = await _completed(client, queue)

    jobs = args.paced_jobs if paced else args.jobs
    remaining = [jobs]

    async def paced_producer() -> None:
        pending = []
        start = time.perf_counter()
        for i in range(jobs):
            await asyncio.sleep(max(0.0, start + i / args.paced_rate - time.perf_counter()))
            enqueued = client.enqueue(queue, NOOP, {"t": time.time()}, owner=OWNER)
            pending.append(asyncio.ensure_future(enqueued))
        await asyncio.gather(*pending)

    async def producer() -> None:
        while remaining[0] > 0:
            n = min(batch, remaining[0])
            remaining[0] -= n
            if batch == 1:
                await client.enqueue(queue, NOOP, {"t": time.time()}, owner=OWNER)
            else:
                now = time.time()
                await client.enqueue_many(
                    queue, [{"handler": NOOP, "args": {"t": now}} for _ in range(n)], owner=OWNER
                )

    spread: dict[str, Any] = {}
    producers: list[asyncio.Future[Any]]
    if generators is not None:  # the producers are the load generators, one per node
        calls = -(-jobs // batch)
        jobs = calls * batch
        await generators.prepare(partial(enqueue_load, settings, queue, batch))
        harness.progress(f"{queue}: {jobs:,} jobs from {len(generators)} nodes")
        await generators.begin_window()
        started = time.perf_counter() + loadgen.START_LEAD_S
        run = generators.run(
            concurrency=args.concurrency, count=calls, ops_per_call=batch, window=False
        )
        producers = [asyncio.ensure_future(run)]
    else:
        harness.progress(f"{queue}: {jobs:,} jobs" + (" paced" if paced else ""))
        started = time.perf_counter()
        if paced:
            producers = [asyncio.ensure_future(paced_producer())]
        else:
            producers = [asyncio.ensure_future(producer()) for _ in range(args.concurrency)]
    done_at = await _wait_completed(client, queue, base + jobs)
    produced = await asyncio.gather(*producers)
    if generators is not None:
        await generators.end_window()
        await generators.finish()
        enqueues = produced[0].metrics()  # the enqueue calls' own latencies, by node
        spread = {"load_generators": enqueues["load_generators"], "per_node": enqueues["per_node"]}
    latencies = []
    offset: int | None = 0
    while offset is not None:
        page = await client.list(queue, "succeeded", owner=OWNER, offset=offset, limit=1_000)
        latencies += [j["started_at"] - j["args"]["t"] for j in page["jobs"] if j["args"]]
        offset = page["next_offset"]
    stats = await client.stats(queue, owner=OWNER)
    await client.delete(queue, owner=OWNER)  # its actor and workers stop
    await client.close()
    metrics = _metrics(jobs, done_at - started, latencies) | spread
    harness.progress(f"{queue}: {metrics}")
    return metrics | {"queue_stats": {k: stats[k] for k in ("counters", "wait_s", "run_s")}}


@contextlib.contextmanager
def celery_worker(args: argparse.Namespace) -> Iterator[Any]:
    """A Celery worker process on the broker (db 5, flushed before and after);
    yields a redis-py client of that db."""
    import redis

    os.environ["REALM_BENCH_CELERY_BROKER"] = args.celery_broker
    from benchmarks import queue_celery

    r = redis.Redis.from_url(args.celery_broker)
    r.flushdb()  # db 5 (never 0): the broker's queue and our latency list
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "benchmarks.queue_celery",
            "worker",
            "-c",
            str(args.celery_concurrency),
            "-P",
            "prefork",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-Q",
            queue_celery.QUEUE,
        ],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    try:
        # Warm-up, which also waits for the worker to be up.
        for _ in range(200):
            queue_celery.noop.apply_async()
        queue_celery.noop.apply_async(kwargs={"t": time.time()})
        _wait_llen(r, queue_celery.LATENCIES, 1, timeout_s=120)
        r.delete(queue_celery.LATENCIES)
        yield r
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        r.flushdb()


def _celery_burst(args: argparse.Namespace, r: Any) -> dict[str, Any]:
    """Celery's producers run in a process of their own, not in this Ray driver."""
    from benchmarks import queue_celery

    r.delete(queue_celery.LATENCIES)
    shares = [args.jobs // args.producers] * args.producers
    shares[0] += args.jobs - sum(shares)
    samples = sum(len(range(0, n, SAMPLE_EVERY)) + (1 if (n - 1) % SAMPLE_EVERY else 0)
                  for n in shares)  # fmt: skip
    context = multiprocessing.get_context("spawn")
    ready, go = context.Event(), context.Event()
    producer = context.Process(
        target=_celery_produce, args=(shares, args.celery_broker, ready, go), daemon=True
    )
    producer.start()
    if not ready.wait(timeout=120):
        raise TimeoutError("the Celery producer process did not start")
    harness.progress(f"celery: {args.jobs:,} jobs, {args.producers} producer threads")
    started = time.perf_counter()
    go.set()
    _wait_llen(r, queue_celery.LATENCIES, samples, timeout_s=1_200)
    done_at = time.perf_counter()
    producer.join(timeout=60)
    latencies = [float(x) for x in r.lrange(queue_celery.LATENCIES, 0, -1)]
    metrics = _metrics(args.jobs, done_at - started, latencies)
    harness.progress(f"celery: {metrics}")
    return metrics


def _celery_produce(shares: list[int], broker: str, ready: Any, go: Any) -> None:
    """In the producer process: ``apply_async`` from one thread per share, on ``go``."""
    os.environ["REALM_BENCH_CELERY_BROKER"] = broker
    from benchmarks import queue_celery

    def produce(n: int) -> None:
        for i in range(n):
            if i % SAMPLE_EVERY == 0 or i == n - 1:
                queue_celery.noop.apply_async(kwargs={"t": time.time()})
            else:
                queue_celery.noop.apply_async()

    threads = [threading.Thread(target=produce, args=(n,)) for n in shares]
    ready.set()
    go.wait()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _celery_paced(args: argparse.Namespace, r: Any) -> dict[str, Any]:
    from benchmarks import queue_celery

    r.delete(queue_celery.LATENCIES)
    harness.progress(f"celery_paced: {args.paced_jobs:,} jobs at {args.paced_rate:g}/s")
    started = time.perf_counter()
    for i in range(args.paced_jobs):
        time.sleep(max(0.0, started + i / args.paced_rate - time.perf_counter()))
        queue_celery.noop.apply_async(kwargs={"t": time.time()})
    _wait_llen(r, queue_celery.LATENCIES, args.paced_jobs, timeout_s=600)
    done_at = time.perf_counter()
    latencies = [float(x) for x in r.lrange(queue_celery.LATENCIES, 0, -1)]
    metrics = _metrics(args.paced_jobs, done_at - started, latencies)
    harness.progress(f"celery_paced: {metrics}")
    return metrics


def _wait_llen(r: Any, key: str, count: int, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while r.llen(key) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"celery: {r.llen(key)} of {count} samples in {timeout_s} s")
        time.sleep(0.005)


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__ or "", argv, duration_s=0, concurrency=64, extra=_add_flags)
    if args.quick:
        args.jobs, args.paced_jobs = min(args.jobs, 1_000), min(args.paced_jobs, 200)
        args.rounds = 1
    from actors.queue.directory import DIRECTORY_NAME
    from actors.queue.settings import QueueSettings
    from actors.queue.workers import SLOTS_NAME
    from actors.runtime.settings import Settings
    from actors.runtime.supervision import kill_named

    load_before = os.getloadavg()
    data_dir = Path(tempfile.mkdtemp(prefix="realm-bench-queue-"))
    settings = Settings(namespace=NAMESPACE, store_url="", data_dir=data_dir)
    config = QueueSettings.of(settings)
    variants: dict[str, dict[str, Any]] = {}
    rounds: dict[str, list[dict[str, Any]]] = {"realm": [], "celery": []}
    try:
        # Both systems are up throughout, and their burst runs alternate, so
        # load from elsewhere on the machine falls on both alike.
        with harness.ray_session(namespace=NAMESPACE), celery_worker(args) as r:
            for n in range(args.rounds):
                realm = run_realm(args, settings, f"bench-single-{n}", 1)
                rounds["realm"].append(asyncio.run(realm))
                rounds["celery"].append(_celery_burst(args, r))
            variants["realm_batch"] = asyncio.run(
                run_realm(args, settings, "bench-batch", args.batch)
            )
            variants["realm_paced"] = asyncio.run(
                run_realm(args, settings, "bench-paced", 1, paced=True)
            )
            variants["celery_paced"] = _celery_paced(args, r)
            for name in (SLOTS_NAME, DIRECTORY_NAME):
                kill_named(name, namespace=NAMESPACE)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    for name, runs in rounds.items():  # the median round by throughput, with all rounds
        median = sorted(runs, key=lambda m: m["throughput_ops_s"])[len(runs) // 2]
        variants[name] = median | {"rounds_ops_s": [m["throughput_ops_s"] for m in runs]}
    variants = {k: variants[k] for k in ("realm", "realm_batch", "realm_paced", "celery",
                                         "celery_paced")}  # fmt: skip
    ops = {name: m["throughput_ops_s"] for name, m in variants.items()}
    ratios = {
        "realm/celery": round(ops["realm"] / ops["celery"], 2),
        "realm_batch/celery": round(ops["realm_batch"] / ops["celery"], 2),
        "paced p99 latency realm/celery": round(
            variants["realm_paced"]["p99_ms"] / variants["celery_paced"]["p99_ms"], 2
        ),
    }
    goals = {
        f"realm >= {GOAL_RATIO}x celery throughput": ratios["realm/celery"] >= GOAL_RATIO,
        "paced start p99 <= celery's": ratios["paced p99 latency realm/celery"] <= 1,
    }
    for label, met in goals.items():
        harness.progress(f"goal {label}: {'met' if met else 'NOT MET'}")
    harness.write_result(
        "queue",
        {
            "claim": CLAIM,
            "params": vars(args)
            | {
                "cores": os.cpu_count(),
                "realm_workers": config.workers,
                "realm_concurrency": config.concurrency,
                "realm_store": "sqlite, synchronous=FULL",
                "load_before": load_before,
                "load_after": os.getloadavg(),
            },
            "variants": variants,
            "ratios": ratios,
            "goals": goals,
        },
    )


if __name__ == "__main__":
    main()
