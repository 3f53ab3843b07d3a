"""A real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster).

Runs in its own pytest process (``make test`` does so): one driver process can
join only one Ray cluster, and the integration tests use a single-node one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from tests.conftest import ROOT

MiB = 1024 * 1024

#: Notice a dead node in about 3 s instead of Ray's default of about 30 s.
FAST_FAILURE_DETECTION = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 3,
}


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if ray.is_initialized():
        pytest.fail("tests/cluster must run in a pytest process of its own (see Makefile)")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {HEAD_MARKER: 1},
            "object_store_memory": 100 * MiB,
            "include_dashboard": False,
            "_system_config": FAST_FAILURE_DETECTION,
        },
    )
    ray.init(address=cluster.address, namespace="realm-cluster-tests")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


#: A resource only the test's worker nodes carry, to pin actors onto them.
MARKER = "test_worker"
#: A resource only the head carries.
HEAD_MARKER = "test_head"


def wait_for(condition: Callable[[], bool], *, within_s: float = 60.0) -> None:
    """Join on a cluster state change (polling with a time budget, not a timing
    check); the synchronous sibling of ``tests.conftest.until``."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"the cluster never reached the expected state in {within_s} s")
        time.sleep(0.1)


def remove_and_wait(cluster: Cluster, node: Any) -> None:
    """Kill a node's processes at once and wait until the GCS declares it dead."""
    node_id = node.node_id
    cluster.remove_node(node, allow_graceful=False)  # a crash, not a drain
    wait_for(lambda: not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()))


@pytest.fixture
def worker_node(cluster: Cluster) -> Iterator[Callable[[], Any]]:
    """Adds worker nodes carrying MARKER; the ones still up are removed afterwards."""
    added: list[Any] = []

    def add() -> Any:
        node = cluster.add_node(num_cpus=1, resources={MARKER: 1}, object_store_memory=100 * MiB)
        cluster.wait_for_nodes()
        # Registered is not yet schedulable: wait until the GCS, which places
        # detached actors, counts the node's marker.
        wait_for(lambda: ray.cluster_resources().get(MARKER, 0) >= 1)
        added.append(node)
        return node

    yield add
    for node in added:
        if node in cluster.worker_nodes:
            remove_and_wait(cluster, node)
