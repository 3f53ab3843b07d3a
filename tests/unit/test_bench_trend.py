"""The ledger's rounds: the trend figure that ``ledger.py --decline`` reports beside its verdict."""

from __future__ import annotations

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
