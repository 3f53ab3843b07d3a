"""Supervision: OTP restart types as Ray actor options, named actors, safe calls.

- ``Restart`` presets map OTP's restart types onto ``max_restarts`` and
  ``max_task_retries``; ``remote_actor`` is the one place ``ray.remote`` is
  applied to a plain class, so resources and restart policy are read in one spot.
- ``get_or_create`` finds or starts a named, detached actor in the namespace;
  ``spread_placement`` is where the ``index``-th shard of a service starts.
- ``call`` awaits an actor method, retrying ``ActorUnavailableError`` (restarting
  or unreachable) with backoff and handing a ``RealmError`` raised inside the
  actor to the caller as itself.
- ``report_start`` is the one hook an actor's ``__init__`` calls: it tells
  whether this is a restart and, if so, counts it as an event in the store.
"""

from __future__ import annotations

import inspect
import logging
import time
import warnings
from enum import Enum
from typing import Any, TypeVar

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.runtime import metrics
from actors.runtime.backoff import retry_call
from actors.runtime.errors import RealmError, Unavailable
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.store import Store, open_store

log = logging.getLogger(__name__)

T = TypeVar("T")
#: A handle to any Realm actor (their methods are called by name).
Handle = ActorHandle[Any]


class Restart(str, Enum):
    """OTP restart types. Ray never restarts an actor that exits on purpose
    (``ray.actor.exit_actor``), so every restart below is a restart after a crash."""

    #: Restarted after every crash; calls in flight are retried on the new
    #: incarnation (at-least-once: their methods must be idempotent).
    PERMANENT = "permanent"
    #: Restarted after a crash; calls in flight fail to their callers, who decide.
    TRANSIENT = "transient"
    #: Never restarted.
    TEMPORARY = "temporary"


RESTART_OPTIONS: dict[Restart, dict[str, int]] = {
    Restart.PERMANENT: {"max_restarts": -1, "max_task_retries": -1},
    Restart.TRANSIENT: {"max_restarts": -1, "max_task_retries": 0},
    Restart.TEMPORARY: {"max_restarts": 0, "max_task_retries": 0},
}

#: Every Realm actor asks for no CPU: on a small machine a default actor (1 CPU)
#: would starve Serve replicas; actors mostly wait on I/O and on each other.
#: An async actor runs up to ``max_concurrency`` calls on its event loop.
ACTOR_DEFAULTS: dict[str, Any] = {"num_cpus": 0, "max_concurrency": 1_000}


def is_async_class(cls: type) -> bool:
    """Whether Ray runs ``cls`` as an async actor (any coroutine method)."""
    return any(
        inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)
        for _, f in inspect.getmembers(cls, inspect.isfunction)
    )


def actor_options(cls: type, *, restart: Restart, **options: Any) -> dict[str, Any]:
    """The Ray options of ``cls`` with its restart preset. A class with no async
    method takes one call at a time, as a gen_server does: Ray gives a threaded
    actor one thread per unit of ``max_concurrency`` up front (a thousand
    threads, whose stacks and malloc arenas grew its RSS by 90 MiB in five
    bursts of calls), and its state would need locks."""
    defaults = ACTOR_DEFAULTS if is_async_class(cls) else {**ACTOR_DEFAULTS, "max_concurrency": 1}
    return {**defaults, **RESTART_OPTIONS[restart], **options}


def remote_actor(cls: type, *, restart: Restart, **options: Any) -> Any:
    """Make the Ray actor class for ``cls`` with its restart preset."""
    return ray.remote(**actor_options(cls, restart=restart, **options))(cls)


def get_or_create(
    actor_class: Any, name: str, *args: Any, namespace: str, **options: Any
) -> Handle:
    """The detached actor called ``name``, started with ``args`` if it does not exist."""
    handle: Handle = actor_class.options(
        name=name, namespace=namespace, lifetime="detached", get_if_exists=True, **options
    ).remote(*args)
    return handle


#: How long a process reuses its reading of the alive nodes when placing shards.
NODES_CACHE_S = 5.0
_nodes_seen: tuple[float, list[str]] = (float("-inf"), [])


def _alive_nodes() -> list[str]:
    global _nodes_seen
    read_at, nodes = _nodes_seen
    if time.monotonic() - read_at > NODES_CACHE_S:
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])  # type: ignore[no-untyped-call]
        _nodes_seen = (time.monotonic(), nodes)
    return nodes


#: The CPU a shard placed by ``spread_placement`` asks for. Ray places an
#: actor that asks for no resources at random, whatever its scheduling
#: strategy says (bar a hard node affinity); a token request makes it heed one.
SPREAD_CPUS = 0.001


def spread_placement(index: int) -> dict[str, Any]:
    """Actor options that start the ``index``-th shard of a service on the alive
    node at ``index`` modulo their number (in node id order): N shards over M
    nodes, N/M on each. A soft preference: a node that is gone, or cannot run
    the actor, gives way to another, and a restart after its node died starts
    it elsewhere. On one node, nothing.

    Ray's ``SPREAD`` does not do this for Realm's actors: an actor that asks
    for no resources is placed at random (four cache shards on two nodes
    came up 2-2, 3-1 and 4-0 in three runs), and so is one with a soft node
    affinity, hence the token CPU (``SPREAD_CPUS``)."""
    nodes = _alive_nodes()
    if len(nodes) < 2:
        return {}
    target = nodes[index % len(nodes)]
    return {
        "num_cpus": SPREAD_CPUS,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(target, soft=True),
    }


def kill_named(name: str, *, namespace: str) -> bool:
    """End a named actor for good (its entity is gone); False if there was none."""
    try:
        ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
    except ValueError:
        return False
    return True


def unwrap(error: BaseException) -> BaseException:
    """The RealmError inside a RayTaskError, or the error itself."""
    if isinstance(error, RayTaskError) and isinstance(error.cause, RealmError):
        return error.cause
    return error


async def call(
    handle: Handle,
    method: str,
    *args: Any,
    patience_s: float = 30.0,
    **kwargs: Any,
) -> Any:
    """``await handle.method.remote(*args, **kwargs)``, riding out restarts.

    ``ActorUnavailableError`` means the actor is restarting or unreachable and
    the call may or may not have run: it is retried with jittered backoff for up
    to ``patience_s`` (callers pass idempotency keys on mutations).
    """
    try:
        return await retry_call(
            lambda: getattr(handle, method).remote(*args, **kwargs),
            on=ActorUnavailableError,
            patience_s=patience_s,
        )
    except ActorUnavailableError as error:
        raise Unavailable("actor did not come back in time", method=method) from error
    except RayTaskError as error:
        raise unwrap(error) from None


class ActorRef:
    """A named actor, found or started on first use and re-resolved after it died.

    ``ActorDiedError`` means the handle is gone for good (killed without
    restart, or out of restarts): the next call resolves the name again,
    which starts a fresh actor if none is registered.
    """

    def __init__(
        self,
        actor_class: Any,
        name: str,
        *args: Any,
        namespace: str,
        spread_index: int | None = None,
    ) -> None:
        self.actor_class = actor_class
        self.name = name
        self.namespace = namespace
        self._args = args
        #: Where a shard starts, if it must (``spread_placement``).
        self.spread_index = spread_index
        self._handle: Handle | None = None

    @property
    def handle(self) -> Handle:
        if self._handle is None:
            placement = {} if self.spread_index is None else spread_placement(self.spread_index)
            self._handle = get_or_create(
                self.actor_class, self.name, *self._args, namespace=self.namespace, **placement
            )
        return self._handle

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await call(self.handle, method, *args, **kwargs)
        except ActorDiedError:
            log.warning("actor %s died; resolving it again", self.name)
            self._handle = None
            return await call(self.handle, method, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<ActorRef {self.namespace}/{self.name} resolved={self._handle is not None}>"


def actor_restarted() -> bool:
    """Whether the current process is an actor that Ray has restarted (False outside actors)."""
    if not ray.is_initialized():
        return False
    context = ray.get_runtime_context()
    if context.get_actor_id() is None:
        return False
    with warnings.catch_warnings():  # Ray's own property uses a deprecated one inside
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(context.was_current_actor_reconstructed)


async def report_start(store: Store, name: str, *, kind: str = "other") -> int:
    """Call from ``__init__``: returns how many times actor ``name`` has restarted.

    A restart is recorded as an event (a durable counter in the store, a
    warning in the log, and ``realm_actor_restarts_total`` labelled with
    ``kind``, the actor's class); monitoring will turn these into alerts.
    """
    if not actor_restarted():
        return 0
    # The actor id stays the same across restarts and is new for a new actor,
    # so the count belongs to this actor's lifetime only.
    actor_id = ray.get_runtime_context().get_actor_id()
    count = await store.incr(f"restarts:{name}:{actor_id}")
    log.warning("actor %s restarted (restart #%d)", name, count)
    metrics.ACTOR_RESTARTS.inc(actor=kind)
    return count


def run_start_hooks(settings: Settings, service: str, name: str) -> None:
    """Run every start hook (``registry.START_HOOKS``) as a Realm actor starts
    (``recover`` does it for a durable one; the others call it from ``__init__``)
    or an ingress replica does; one that fails is logged and skipped.
    Only in a Ray actor's process: a driver, a tool or a test that runs an actor's
    class in its own process keeps its logging to itself."""
    from actors.runtime.registry import start_hooks

    if not (metrics.ray_is_up() and ray.get_runtime_context().get_actor_id() is not None):
        return
    for hook in start_hooks():
        try:
            hook(settings, service, name)
        except Exception:
            log.exception("start hook %r failed in %s", hook, name)


async def recover(
    actor: Durable, settings: Settings, name: str, *, store: Store | None = None
) -> int:
    """From a durable actor's ``__init__``: rebuild its state from its journal in
    the store (``store``, or the one ``settings`` name) and report the start.

    Returns how many times the actor has restarted (0 on its first start).
    """
    run_start_hooks(settings, _service_of(type(actor)), name)
    store = store or open_store(settings, name)
    await actor.open(
        store, name, snapshot_every=settings.snapshot_every, max_batch=settings.group_commit_max
    )
    return await report_start(store, name, kind=metrics.kind_of(actor))


def _service_of(cls: type) -> str:
    """``queue`` for a class of ``actors.queue.jobqueue``."""
    parts = cls.__module__.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


__all__ = [
    "ActorRef",
    "Restart",
    "actor_restarted",
    "call",
    "get_or_create",
    "kill_named",
    "recover",
    "remote_actor",
    "report_start",
    "run_start_hooks",
    "unwrap",
]
