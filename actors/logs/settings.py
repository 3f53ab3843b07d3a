"""Settings of the logs service: ``REALM_LOGS_*`` variables (``docs/configuration.md``)."""

from __future__ import annotations

from pydantic import Field

from actors.runtime.settings import MiB, Section


class LogsSettings(Section, service="logs"):
    """Distributed logs: read once, where the client and the shards are made."""

    shards: int = Field(2, ge=1, le=256)
    """Log shard actors; streams are spread over them by hashing tenant and labels."""

    max_labels_per_stream: int = Field(15, ge=1, le=64)
    """Labels one stream may have (Loki's default)."""

    max_label_name_chars: int = Field(1_024, ge=1, le=4_096)
    """Longest label name."""

    max_label_value_chars: int = Field(2_048, ge=1, le=16_384)
    """Longest label value."""

    max_streams_per_tenant: int = Field(10_000, ge=1)
    """Active streams one tenant may have over the whole service (each shard enforces
    its share, rounded up, plus one: with few streams the count is not exact)."""

    max_line_bytes: int = Field(256 * 1024, ge=64, le=16 * MiB)
    """Largest line (UTF-8), structured metadata included."""

    max_entries_per_push: int = Field(20_000, ge=1, le=1_000_000)
    """Most entries one push carries."""

    ingest_rate_bytes_per_s: float = Field(8 * MiB, gt=0)
    """A tenant's ingest rate in line bytes per second, over the whole service (each
    ingress replica enforces its share); beyond it a push is a 429."""

    ingest_burst_bytes: float = Field(16 * MiB, gt=0)
    """Bytes a tenant may push at once above the rate (the token bucket's size)."""

    ingest_rate_lines_per_s: float = Field(100_000, gt=0)
    """A tenant's ingest rate in lines per second (as the bytes rate)."""

    ingest_burst_lines: float = Field(200_000, gt=0)
    """Lines a tenant may push at once above the rate."""

    out_of_order_window_s: float = Field(3_600.0, ge=0)
    """How far behind its stream's newest entry an entry may be and still be accepted
    (older ones are discarded and counted: ``too_far_behind``)."""

    max_future_s: float = Field(600.0, ge=0)
    """How far ahead of the clock an entry may be (later ones are discarded and counted)."""

    chunk_window_s: float = Field(3_600.0, gt=0)
    """A chunk covers at most this much time; a stream's head is cut at window ends."""

    chunk_target_bytes: int = Field(1 * MiB, ge=1_024)
    """A stream's head is cut into a chunk once it holds this many raw bytes."""

    head_max_age_s: float = Field(300.0, gt=0)
    """A head older than this (since its first entry arrived) is cut into a chunk."""

    cut_every_s: float = Field(5.0, gt=0)
    """How often a shard looks for heads to cut, retention to apply and deletes to run."""

    retention_s: float = Field(31 * 86_400.0, gt=0)
    """Global retention: entries older than this are removed (a tenant may ask for less)."""

    max_retention_rules: int = Field(32, ge=0, le=1_000)
    """Per-selector retention rules one tenant may set."""

    max_query_entries: int = Field(5_000, ge=1, le=100_000)
    """Most entries one log query answers (its ``limit``)."""

    max_query_points: int = Field(11_000, ge=1, le=100_000)
    """Most steps a metric query evaluates (Loki's limit)."""

    max_series: int = Field(10_000, ge=1, le=1_000_000)
    """Most series a metric query answers."""

    max_query_range_s: float = Field(31 * 86_400.0, gt=0)
    """Longest time range one query covers."""

    tail_poll_s: float = Field(0.25, gt=0, le=10)
    """How often a live tail asks the shards for new entries."""

    tail_batch: int = Field(1_000, ge=1, le=100_000)
    """Most entries a tail takes from one shard per poll."""

    tail_send_buffer_bytes: int = Field(4 * MiB, ge=4_096)
    """Bytes of entries a tail sends at a time: a poll's entries go out in pieces of
    this size, the next piece (and the next poll) only once the client took the last."""

    keepalive_s: float = Field(15.0, gt=0)
    """A tail's keepalive (and session re-check) interval."""

    deletes_kept: int = Field(1_000, ge=1, le=100_000)
    """Finished delete requests one shard remembers (with their status)."""

    max_pending_deletes: int = Field(100, ge=1, le=10_000)
    """Unfinished delete requests one tenant may have."""

    ship_realm_logs: bool = True
    """Ship the Python logs of Realm's actors and replicas into the logs service, tenant
    ``realm`` (labels ``service``, ``actor``, ``node``, ``level``). Never blocks: records
    beyond the queue, or while the service is away, are dropped and counted."""

    ship_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    """Lowest level of Realm's own records that are shipped."""

    ship_queue: int = Field(10_000, ge=1, le=1_000_000)
    """Records the shipping handler holds before it drops new ones."""

    ship_batch: int = Field(1_000, ge=1, le=100_000)
    """Most records the shipping handler sends in one push."""

    ship_interval_s: float = Field(1.0, gt=0, le=60)
    """How often the shipping handler sends what it holds."""
