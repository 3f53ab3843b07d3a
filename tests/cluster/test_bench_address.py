"""A benchmark pointed at an existing 2-node cluster (``--address``) spreads over it.

The cache benchmark runs as its own driver process (``python -m benchmarks.cache
--quick --address ...``) against the session's Cluster with one worker node
added. Its result must record both nodes, the shards evenly on both, one load
generator on each that made calls, and nothing of the run left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import ray

from tests.conftest import ROOT

NAMESPACE = "realm-bench"  # benchmarks/cache.py's


def test_cache_benchmark_runs_on_every_node_of_a_cluster(cluster, worker_node, tmp_path):
    # Given a 2-node cluster
    worker = worker_node()
    nodes = {cluster.head_node.node_id, worker.node_id}

    # When the cache benchmark runs against it
    subprocess.run(
        [
            sys.executable, "-m", "benchmarks.cache", "--quick", "--address", cluster.address,
            "--results-dir", str(tmp_path), "--shards", "4", "--keys", "200",
            "--batch-sizes", "100",
        ],
        cwd=ROOT,
        check=True,
        timeout=240,
    )  # fmt: skip

    # Then its result records both nodes, with Realm's actors and a load generator on each
    result = json.loads((tmp_path / "cache.quick.json").read_text())
    placement = result["cluster"]
    assert placement["address"] == cluster.address
    assert placement["node_count"] == 2
    assert {n["node_id"] for n in placement["nodes"].values()} == nodes
    shard_nodes = [a["node"] for a in placement["actors"] if a["class"].startswith("_CacheShard")]
    assert Counter(shard_nodes) == dict.fromkeys(placement["nodes"], 2)  # 4 shards: 2 on each
    generator_nodes = [g["node"] for g in placement["load_generators"]]
    assert sorted(generator_nodes) == sorted(placement["nodes"])
    assert all(n["actor_cpu_s"] > 0 for n in placement["nodes"].values())
    # and every Realm variant ran from both nodes, which each made calls
    for name in ("realm_get", "realm_near_get", "realm_mget_100"):
        per_node = result["variants"][name]["per_node"]
        assert set(per_node) == nodes
        assert all(n["calls"] > 0 for n in per_node.values())
        assert sum(n["calls"] for n in per_node.values()) == result["variants"][name]["calls"]
    # and the run left no actor of its namespace behind
    left = [a for a in ray.util.list_named_actors(all_namespaces=True)]
    assert not [a for a in left if a["namespace"] == NAMESPACE]
