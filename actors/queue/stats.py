"""What a queue counts: events, wait and run time samples, recent completions.

A ``Tally`` is part of a queue's durable state (it changes only in the
queue's ``apply_<op>`` methods and is stored in its snapshot), so a restarted
queue reports the same figures.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

#: Wait and run time samples kept for the percentiles in stats.
SAMPLES_KEPT = 10_000
#: Seconds of completions the throughput figure averages over.
THROUGHPUT_WINDOW_S = 60
COUNTERS = (
    "enqueued",  #: jobs added (duplicates not counted)
    "duplicates",  #: enqueues answered with an existing job (idempotency or unique key)
    "succeeded",
    "failed",  #: failed attempts, including expired leases and lost workers
    "dead",
    "cancelled",
    "retried",  #: dead jobs retried by hand
    "expired",  #: leases that ran out
    "discarded",
    "pruned",
    "stale_outcomes",  #: outcomes of attempts that no longer count (cancelled, re-leased)
)


def _counters() -> dict[str, int]:
    return dict.fromkeys(COUNTERS, 0)


@dataclass(slots=True, repr=False)
class Tally:
    counters: dict[str, int] = field(default_factory=_counters)
    wait_samples: deque[float] = field(default_factory=deque)  #: due -> started, seconds
    run_samples: deque[float] = field(default_factory=deque)  #: started -> finished, seconds
    done_per_s: deque[list[int]] = field(default_factory=deque)  #: [second, completions]

    def __post_init__(self) -> None:
        # A decoded snapshot gives plain deques: bound them again.
        self.wait_samples = deque(self.wait_samples, maxlen=SAMPLES_KEPT)
        self.run_samples = deque(self.run_samples, maxlen=SAMPLES_KEPT)

    def ran(self, wait_s: float, run_s: float) -> None:
        """An attempt's times (any outcome that counts)."""
        self.wait_samples.append(max(0.0, wait_s))
        self.run_samples.append(max(0.0, run_s))

    def completed(self, n: int, at: float) -> None:
        """``n`` jobs succeeded at ``at``."""
        second = int(at)
        if self.done_per_s and self.done_per_s[-1][0] == second:
            self.done_per_s[-1][1] += n
        else:
            self.done_per_s.append([second, n])
        while self.done_per_s[0][0] <= second - THROUGHPUT_WINDOW_S:
            self.done_per_s.popleft()

    def report(self, now: float) -> dict[str, Any]:
        recent = sum(n for second, n in self.done_per_s if second > now - THROUGHPUT_WINDOW_S)
        return {
            "completed": self.counters["succeeded"],
            "failed": self.counters["failed"],
            "counters": dict(self.counters),
            "throughput_per_s": round(recent / THROUGHPUT_WINDOW_S, 3),
            "wait_s": _percentiles(self.wait_samples),
            "run_s": _percentiles(self.run_samples),
        }

    def __repr__(self) -> str:
        counts = " ".join(f"{name}={n}" for name, n in self.counters.items() if n)
        return f"<Tally {counts or 'nothing yet'} samples={len(self.run_samples)}>"


def _percentiles(samples: deque[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p99": None}
    ordered = sorted(samples)
    at = [ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] for q in (50, 99)]
    return {"p50": round(at[0], 6), "p99": round(at[1], 6)}


__all__ = ["COUNTERS", "SAMPLES_KEPT", "THROUGHPUT_WINDOW_S", "Tally"]
