"""Shared pieces of every benchmark: flags, Ray session, timed workloads, results as JSON + PNG.

Import this module before Ray: it pins Ray to loopback, which Ray reads once at import time.
Benchmarks therefore take the ``ray`` module from :func:`ray_session` instead of importing it.

Equal priority: Ray starts its workers at nice 15, below every peer here (Redis,
PostgreSQL, uvicorn, Celery, NATS and this driver run at 0), which on a 2-core
machine biases any side-by-side run against Realm. Every benchmark therefore
runs Ray's workers at ``--worker-niceness`` (default 0, the peers' level), and
every result records the nice levels it observed on both sides
(:func:`observed_niceness`), read from the processes themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

#: Ray reads this when it is imported; "0" makes every node bind 127.0.0.1.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Per-variant duration of a --quick smoke run: enough to see the script work, not to measure.
QUICK_DURATION_S = 0.5
_T0 = time.monotonic()
#: The nice level of the peers' processes: Redis, PostgreSQL, NATS, uvicorn, Celery and
#: this driver all run at the default.
PEER_NICENESS = 0
#: Processes that compete with Realm in some benchmark, by a part of their name.
PEER_PROCESSES = (
    "redis-server",
    "postgres",
    "nats-server",
    "celery",
    "uvicorn",
    "etcd",
    "alertmanager",
)
#: ``ray::`` processes that are Ray's node agents, not workers (they keep the raylet's level).
RAY_AGENTS = frozenset({"ray::DashboardAgent", "ray::RuntimeEnvAgent"})
#: Nice levels seen while Ray ran (filled by :func:`ray_session`, read by :func:`write_result`).
_SEEN_NICENESS: dict[str, set[int]] = {}


def progress(msg: str) -> None:
    """One line on stderr, stamped with seconds since the script started."""
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


@dataclass
class Sampler:
    """Per-call latencies over a measured window; a call may carry several operations."""

    ops_per_call: int = 1
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    def record(self, latency_s: float) -> None:
        self.latencies_s.append(latency_s)

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000

    def metrics(self) -> dict[str, float]:
        calls = len(self.latencies_s)
        per_s = calls / self.elapsed_s if self.elapsed_s else 0.0
        return {
            "calls": calls,
            "ops": calls * self.ops_per_call,
            "duration_s": round(self.elapsed_s, 3),
            "calls_per_s": round(per_s, 1),
            "throughput_ops_s": round(per_s * self.ops_per_call, 1),
            "p50_ms": round(self.percentile_ms(50), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
        }


async def run_workload(
    op: Callable[[], Awaitable[Any]],
    *,
    concurrency: int = 1,
    duration_s: float | None = None,
    count: int | None = None,
    ops_per_call: int = 1,
    warmup: int = 0,
) -> Sampler:
    """Run ``op`` from ``concurrency`` workers until ``duration_s`` passes or ``count`` calls end.

    The first ``warmup`` calls (run one at a time) are not recorded.
    """
    if (duration_s is None) == (count is None):
        raise ValueError("give exactly one of duration_s and count")
    for _ in range(warmup):
        await op()
    sampler = Sampler(ops_per_call=ops_per_call)
    started = time.perf_counter()
    deadline = started + duration_s if duration_s is not None else float("inf")
    remaining = [count if count is not None else -1]

    async def worker() -> None:
        while time.perf_counter() < deadline and remaining[0] != 0:
            remaining[0] -= 1
            t = time.perf_counter()
            await op()
            sampler.record(time.perf_counter() - t)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sampler.elapsed_s = time.perf_counter() - started
    return sampler


async def run_variants(
    variants: dict[str, dict[str, Any]], *, duration_s: float, warmup: int
) -> dict[str, Sampler]:
    """``run_workload`` for each variant (its keyword arguments), one after the
    other, with a progress line before and after each."""
    samplers = {}
    for name, kw in variants.items():
        progress(f"{name}: {duration_s:g} s, {kw.get('concurrency', 1)} in flight")
        samplers[name] = await run_workload(duration_s=duration_s, warmup=warmup, **kw)
        m = samplers[name].metrics()
        progress(
            f"{name}: {m['calls_per_s']:,.0f} calls/s, {m['throughput_ops_s']:,.0f} ops/s, "
            f"p50 {m['p50_ms']:.3f} ms, p99 {m['p99_ms']:.3f} ms"
        )
    return samplers


def parse_args(
    description: str,
    argv: list[str] | None = None,
    *,
    duration_s: float = 5.0,
    concurrency: int = 32,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """Common flags (plus any ``extra`` adds); seeds ``random``; --quick shortens the run."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration-s", type=float, default=duration_s, help="per variant")
    parser.add_argument("--concurrency", type=int, default=concurrency, help="workers in flight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run; results to *.quick.*")
    parser.add_argument(
        "--worker-niceness",
        type=int,
        default=PEER_NICENESS,
        help=f"nice level of Ray's workers (Ray's own default is 15; the peers run at "
        f"{PEER_NICENESS}, so the default compares both sides at the same priority)",
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration_s = min(args.duration_s, QUICK_DURATION_S)
    # Ray's raylet reads this when it starts, and starts every worker at this level.
    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)  # noqa: SIM112 (Ray spells it so)
    random.seed(args.seed)
    return args


def niceness_now() -> dict[str, set[int]]:
    """The nice levels of the processes running now: this run's Ray workers
    (``ray::...`` processes under this driver, which started their raylet), each
    peer of :data:`PEER_PROCESSES` found on the machine, and this driver."""
    import psutil

    ours = {child.pid for child in psutil.Process().children(recursive=True)}
    seen: dict[str, set[int]] = {"driver": {os.getpriority(os.PRIO_PROCESS, 0)}}
    for process in psutil.process_iter(["name", "cmdline", "nice"]):
        name = process.info["name"] or ""
        command = " ".join(process.info["cmdline"] or ())
        if name.startswith("ray::") or command.startswith("ray::"):
            if process.pid in ours and command.strip() not in RAY_AGENTS:
                seen.setdefault("ray_workers", set()).add(process.info["nice"])
            continue
        for peer in PEER_PROCESSES:
            if peer in name or peer in command.split(" ", 1)[0]:
                seen.setdefault(peer, set()).add(process.info["nice"])
    return seen


def _remember_niceness() -> None:
    for side, levels in niceness_now().items():
        _SEEN_NICENESS.setdefault(side, set()).update(levels)


def observed_niceness() -> dict[str, Any]:
    """Every nice level seen on each side during the run (when Ray's session ended,
    and now), and whether Ray's workers ran at the peers' level."""
    _remember_niceness()
    sides = {side: sorted(levels) for side, levels in sorted(_SEEN_NICENESS.items())}
    peers = {level for side, levels in sides.items() if side != "ray_workers" for level in levels}
    workers = set(sides.get("ray_workers", ()))
    return {**sides, "equal": bool(workers) and workers <= peers | {PEER_NICENESS}}


@contextlib.contextmanager
def ray_session(**overrides: Any) -> Iterator[ModuleType]:
    """A local Ray runtime sized for this 2-core machine; yields the ``ray`` module."""
    import ray
    from ray._private import ray_constants

    from serve_app import RAY_RUNTIME_ENV

    if ray_constants.ENABLE_RAY_CLUSTER:
        raise RuntimeError("ray was imported before benchmarks.harness: it would not use loopback")
    options: dict[str, Any] = {
        # Always a fresh Ray of our own, never a `ray start` cluster found here.
        "address": "local",
        "num_cpus": 2,
        "include_dashboard": False,
        "object_store_memory": 150 * 2**20,
        "namespace": "realm-bench",
        "log_to_driver": False,
        # Replicas' gRPC servers on loopback, as `make run` has them.
        "runtime_env": RAY_RUNTIME_ENV,
    }
    ray.init(**(options | overrides))
    try:
        yield ray
    finally:
        _remember_niceness()  # while Ray's workers and the peers still run
        ray.shutdown()


def machine_info() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "ray": version("ray"),
        "platform": platform.platform(),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``results/<name>.json`` and a throughput bar plot ``results/<name>.png``.

    ``result`` holds ``claim``, ``params``, ``variants`` ({variant: Sampler.metrics()}) and
    ``ratios`` ({label: float}). A --quick run writes ``<name>.quick.*`` instead.
    """
    stem = f"{name}.quick" if result.get("params", {}).get("quick") else name
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    doc = {
        "name": name,
        "date": now,
        "machine": machine_info(),
        "niceness": observed_niceness(),
        "load_avg_at_end": os.getloadavg(),
        **result,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stem}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    _plot(doc, RESULTS_DIR / f"{stem}.png")
    progress(f"wrote {path.relative_to(RESULTS_DIR.parent.parent)} and .png")
    return path


def _plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["variants"])
    values = [doc["variants"][n]["throughput_ops_s"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    bars = ax.bar(names, values, color="tab:blue")
    ax.tick_params(axis="x", labelrotation=20)
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=2)
    if min(values) > 0 and max(values) / min(values) > 50:
        ax.set_yscale("log")  # batched and single-call throughputs differ by orders of magnitude
    ax.set_ylabel("throughput (ops/s)")
    ax.margins(y=0.15)
    # One ratio a line, with enough digits for ratios below 1 (0.043, not 0.0).
    ratios = "\n".join(f"{k} = {v:,.3g}" for k, v in doc["ratios"].items())
    machine = doc["machine"]
    ax.set_title(
        f"{doc['name']} ({machine['nproc']} cores, ray {machine['ray']})\n{ratios}", fontsize=9
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replot() -> None:
    """Draw every committed result's PNG again from its JSON."""
    for path in sorted(RESULTS_DIR.glob("*.json")):
        _plot(json.loads(path.read_text()), path.with_suffix(".png"))
        progress(f"replotted {path.with_suffix('.png').name}")


if __name__ == "__main__":
    replot()
