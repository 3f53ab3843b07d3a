"""The registry: every service this deployment runs, in one list.

A service is a name, an HTTP prefix and a one-line summary. Its code is found
by convention from the name: ``actors/<name>/`` (actors, model, errors, client,
and ``settings.py`` with its ``Section``) and ``apps/<name>`` (its ingress,
with ``build(settings)``). Everything else that lists the services is made
from ``SERVICES`` or checked against it by a test: the settings sections, the
Serve applications (``serve_app``), ``serve_config.yaml``, the README's table,
``docs/configuration.md`` and the benchmark run. Adding a service is one line
here.

The runtime imports no service: it loads a service's settings section by its
module name, here, and the start hooks below by theirs, and nothing else of it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors.runtime.settings import Section, Settings


@dataclass(frozen=True)
class Service:
    #: The package name, ``actors/<name>`` and ``apps/<name>``.
    name: str
    #: Where its HTTP routes live, e.g. ``/cache``.
    prefix: str
    #: What it is, in a few words (the README's table, the OpenAPI title).
    summary: str
    #: What an API key may be allowed to do here: each scope is
    #: ``<name>:<action>`` (``cache:read``). A signed-in user holds every scope.
    actions: tuple[str, ...] = ()

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(f"{self.name}:{action}" for action in self.actions)


#: Every service, in the order they are deployed and listed.
SERVICES: tuple[Service, ...] = (
    Service("cache", "/cache", "distributed cache", ("read", "write")),
    Service("auth", "/auth", "users, sessions and login"),
    Service("pubsub", "/pubsub", "topics, WebSocket and SSE", ("publish", "subscribe")),
    Service(
        "resources",
        "/resources",
        "leased mutexes and semaphores with fencing tokens",
        ("read", "acquire", "manage"),
    ),
    Service("queue", "/queue", "durable job queues", ("read", "enqueue", "manage")),
    Service("ledger", "/ledger", "double-entry ledger", ("read", "transfer", "accounts")),
    Service("scheduler", "/scheduler", "cron, interval and one-shot schedules", ("read", "write")),
    Service("chat", "/chat", "rooms, messages and presence", ("read", "write", "manage")),
    Service("push", "/push", "device registry and notifications", ("read", "register", "send")),
    Service("game", "/game", "multiplayer RPG rooms with a tick loop", ("read", "play", "trade")),
    Service(
        "monitor", "/monitor", "rules, alerts, silences and routing", ("read", "write", "ingest")
    ),
    Service(
        "logs", "/logs", "log streams, LogQL queries and live tail", ("push", "read", "delete")
    ),
)

#: Every scope an API key can hold.
SCOPES: frozenset[str] = frozenset(scope for service in SERVICES for scope in service.scopes)

BY_NAME = {service.name: service for service in SERVICES}


@functools.cache
def section_classes() -> dict[str, type[Section]]:
    """Each registered service's settings section class, by service name."""
    from actors.runtime.settings import Section

    found: dict[str, type[Section]] = {}
    for service in SERVICES:
        module = f"actors.{service.name}.settings"
        if importlib.util.find_spec(module) is None:
            continue
        importlib.import_module(module)
        section = Section.by_service.get(service.name)
        if section is None:
            raise LookupError(f"{module} defines no Section with service={service.name!r}")
        found[service.name] = section
    return found


#: Process-wide set-up every Realm actor (a durable one as it recovers, the others from
#: their ``__init__``; not the queue's job workers, which run users' handlers, nor the
#: monitor's watcher, whose memory grew with them: ``actors.monitor.watcher``) and
#: ingress replica runs as it starts, with the deployment's settings: ``module:function``,
#: called as ``function(settings, service, actor_name)``. Shipping the process's
#: Python logs into the logs service (``REALM_LOGS_SHIP_REALM_LOGS``); running the
#: garbage collector's youngest generation less often (``actors.runtime.heap``).
#: Not Ray's ``worker_process_setup_hook``: a job with a runtime environment starts
#: every worker through Ray's setup process: an actor took 3.0-3.5 s to start against
#: 1.9-2.0 s without (one after another, quiet machine; 4.2-4.8 s against 2.0 s under
#: load), restarts after a crash included.
START_HOOKS: tuple[str, ...] = (
    "actors.runtime.heap:tune_collector",
    "actors.logs.handler:ship_realm_logs",
)


@functools.cache
def start_hooks() -> tuple[Callable[[Settings, str, str], Any], ...]:
    """The functions ``START_HOOKS`` names, imported once per process."""
    found = []
    for path in START_HOOKS:
        module, _, function = path.partition(":")
        found.append(getattr(importlib.import_module(module), function))
    return tuple(found)


__all__ = [
    "BY_NAME",
    "SCOPES",
    "SERVICES",
    "START_HOOKS",
    "Service",
    "section_classes",
    "start_hooks",
]
