"""Scale-out: a service's benchmark at 1, 2 and 3 nodes of a cluster on this machine.

    python -m benchmarks.scale [--quick] [--nodes 1,2,3] [--services cache,queue]
    python -m benchmarks.scale --address <ray address>   # one point: that cluster, as it is

Starts a ``ray.cluster_utils.Cluster`` on loopback (each node ``--node-cpus``
CPUs and a small object store), and at each node count runs each service's
own benchmark against it as ``python -m benchmarks.<service> --address ...``:
the service's actors spread over the nodes (Realm's actors are SPREAD), its
load comes from one load generator actor per node (``benchmarks/loadgen.py``),
and its result records where every actor and generator ran and each node's
share of the work (the CPU time of the run's actors there, and the calls its
generator made). The peer's variants (Redis, Celery) run beside it at every
step, from this machine, as the service's benchmark always runs them.

The nodes of this Cluster share this machine's 2 cores: throughput will not
grow with the node count here, and is not meant to. What a run here shows is
that the placement spreads: actors on every node, every node doing its share.
The same command with ``--address`` against a real cluster (run once per
cluster size) gives the real curve.

Writes ``benchmarks/results/scale.json`` (+ PNG): per service, node count and
variant the throughput, p50/p99, the actors per node, and each node's shares.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import harness  # before ray: it pins Ray to loopback

ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20
CLAIM = (
    "Issue 14 (distributed benchmarks): the same service at 1, 2 and 3 nodes spreads its "
    "actors and its load over every node; on one 2-core machine throughput does not grow."
)
#: Per service: the benchmark's flags for a step, and the Realm variants reported.
SERVICES: dict[str, dict[str, Any]] = {
    "cache": {
        "flags": lambda a: ["--shards", str(a.shards), "--batch-sizes", "100", "--keys", "1000"],
        "variants": ["realm_get", "realm_near_get", "realm_mget_100"],
        "peer": "redis_get",
    },
    "queue": {
        "flags": lambda a: ["--rounds", "1", "--jobs", str(a.queue_jobs), "--paced-jobs", "200"],
        "variants": ["realm", "realm_batch"],
        "peer": "celery",
    },
}


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", default="1,2,3", help="node counts, ascending")
    parser.add_argument("--services", default="cache,queue", help=f"of {','.join(SERVICES)}")
    parser.add_argument("--node-cpus", type=int, default=1, help="CPUs each node advertises")
    parser.add_argument("--object-store-mib", type=int, default=80, help="per node")
    parser.add_argument("--shards", type=int, default=6, help="cache shards (N)")
    parser.add_argument("--queue-jobs", type=int, default=5_000, help="jobs per queue variant")


def run_step(args: argparse.Namespace, service: str, address: str, out: Path) -> dict[str, Any]:
    """The service's benchmark against ``address``; its result JSON."""
    spec = SERVICES[service]
    command = [sys.executable, "-m", f"benchmarks.{service}", "--address", address]
    command += ["--results-dir", str(out), "--worker-niceness", str(args.worker_niceness)]
    command += ["--quick"] if args.quick else ["--duration-s", str(args.duration_s)]
    command += spec["flags"](args)
    harness.progress(f"{service}: {' '.join(command[1:])}")
    started = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=True)
    harness.progress(f"{service}: done in {time.monotonic() - started:.0f} s")
    (path,) = out.glob(f"{service}*.json")
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def summarize(service: str, result: dict[str, Any]) -> dict[str, Any]:
    """What a step shows: the Realm variants, the peer beside them, and the spread."""
    spec = SERVICES[service]
    keep = ("throughput_ops_s", "p50_ms", "p99_ms", "load_generators", "per_node")
    variants = {
        name: {k: v for k, v in result["variants"][name].items() if k in keep}
        for name in [*spec["variants"], spec["peer"]]
    }
    cluster = result.get("cluster", {})
    actors = cluster.get("actors", [])
    return {
        "service": service,
        "node_count": cluster.get("node_count"),
        "nodes_with_actors": cluster.get("nodes_with_actors"),
        "variants": variants,
        "nodes": cluster.get("nodes"),
        "actors_per_node": {
            node: dict(sorted(Counter(a["class"] for a in actors if a["node"] == node).items()))
            for node in cluster.get("nodes", {})
        },
        "load_avg_at_end": result.get("load_avg_at_end"),
        "niceness": result.get("niceness"),
    }


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__ or "", argv, duration_s=3.0, extra=_add_flags)
    counts = sorted({int(n) for n in args.nodes.split(",")})
    services = args.services.split(",")
    unknown = set(services) - set(SERVICES)
    if unknown or counts[0] < 1:
        raise SystemExit(f"unknown services {sorted(unknown)} or a node count below 1")
    load_before = os.getloadavg()
    steps: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="realm-bench-scale-") as tmp:
        if harness.on_cluster():  # one point: the cluster as it is
            for service in services:
                out = Path(tmp) / service
                steps.append(summarize(service, run_step(args, service, args.address, out)))
        else:
            steps = local_cluster_steps(args, counts, services, Path(tmp))
    write(args, steps, load_before)


def local_cluster_steps(
    args: argparse.Namespace, counts: list[int], services: list[str], tmp: Path
) -> list[dict[str, Any]]:
    """Each service at each node count of one Cluster on this machine, nodes
    added between steps (actors start afresh at every step, so SPREAD sees them all)."""
    from ray.cluster_utils import Cluster

    # The nodes' workers import Realm's code, and start at --worker-niceness
    # (harness.parse_args set RAY_worker_niceness, which the raylets read).
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    node_args = {"num_cpus": args.node_cpus, "object_store_memory": args.object_store_mib * MiB}
    harness.progress(f"starting a 1-node Cluster ({args.node_cpus} CPU a node)")
    cluster = Cluster(initialize_head=True, head_node_args=node_args | {"include_dashboard": False})
    steps = []
    try:
        for count in counts:
            while len(cluster.list_all_nodes()) < count:
                cluster.add_node(**node_args)
            cluster.wait_for_nodes()
            # Registered is not yet schedulable: wait until the GCS, which places
            # the detached actors, counts every node's CPUs.
            deadline = time.monotonic() + 120
            while cluster.global_state.cluster_resources().get("CPU", 0) < count * args.node_cpus:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the GCS never counted {count} nodes' CPUs")
                time.sleep(0.2)
            harness.progress(f"{count} nodes up at {cluster.address}")
            for service in services:
                out = tmp / f"{service}-{count}"
                step = summarize(service, run_step(args, service, cluster.address, out))
                if step["node_count"] != count:
                    raise RuntimeError(f"{service} saw {step['node_count']} nodes, not {count}")
                steps.append(step)
    finally:
        cluster.shutdown()
    return steps


def variants_by_name(steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every step's variants, named ``<service> <variant> @<n>n``, each variant's
    node counts side by side."""
    variants: dict[str, dict[str, Any]] = {}
    for service in dict.fromkeys(step["service"] for step in steps):
        mine = [step for step in steps if step["service"] == service]
        for name in mine[0]["variants"]:
            for step in mine:
                variants[f"{service} {name} @{step['node_count']}n"] = step["variants"][name]
    return variants


def write(args: argparse.Namespace, steps: list[dict[str, Any]], load_before: Any) -> None:
    variants = variants_by_name(steps)
    ratios: dict[str, float] = {}
    for service in {step["service"] for step in steps}:
        mine = [s for s in steps if s["service"] == service]
        first, last = mine[0], mine[-1]
        if first is last:
            continue
        for name in SERVICES[service]["variants"]:
            a = first["variants"][name]["throughput_ops_s"]
            b = last["variants"][name]["throughput_ops_s"]
            label = f"{service} {name} {last['node_count']}n/{first['node_count']}n"
            ratios[label] = round(b / a, 2) if a else float("nan")
    for step in steps:
        shares = {
            node: (n["actors"], n["actor_cpu_share"], n["load_generators"])
            for node, n in (step["nodes"] or {}).items()
        }
        harness.progress(
            f"{step['service']} @{step['node_count']} nodes: actors, actor CPU share, "
            f"load generators by node {shares}"
        )
    harness.write_result(
        "scale",
        {
            "claim": CLAIM,
            "params": vars(args)
            | {"load_before": load_before, "load_after": os.getloadavg(), "cores": os.cpu_count()},
            "variants": variants,
            "ratios": ratios,
            "steps": steps,
            "note": "every node shares this machine's cores: throughput is not expected to grow",
        },
    )


if __name__ == "__main__":
    main()
