"""Load generators as Ray actors, one per alive node, their results merged.

A benchmark on a cluster (``--address``) drives Realm from every node, not
from one driver process: :class:`LoadGenerators` starts one
:class:`LoadGenerator` actor pinned to each alive node
(``NodeAffinitySchedulingStrategy``, hard), and runs one workload on all of
them at once, the in-flight calls (and a call count, if given) split between
them.

A workload is a *factory*: a picklable async callable (a module-level function,
or a ``functools.partial`` of one) that runs inside each generator and returns
``(op, close)``: the operation to time, an async callable, and the clean-up to
await at the end (or ``None``). Clients are made there, on the generator's
node, so each node's calls take that node's path to the actors.

Each generator times its calls with :func:`benchmarks.harness.run_workload`
and answers counts and a latency :class:`Histogram` (log-spaced buckets, 1%
wide: mergeable, and small however many calls ran), which
:class:`MergedSampler` adds up. Its ``metrics()`` has the keys of
``Sampler.metrics()`` (so a result reads the same either way) plus each
node's calls and share. The generators also read the CPU time and nice level
of the run's actors on their node for :class:`benchmarks.harness.Placement`.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks import harness  # before ray: it pins Ray to loopback

# isort: split
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

#: A factory of a workload: run in a generator, answers (op, close).
Op = Callable[[], Awaitable[Any]]
Factory = Callable[[], Awaitable[tuple[Op, Callable[[], Awaitable[Any]] | None]]]
#: Histogram buckets grow by this factor: a percentile is known to within 1%.
GROWTH = 1.01
#: The smallest latency told apart (shorter ones share the first bucket).
FLOOR_S = 1e-6
#: A run starts this long after it is called, on every node at once (wall clock).
START_LEAD_S = 0.2


@dataclass
class Histogram:
    """Latencies in log-spaced buckets: bucket ``i`` holds ``[FLOOR_S*GROWTH**i, ...**(i+1))``."""

    counts: dict[int, int] = field(default_factory=dict)

    @staticmethod
    def bucket(latency_s: float) -> int:
        return max(0, int(math.log(max(latency_s, FLOOR_S) / FLOOR_S, GROWTH)))

    @classmethod
    def of(cls, latencies_s: list[float]) -> Histogram:
        histogram = cls()
        for latency in latencies_s:
            index = cls.bucket(latency)
            histogram.counts[index] = histogram.counts.get(index, 0) + 1
        return histogram

    def merge(self, other: Histogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count

    def total(self) -> int:
        return sum(self.counts.values())

    def percentile_ms(self, q: float) -> float:
        """The bucket's middle at the same rank ``Sampler.percentile_ms`` takes."""
        total = self.total()
        if not total:
            return float("nan")
        rank = min(total - 1, int(q / 100 * total))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen > rank:
                return FLOOR_S * GROWTH ** (index + 0.5) * 1000
        raise AssertionError("unreachable: rank < total")


@dataclass
class MergedSampler:
    """The runs of every generator of one workload, as one sampler."""

    ops_per_call: int
    runs: list[dict[str, Any]]

    def metrics(self) -> dict[str, Any]:
        histogram = Histogram()
        for run in self.runs:
            histogram.merge(Histogram({int(k): v for k, v in run["histogram"].items()}))
        calls = histogram.total()
        # The generators start together; the window is the longest of theirs.
        elapsed = max((run["elapsed_s"] for run in self.runs), default=0.0)
        per_s = calls / elapsed if elapsed else 0.0
        per_node: dict[str, dict[str, Any]] = {}
        for run in self.runs:
            node = per_node.setdefault(run["node_id"], {"calls": 0, "in_flight": 0})
            node["calls"] += run["calls"]
            node["in_flight"] += run["concurrency"]
        for node in per_node.values():
            node["share"] = round(node["calls"] / calls, 3) if calls else None
        return {
            "calls": calls,
            "ops": calls * self.ops_per_call,
            "duration_s": round(elapsed, 3),
            "calls_per_s": round(per_s, 1),
            "throughput_ops_s": round(per_s * self.ops_per_call, 1),
            "p50_ms": round(histogram.percentile_ms(50), 3),
            "p99_ms": round(histogram.percentile_ms(99), 3),
            "latency": f"histogram, buckets {GROWTH - 1:.0%} wide",
            "load_generators": len(self.runs),
            "per_node": per_node,
        }


class LoadGenerator:
    """One node's load: prepares a workload, runs it when told, reads processes."""

    def __init__(self) -> None:
        self.node_id = ray.get_runtime_context().get_node_id()
        self.op: Op | None = None
        self.close: Callable[[], Awaitable[Any]] | None = None

    async def where(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "pid": os.getpid()}

    async def prepare(self, factory: Factory, warmup: int) -> None:
        self.op, self.close = await factory()
        for _ in range(warmup):
            await self.op()

    async def run(
        self,
        *,
        concurrency: int,
        duration_s: float | None,
        count: int | None,
        ops_per_call: int,
        start_at: float,
    ) -> dict[str, Any]:
        """Run the prepared workload from ``start_at`` (wall clock, so that every
        node starts together however late its call arrived)."""
        if self.op is None:
            raise RuntimeError("prepare() first")
        await asyncio.sleep(max(0.0, start_at - time.time()))
        sampler = await harness.run_workload(
            self.op,
            concurrency=concurrency,
            duration_s=duration_s,
            count=count,
            ops_per_call=ops_per_call,
        )
        return {
            "node_id": self.node_id,
            "calls": len(sampler.latencies_s),
            "concurrency": concurrency,
            "elapsed_s": sampler.elapsed_s,
            "histogram": Histogram.of(sampler.latencies_s).counts,
        }

    async def finish(self) -> None:
        if self.close is not None:
            await self.close()
        self.op = self.close = None

    async def processes(self, pids: list[int]) -> dict[int, dict[str, Any]]:
        """CPU seconds (user + system) and nice level of these processes of this node."""
        import psutil

        found = {}
        for pid in pids:
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    times = process.cpu_times()
                    found[pid] = {"cpu_s": times.user + times.system, "nice": process.nice()}
            except psutil.Error:
                continue  # ended (its last reading stands)
        return found


class LoadGenerators:
    """One :class:`LoadGenerator` per alive node of the session's cluster."""

    def __init__(self) -> None:
        options: dict[str, Any] = {"num_cpus": 0, "max_concurrency": 1_000}
        actor = ray.remote(**options)(LoadGenerator)
        self.nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        self.handles: list[Any] = [
            actor.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
            ).remote()
            for node in self.nodes
        ]
        self.where = ray.get([h.where.remote() for h in self.handles])
        for node, where in zip(self.nodes, self.where, strict=True):
            if where["node_id"] != node:
                raise RuntimeError(f"a load generator for {node} started on {where['node_id']}")
        self.placement = harness.Placement.current
        if self.placement is not None:
            for where in self.where:
                self.placement.note_load_generator(where["node_id"], where["pid"])
        self._window: dict[tuple[str, int], dict[str, Any]] = {}
        harness.progress(f"{len(self.handles)} load generators, one on each node")

    def __len__(self) -> int:
        return len(self.handles)

    async def _processes(self) -> dict[tuple[str, int], dict[str, Any]]:
        """CPU time and nice level of the run's actors, read on each one's node."""
        if self.placement is None:
            return {}
        pids = self.placement.pids_by_node()
        pairs = zip(self.nodes, self.handles, strict=True)
        answers = await asyncio.gather(*(h.processes.remote(pids.get(n, [])) for n, h in pairs))
        return {
            (node, pid): got
            for node, answer in zip(self.nodes, answers, strict=True)
            for pid, got in answer.items()
        }

    async def begin_window(self) -> None:
        """Start counting the CPU the run's actors use (each node's share of the work)."""
        self._window = await self._processes()

    async def end_window(self) -> None:
        """Credit the CPU each actor used since :meth:`begin_window` to its node
        (all of it for an actor that started within the window)."""
        if self.placement is None:
            return
        for (node, pid), got in (await self._processes()).items():
            before = self._window.get((node, pid), {"cpu_s": 0.0})["cpu_s"]
            self.placement.note_work(node, pid, got["cpu_s"] - before, got["nice"])
        self._window = {}

    async def __aenter__(self) -> LoadGenerators:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in self.handles:
            ray.kill(handle)
        self.handles = []

    @staticmethod
    def split(total: int, parts: int) -> list[int]:
        """``total`` in ``parts`` shares that differ by at most one."""
        return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]

    async def prepare(self, factory: Factory, *, warmup: int = 0) -> None:
        await asyncio.gather(*(h.prepare.remote(factory, warmup) for h in self.handles))

    async def run(
        self,
        *,
        concurrency: int,
        duration_s: float | None = None,
        count: int | None = None,
        ops_per_call: int = 1,
        window: bool = True,
    ) -> MergedSampler:
        """Run the prepared workload on every generator at once: ``concurrency``
        calls in flight in all (at least one per generator), ``count`` calls in all.
        ``window``: count the actors' CPU over the run (else the caller does)."""
        if window:
            await self.begin_window()
        in_flight = self.split(max(concurrency, len(self)), len(self))
        counts = self.split(count, len(self)) if count is not None else [None] * len(self)
        start_at = time.time() + START_LEAD_S  # every generator has its call by then
        runs = await asyncio.gather(
            *(
                h.run.remote(
                    concurrency=c,
                    duration_s=duration_s,
                    count=n,
                    ops_per_call=ops_per_call,
                    start_at=start_at,
                )
                for h, c, n in zip(self.handles, in_flight, counts, strict=True)
            )
        )
        if window:
            await self.end_window()
        return MergedSampler(ops_per_call, list(runs))

    async def finish(self) -> None:
        await asyncio.gather(*(h.finish.remote() for h in self.handles))

    async def measure(self, factory: Factory, *, warmup: int = 0, **run: Any) -> MergedSampler:
        """prepare, run, finish."""
        await self.prepare(factory, warmup=warmup)
        try:
            return await self.run(**run)
        finally:
            await self.finish()


async def run_variants(
    variants: dict[str, dict[str, Any]],
    *,
    duration_s: float,
    warmup: int,
    generators: LoadGenerators | None,
) -> dict[str, harness.Sampler | MergedSampler]:
    """Like ``harness.run_variants``, in the same order, with one difference: a
    variant that gives a ``factory`` (besides its ``op``) runs on the
    ``generators`` when there are some; every other variant runs here."""
    samplers: dict[str, harness.Sampler | MergedSampler] = {}
    for name, kw in variants.items():
        kw = dict(kw)
        factory = kw.pop("factory", None)
        concurrency = kw.get("concurrency", 1)
        if factory is None or generators is None:
            samplers |= await harness.run_variants({name: kw}, duration_s=duration_s, warmup=warmup)
            continue
        harness.progress(
            f"{name}: {duration_s:g} s, {concurrency} in flight over {len(generators)} nodes"
        )
        samplers[name] = await generators.measure(
            factory,
            warmup=warmup,
            concurrency=concurrency,
            duration_s=duration_s,
            ops_per_call=kw.get("ops_per_call", 1),
        )
        m: dict[str, Any] = samplers[name].metrics()
        shares = ", ".join(f"{v['share']:.0%}" for v in m["per_node"].values() if v["share"])
        harness.progress(
            f"{name}: {m['calls_per_s']:,.0f} calls/s, {m['throughput_ops_s']:,.0f} ops/s, "
            f"p50 {m['p50_ms']:.3f} ms, p99 {m['p99_ms']:.3f} ms; calls by node {shares}"
        )
    return samplers


__all__ = ["Histogram", "LoadGenerator", "LoadGenerators", "MergedSampler", "run_variants"]
