"""Settings of the scheduler: ``REALM_SCHEDULER_*`` variables (``docs/configuration.md``)."""

from __future__ import annotations

from pydantic import Field

from actors.runtime.settings import Section


class SchedulerSettings(Section, service="scheduler"):
    """The scheduler: read once, where the deployment is built."""

    partitions: int = Field(2, ge=1, le=256)
    """Scheduler partition actors; schedules are spread over them by hashing (fixed for a
    deployment: changing it moves schedules to other owners).
    """

    max_schedules_per_owner: int = Field(100, ge=0, le=100_000)
    """Schedules one owner (a user, and the API keys acting for them) may hold; creating one
    more is refused (403 ``limit_reached``) until one is deleted.
    """

    decide_ahead_ms: int = Field(250, ge=0, le=60_000)
    """A firing is decided and journaled this long before it is due, so the hand-off to its
    target at the due time waits for no store write.
    """

    history_max: int = Field(100, ge=1, le=10_000)
    """Runs kept per schedule in its history."""

    max_catchup: int = Field(100, ge=1, le=10_000)
    """Most missed runs one catch-up fires under the fire-all misfire policy."""

    retry_max_s: float = Field(30.0, gt=0, le=3_600)
    """Longest wait between attempts to hand a firing to a target that failed."""

    max_payload_bytes: int = Field(64 * 1024, ge=2, le=16 * 1024 * 1024)
    """Largest target payload (a queue job's args, a pub/sub payload) as JSON."""
