"""Leases, the owner side of near caching: what a sweep forgets."""

from __future__ import annotations

from actors.runtime.clock import FakeClock
from actors.runtime.leases import Leases


def test_a_sweep_forgets_ended_leases_and_keys_whose_holders_all_left(clock: FakeClock):
    leases = Leases(clock, lease_s=2.0)
    leases.grant("kept", "a")
    leases.grant("ends", "b", expires_in_s=1.0)
    leases.grant("left", "c")
    leases.forget("c")  # the only holder of "left" closed
    clock.advance(1.5)
    leases.sweep()
    assert leases.held_keys() == ["kept"]
