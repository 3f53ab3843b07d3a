"""Settings of the monitoring service: ``REALM_MONITOR_*`` variables (``docs/configuration.md``)."""

from __future__ import annotations

from pydantic import Field

from actors.runtime.settings import Section


class MonitorSettings(Section, service="monitor"):
    """Monitoring and alerting: read once, where the client and the actors are made."""

    evaluators: int = Field(2, ge=1, le=64)
    """Rule evaluator actors; rules and the series they read are keyed by input name."""

    managers: int = Field(1, ge=1, le=64)
    """Alert manager actors (alerts, routes, receivers, silences), keyed by owner."""

    eval_interval_ms: int = Field(1_000, ge=10, le=600_000)
    """How often every rule is evaluated."""

    flush_interval_ms: int = Field(200, ge=10, le=60_000)
    """How often alert managers look at their groups (timing granularity of
    ``group_wait``, ``group_interval`` and ``repeat_interval``)."""

    retention_s: float = Field(3_600.0, gt=0, le=86_400.0)
    """How far back samples and events are kept (longest rule window)."""

    max_samples_per_series: int = Field(4_096, ge=16, le=1_000_000)
    """Samples one series keeps (oldest dropped first)."""

    max_series_per_owner: int = Field(20_000, ge=1, le=10_000_000)
    """Series one owner may have in one evaluator; new ones beyond are dropped and counted."""

    max_bytes_per_owner: int = Field(64 * 1024 * 1024, ge=1_024, le=2**40)
    """Bytes one owner's series (labels, and room for their samples) and events (labels
    and data) may take in one evaluator; beyond, new series and events are dropped and
    counted (``dropped`` in the stats, ``accepted`` in the answer)."""

    max_rules_per_owner: int = Field(2_000, ge=1, le=100_000)
    """Rules one owner may hold."""

    max_silences_per_owner: int = Field(1_000, ge=1, le=100_000)
    """Active silences one owner may hold."""

    max_receivers_per_owner: int = Field(50, ge=1, le=1_000)
    """Receivers one owner may hold."""

    max_alerts_per_owner: int = Field(10_000, ge=1, le=1_000_000)
    """Active alerts one owner may hold in the alert manager."""

    max_batch: int = Field(10_000, ge=1, le=100_000)
    """Most samples, events or alerts in one push."""

    max_event_data_bytes: int = Field(4_096, ge=64, le=1_048_576)
    """Largest ``data`` of one event (as JSON)."""

    max_events_kept: int = Field(100_000, ge=100, le=10_000_000)
    """Events one evaluator keeps for event rules (oldest dropped first)."""

    resolve_timeout_s: float = Field(300.0, gt=0, le=86_400.0)
    """An alert pushed without ``endsAt`` resolves this long after its last update."""

    webhook_timeout_s: float = Field(5.0, gt=0, le=60.0)
    """Timeout of one webhook request."""

    webhook_attempts: int = Field(3, ge=1, le=20)
    """Attempts per notification on a 5xx, 429 or network error."""

    allow_remote_targets: bool = False
    """Whether webhooks and scrape targets may be non-loopback addresses."""

    scrape_interval_s: float = Field(15.0, ge=0.1, le=3_600.0)
    """How often scrape targets (and Realm's own metrics) are scraped."""

    scrape_realm: bool = True
    """Whether Realm's own metrics (every node's Prometheus exporter) are scraped too."""

    scrape_targets: str = ""
    """Comma-separated Prometheus text URLs scraped into Realm's own series (loopback)."""

    watch_interval_s: float = Field(2.0, ge=0.05, le=600.0)
    """How often the runtime watcher polls Ray's state API (actors, nodes) and the store."""

    restart_limit: int = Field(3, ge=0, le=1_000)
    """Default rule: an actor restarting more than this many times ..."""

    restart_window_s: float = Field(60.0, gt=0, le=86_400.0)
    """... within this window raises ``RealmActorRestarting``."""

    default_for_s: float = Field(0.0, ge=0, le=86_400.0)
    """``for`` of Realm's default rules."""

    default_group_wait_s: float = Field(30.0, ge=0, le=86_400.0)
    """``group_wait`` of a route that gives none (Alertmanager's default)."""

    default_group_interval_s: float = Field(300.0, ge=0, le=86_400.0)
    """``group_interval`` of a route that gives none."""

    default_repeat_interval_s: float = Field(14_400.0, ge=0, le=864_000.0)
    """``repeat_interval`` of a route that gives none."""

    admin_webhook: str = ""
    """Webhook URL Realm's own alerts go to (the admin's root receiver); empty: none."""

    admin_webhook_secret: str = ""
    """HMAC-SHA256 secret signing the admin webhook (one is made if empty)."""

    rules_file: str = ""
    """A YAML file of Prometheus-shaped rule groups loaded as Realm's (the admin's) rules."""
