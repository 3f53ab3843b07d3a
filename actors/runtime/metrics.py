"""Realm's own metrics, defined once: names, label keys and buckets.

Every metric Realm exports is declared at the bottom of this module and
recorded through it, never through ``ray.util.metrics`` directly, so names,
labels and buckets live in one place (``docs/observability.md`` describes
each). A metric records into Ray's metrics API once Ray is up in the process
(an actor, a Serve replica, a driver after ``ray.init``); Ray's metrics agent
on each node exports them in Prometheus format on the node's metrics export
port, prefixed ``ray_`` (``realm_http_requests_total`` is scraped as
``ray_realm_http_requests_total``).

Without Ray (unit tests, a plain class used directly) nothing is sent
anywhere; every metric still keeps its values in the process, which is what
tests read (``Counter.value``, ``Histogram.count``...) and what ``__repr__``
counts.

Label values must stay few: a route template (``/keys/{key}``), never a raw
path; an actor's class, never its name. Each metric checks that it gets
exactly its label keys.

Counters and histograms are cheap on hot paths: an increment or an
observation adds to a dict under a lock, and a daemon thread hands them to
Ray every ``FLUSH_INTERVAL_S`` (Ray itself reports to its agent only every few
seconds): a counter's sum per label set, and every observation of a histogram
(Ray has no bulk observe, so each is handed over on its own, but off the
request's path and without Ray's per-call tag checks). A process that crashes
loses at most that interval's values. Gauges go to Ray as they are set.

A hot path that records the same label sets again and again binds them once
(``HTTP_REQUESTS.bind(service=..., ...)``) and records through the returned
series (``.inc()``, ``.observe(value)``), which skips the label checks.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

log = logging.getLogger(__name__)

#: Seconds between hand-overs of counter increments to Ray (Ray reports every 10 s).
FLUSH_INTERVAL_S = 1.0
#: Request and phase latencies, seconds: 0.5 ms to 30 s.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
#: Records per group commit (``Settings.group_commit_max`` is 1,000 by default).
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 5_000)
#: HTTP methods kept as themselves in labels; any other is ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


#: What a metric Ray refused to make points to.
_NOWHERE = object()


def ray_is_up() -> bool:
    """Whether this process is connected to Ray (without importing Ray)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


class Metric:
    """One named metric with fixed label keys. Subclasses say how it records."""

    #: Every metric defined in this process, by name.
    registry: ClassVar[dict[str, Metric]] = {}

    def __init__(self, name: str, description: str, labels: tuple[str, ...] = ()) -> None:
        if not name.startswith("realm_"):
            raise ValueError(f"Realm's metric names start with realm_, not {name!r}")
        if name in Metric.registry:
            raise ValueError(f"metric {name} is defined twice")
        self.name = name
        self.description = description
        self.labels = labels
        self._lock = threading.Lock()
        self._ray: Any = None  #: the ``ray.util.metrics`` object, made once Ray is up
        self._failed = False  #: Ray refused a value (logged once)
        Metric.registry[name] = self

    def _key(self, labels: dict[str, Any]) -> tuple[str, ...]:
        try:
            if len(labels) == len(self.labels):
                return tuple(map(str, map(labels.__getitem__, self.labels)))
        except KeyError:
            pass
        raise ValueError(f"{self.name} takes labels {self.labels}, not {tuple(labels)}")

    def _tags(self, key: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(self.labels, key, strict=True))

    def _connected(self) -> Any:
        """Ray's metric object, or None while this process has no Ray (or Ray
        refused to make it: logged once, and the metric stays in the process)."""
        if not ray_is_up():
            return None
        if self._ray is None:
            try:
                self._ray = self._make()
            except Exception:
                log.exception("Ray refused metric %s; it is kept in this process only", self.name)
                self._ray = _NOWHERE
        return None if self._ray is _NOWHERE else self._ray

    def _send(self, method: str, value: float, key: tuple[str, ...]) -> None:
        """Record into Ray, if it is there; a metric never fails its caller."""
        metric = self._connected()
        if metric is None:
            return
        try:
            getattr(metric, method)(value, tags=self._tags(key))
        except Exception:
            self._refused()

    def _refused(self) -> None:
        if not self._failed:
            self._failed = True
            log.exception("Ray refused a value of %s; later ones are not logged", self.name)

    def _make(self) -> Any:
        raise NotImplementedError

    def flush(self) -> None:
        """Hand what is buffered to Ray (counters and histograms buffer; gauges do not)."""

    def series(self) -> int:
        """Label sets recorded so far in this process."""
        return 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} labels={self.labels} series={self.series()}>"


class Counter(Metric):
    """Only goes up; exported with its ``_total`` name as a Prometheus counter."""

    def __init__(self, name: str, description: str, labels: tuple[str, ...] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {name!r}")
        super().__init__(name, description, labels)
        self.values: dict[tuple[str, ...], float] = {}
        self._pending: dict[tuple[str, ...], float] = {}
        self._followed: list[FollowedTotal] = []

    def _make(self) -> Any:
        from ray.util import metrics

        return metrics.Counter(self.name, self.description, tag_keys=self.labels)

    def inc(self, value: float = 1.0, **labels: Any) -> None:
        """Add ``value`` (0 adds nothing; a negative value is refused)."""
        if value < 0:
            raise ValueError(f"{self.name} only goes up, not by {value}")
        self._add(self._key(labels), value)

    def bind(self, **labels: Any) -> CounterSeries:
        """This counter at these labels, checked once: for a hot path."""
        return CounterSeries(self, self._key(labels))

    def follow(self, total: Callable[[], float], **labels: Any) -> FollowedTotal:
        """Count, at these labels, the growth of a running total kept elsewhere
        (a near cache's hits): read at each flush and each :meth:`value`, so
        the hottest paths add to their own integer and nothing more. Until
        ``.stop()``, which counts what grew up to then."""
        followed = FollowedTotal(self, self._key(labels), total)
        with self._lock:
            self._followed.append(followed)
        return followed

    def _collect(self) -> None:
        """Add what each followed total grew by since it was last read."""
        for followed in list(self._followed):
            followed.collect()

    def _add(self, key: tuple[str, ...], value: float) -> None:
        if value == 0:
            return
        up = _for_ray()
        with self._lock:
            self.values[key] = self.values.get(key, 0.0) + value
            if up:
                self._pending[key] = self._pending.get(key, 0.0) + value

    def value(self, **labels: Any) -> float:
        """The total so far in this process for these labels."""
        self._collect()
        return self.values.get(self._key(labels), 0.0)

    def series(self) -> int:
        return len(self.values)

    def flush(self) -> None:
        self._collect()
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        for key, value in pending.items():
            self._send("inc", value, key)  # nowhere, if Ray went away meanwhile


class CounterSeries:
    """One label set of a counter (``Counter.bind``)."""

    __slots__ = ("counter", "key")

    def __init__(self, counter: Counter, key: tuple[str, ...]) -> None:
        self.counter = counter
        self.key = key

    def inc(self, value: float = 1.0) -> None:
        if value < 0:
            raise ValueError(f"{self.counter.name} only goes up, not by {value}")
        self.counter._add(self.key, value)


class FollowedTotal:
    """A running total kept outside a counter, added to it as it grows
    (``Counter.follow``)."""

    def __init__(self, counter: Counter, key: tuple[str, ...], total: Callable[[], float]) -> None:
        self.counter = counter
        self.key = key
        self.total = total
        self._lock = threading.Lock()
        self._counted = total()
        self._stopped = False

    def collect(self) -> None:
        with self._lock:
            if self._stopped:
                return
            now = self.total()
            grown, self._counted = now - self._counted, now
        if grown > 0:
            self.counter._add(self.key, grown)

    def stop(self) -> None:
        """Count the last growth and follow no more."""
        self.collect()
        with self._lock:
            self._stopped = True
        with self.counter._lock:
            if self in self.counter._followed:
                self.counter._followed.remove(self)


class Gauge(Metric):
    """A value that goes up and down; each process exports its own."""

    def __init__(self, name: str, description: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, description, labels)
        self.values: dict[tuple[str, ...], float] = {}

    def _make(self) -> Any:
        from ray.util import metrics

        return metrics.Gauge(self.name, self.description, tag_keys=self.labels)

    def set(self, value: float, **labels: Any) -> None:
        key = self._key(labels)
        with self._lock:
            self.values[key] = value
        self._send("set", value, key)

    def add(self, delta: float, **labels: Any) -> None:
        """Move the gauge by ``delta`` (e.g. +1 when a connection opens, -1 when it ends)."""
        key = self._key(labels)
        with self._lock:
            value = self.values[key] = self.values.get(key, 0.0) + delta
        self._send("set", value, key)

    def value(self, **labels: Any) -> float:
        return self.values.get(self._key(labels), 0.0)

    def series(self) -> int:
        return len(self.values)


class Histogram(Metric):
    """Observations counted in buckets (``boundaries`` are the upper bounds).

    Each observation is kept until the next flush and then handed to Ray on
    its own (the bucket counts on the scrape page are exact). Ray rebuilds a
    histogram's ``_sum`` from the bucket midpoints, so on the scrape page it
    is approximate."""

    def __init__(
        self,
        name: str,
        description: str,
        labels: tuple[str, ...] = (),
        *,
        boundaries: tuple[float, ...] = LATENCY_BUCKETS_S,
    ) -> None:
        if (
            not boundaries
            or any(b <= 0 for b in boundaries)
            or list(boundaries) != sorted(set(boundaries))
        ):
            raise ValueError(f"{name}: boundaries must be positive and increasing")
        super().__init__(name, description, labels)
        self.boundaries = boundaries
        self.counts: dict[tuple[str, ...], int] = {}
        self.sums: dict[tuple[str, ...], float] = {}
        self._pending: dict[tuple[str, ...], list[float]] = {}
        #: Ray's histogram for each label set, its tags set once (see ``_series_in_ray``).
        self._in_ray: dict[tuple[str, ...], Any] = {}

    def _make(self) -> Any:
        from ray.util import metrics

        return metrics.Histogram(
            self.name, self.description, boundaries=list(self.boundaries), tag_keys=self.labels
        )

    def observe(self, value: float, **labels: Any) -> None:
        self._observe(self._key(labels), value)

    def bind(self, **labels: Any) -> HistogramSeries:
        """This histogram at these labels, checked once: for a hot path."""
        return HistogramSeries(self, self._key(labels))

    def _observe(self, key: tuple[str, ...], value: float) -> None:
        up = _for_ray()
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            self.sums[key] = self.sums.get(key, 0.0) + value
            if up:
                pending = self._pending.get(key)
                if pending is None:
                    self._pending[key] = [value]
                else:
                    pending.append(value)

    def count(self, **labels: Any) -> int:
        """Observations so far in this process for these labels."""
        return self.counts.get(self._key(labels), 0)

    def sum(self, **labels: Any) -> float:
        return self.sums.get(self._key(labels), 0.0)

    def series(self) -> int:
        return len(self.counts)

    def flush(self) -> None:
        """Hand every observation since the last flush to Ray, one call each."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending or self._connected() is None:
            return  # nowhere, if Ray went away meanwhile
        for key, values in pending.items():
            try:
                observe = self._series_in_ray(key).observe
                for value in values:
                    observe(value)
            except Exception:
                self._refused()

    def _series_in_ray(self, key: tuple[str, ...]) -> Any:
        """A Ray histogram of this name with ``key``'s tags as its default tags, so
        that an observation carries no tags for Ray to check and merge on each call.
        Ray keeps one metric per name, whichever of its objects records into it."""
        series = self._in_ray.get(key)
        if series is None:
            series = self._in_ray[key] = self._make().set_default_tags(self._tags(key))
        return series


class HistogramSeries:
    """One label set of a histogram (``Histogram.bind``)."""

    __slots__ = ("histogram", "key")

    def __init__(self, histogram: Histogram, key: tuple[str, ...]) -> None:
        self.histogram = histogram
        self.key = key

    def observe(self, value: float) -> None:
        self.histogram._observe(self.key, value)


class _Flusher:
    """The daemon thread that hands counters and histograms to Ray, one per
    process, started on the first value recorded while Ray is up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        #: The thread runs in this process: what is recorded is kept for Ray
        #: without asking Ray again (a child made by fork starts without it).
        self.running = False

    def ensure(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="realm-metrics", daemon=True).start()
            self.running = True

    def forked(self) -> None:
        self.running = False

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            flush_all()


_flusher = _Flusher()
os.register_at_fork(after_in_child=_flusher.forked)


def _for_ray() -> bool:
    """Whether a value recorded now is to be handed to Ray: Ray is up, or was when
    this process's flusher started (a value handed over after Ray went away goes
    nowhere). Once the flusher runs, a record asks Ray nothing."""
    if _flusher.running:
        return True
    if ray_is_up():
        _flusher.ensure()
        return True
    return False


def flush_all() -> None:
    """Hand every buffered increment to Ray now (also done at exit)."""
    for metric in list(Metric.registry.values()):
        try:
            metric.flush()
        except Exception:  # a metric must never take its process down
            log.exception("could not hand %s to Ray", metric.name)


atexit.register(flush_all)


def kind_of(obj: object) -> str:
    """A bounded label for an actor: the first public class of ``obj``'s type
    (``LedgerShard`` for Ray's wrapper around ``_LedgerShardProcess(LedgerShard)``)."""
    for cls in type(obj).__mro__:
        if not cls.__name__.startswith("_") and cls.__name__ != "Class":
            return cls.__name__
    return type(obj).__name__


def scrape_targets() -> list[str]:
    """The Prometheus scrape URL of every alive node of the connected Ray cluster
    (``[]`` without Ray): where Realm's metrics can be read."""
    if not ray_is_up():
        return []
    import ray

    targets = []
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        port = node.get("MetricsExportPort")
        if node.get("Alive") and port and port > 0:
            host = node["NodeManagerAddress"]
            host = f"[{host}]" if ":" in host else host
            targets.append(f"http://{host}:{port}/metrics")
    return targets


# --- the catalogue ---------------------------------------------------------------
# Every metric Realm exports. docs/observability.md lists them with their meaning,
# and a unit test keeps the two in step.

#: HTTP requests answered by every service's ingress (apps.common.RequestMetrics).
HTTP_REQUESTS = Counter(
    "realm_http_requests_total",
    "HTTP requests answered, by service, route template, method and status.",
    ("service", "route", "method", "status"),
)
HTTP_REQUEST_SECONDS = Histogram(
    "realm_http_request_seconds",
    "Time from a request's arrival at the replica to the end of its answer.",
    ("service", "route", "method", "status"),
)
WEBSOCKETS_OPEN = Gauge(
    "realm_websockets_open",
    "WebSocket connections open (accepted and not yet closed), per replica.",
    ("service", "route"),
)
#: The durable path (actors.runtime.journal).
JOURNAL_COMMIT_SECONDS = Histogram(
    "realm_journal_commit_seconds",
    "Time of one group commit of a journal to the store, by actor class.",
    ("actor",),
)
JOURNAL_BATCH_RECORDS = Histogram(
    "realm_journal_batch_records",
    "Records written by one group commit, by actor class.",
    ("actor",),
    boundaries=BATCH_BUCKETS,
)
#: Fan-out by long-poll (actors.runtime.fanout.Mailboxes).
FANOUT_LAG_SECONDS = Histogram(
    "realm_fanout_lag_seconds",
    "Age of the oldest new message when a follower's pull hands it out, by owner.",
    ("owner",),
)
#: Supervision (actors.runtime.supervision.report_start).
ACTOR_RESTARTS = Counter(
    "realm_actor_restarts_total",
    "Actor restarts after a crash, by actor class (counted by the restarted process).",
    ("actor",),
)
#: Services.
QUEUE_JOBS = Gauge(
    "realm_queue_jobs",
    "Jobs in a queue by state (queued, scheduled, running, failed, dead, ...).",
    ("queue", "state"),
)
CACHE_LOOKUPS = Counter(
    "realm_cache_lookups_total",
    "Cache key lookups by tier (near: a replica's near cache; shard) and result (hit, miss).",
    ("tier", "result"),
)
LEDGER_2PC = Counter(
    "realm_ledger_2pc_total",
    "Two-phase commit steps of ledger transactions, by phase and outcome.",
    ("phase", "outcome"),
)
SCHEDULER_LATENESS_SECONDS = Histogram(
    "realm_scheduler_lateness_seconds",
    "How late a schedule's run was handed to its target (after its due time and jitter).",
    ("target",),
)
LEDGER_2PC_SECONDS = Histogram(
    "realm_ledger_2pc_seconds",
    "Time of each two-phase commit phase of a ledger transaction.",
    ("phase",),
)


__all__ = [
    "ACTOR_RESTARTS",
    "CACHE_LOOKUPS",
    "FANOUT_LAG_SECONDS",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_SECONDS",
    "JOURNAL_BATCH_RECORDS",
    "JOURNAL_COMMIT_SECONDS",
    "LEDGER_2PC",
    "LEDGER_2PC_SECONDS",
    "QUEUE_JOBS",
    "SCHEDULER_LATENESS_SECONDS",
    "WEBSOCKETS_OPEN",
    "Counter",
    "CounterSeries",
    "Gauge",
    "Histogram",
    "HistogramSeries",
    "Metric",
    "flush_all",
    "kind_of",
    "ray_is_up",
    "scrape_targets",
]
