"""Long-lived state kept out of the garbage collector's full collections.

CPython runs a full collection once the objects promoted to its oldest
generation since the last one reach a quarter of that generation. A busy
actor promotes objects all the time (calls in flight, records waiting for
their commit, answers on their way out), so full collections come at a pace
set by its traffic, while each one walks every object the actor keeps. An
actor whose state only grows (a ledger's transfers, a coordinator's decisions)
therefore spends more time per call the longer it runs: measured on the
ledger (``benchmarks/ledger_gc.py``), full collections took 112 µs of a
cross-shard transfer's CPU with 12,400 transfers held and 458 µs with
59,400, and its throughput fell round after round.

``HeapFreezer.step`` (run every second by such actors) moves everything that
survived the latest full collection to the permanent generation
(``gc.freeze``), so the next full collections walk only what came since.
Frozen objects are still freed by reference counting when they die; only a
frozen object caught in a reference cycle would stay. So whenever the frozen
objects have grown ``growth`` times since the last rebuild, they are unfrozen
and collected once in full (a pause as long as a full collection was before,
at doublings of the state: constant work per object on the whole).

``tune_collector`` (a start hook of every Realm actor and ingress replica,
``registry.START_HOOKS``) also runs the youngest generation's collections
less often: after 50,000 new tracked objects instead of CPython's 700. A
call's short-lived objects (its arguments, tasks, futures, replies) are then
freed by reference counting before any collection sees them, instead of
being walked, promoted, and walked again by the older generations. Measured
in one process (``benchmarks/ledger_gc.py``, the ``tuned`` mode beside
``frozen``, 6 rounds, two runs): a batched cross-shard transfer spent 84-187 µs
of its CPU in collections with the default threshold and 11-46 µs with 50,000.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

log = logging.getLogger(__name__)


#: New tracked objects between two collections of the youngest generation
#: (CPython's default is 700); the older generations keep CPython's ratios.
YOUNG_THRESHOLD = 50_000


def tune_collector(*_: object) -> None:
    """The start hook (``registry.START_HOOKS``): collect the youngest generation
    only every ``YOUNG_THRESHOLD`` new objects (see the module docstring). A
    cycle of garbage made young then waits up to that many new objects to be
    freed; one that outlived a young collection waits for the older
    generations, at CPython's ratios of young collections as before."""
    young, middle, old = gc.get_threshold()
    if young < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)


class HeapFreezer:
    """Freezes the survivors of each full collection; see the module docstring.

    One per process (``process_freezer``): the collector is the process's."""

    def __init__(self, *, growth: float = 2.0, min_objects: int = 100_000) -> None:
        if growth <= 1:
            raise ValueError("growth must exceed 1")
        self.growth = growth
        self.min_objects = min_objects
        self._full_seen = gc.get_stats()[2]["collections"]
        #: Objects frozen so far, counted as they are frozen (``gc.get_freeze_count``
        #: walks every frozen object: as long as a full collection)
        self.frozen = 0
        self._rebuilt_at = 0  #: objects frozen by the last rebuild
        self.freezes = 0
        self.rebuilds = 0
        self.rebuild_s = 0.0  #: time spent in rebuilds, all told

    def step(self) -> bool:
        """If a full collection ran since the last step, freeze what survived it
        (and rebuild once the frozen objects have grown ``growth`` times).
        Returns whether it froze anything."""
        full = gc.get_stats()[2]["collections"]
        if full == self._full_seen:
            return False
        self.frozen += len(gc.get_objects())  # the unfrozen ones: what came since
        gc.freeze()
        self.freezes += 1
        if self.frozen >= self.growth * max(self._rebuilt_at, self.min_objects):
            self.rebuild()
        self._full_seen = gc.get_stats()[2]["collections"]
        return True

    def rebuild(self) -> None:
        """Collect everything once in full (cyclic garbage that was frozen goes),
        then freeze the survivors again."""
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        self.frozen = self._rebuilt_at = len(gc.get_objects())
        gc.freeze()
        self.rebuilds += 1
        self.rebuild_s += time.perf_counter() - started
        log.info(
            "heap rebuilt: %d objects frozen in %.3f s",
            self._rebuilt_at, time.perf_counter() - started,
        )  # fmt: skip

    def report(self) -> dict[str, float]:
        return {
            "frozen": self.frozen,
            "freezes": self.freezes,
            "rebuilds": self.rebuilds,
            "rebuild_s": round(self.rebuild_s, 3),
        }


def allocation_probe(steps: int = 20_000, repeats: int = 3) -> float:
    """CPU µs per step of a fixed piece of allocation-heavy work run in this
    process now (the best of ``repeats``): strings, tuples, lists and dicts made,
    kept a while in a map and freed, as a call's objects are. The work never
    changes, so a rise between two moments of one process is the process's own
    (its heap's layout, the caches it misses) or the machine's, not more work;
    the ledger's benchmark compares it with the same work in its driver."""
    best = float("inf")
    for _ in range(repeats):
        started = time.thread_time()
        kept: dict[str, tuple[Any, ...]] = {}
        for i in range(steps):
            key = f"probe-{i}"
            kept[key] = (i, key, [i, i + 1], {"at": i})
            if i >= 1_000:
                del kept[f"probe-{i - 1_000}"]
        best = min(best, time.thread_time() - started)
    return round(best / steps * 1e6, 4)


_freezer: HeapFreezer | None = None


def process_freezer() -> HeapFreezer:
    """This process's ``HeapFreezer`` (made by the first caller)."""
    global _freezer
    if _freezer is None:
        _freezer = HeapFreezer()
    return _freezer


__all__ = [
    "YOUNG_THRESHOLD",
    "HeapFreezer",
    "allocation_probe",
    "process_freezer",
    "tune_collector",
]
