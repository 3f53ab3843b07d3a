"""Settings of the resource manager: ``REALM_RESOURCES_*`` variables (``docs/configuration.md``)."""

from __future__ import annotations

from pydantic import Field

from actors.runtime.settings import Section


class ResourcesSettings(Section, service="resources"):
    """The resource manager: read once, where the deployment is built."""

    shards: int = Field(2, ge=1, le=256)
    """Resource-pool actors; each owner's pools and groups live on one of them, by hashing."""

    default_ttl_s: float = Field(30.0, gt=0, le=86_400)
    """Lease TTL when neither the request nor the pool names one."""

    max_ttl_s: float = Field(3_600.0, gt=0, le=86_400)
    """Longest TTL a lease (or a pool's default) may ask for: a dead holder blocks others at
    most this long (longer: 422).
    """

    max_wait_s: float = Field(300.0, ge=0, le=3_600)
    """Longest an acquire may wait, long-poll or WebSocket (longer: 422)."""

    max_waiters: int = Field(10_000, ge=1, le=1_000_000)
    """Waiters queued per pool before acquires are refused (429 `queue_full`); also the most
    a pool's own `max_waiters` may ask for (more: 422).
    """

    max_pools_per_owner: int = Field(100, ge=1, le=100_000)
    """Pools one owner may have at once (one more: 403 `limit_reached`)."""

    max_groups_per_owner: int = Field(100, ge=1, le=100_000)
    """Groups of pools one owner may have at once (one more: 403 `limit_reached`)."""

    max_acquires_per_socket: int = Field(16, ge=1, le=10_000)
    """Acquires one wait WebSocket may have in progress at once; the next is answered with
    an `error` frame (429 `too_many_acquires`) and not started.
    """

    session_check_s: float = Field(15.0, gt=0, le=3_600)
    """How often an open wait WebSocket checks its session again: one whose session was
    revoked or expired is closed, and its waits are withdrawn.
    """

    sweep_interval_s: float = Field(0.05, gt=0)
    """How often a pool actor ends expired leases and wakes waiters for them."""
