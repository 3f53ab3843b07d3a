"""Merging load generators' results: histogram percentiles, counts and per-node shares."""

from __future__ import annotations

import random

from benchmarks.harness import Sampler
from benchmarks.loadgen import GROWTH, Histogram, LoadGenerators, MergedSampler


def test_histogram_percentiles_are_within_a_bucket_of_the_exact_ones():
    rng = random.Random(7)
    latencies = [rng.lognormvariate(-6, 1.2) for _ in range(20_000)]  # about 2.5 ms median
    exact = Sampler(latencies_s=latencies)
    histogram = Histogram.of(latencies)
    for q in (50, 90, 99):
        assert abs(histogram.percentile_ms(q) / exact.percentile_ms(q) - 1) <= GROWTH - 1


def test_merged_sampler_adds_generators_up_and_gives_each_node_its_share():
    # Given two nodes' runs of one workload, 3 ops a call
    fast = [0.001] * 300
    slow = [0.004] * 100
    runs = [
        {"node_id": "a", "calls": 300, "concurrency": 2, "elapsed_s": 1.0,
         "histogram": {str(k): v for k, v in Histogram.of(fast).counts.items()}},
        {"node_id": "b", "calls": 100, "concurrency": 2, "elapsed_s": 2.0,
         "histogram": Histogram.of(slow).counts},
    ]  # fmt: skip

    # When they are merged
    metrics = MergedSampler(3, runs).metrics()

    # Then counts add up over the longest window, and latencies are both nodes'
    assert metrics["calls"] == 400 and metrics["ops"] == 1_200
    assert metrics["duration_s"] == 2.0 and metrics["throughput_ops_s"] == 600.0
    assert abs(metrics["p50_ms"] - 1.0) < 0.01 and abs(metrics["p99_ms"] - 4.0) < 0.04
    assert metrics["per_node"] == {
        "a": {"calls": 300, "in_flight": 2, "share": 0.75},
        "b": {"calls": 100, "in_flight": 2, "share": 0.25},
    }


def test_work_is_split_in_shares_that_differ_by_at_most_one():
    assert LoadGenerators.split(16, 3) == [6, 5, 5]
    assert LoadGenerators.split(2, 3) == [1, 1, 0]
    assert sum(LoadGenerators.split(5_001, 4)) == 5_001
