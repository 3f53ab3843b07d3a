"""Shared pieces of every benchmark: flags, Ray session, timed workloads, results as JSON + PNG.

Import this module before Ray: it pins Ray to loopback, which Ray reads once at import time.
Benchmarks therefore take the ``ray`` module from :func:`ray_session` instead of importing it.

Equal priority: Ray starts its workers at nice 15, below every peer here (Redis,
PostgreSQL, uvicorn, Celery, NATS and this driver run at 0), which on a 2-core
machine biases any side-by-side run against Realm. Every benchmark therefore
runs Ray's workers at ``--worker-niceness`` (default 0, the peers' level), and
every result records the nice levels it observed on both sides
(:func:`observed_niceness`), read from the processes themselves.

Clusters: ``--address`` (default ``$RAY_ADDRESS``, else ``local``) points a
benchmark at an existing Ray cluster instead of a fresh local Ray. The session
then connects (it neither starts nor stops the cluster), refuses a namespace
that already holds live actors, and kills the named actors of its namespace at
the end. In either mode every result records the cluster it ran on
(:class:`Placement`): the node count, the node of every actor the run started
and, on a cluster, each node's share of the CPU those actors used.
``benchmarks/loadgen.py`` runs a workload from one load generator actor per node.
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
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
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
#: Nice levels seen while the run went on (filled by :func:`_sample_niceness` and
#: :func:`ray_session`, read by :func:`write_result`).
_SEEN_NICENESS: dict[str, set[int]] = {}
_NICENESS_LOCK = threading.Lock()
#: Set to stop the niceness sampler (a process that writes no result needs none).
_SAMPLER_STOP = threading.Event()
#: Seconds between two looks at every process's nice level while a script runs.
NICENESS_SAMPLE_S = 3.0
#: ``--address`` of this run: ``local`` starts a Ray of our own, anything else connects.
LOCAL = "local"
_ADDRESS = LOCAL
#: ``--results-dir`` of this run (``RESULTS_DIR`` unless given).
_RESULTS_TO = RESULTS_DIR
#: Seconds between two reads of the GCS actor table while a session runs.
PLACEMENT_POLL_S = 1.0


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
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS") or LOCAL,
        help="Ray cluster to run on (default $RAY_ADDRESS, else 'local': a fresh Ray of "
        "this run's own); the cluster is neither started nor stopped",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON and PNG go"
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    _sample_niceness()
    if args.quick:
        args.duration_s = min(args.duration_s, QUICK_DURATION_S)
    global _ADDRESS, _RESULTS_TO
    _ADDRESS, _RESULTS_TO = args.address, args.results_dir
    # Ray's raylet reads this when it starts, and starts every worker at this level.
    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)  # noqa: SIM112 (Ray spells it so)
    random.seed(args.seed)
    return args


def cpu_seconds(processes: list[Any]) -> dict[int, float]:
    """User + system CPU seconds of each of ``processes`` (``psutil.Process``)
    still running, by pid: read before and after a measured stretch, the
    difference is what that stretch cost each process."""
    import psutil

    seconds: dict[int, float] = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
    return seconds


#: Rounds of :func:`machine_speed`'s fixed work (about 50 ms of CPU here).
SPEED_PROBE_ROUNDS = 300_000


def machine_speed(repeats: int = 5) -> dict[str, float]:
    """How fast this machine runs a fixed piece of pure-Python work now: the
    best of ``repeats`` runs, in CPU (thread) µs per round and in wall µs per
    round. The work never changes, so a rise between two moments of one run is
    the machine's (a slower clock, a busy host or a busy core), not the code
    measured; the CPU figure leaves out time spent waiting for a core."""
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.thread_time()
        table: dict[int, int] = {}
        for i in range(SPEED_PROBE_ROUNDS):
            table[i % 1_000] = table.get(i % 1_000, 0) + (i * 7) % 13
        best_cpu = min(best_cpu, time.thread_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return {
        "cpu_us_per_round": round(best_cpu / SPEED_PROBE_ROUNDS * 1e6, 4),
        "wall_us_per_round": round(best_wall / SPEED_PROBE_ROUNDS * 1e6, 4),
    }


def second_half_over_first(values: list[float]) -> float:
    """The mean of the second half of ``values`` (one per round) over the mean of
    the first half (the middle one, for an odd count, in the second)."""
    half = len(values) // 2
    return sum(values[half:]) / (len(values) - half) / (sum(values[:half]) / half)


def niceness_now() -> dict[str, set[int]]:
    """The nice levels of the processes running now: this run's Ray workers
    (``ray::...`` processes under this driver, which started their raylet, and
    on a cluster the run's actors that live on this machine), each peer of
    :data:`PEER_PROCESSES` found on the machine, and this driver."""
    import psutil

    ours = {child.pid for child in psutil.Process().children(recursive=True)}
    if Placement.current is not None and on_cluster():
        ours |= Placement.current.local_actor_pids()
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


def _remember_niceness(seen: dict[str, set[int]] | None = None) -> None:
    seen = niceness_now() if seen is None else seen
    with _NICENESS_LOCK:
        for side, levels in seen.items():
            _SEEN_NICENESS.setdefault(side, set()).update(levels)


def _sample_niceness() -> None:
    """Look at every process's nice level every :data:`NICENESS_SAMPLE_S` while the
    script runs, so the Ray workers of a session that ends early, or of a
    subprocess's own Ray (as http_overhead's servers start), are seen too."""

    def sample() -> None:
        while not _SAMPLER_STOP.is_set():
            _remember_niceness()
            _SAMPLER_STOP.wait(NICENESS_SAMPLE_S)

    threading.Thread(target=sample, name="niceness-sampler", daemon=True).start()


def stop_niceness_sampler() -> None:
    """Stop :func:`_sample_niceness` in a process that writes no result of its own
    (``http_overhead``'s server runners: the parent samples their processes)."""
    _SAMPLER_STOP.set()


#: The sides that run Realm's code: Ray's workers, or processes of a script that
#: runs Realm without Ray (:func:`remember_realm_processes`).
REALM_SIDES = ("ray_workers", "realm_processes")


def remember_realm_processes(pids: Iterable[int]) -> None:
    """Record the nice levels of processes that run Realm's code without Ray
    (``ledger_gc``'s mode processes): Realm's side of ``equal`` in such a run."""
    levels = set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            levels.add(os.getpriority(os.PRIO_PROCESS, pid))
    _remember_niceness({"realm_processes": levels})


def observed_niceness() -> dict[str, Any]:
    """Every nice level seen on each side during the run (when Ray's session ended,
    and now), and whether Realm's side (Ray's workers, or the processes of
    :func:`remember_realm_processes`) ran at the peers' level."""
    _remember_niceness()
    with _NICENESS_LOCK:
        sides = {side: sorted(levels) for side, levels in sorted(_SEEN_NICENESS.items())}
    peers = {level for side, levels in sides.items() if side not in REALM_SIDES for level in levels}
    realm = {level for side in REALM_SIDES for level in sides.get(side, ())}
    return {**sides, "equal": bool(realm) and realm <= peers | {PEER_NICENESS}}


def on_cluster() -> bool:
    """Whether this run connects to an existing cluster (``--address``) rather than
    starting a local Ray of its own."""
    return _ADDRESS != LOCAL


@contextlib.contextmanager
def ray_session(**overrides: Any) -> Iterator[ModuleType]:
    """A Ray session; yields the ``ray`` module.

    By default a fresh local Ray sized for this 2-core machine. With ``--address``,
    a connection to that cluster: the cluster's own sizing stands, the
    namespace must hold no live actors, and the session kills its namespace's
    named actors when it ends. Either way the actors of the run and their nodes
    are recorded for :func:`write_result` while the session lasts.
    """
    import ray
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        raise RuntimeError("ray was imported before benchmarks.harness: it would not use loopback")
    options: dict[str, Any] = {
        # A fresh Ray of our own, never a `ray start` cluster found here (unless --address).
        "address": "local",
        "num_cpus": 2,
        "include_dashboard": False,
        "object_store_memory": 150 * 2**20,
        "namespace": "realm-bench",
        "log_to_driver": False,
    }
    if on_cluster():
        # Connecting: sizing belongs to the cluster; Ray refuses these arguments.
        for key in ("num_cpus", "include_dashboard", "object_store_memory"):
            options.pop(key)
            overrides.pop(key, None)
        options["address"] = _ADDRESS
    options |= overrides
    ray.init(**options)
    placement = Placement(ray, options["namespace"])
    if on_cluster():
        try:
            placement.check_free()
        except BaseException:
            ray.shutdown()  # and never clean up: the actors found are another run's
            raise
    try:
        placement.start()
        yield ray
    finally:
        _remember_niceness()  # while Ray's workers and the peers still run
        placement.stop()
        if on_cluster():
            placement.clean_up()
        ray.shutdown()


@dataclass
class _ActorSeen:
    name: str
    class_name: str
    namespace: str
    node_id: str
    pid: int
    cpu_s: float = 0.0
    nice: int | None = None


class Placement:
    """The actors of one session and where they ran, read from the GCS actor table.

    The table (``ray._private.state``) answers with the dashboard off, as the
    benchmarks and tests run Ray; ``ray.util.state`` needs the dashboard. An
    actor belongs to the run when its job is the driver's (the actors it
    starts, detached or not, and the actors those start; not the dead actors
    of earlier runs in the same namespace, which the table keeps). A thread reads the
    table every :data:`PLACEMENT_POLL_S`, so actors that end before the
    session (a deleted queue's) are recorded too. On a cluster, the load
    generators of ``benchmarks/loadgen.py`` also read each actor's CPU time
    and nice level on their node around each measured window
    (:meth:`note_work`): each node's share of the work is its actors' CPU
    seconds within the windows.
    """

    #: The session open now (one per process): what :func:`write_result` records.
    current: Placement | None = None

    def __init__(self, ray: ModuleType, namespace: str) -> None:
        self.ray = ray
        self.namespace = namespace
        self.job_id = ray.get_runtime_context().get_job_id()
        self.nodes = {
            n["NodeID"]: {"address": n["NodeManagerAddress"], "cpus": n["Resources"].get("CPU", 0)}
            for n in ray.nodes()
            if n["Alive"]
        }
        self.actors: dict[str, _ActorSeen] = {}
        self.load_generators: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._table_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        Placement.current = self

    def table(self) -> list[tuple[str, Any]]:
        """(actor id, ``ActorTableData``) of every actor the GCS knows."""
        from ray._private import state
        from ray.core.generated import gcs_pb2

        table_data: Any = gcs_pb2.ActorTableData  # type: ignore[attr-defined]
        with self._table_lock:  # one reader at a time (the poll thread and the driver)
            accessor = state.state._connect_and_get_accessor()
            raw_rows = accessor.get_actor_table(None, None)
        rows = [table_data.FromString(raw) for raw in raw_rows]
        return [(row.actor_id.hex(), row) for row in rows]

    def local_actor_pids(self) -> set[int]:
        """Pids of the run's actors on this machine's nodes (a node's address is
        one of this machine's), each checked to be that actor's process here."""
        import psutil

        here = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
        with self._lock:
            seen = [a for a in self.actors.values()
                    if self.nodes.get(a.node_id, {}).get("address") in here]  # fmt: skip
        pids = set()
        for actor in seen:
            with contextlib.suppress(psutil.Error):
                title = " ".join(psutil.Process(actor.pid).cmdline())  # comm is cut at 15
                if title.startswith(f"ray::{actor.class_name}"):
                    pids.add(actor.pid)
        return pids

    def _ours(self, row: Any) -> bool:
        return bool(row.job_id.hex() == self.job_id)

    def refresh(self) -> None:
        """Record every actor of the run that has a node now."""
        try:
            rows = self.table()
        except Exception as error:  # a private API: record the failure, never fail the run
            self.error = f"actor table unreadable: {type(error).__name__}: {error}"
            return
        with self._lock:
            for actor_id, row in rows:
                node = row.address.node_id.hex()
                if not self._ours(row) or not node or set(node) <= {"0", "f"}:  # nil: no node
                    continue
                seen = self.actors.get(actor_id)
                if seen is None or seen.pid != row.pid:  # new, or restarted elsewhere
                    self.actors[actor_id] = _ActorSeen(
                        row.name, row.class_name, row.ray_namespace, node, row.pid
                    )
            for node_id in {a.node_id for a in self.actors.values()} - set(self.nodes):
                self.nodes[node_id] = {"address": None, "cpus": None}

    def pids_by_node(self) -> dict[str, list[int]]:
        with self._lock:
            by_node: dict[str, list[int]] = {}
            for actor in self.actors.values():
                by_node.setdefault(actor.node_id, []).append(actor.pid)
        return by_node

    def note_work(self, node_id: str, pid: int, cpu_s: float, nice: int) -> None:
        """CPU seconds an actor process on ``node_id`` used in a measured window."""
        with self._lock:
            for actor in self.actors.values():
                if actor.node_id == node_id and actor.pid == pid:
                    actor.cpu_s += cpu_s
                    actor.nice = nice
        _remember_niceness({"ray_workers": {nice}})

    def note_load_generator(self, node_id: str, pid: int) -> None:
        with self._lock:
            self.load_generators.append({"node_id": node_id, "pid": pid})

    def check_free(self) -> None:
        """Refuse a namespace with live actors (a run in progress or one's leftovers,
        which ``get_if_exists`` would reuse) and a cluster that runs Serve, which the
        HTTP benchmarks would replace and shut down."""
        alive = {"ALIVE", "PENDING_CREATION", "RESTARTING", "DEPENDENCIES_UNREADY"}
        from ray.core.generated import gcs_pb2

        table_data: Any = gcs_pb2.ActorTableData  # type: ignore[attr-defined]
        state_name = table_data.ActorState.Name
        busy = sorted(
            row.name or actor_id
            for actor_id, row in self.table()
            if row.ray_namespace == self.namespace and state_name(row.state) in alive
        )
        if busy:
            raise SystemExit(
                f"namespace {self.namespace!r} on {_ADDRESS} has live actors ({', '.join(busy[:5])}"
                f"{', ...' if len(busy) > 5 else ''}): another run, or its leftovers"
            )
        try:
            self.ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
        except ValueError:
            return
        raise SystemExit(
            f"{_ADDRESS} runs Ray Serve: the HTTP benchmarks deploy and shut down Serve, "
            "so run against a cluster without a deployment"
        )

    def start(self) -> None:
        self.refresh()

        def poll() -> None:
            while not self._stop.wait(PLACEMENT_POLL_S):
                self.refresh()

        self._thread = threading.Thread(target=poll, name="placement", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.refresh()

    def clean_up(self) -> None:
        """Kill every named actor left in the session's namespace (Realm's actors
        are detached: they would outlive the run)."""
        killed = 0
        for name in self.ray.util.list_named_actors(all_namespaces=True):
            if name["namespace"] == self.namespace:
                try:
                    self.ray.kill(self.ray.get_actor(**name), no_restart=True)
                    killed += 1
                except ValueError:
                    pass  # ended meanwhile
        progress(f"killed {killed} actors left in namespace {self.namespace!r}")

    def summary(self) -> dict[str, Any]:
        """What a result records: nodes, each actor's node, the load generators'
        nodes, and each node's share of the actors, their CPU and the load."""
        with self._lock:
            generators = list(self.load_generators)
            # The load generators are listed apart: the work is Realm's actors'.
            pids = {(g["node_id"], g["pid"]) for g in generators}
            seen = sorted(self.actors.values(), key=lambda a: (a.class_name, a.name, a.pid))
            actors = [a for a in seen if (a.node_id, a.pid) not in pids]
            cpu_of = {(a.node_id, a.pid): a.cpu_s for a in seen}
        names = {node_id: f"node{i}" for i, node_id in enumerate(self.nodes)}
        cpu_total = sum(a.cpu_s for a in actors)
        per_node: dict[str, dict[str, Any]] = {}
        for node_id, node in self.nodes.items():
            here = [a for a in actors if a.node_id == node_id]
            cpu = sum(a.cpu_s for a in here)
            per_node[names[node_id]] = {
                "node_id": node_id,
                **node,
                "actors": len(here),
                "load_generators": sum(g["node_id"] == node_id for g in generators),
                # CPU of the run's actors here within the load generators' windows.
                "actor_cpu_s": round(cpu, 3) if generators else None,
                "actor_cpu_share": round(cpu / cpu_total, 3) if cpu_total else None,
            }
        return {
            "address": _ADDRESS,
            "namespace": self.namespace,
            "node_count": len(self.nodes),
            "nodes_with_actors": len({a.node_id for a in actors}),
            "nodes": per_node,
            "actors": [
                {
                    "class": a.class_name,
                    "name": a.name,
                    "node": names[a.node_id],
                    "pid": a.pid,
                    **({"cpu_s": round(a.cpu_s, 3)} if a.cpu_s else {}),
                }
                for a in actors
            ],
            "load_generators": [
                {
                    "node": names[g["node_id"]],
                    "pid": g["pid"],
                    "cpu_s": round(cpu_of.get((g["node_id"], g["pid"]), 0.0), 3),
                }
                for g in generators
            ],
            **({"error": self.error} if self.error else {}),
        }


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
    if Placement.current is not None and "cluster" not in doc:
        doc["cluster"] = Placement.current.summary()
    path = write_json(doc, stem)
    _plot(doc, path.with_suffix(".png"))
    progress(f"wrote {path} and .png")
    return path


def write_json(doc: dict[str, Any], stem: str) -> Path:
    """``doc`` as ``<stem>.json`` in this run's ``--results-dir``; a ``Path`` in it (the
    ``--results-dir`` of its params) is written as a string."""
    _RESULTS_TO.mkdir(parents=True, exist_ok=True)
    path = _RESULTS_TO / f"{stem}.json"
    path.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):  # --results-dir in params
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


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
