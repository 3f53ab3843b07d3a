"""Shared pieces of every benchmark: flags, Ray session, timed workloads, results as JSON + PNG.

Import this module before Ray: it pins Ray to loopback, which Ray reads once at import time.
Benchmarks therefore take the ``ray`` module from :func:`ray_session` instead of importing it.
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
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration_s = min(args.duration_s, QUICK_DURATION_S)
    random.seed(args.seed)
    return args


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
    doc = {"name": name, "date": now, "machine": machine_info(), **result}
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
