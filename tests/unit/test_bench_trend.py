"""Benchmark bookkeeping: the trend ``ledger.py --decline`` reports beside its verdict, and
the niceness of a run without Ray."""

from __future__ import annotations

import os
import subprocess

import pytest

from benchmarks.ledger import trend


def test_a_steady_fall_shows_in_the_trend_even_when_the_last_round_is_fast():
    # Given rounds that fall 2% a round, and a last round as fast as the first
    rates = [1000.0 - 20 * i for i in range(9)] + [1000.0]
    found = trend(rates)
    # The single-round verdict sees no fall; the line through all rounds does
    assert rates[-1] / rates[0] == 1.0
    assert found["pct_per_round"] < -0.5
    assert found["fitted_last_over_first"] < 0.95


def test_flat_and_rising_rounds():
    assert trend([500.0] * 5) == {"pct_per_round": 0.0, "fitted_last_over_first": 1.0}
    rising = trend([100.0, 110.0, 120.0])
    assert rising["pct_per_round"] == pytest.approx(10 / 110 * 100, abs=0.01)
    assert rising["fitted_last_over_first"] == pytest.approx(1.2)


def test_realm_processes_without_ray_are_realm_s_side_of_equal(monkeypatch):
    # Given a run that starts no Ray (ledger_gc.py), with a Realm process at nice 15
    from benchmarks import harness

    monkeypatch.setattr(harness, "_SEEN_NICENESS", {})
    low = subprocess.Popen(["sleep", "30"], preexec_fn=lambda: os.nice(15))
    try:
        harness.remember_realm_processes([os.getpid()])
        assert harness.observed_niceness()["realm_processes"] == [os.nice(0)]
        assert harness.observed_niceness()["equal"] is (os.nice(0) == harness.PEER_NICENESS)
        harness.remember_realm_processes([low.pid])
        found = harness.observed_niceness()
    finally:
        low.kill()
        low.wait()
    # Its level is on record, and the sides are not equal
    assert 15 in found["realm_processes"]
    assert found["equal"] is False
