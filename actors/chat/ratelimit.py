"""Per-user write allowance (a token bucket per user), kept in memory by each shard.

Not journaled: a restarted shard starts everyone with a full bucket, which at
worst lets one burst through again.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.runtime.clock import Clock
from actors.runtime.errors import RateLimited


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class UserRates:
    """``rate_per_s`` writes per user on average, in bursts of at most ``burst``."""

    def __init__(self, clock: Clock, *, rate_per_s: float, burst: int) -> None:
        self.clock = clock
        self.rate = rate_per_s
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, user: str) -> None:
        """Spend one write of ``user``'s, or refuse with ``RateLimited`` (and its wait)."""
        now = self.clock.now()
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / self.rate
            raise RateLimited(
                "too many messages: slow down", retry_after_s=round(wait, 3), limit_per_s=self.rate
            )
        bucket.tokens -= 1.0

    def forget_full(self) -> int:
        """Drop the buckets that have filled up again (they hold nothing); how many."""
        now = self.clock.now()
        full = [
            user
            for user, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.at) * self.rate >= self.burst
        ]
        for user in full:
            del self._buckets[user]
        return len(full)

    def __len__(self) -> int:
        return len(self._buckets)


__all__ = ["UserRates"]
