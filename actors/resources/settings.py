"""Settings of the resource manager: ``REALM_RESOURCES_*`` variables (``docs/configuration.md``)."""

from __future__ import annotations

from pydantic import Field

from actors.runtime.settings import Section


class ResourcesSettings(Section, service="resources"):
    """The resource manager: read once, where the deployment is built."""

    shards: int = Field(2, ge=1, le=256)
    """Resource-pool actors; pools (and groups) are spread over them by hashing."""

    default_ttl_s: float = Field(30.0, gt=0)
    """Lease TTL when neither the request nor the pool names one."""

    max_ttl_s: float = Field(3_600.0, gt=0)
    """Longest TTL a lease may ask for (a dead holder blocks others at most this long)."""

    max_wait_s: float = Field(300.0, ge=0)
    """Longest an acquire may wait (long-poll or WebSocket)."""

    max_waiters: int = Field(10_000, ge=1)
    """Waiters queued per pool before acquires are refused (429), unless the pool says."""

    sweep_interval_s: float = Field(0.05, gt=0)
    """How often a pool actor ends expired leases and wakes waiters for them."""
