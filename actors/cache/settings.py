"""Settings of the distributed cache: ``REALM_CACHE_*`` variables (``docs/configuration.md``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from actors.runtime.settings import MiB, Section


class CacheSettings(Section, service="cache"):
    """The distributed cache: read once, where the deployment is built."""

    shards: int = Field(4, ge=1, le=1024)
    """Cache shard actors; keys are spread over them by rendezvous hashing."""

    max_entries: int = Field(1_000_000, ge=1)
    """Entries one shard holds before it evicts."""

    max_bytes: int = Field(256 * MiB, ge=1024)
    """Bytes of keys and values one shard holds before it evicts. A full shard evicts from
    the owner that holds the most bytes in it, so one owner's writes cannot push out
    everyone else's keys.
    """

    max_entries_per_owner: int = Field(100_000, ge=1)
    """Entries one owner's keys may take in one shard; past it, a write evicts that owner's
    own least recently (or frequently) used entries, nobody else's.
    """

    max_bytes_per_owner: int = Field(32 * MiB, ge=1024)
    """Bytes of keys and values one owner may hold in one shard; past it, a write evicts that
    owner's own entries first (an entry larger than this alone: 413).
    """

    eviction: Literal["lru", "lfu"] = "lru"
    """Which entry a full shard drops first: least recently or least frequently used."""

    sweep_interval_s: float = Field(1.0, gt=0)
    """How often a shard drops expired entries nobody has read."""

    near_lease_s: float = Field(2.0, gt=0)
    """Longest a near-cache copy lives without hearing from its shard; also the longest a write
    waits for a near cache that stopped answering.
    """

    near_max_entries: int = Field(10_000, ge=1)
    """Entries one client's near cache keeps (least recently used go first)."""

    http_near_cache: bool = True
    """Whether the HTTP ingress keeps a near cache in front of the shards."""

    load_timeout_s: float = Field(30.0, gt=0)
    """How long concurrent misses wait for one get-or-compute loader."""

    max_key_bytes: int = Field(1024, ge=1)
    """Longest key, in UTF-8 bytes (longer: 422)."""

    max_value_bytes: int = Field(1 * MiB, ge=1)
    """Largest value, as JSON bytes (larger: 413)."""

    max_batch_keys: int = Field(1_000, ge=1)
    """Most keys in one mget, mset or delete batch (more: 413)."""

    max_ttl_s: float = Field(30 * 86_400.0, gt=0, le=365 * 86_400.0)
    """Longest time to live a set, mset or expire may ask for, in seconds (longer: 422)."""
