"""The arithmetic of benchmarks/serial_points.py: cost per operation, one actor's
ceiling, and what a node or ten sustain with one serial actor or one per core."""

from __future__ import annotations

import pytest

from benchmarks.serial_points import (
    ceiling_ops_s,
    cost_per_op,
    extrapolate,
    node_ceiling_ops_s,
)


def test_cost_per_op_is_cpu_over_ops_and_none_without_ops():
    assert cost_per_op(0.5, 1_000) == pytest.approx(0.0005)
    assert cost_per_op(0.5, 0) is None


def test_one_core_at_100_us_an_op_sustains_10000_ops_s():
    assert ceiling_ops_s(100e-6) == pytest.approx(10_000)
    assert ceiling_ops_s(100e-6, cores=4) == pytest.approx(40_000)
    assert ceiling_ops_s(None) is None
    assert ceiling_ops_s(0.0) is None


def test_one_serial_actor_is_capped_at_one_core_however_many_cores():
    # 100 us in the actor, 300 us in all: one actor stops at 10,000/s on any node.
    one = node_ceiling_ops_s(100e-6, 300e-6, cores=2, serial_actors=1)
    twenty = node_ceiling_ops_s(100e-6, 300e-6, cores=20, serial_actors=1)
    assert one == pytest.approx(10_000 * 2 / 3)  # the node's CPU binds first: 2 / 300 us
    assert twenty == pytest.approx(10_000)  # the actor's own core binds


def test_spread_over_actors_the_whole_cost_binds_and_grows_with_cores():
    two = node_ceiling_ops_s(100e-6, 300e-6, cores=2, serial_actors=2)
    twenty = node_ceiling_ops_s(100e-6, 300e-6, cores=20, serial_actors=20)
    assert two == pytest.approx(2 / 300e-6)
    assert twenty == pytest.approx(20 / 300e-6)


def test_more_actors_than_cores_share_the_cores():
    # 4 actors on 2 cores: each gets half a core; the CPU of the node still binds.
    assert node_ceiling_ops_s(100e-6, 100e-6, cores=2, serial_actors=4) == pytest.approx(20_000)


def test_unknown_costs_give_no_ceiling():
    assert node_ceiling_ops_s(None, 1e-4, cores=2, serial_actors=1) is None
    assert node_ceiling_ops_s(1e-4, None, cores=2, serial_actors=1) is None


def test_extrapolate_adds_the_client_to_the_actors_cost():
    entry = {
        "serial_cpu_us_per_op": 100.0,
        "actors_cpu_us_per_op": 150.0,
        "driver_cpu_us_per_op": 50.0,
    }
    got = extrapolate(entry, cores_per_node=2)
    assert got["one_actor_ops_s"] == pytest.approx(10_000)
    assert got["nodes_1"] == {
        "cores": 2,
        "one_actor_ops_s": pytest.approx(10_000),  # 2 cores / 200 us = 10,000 as well
        "actor_per_core_ops_s": pytest.approx(10_000),
    }
    assert got["nodes_10"]["one_actor_ops_s"] == pytest.approx(10_000)
    assert got["nodes_10"]["actor_per_core_ops_s"] == pytest.approx(100_000)
    missing = extrapolate({"serial_cpu_us_per_op": None}, cores_per_node=2)
    assert missing["one_actor_ops_s"] is None
    assert missing["nodes_10"]["actor_per_core_ops_s"] is None
