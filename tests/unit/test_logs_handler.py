"""The handler that ships Realm's own logs: never blocks, drops and counts."""

from __future__ import annotations

import logging
import threading

from actors.logs.handler import ShippingHandler
from actors.logs.model import Pushed


def record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_records_ship_in_batches_labelled_by_level() -> None:
    sent: list[list[Pushed]] = []
    handler = ShippingHandler(sent.append, labels={"service": "queue", "actor": "q", "node": "n"},
                              batch=2, start=False)  # fmt: skip
    for level, message in [(logging.INFO, "a"), (logging.WARNING, "b"), (logging.INFO, "c")]:
        handler.handle(record("actors.queue.jobqueue", level, message))
    handler.flush_now()
    assert [len(batch) for batch in sent] == [2, 1]
    first = {p.labels["level"]: [e[1] for e in p.entries] for p in sent[0]}
    assert first == {"info": ["actors.queue.jobqueue: a"], "warning": ["actors.queue.jobqueue: b"]}
    assert sent[0][0].labels == {"service": "queue", "actor": "q", "node": "n", "level": "info"}
    assert (handler.shipped, handler.dropped) == (3, 0)


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    release = threading.Event()
    handler = ShippingHandler(lambda _: release.wait(), labels={"service": "s"}, capacity=3,
                              start=False)  # fmt: skip
    for n in range(5):
        handler.handle(record("apps.queue", logging.INFO, str(n)))
    assert len(handler.queue) == 3 and handler.dropped == 2


def test_a_service_away_drops_the_batch_and_counts_it() -> None:
    def away(_: list[Pushed]) -> None:
        raise ConnectionError("no logs service here")

    handler = ShippingHandler(away, labels={"service": "s"}, start=False)
    for n in range(4):
        handler.handle(record("actors.x", logging.ERROR, str(n)))
    handler.flush_now()
    assert (handler.shipped, handler.dropped, len(handler.queue)) == (0, 4, 0)


def test_the_logs_service_own_records_are_never_shipped() -> None:
    sent: list[list[Pushed]] = []
    handler = ShippingHandler(sent.append, labels={"service": "s"}, start=False)
    handler.handle(record("actors.logs.shard", logging.WARNING, "would loop"))
    handler.handle(record("actors.queue", logging.DEBUG, "below the level"))
    handler.flush_now()
    assert sent == []


def test_the_thread_ships_on_its_own() -> None:
    arrived = threading.Event()
    sent: list[list[Pushed]] = []

    def send(batch: list[Pushed]) -> None:
        sent.append(batch)
        arrived.set()

    handler = ShippingHandler(send, labels={"service": "s"}, interval_s=0.01)
    try:
        handler.handle(record("apps.x", logging.INFO, "hello"))
        assert arrived.wait(5)
        assert sent[0][0].entries[0][1] == "apps.x: hello"
    finally:
        handler.close()


def test_the_start_hook_is_registered_and_the_setting_turns_it_off() -> None:
    from actors.logs.handler import install, installed, ship_realm_logs
    from actors.runtime.registry import start_hooks
    from actors.runtime.settings import Settings

    assert ship_realm_logs in start_hooks()
    assert install(Settings(logs_ship_realm_logs=False), service="queue", actor="q") is None
    assert install(Settings(), service="logs", actor="logs-shard-0") is None  # no loop
    assert installed() is None
