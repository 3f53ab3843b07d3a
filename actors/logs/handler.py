"""Realm's own logs, shipped into the logs service (tenant ``realm``).

``ShippingHandler`` is a ``logging.Handler`` that never blocks the code that
logs: ``emit`` formats the record and appends it to a bounded queue, or drops
it and counts it when the queue is full. A thread of its own sends what the
queue holds every ``REALM_LOGS_SHIP_INTERVAL_S``, in pushes of at most
``REALM_LOGS_SHIP_BATCH`` records, straight to the log shards (Ray actor
calls, no HTTP), with the labels ``service``, ``actor``, ``node`` and
``level``. When the logs service is not there (not deployed in this
namespace, restarting, or slow) a batch is dropped and counted: shipping never
starts a log shard and never waits long.

``install`` puts one handler on the ``actors`` and ``apps`` loggers of the
process (and on Ray's, from WARNING up), once per process. Records the logs
service writes itself, and the shipping thread's own, are never shipped.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from actors.logs.model import REALM_TENANT, Pushed, stream_id
from actors.logs.settings import LogsSettings
from actors.runtime.hashing import Rendezvous
from actors.runtime.settings import Settings
from actors.runtime.shards import shard_names

#: Loggers whose records are shipped (their children too): Realm's own, and
#: Serve's replica log (its access lines: route, status, latency).
SHIPPED = ("actors", "apps", "serve_app", "ray.serve")
#: The rest of Ray's, from WARNING up.
RAY_LOGGERS = ("ray",)
#: How long one push to a shard may take before the batch is dropped.
SEND_TIMEOUT_S = 10.0
_installed: ShippingHandler | None = None
_lock = threading.Lock()

#: Sends one batch: (labels, [(ts_ns, line, metadata)]) per stream. Raises to drop it.
Send = Callable[[list[Pushed]], object]


class ShippingHandler(logging.Handler):
    def __init__(
        self,
        send: Send,
        *,
        labels: dict[str, str],
        capacity: int = 10_000,
        batch: int = 1_000,
        interval_s: float = 1.0,
        level: int = logging.INFO,
        start: bool = True,
    ) -> None:
        super().__init__(level)
        self.send = send
        self.labels = labels
        self.capacity = capacity
        self.batch = batch
        self.interval_s = interval_s
        self.queue: deque[tuple[int, str, str]] = deque()
        self.dropped = 0  #: records never shipped (queue full, or the service away)
        self.shipped = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        if start:
            self.start()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="realm-log-shipper", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread() is self._thread or record.name.startswith("actors.logs"):
            return
        if record.levelno < self.level:  # a handler reached other than through a logger
            return
        if len(self.queue) >= self.capacity:
            self.dropped += 1
            return
        try:
            line = self.format(record)
        except Exception:
            self.dropped += 1
            return
        self.queue.append((int(record.created * 1_000_000_000), record.levelname.lower(), line))
        if len(self.queue) >= self.batch:
            self._wake.set()

    def flush_now(self) -> None:
        """Send everything queued (in the caller's thread; tests)."""
        while self.queue:
            self._ship()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            while self.queue and not self._stop.is_set():
                self._ship()

    def _ship(self) -> None:
        taken: list[tuple[int, str, str]] = []
        while self.queue and len(taken) < self.batch:
            taken.append(self.queue.popleft())
        by_level: dict[str, list[tuple[int, str, dict[str, str]]]] = {}
        for ts, level, line in taken:
            by_level.setdefault(level, []).append((ts, line, {}))
        pushed = [
            Pushed({**self.labels, "level": level}, entries) for level, entries in by_level.items()
        ]
        try:
            self.send(pushed)
            self.shipped += len(taken)
        except Exception:
            self.dropped += len(taken)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        super().close()

    def __repr__(self) -> str:
        return (
            f"<ShippingHandler queued={len(self.queue)} shipped={self.shipped} "
            f"dropped={self.dropped}>"
        )


class RaySender:
    """Sends batches to the log shards of a namespace, found by name, never started."""

    def __init__(self, settings: Settings) -> None:
        config = LogsSettings.of(settings)
        self.names = shard_names("logs-shard", config.shards)
        self.ring = Rendezvous(config.shards)
        self.namespace = settings.namespace
        self.max_streams = config.max_streams_per_tenant
        self.handles: dict[int, Any] = {}

    def __call__(self, pushed: list[Pushed]) -> None:
        import ray

        by_shard: dict[int, list[Pushed]] = {}
        for item in pushed:
            by_shard.setdefault(self.ring.owner(stream_id(REALM_TENANT, item.labels)), []).append(
                item
            )
        key = uuid.uuid4().hex
        refs = []
        for index, part in by_shard.items():
            handle = self.handles.get(index)
            if handle is None:
                handle = self.handles[index] = ray.get_actor(
                    self.names[index], namespace=self.namespace
                )
            refs.append(
                handle.push.remote(
                    REALM_TENANT, part, max_streams=self.max_streams, key=f"{key}:{index}"
                )
            )
        try:
            ray.get(refs, timeout=SEND_TIMEOUT_S)
        except Exception:
            self.handles.clear()  # look them up again next time
            raise


def install(settings: Settings, *, service: str, actor: str) -> ShippingHandler | None:
    """Ship this process's logs (once per process), if the settings say so."""
    global _installed
    config = LogsSettings.of(settings)
    if not config.ship_realm_logs or service == "logs":
        return None
    with _lock:
        if _installed is not None:
            return _installed
        node = _node()
        handler = ShippingHandler(
            RaySender(settings),
            labels={"service": service, "actor": actor, "node": node},
            capacity=config.ship_queue,
            batch=config.ship_batch,
            interval_s=config.ship_interval_s,
            level=logging.getLevelName(config.ship_level),
        )
        for name in SHIPPED:
            logger = logging.getLogger(name)
            logger.addHandler(handler)
            if logger.getEffectiveLevel() > handler.level:
                logger.setLevel(handler.level)
        ray_handler = _AtLeast(handler, logging.WARNING)
        for name in RAY_LOGGERS:
            logging.getLogger(name).addHandler(ray_handler)
        _installed = handler
        return handler


class _AtLeast(logging.Handler):
    """Passes records of ``level`` and above to ``target``."""

    def __init__(self, target: logging.Handler, level: int) -> None:
        super().__init__(level)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("ray.serve"):  # shipped at INFO already
            self.target.handle(record)


def _node() -> str:
    try:
        import ray

        return (
            str(ray.util.get_node_ip_address()) + ":" + ray.get_runtime_context().get_node_id()[:8]
        )
    except Exception:
        return f"pid-{os.getpid()}"


def ship_realm_logs(settings: Settings, service: str, actor: str) -> None:
    """The start hook (``registry.START_HOOKS``): ship this process's Python logs into
    the logs service (tenant ``realm``) when ``REALM_LOGS_SHIP_REALM_LOGS`` is on. It
    lives here, not in the client, so a starting actor imports no query machinery
    (the client and the chunks import numpy: about 0.2 s more per worker start)."""
    install(settings, service=service, actor=actor)


def installed() -> ShippingHandler | None:
    return _installed


__all__ = ["RaySender", "ShippingHandler", "install", "installed", "ship_realm_logs"]
