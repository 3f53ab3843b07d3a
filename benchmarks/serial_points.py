"""Serial points: each service's busiest actor, its CPU time per operation, and its ceiling.

Every service funnels an operation through one actor per entity or per shard
(a queue's actor, a ledger shard, a pub/sub broker, a cache shard...). One
actor is one process running one event loop, so its CPU time per operation
bounds what one such actor can do: ``1 / cpu_per_op`` operations a second on a
core of its own. This benchmark drives each service's actors directly through
its client (actor calls from this driver, ``--concurrency`` in flight, no
HTTP), one service at a time, and reads the CPU time (user + system, psutil) of
every actor process of the run before and after the measured window.

CPU time per operation holds under load from elsewhere on the machine; the
wall-clock rate (``throughput_ops_s``) does not, so every service's entry
carries the load average it was taken at. ``utilization`` is the serial
actor's CPU seconds per wall second in the window: near 1, the actor was the
limit; well below, the driver or the machine was.

Probes (one shard, broker, partition or pool actor per service, so all of the
load falls on it):

  cache      ``CacheClient.set`` then ``get`` of one of 1,000 keys (2 ops a call)
  auth       ``AuthClient.authenticate`` of a session token, from the client's near
             cache and (its entry dropped before each check) from the session
             shard; ``login`` (argon2id runs in the client's thread pool, not in
             the stores, and is set to its least cost here: the users store and the
             session shard are each measured)
  pubsub     ``PubSubClient.publish`` to one topic, no subscriber
  resources  ``ResourcesClient.acquire`` + ``release`` on a semaphore (2 ops a call)
  queue      ``QueueClient.enqueue`` of a no-op job to one queue (its actor also
             dispatches and completes each job)
  ledger     ``LedgerClient.create_transfer`` within a shard and across two shards
  scheduler  ``SchedulerClient.create`` of a one-shot schedule an hour away
  chat       ``ChatClient.send`` to one room
  push       ``PushClient.register`` of a device (a durable write on its shard)
  logs       ``LogsClient.push`` of 100 lines (100 ops a call)
  monitor    ``MonitorClient.ingest`` of 100 samples (100 ops a call)

  game       a room's ``Room`` (the ``GameRoom`` actor's logic) with 10 and 50 bot
             (and 200) players, ticked in this process: CPU per tick (no Ray, no WebSocket)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import harness  # before anything that imports ray

NAMESPACE = "realm-bench-serial"
OWNER = "b3nch0000000user"
#: Seconds of load before each measured window (actors start, batches settle).
WARM_S = 1.0
PROBES = (
    "cache",
    "auth",
    "pubsub",
    "resources",
    "queue",
    "ledger",
    "scheduler",
    "chat",
    "push",
    "logs",
    "monitor",
    "game",
)
#: Players in the game rooms measured, and ticks measured in each.
GAME_PLAYERS = (10, 50, 200)
GAME_TICKS = 200

Op = Callable[[], Awaitable[Any]]


@dataclass
class Probe:
    """One workload: what a call does, how many operations it carries, and the
    actor (by name, or name prefix) that is the serial point."""

    variant: str
    op: Op
    serial: str
    ops_per_call: int = 1
    concurrency: int | None = None


# --- arithmetic ----------------------------------------------------------------------------


def cost_per_op(cpu_s: float, ops: int) -> float | None:
    """CPU seconds per operation, or None when nothing ran."""
    return cpu_s / ops if ops > 0 else None


def ceiling_ops_s(cpu_per_op_s: float | None, cores: float = 1.0) -> float | None:
    """Operations a second that ``cores`` of CPU sustain at ``cpu_per_op_s`` each."""
    if not cpu_per_op_s or cpu_per_op_s <= 0:
        return None
    return cores / cpu_per_op_s


def node_ceiling_ops_s(
    serial_cpu_per_op_s: float | None,
    total_cpu_per_op_s: float | None,
    *,
    cores: float,
    serial_actors: int,
) -> float | None:
    """What ``cores`` of CPU sustain with ``serial_actors`` serial actors (shards,
    or entities such as queues) sharing the load evenly: the lower of the serial
    actors' own limit (each is one event loop: at most one core, and no more than
    its share of the cores) and the CPU divided by the whole cost of an operation
    (every process that works on it: actors and client)."""
    if not serial_cpu_per_op_s or not total_cpu_per_op_s or serial_actors < 1:
        return None
    per_actor = min(1.0, cores / serial_actors) / serial_cpu_per_op_s
    return min(serial_actors * per_actor, cores / total_cpu_per_op_s)


def extrapolate(
    entry: dict[str, Any], *, cores_per_node: int, nodes: tuple[int, ...] = (1, 10)
) -> dict[str, Any]:
    """From one measured entry: one serial actor's ceiling, and what ``n`` nodes
    sustain with one serial actor (a single queue, room, pool or topic) and with
    one per core (the load spread over that many shards or entities). Client CPU
    is the driver's, a stand-in for the Serve replica's; HTTP is not counted."""
    serial = _seconds(entry.get("serial_cpu_us_per_op"))
    total = _seconds(entry.get("actors_cpu_us_per_op"), entry.get("driver_cpu_us_per_op"))
    out: dict[str, Any] = {"one_actor_ops_s": _round(ceiling_ops_s(serial))}
    for n in nodes:
        cores = n * cores_per_node
        out[f"nodes_{n}"] = {
            "cores": cores,
            "one_actor_ops_s": _round(
                node_ceiling_ops_s(serial, total, cores=cores, serial_actors=1)
            ),
            "actor_per_core_ops_s": _round(
                node_ceiling_ops_s(serial, total, cores=cores, serial_actors=cores)
            ),
        }
    return out


def _seconds(*micros: float | None) -> float | None:
    if any(m is None for m in micros):
        return None
    return sum(m for m in micros if m is not None) / 1e6


# --- CPU of the run's actors -----------------------------------------------------------------


def actor_processes() -> dict[str, int]:
    """pid of every live actor of this run, by actor name (or class for unnamed ones)."""
    placement = harness.Placement.current
    assert placement is not None, "inside harness.ray_session only"
    placement.refresh()
    import psutil

    found: dict[str, int] = {}
    for actor in placement.actors.values():
        if psutil.pid_exists(actor.pid):
            found[actor.name or f"{actor.class_name}:{actor.pid}"] = actor.pid
    return found


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    seen: dict[str, float] = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            seen[name] = times.user + times.system
    return seen


def driver_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


async def measure(probe: Probe, args: argparse.Namespace) -> dict[str, Any]:
    concurrency = probe.concurrency or args.concurrency
    await harness.run_workload(
        probe.op, concurrency=concurrency, duration_s=min(WARM_S, args.duration_s)
    )
    pids = actor_processes()
    load_before = os.getloadavg()
    before, driver_before = cpu_seconds(pids), driver_cpu_s()
    sampler = await harness.run_workload(
        probe.op,
        concurrency=concurrency,
        duration_s=args.duration_s,
        ops_per_call=probe.ops_per_call,
    )
    after, driver_after = cpu_seconds(pids), driver_cpu_s()
    metrics = sampler.metrics()
    ops = int(metrics["ops"])
    used = {name: after[name] - before[name] for name in after if name in before}
    serial = {name: s for name, s in used.items() if name.startswith(probe.serial)}
    if not serial:
        raise RuntimeError(f"{probe.variant}: no actor named {probe.serial}* ran")
    serial_name = max(serial, key=lambda name: serial[name])
    serial_cost = cost_per_op(serial[serial_name], ops)
    actors_cost = cost_per_op(sum(used.values()), ops)
    driver_cost = cost_per_op(driver_after - driver_before, ops)
    entry = {
        **metrics,
        "concurrency": concurrency,
        "ops_per_call": probe.ops_per_call,
        "serial_actor": serial_name,
        "serial_cpu_s": round(serial[serial_name], 4),
        "serial_cpu_us_per_op": _us(serial_cost),
        "serial_ceiling_ops_s": _round(ceiling_ops_s(serial_cost)),
        "utilization": round(serial[serial_name] / sampler.elapsed_s, 3),
        "actors_cpu_us_per_op": _us(actors_cost),
        "driver_cpu_us_per_op": _us(driver_cost),
        "per_actor_cpu_us_per_op": {
            name: _us(cost_per_op(s, ops)) for name, s in sorted(used.items()) if s > 0.0005
        },
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }
    harness.progress(
        f"{probe.variant}: {metrics['throughput_ops_s']:,.0f} ops/s, {serial_name} "
        f"{entry['serial_cpu_us_per_op']} us/op (utilization {entry['utilization']}), "
        f"all actors {entry['actors_cpu_us_per_op']} us/op, driver "
        f"{entry['driver_cpu_us_per_op']} us/op, load {load_before[0]:.1f}"
    )
    return entry


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e6, 1)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# --- the probes --------------------------------------------------------------------------------


def _settings(data_dir: Path, **fields: Any) -> Any:
    from actors.runtime.settings import Settings

    return Settings(
        namespace=NAMESPACE,
        store_url="",
        store_prefix=f"bench-serial-{uuid.uuid4().hex[:8]}",
        data_dir=data_dir,
        **fields,
    )


@contextlib.asynccontextmanager
async def cache_probes(data_dir: Path) -> AsyncIterator[list[Probe]]:
    from actors.cache.client import CacheClient
    from actors.cache.shard import SHARDS_PREFIX

    client = CacheClient.connect(_settings(data_dir, cache_shards=1))
    keys = itertools.cycle([f"serial:k{i}" for i in range(1_000)])

    async def set_get() -> None:
        key = next(keys)
        await client.set(key, {"v": key}, owner=OWNER)
        await client.get(key, owner=OWNER)

    try:
        yield [Probe("cache_set_get", set_get, SHARDS_PREFIX, ops_per_call=2)]
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def auth_probes(data_dir: Path) -> AsyncIterator[list[Probe]]:
    from actors.auth.client import AuthClient
    from actors.auth.model import parse_token
    from actors.auth.sessions import SESSIONS_PREFIX
    from actors.auth.users import USERS_NAME

    # argon2id at its least cost: it runs in the client, and the probe loads the stores.
    settings = _settings(
        data_dir, auth_session_shards=1, auth_argon2_memory_kib=8, auth_argon2_time_cost=1
    )
    client = AuthClient(settings)
    await client.start()
    password = "correct horse battery"
    # A login in flight counts as a failure of its name until it succeeds, and a
    # second one meanwhile is throttled: each login takes a name no other holds.
    names = [f"serial{i}" for i in range(32)]
    await asyncio.gather(*(client.register(name, password) for name in names))
    free: asyncio.Queue[str] = asyncio.Queue()
    for name in names:
        free.put_nowait(name)
    token = (await client.login(names[0], password))["token"]
    session_id, _ = parse_token(token)

    async def check() -> None:
        await client.authenticate(token)

    async def lookup() -> None:
        client.near.invalidate(session_id)  # a check that misses the near cache
        await client.authenticate(token)

    async def login() -> None:
        name = await free.get()
        try:
            await client.login(name, password)
        finally:
            free.put_nowait(name)

    try:
        yield [
            Probe("auth_token_check_near", check, SESSIONS_PREFIX),
            Probe("auth_token_check_shard", lookup, SESSIONS_PREFIX),
            Probe("auth_login_users", login, USERS_NAME, concurrency=8),
            Probe("auth_login_sessions", login, SESSIONS_PREFIX, concurrency=8),
        ]
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def pubsub_probes(data_dir: Path) -> AsyncIterator[list[Probe]]:
    from actors.pubsub.broker import BROKER_PREFIX
    from actors.pubsub.client import PubSubClient

    client = PubSubClient(_settings(data_dir, pubsub_brokers=1))
    await client.start()
    payload = b'{"n": 1}'

    async def publish() -> None:
        await client.publish("serial.points", payload)

    try:
        yield [Probe("pubsub_publish", publish, BROKER_PREFIX)]
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def resources_probes(data_dir: Path) -> AsyncIterator[list[Probe]]:
    from actors.resources.client import ResourcesClient
    from actors.resources.pool import SHARD_PREFIX

    client = ResourcesClient(_settings(data_dir, resources_shards=1))
    await client.start()
    await client.create_pool("serial-sem", "semaphore", 10_000, ttl_s=30, tenant=OWNER)

    async def cycle() -> None:
        lease = await client.acquire("serial-sem", "bench", tenant=OWNER)
        await client.release("serial-sem", lease["token"], owner="bench", tenant=OWNER)

    try:
        yield [Probe("resources_acquire_release", cycle, SHARD_PREFIX, ops_per_call=2)]
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def queue_probes(data_dir: Path) -> AsyncIterator[list[Probe]]:
    from actors.queue.client import QueueClient

    client = QueueClient(_settings(data_dir))
    await client.start()
    queue, owner = "serial", "bench"
    await client.create(queue, owner=owner)
    actor = await client.actor_name(queue, owner=owner)

    async def enqueue() -> None:
        await client.enqueue(queue, "actors.queue.handlers:noop", owner=owner)

    try:
        yield [Probe("queue_enqueue", enqueue, actor)]
    finally:
        with contextlib.suppress(Exception):
            await client.delete(queue, owner=owner)
        await client.close()


@contextlib.asynccontextmanager
async def ledger_probes(data_dir: Path) -> AsyncIterator[list[Probe]]:
    from actors.ledger.client import LedgerClient
    from actors.ledger.model import AccountSpec, TransferSpec

    client = LedgerClient(_settings(data_dir, ledger_shards=2, ledger_coordinators=1))
    await client.start()
    accounts = [f"serial-{i}" for i in range(200)]
    specs = [AccountSpec("serial-bank", 1)]
    specs += [AccountSpec(a, 1, debits_must_not_exceed_credits=True) for a in accounts]
    await client.create_accounts(specs)
    await client.create_transfers(
        [TransferSpec(f"fund-{a}", "serial-bank", a, 10**12, 1) for a in accounts]
    )
    by_shard: dict[int, list[str]] = {}
    for a in accounts:
        by_shard.setdefault(client.shard_of(a), []).append(a)
    first, second = sorted(by_shard)[:2]
    counter = itertools.count()
    pairs_same = itertools.cycle(zip(by_shard[first], by_shard[first][1:], strict=False))
    pairs_cross = itertools.cycle(zip(by_shard[first], by_shard[second], strict=False))

    def transfer(pairs: Any) -> Op:
        async def op() -> None:
            debit, credit = next(pairs)
            spec = TransferSpec(f"serial-t{next(counter)}", debit, credit, 1, 1)
            answer = await client.create_transfer(spec)
            assert answer["transfer"]["state"] == "posted", answer

        return op

    shard = client.shards[first].name
    coordinator = client.coordinators[0].name
    try:
        yield [
            Probe("ledger_same_shard", transfer(pairs_same), shard),
            Probe("ledger_cross_shard_coordinator", transfer(pairs_cross), coordinator),
            Probe("ledger_cross_shard_shard", transfer(pairs_cross), shard),
        ]
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def scheduler_probes(data_dir: Path) -> AsyncIterator[list[Probe]]:
    from datetime import datetime, timezone

    from actors.queue.client import QueueClient
    from actors.scheduler.client import SchedulerClient
    from actors.scheduler.partition import PARTITIONS

    settings = _settings(
        data_dir, scheduler_partitions=1, scheduler_max_schedules_per_owner=100_000
    )
    queues = QueueClient(settings)
    await queues.start()
    await queues.create("serial", owner="bench")  # the schedules' target
    client = SchedulerClient(settings)
    await client.start()
    at = datetime.fromtimestamp(time.time() + 3_600, timezone.utc).isoformat()
    target = {"type": "queue", "queue": "serial", "handler": "actors.queue.handlers:noop"}

    async def create() -> None:
        await client.create({"at": at, "target": target}, owner="bench")

    try:
        yield [Probe("scheduler_create", create, PARTITIONS)]
    finally:
        await client.close()


class _Names:
    """Chat's user directory: every user exists, named as its id."""

    async def username(self, user_id: str) -> str | None:
        return user_id

    async def close(self) -> None:
        return None


@contextlib.asynccontextmanager
async def chat_probes(data_dir: Path) -> AsyncIterator[list[Probe]]:
    from actors.chat.client import ChatClient
    from actors.chat.shard import SHARD_PREFIX

    settings = _settings(data_dir, chat_shards=1, chat_send_rate_per_s=1e9, chat_send_burst=10**9)
    client = ChatClient(settings, directory=_Names())
    await client.start()
    room = (await client.create_room("alice", "alice", kind="public", name="serial"))["id"]

    async def send() -> None:
        await client.send(room, "alice", "hello")

    try:
        yield [Probe("chat_send", send, SHARD_PREFIX)]
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def push_probes(data_dir: Path) -> AsyncIterator[list[Probe]]:
    from actors.push.client import PushClient
    from actors.push.shard import SHARD_PREFIX

    client = PushClient(_settings(data_dir, push_shards=1))
    await client.start()
    counter = itertools.count()

    async def register() -> None:
        n = next(counter) % 500
        await client.register(f"user{n % 50}", platform="inapp", token=f"device-{n}", app="serial")

    try:
        yield [Probe("push_register", register, SHARD_PREFIX)]
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def logs_probes(data_dir: Path) -> AsyncIterator[list[Probe]]:
    from actors.logs.client import LogsClient
    from actors.logs.settings import LogsSettings
    from actors.logs.shard import SHARD_PREFIX

    config = LogsSettings(
        shards=1,
        ingest_rate_bytes_per_s=1e12, ingest_burst_bytes=1e12,
        ingest_rate_lines_per_s=1e12, ingest_burst_lines=1e12,
        ship_realm_logs=False,
    )  # fmt: skip
    client = LogsClient(_settings(data_dir, sections={"logs": config}))
    await client.start()
    lines = 100

    async def push() -> None:
        now = time.time_ns()
        entries: list[tuple[int, str, dict[str, str]]] = [
            (now + i, f"level=info msg=line {i} took=12ms", {}) for i in range(lines)
        ]
        await client.push("serial", [({"app": "serial", "level": "info"}, entries)])

    try:
        yield [Probe("logs_push_100", push, SHARD_PREFIX, ops_per_call=lines)]
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def monitor_probes(data_dir: Path) -> AsyncIterator[list[Probe]]:
    from actors.monitor.actors import EVALUATOR_PREFIX
    from actors.monitor.client import MonitorClient

    client = MonitorClient(_settings(data_dir, monitor_evaluators=1))
    await client.start()
    samples = 100

    async def ingest() -> None:
        now = time.time()
        batch = [(f"serial_{i % 10}", {"host": f"h{i}"}, now, float(i)) for i in range(samples)]
        await client.ingest("serial", batch)

    try:
        yield [Probe("monitor_ingest_100", ingest, EVALUATOR_PREFIX, ops_per_call=samples)]
    finally:
        await client.close()


async def game_room_ticks(players: int, ticks: int) -> dict[str, Any]:
    """CPU per tick of Realm's ``Room`` (the ``GameRoom`` actor's logic) with
    ``players`` bots, driven tick by tick in this process as ``benchmarks/game.py``'s
    patch census drives it (a fake clock, a throwaway SQLite store): the tick,
    the inputs, the patches encoded into the mailbox and the journal, without
    Ray's calls or the WebSocket. A room is a tick loop, not a request handler, so
    its cost is per tick: at 20 Hz one core holds 50 ms of ticks a second."""
    from actors.game import world
    from actors.game.room import Room
    from actors.game.settings import GameSettings
    from actors.runtime.clock import FakeClock
    from actors.runtime.store import SQLiteStore
    from benchmarks.game import Bot, Tally, _CensusOutside

    period, warm = 0.05, 40
    sim_time = [0.0]
    clock = FakeClock()
    with tempfile.TemporaryDirectory(prefix="realm-bench-serial-game-") as private:
        store = SQLiteStore(Path(private) / "room.sqlite3")
        info = {"id": "g-serial", "zone": "meadow", "mode": "world", "label": "",
                "private": False, "max_players": players}  # fmt: skip
        room = Room(GameSettings(max_players_per_room=players), info, store, _CensusOutside(),
                    clock=clock, on_failure=lambda error: None)  # fmt: skip
        await room.open()
        bots = []
        zone = world.load("meadow")
        for i in range(players):
            bot = Bot(i, zone, Tally(), 1 / (2 * period))
            bot.now = lambda: sim_time[0]
            character = {"id": f"c{i}", "name": f"bot{i}", "class": "archer", "xp": 0}
            await room.reserve(f"u{i}", character)
            for text in room.attach("serial", f"conn{i}", f"u{i}")["frames"]:
                bot.on_frame(text)
            bots.append(bot)
        load_before = os.getloadavg()
        cpu = 0.0
        for tick in range(warm + ticks):
            started = time.process_time()
            sim_time[0] = tick * period
            inputs = []
            for i, bot in enumerate(bots):
                if (tick + i) % 2 == 0 and (frame := bot.next_frame(tick // 2))["t"] != "ping":
                    inputs.append((f"conn{i}", f"u{i}", frame))
            room.inputs("serial", inputs)
            clock.advance(period)
            room.tick_once()
            await asyncio.sleep(0)  # the journal's writes
            box = room.boxes["serial"]
            box.last_pull = clock.now()
            items, box.items = box.items, []
            if tick >= warm:
                cpu += time.process_time() - started  # the bots' parsing below is not the room's
            for conn, text, _close in items:
                if text:
                    bots[int(conn.removeprefix("conn"))].on_frame(text)
        await room.stop()
        await room.journal.drain()
        await store.close()
    per_tick = cost_per_op(cpu, ticks)
    budget_players = (period / per_tick * players) if per_tick else None
    entry = {
        "service": "game",
        "ops": ticks,
        "players": players,
        "serial_actor": "game-room (its Room, in process)",
        "serial_cpu_s": round(cpu, 4),
        "serial_cpu_us_per_op": _us(per_tick),
        "serial_cpu_us_per_player_tick": _us(cost_per_op(cpu, ticks * players)),
        "serial_ceiling_ops_s": _round(ceiling_ops_s(per_tick)),
        # 20 Hz: a tick every 50 ms; the players one core would hold, if cost grows linearly.
        "players_per_core_at_20hz_if_linear": _round(budget_players),
        "throughput_ops_s": 0.0,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }
    harness.progress(
        f"game_room_{players}: {entry['serial_cpu_us_per_op']} us/tick, "
        f"{entry['serial_cpu_us_per_player_tick']} us/player-tick, "
        f"~{entry['players_per_core_at_20hz_if_linear']} players on a core at 20 Hz if linear"
    )
    return entry


MAKERS: dict[str, Callable[[Path], contextlib.AbstractAsyncContextManager[list[Probe]]]] = {
    "cache": cache_probes,
    "auth": auth_probes,
    "pubsub": pubsub_probes,
    "resources": resources_probes,
    "queue": queue_probes,
    "ledger": ledger_probes,
    "scheduler": scheduler_probes,
    "chat": chat_probes,
    "push": push_probes,
    "logs": logs_probes,
    "monitor": monitor_probes,
}


def kill_all(ray: Any) -> None:
    """Kill the named actors the service left (they are detached)."""
    for found in ray.util.list_named_actors(all_namespaces=True):
        if found["namespace"] == NAMESPACE:
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(**found), no_restart=True)


async def run_service(service: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    if service == "game":
        ticks = 40 if args.quick else GAME_TICKS
        return {f"game_room_{n}": await game_room_ticks(n, ticks) for n in GAME_PLAYERS}
    data_dir = Path(tempfile.mkdtemp(prefix=f"realm-bench-serial-{service}-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        async with MAKERS[service](data_dir) as probes:
            for probe in probes:
                results[probe.variant] = {"service": service, **await measure(probe, args)}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return results


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--services", default=",".join(PROBES), help="comma-separated, from: " + " ".join(PROBES)
    )


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__ or "", argv, duration_s=3.0, concurrency=32, extra=_add_flags)
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    unknown = sorted(set(services) - set(PROBES))
    if unknown:
        raise SystemExit(f"no probe for: {', '.join(unknown)}")
    variants: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    with harness.ray_session(namespace=NAMESPACE) as ray:
        for service in services:
            harness.progress(f"{service}: {args.duration_s:g} s, {args.concurrency} in flight")
            try:
                variants |= asyncio.run(run_service(service, args))
            except Exception as error:  # one service failing must not lose the others
                failed[service] = f"{type(error).__name__}: {error}"[:500]
                harness.progress(f"{service} FAILED: {failed[service]}")
            finally:
                kill_all(ray)
    cores = os.cpu_count() or 1
    for entry in variants.values():
        if "actors_cpu_us_per_op" in entry:
            entry["extrapolated"] = extrapolate(entry, cores_per_node=cores)
    ratios = {
        f"{name} ceiling/s": v["serial_ceiling_ops_s"]
        for name, v in variants.items()
        if v["serial_ceiling_ops_s"]
    }
    path = harness.write_result(
        "serial_points",
        {
            "claim": "CPU time per operation of each service's serial actor, driven directly "
            "through its client; ceiling = 1 / cpu_per_op on one core",
            "params": {
                "duration_s": args.duration_s,
                "concurrency": args.concurrency,
                "quick": args.quick,
                "services": services,
                "worker_niceness": args.worker_niceness,
            },
            "variants": variants,
            "ratios": ratios,
            **({"failed": failed} if failed else {}),
        },
    )
    plot_costs(json.loads(path.read_text()), path.with_suffix(".png"))
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


def plot_costs(doc: dict[str, Any], path: Path) -> None:
    """CPU microseconds per operation of each serial actor (the harness's plot
    shows wall-clock rates, which the machine's load moves)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(n, v["serial_cpu_us_per_op"]) for n, v in doc["variants"].items()]
    rows = [(n, us) for n, us in rows if us]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5), layout="constrained")
    bars = ax.barh([n for n, _ in rows], [us for _, us in rows], color="tab:blue")
    ax.bar_label(bars, labels=[f"{us:,.1f}" for _, us in rows], padding=2, fontsize=8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("CPU us per operation in the serial actor (game: per tick)")
    load = doc.get("load_avg_at_end", [0])[0]
    ax.set_title(
        f"serial points ({doc['machine']['nproc']} cores, load average {load:.1f} at the end)",
        fontsize=9,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
