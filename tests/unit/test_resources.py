"""ResourcePool run directly (no Ray) on a FakeClock and a real SQLite store.

A restart is a second ResourcePool opened on the same store and stream, then
``expire_due()``, as the actor's ``__init__`` does. Waiting acquires are tasks.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors.resources.errors import (
    AcquireCancelled,
    AcquireTimedOut,
    GroupNotFound,
    LeaseExpired,
    LeaseNotFound,
    NotLeaseHolder,
    PoolBusy,
    PoolExists,
    PoolNotFound,
    QuotaExceeded,
)
from actors.resources.model import pick_least_loaded
from actors.resources.pool import ResourcePool
from actors.resources.settings import ResourcesSettings
from actors.runtime.clock import FakeClock
from actors.runtime.errors import InvalidInput, LimitReached, QueueFull
from actors.runtime.store import SQLiteStore
from tests.unit.conftest import cancel, settle

TTL_S = 10.0
OpenPool = Callable[..., Awaitable[ResourcePool]]
_keys = itertools.count()


@pytest.fixture
def open_pool(clock: FakeClock, store: SQLiteStore) -> OpenPool:
    """A ResourcePool recovered from ``store`` (a second call is a restarted actor)."""

    async def open_(
        *, snapshot_every: int = 10_000, max_waiters: int = 100, **more: Any
    ) -> ResourcePool:
        config = ResourcesSettings(default_ttl_s=TTL_S, max_ttl_s=100.0, max_wait_s=60.0,
                                   max_waiters=max_waiters, **more)  # fmt: skip
        pool = ResourcePool(config, clock=clock)
        failures: list[BaseException] = []
        await pool.open(store, "resources-0", snapshot_every=snapshot_every,
                        on_failure=failures.append)  # fmt: skip
        pool.expire_due()  # what the actor does right after recovery
        return pool

    return open_


@pytest.fixture
async def rp(open_pool: OpenPool) -> ResourcePool:
    pool = await open_pool()
    await pool.create_pool("lock", "mutex")
    await pool.create_pool("sem", "semaphore", 3)
    return pool


def key() -> str:
    return f"k{next(_keys)}"


async def take(
    rp: ResourcePool, pool: str, owner: str, *, wait_s: float | None = None, **kw: Any
) -> dict[str, Any]:
    wait_until = None if wait_s is None else rp.clock.time() + wait_s
    return await rp.acquire(pool, owner, key=kw.pop("key", key()), wait_until=wait_until, **kw)


def waiter(rp: ResourcePool, pool: str, owner: str, wait_s: float = 30, **kw: Any) -> asyncio.Task:
    return asyncio.ensure_future(take(rp, pool, owner, wait_s=wait_s, **kw))


async def quiesce(rp: ResourcePool) -> None:
    """Everything committed and any snapshot written, as when a process dies idle."""
    await rp.journal.drain()
    if rp._snapshot_task is not None:
        await rp._snapshot_task


def valid(rp: ResourcePool, pool: str, token: int) -> bool:
    return bool(rp.validate(pool, [token])[0]["valid"])


# --- fencing tokens ------------------------------------------------------------


async def test_fencing_tokens_increase_with_every_grant(rp: ResourcePool) -> None:
    tokens = []
    for _ in range(5):
        lease = await take(rp, "lock", "a")
        tokens.append(lease["token"])
        await rp.release("lock", [lease["token"]], owner="a")
    assert tokens == [1, 2, 3, 4, 5]
    held = [await take(rp, "sem", "a") for _ in range(3)]
    assert [lease["token"] for lease in held] == [1, 2, 3]
    assert sorted(lease["unit"] for lease in held) == [0, 1, 2]
    await rp.release("sem", [2], owner="a")
    again = await take(rp, "sem", "b")
    assert (again["unit"], again["token"]) == (held[1]["unit"], 4)  # same unit, newer token


async def test_tokens_are_never_reused_after_a_restart(rp: ResourcePool, open_pool) -> None:
    for _ in range(3):
        lease = await take(rp, "lock", "a")
        await rp.release("lock", [lease["token"]])
    restarted = await open_pool()
    assert (await take(restarted, "lock", "a"))["token"] == 4


async def test_a_paused_holder_is_fenced_off(rp: ResourcePool, clock: FakeClock) -> None:
    # Given A holds the lock and then pauses past its deadline (a GC pause, say)
    first = await take(rp, "lock", "a", ttl_s=5)
    assert valid(rp, "lock", first["token"])
    clock.advance(5)
    # Then its token is no longer valid, even before any sweep ran
    assert rp.validate("lock", [first["token"]])[0] | {"valid": False} == {
        "pool": "lock", "token": 1, "valid": False, "reason": "expired", "unit": 0,
        "current_token": None,
    }  # fmt: skip
    # And once B holds the lock, only B's token is valid, and A can neither renew nor release it
    second = await take(rp, "lock", "b")
    answers = rp.validate("lock", [first["token"], second["token"]])
    assert [a["valid"] for a in answers] == [False, True]
    assert answers[0]["current_token"] == second["token"] > first["token"]
    with pytest.raises(LeaseExpired):
        await rp.renew("lock", first["token"], owner="a")
    assert (await rp.release("lock", [first["token"]], owner="a"))[0]["state"] == "expired"
    assert valid(rp, "lock", second["token"])


async def test_validate_tells_unknown_released_and_expired_apart(rp: ResourcePool, clock) -> None:
    lease = await take(rp, "lock", "a", ttl_s=5)
    await rp.release("lock", [lease["token"]])
    other = await take(rp, "lock", "a", ttl_s=5)
    clock.advance(6)
    rp.expire_due()
    reasons = [a["reason"] for a in rp.validate("lock", [lease["token"], other["token"], 99])]
    assert reasons == ["released", "expired", "unknown"]
    with pytest.raises(PoolNotFound):
        rp.validate("nope", [1])


# --- waiting: FIFO, no barging, timeouts ------------------------------------------


async def test_waiters_are_granted_in_arrival_order(rp: ResourcePool) -> None:
    holder = await take(rp, "lock", "a")
    tasks = []
    for owner in "bcde":
        tasks.append(waiter(rp, "lock", owner))
        await settle()
    assert rp.describe("lock")["waiting"] == 4
    order = []
    token = holder["token"]
    for task in tasks:
        await rp.release("lock", [token])
        lease = await asyncio.wait_for(task, 5)
        order.append(lease["owner"])
        token = lease["token"]
    assert order == list("bcde")
    assert rp.describe("lock")["waiting"] == 0


async def test_a_newcomer_never_jumps_the_queue(rp: ResourcePool) -> None:
    # Given A holds the lock and B waits
    holder = await take(rp, "lock", "a")
    b = waiter(rp, "lock", "b")
    await settle()
    # When A releases, the unit is B's: a newcomer that will not wait is refused
    # even though B has not taken the unit yet, and one that waits queues behind
    await rp.release("lock", [holder["token"]])
    assert not b.done()
    with pytest.raises(AcquireTimedOut):
        await take(rp, "lock", "c")
    c = waiter(rp, "lock", "c")
    granted_b = await asyncio.wait_for(b, 5)
    await settle()
    assert not c.done()
    await rp.release("lock", [granted_b["token"]])
    assert (await asyncio.wait_for(c, 5))["owner"] == "c"


async def test_a_free_unit_is_not_taken_past_waiters(rp: ResourcePool) -> None:
    # Semaphore of 3: three holders, then waiters; every freed unit goes to the queue head
    held = [await take(rp, "sem", f"h{i}") for i in range(3)]
    w1, w2 = waiter(rp, "sem", "w1"), waiter(rp, "sem", "w2")
    await settle()
    await rp.release("sem", [held[0]["token"], held[1]["token"]])
    newcomer = waiter(rp, "sem", "late")
    assert {(await w1)["owner"], (await w2)["owner"]} == {"w1", "w2"}
    await settle()
    assert not newcomer.done()
    await rp.release("sem", [held[2]["token"]])
    assert (await asyncio.wait_for(newcomer, 5))["owner"] == "late"


async def test_a_wait_times_out_and_leaves_the_queue(rp: ResourcePool, clock: FakeClock) -> None:
    holder = await take(rp, "lock", "a", ttl_s=100)
    late = waiter(rp, "lock", "b", wait_s=5)
    await settle()
    clock.advance(4.9)
    await settle()
    assert not late.done()
    clock.advance(0.1)
    with pytest.raises(AcquireTimedOut):
        await late
    assert rp.describe("lock")["waiting"] == 0
    assert rp.stats("lock")[0]["timeouts"] == 1
    assert valid(rp, "lock", holder["token"])


async def test_a_cancelled_wait_gives_its_place_up(rp: ResourcePool) -> None:
    holder = await take(rp, "lock", "a")
    first = waiter(rp, "lock", "b", key="kb")
    second = waiter(rp, "lock", "c")
    await settle()
    assert await rp.cancel("lock", "kb")
    with pytest.raises(AcquireCancelled):
        await first
    await rp.release("lock", [holder["token"]])
    assert (await asyncio.wait_for(second, 5))["owner"] == "c"


async def test_a_waiter_whose_call_is_cancelled_passes_its_turn_on(rp: ResourcePool) -> None:
    holder = await take(rp, "lock", "a")
    gone = waiter(rp, "lock", "b")
    nxt = waiter(rp, "lock", "c")
    await settle()
    await cancel(gone)
    await rp.release("lock", [holder["token"]])
    assert (await asyncio.wait_for(nxt, 5))["owner"] == "c"


async def test_a_full_queue_refuses_with_429(open_pool: OpenPool) -> None:
    rp = await open_pool(max_waiters=2)
    await rp.create_pool("lock", "mutex")
    await take(rp, "lock", "a")
    tasks = [waiter(rp, "lock", f"w{i}") for i in range(2)]
    await settle()
    with pytest.raises(QueueFull) as refused:
        await take(rp, "lock", "x", wait_s=5)
    assert refused.value.status == 429 and refused.value.details["max_waiters"] == 2
    for task in tasks:
        await cancel(task)


async def test_a_repeated_acquire_gets_the_same_grant(rp: ResourcePool) -> None:
    first = await take(rp, "sem", "a", key="same")
    assert await take(rp, "sem", "a", key="same") == first
    assert rp.describe("sem")["held"] == 1
    # a repeat of a waiting acquire joins it instead of queueing twice
    for _ in range(2):
        await take(rp, "sem", "a")
    calls = [waiter(rp, "sem", "b", key="w"), waiter(rp, "sem", "b", key="w")]
    await settle()
    assert rp.describe("sem")["waiting"] == 1
    await rp.release("sem", [first["token"]])
    one, two = await asyncio.gather(*calls)
    assert one == two


# --- quotas ---------------------------------------------------------------------


async def test_quota_counts_held_and_waiting_grants_per_owner(rp: ResourcePool) -> None:
    await rp.create_pool("q", "semaphore", 5, quota_per_owner=2)
    first = await take(rp, "q", "a", ttl_s=7)
    await take(rp, "q", "a")
    with pytest.raises(QuotaExceeded) as refused:
        await take(rp, "q", "a", wait_s=5)
    error = refused.value
    assert error.status == 429
    assert error.details | {"retry_after_s": 0} == {
        "pool": "q", "owner": "a", "quota": 2, "held": 2, "waiting": 0, "retry_after_s": 0,
    }  # fmt: skip
    assert error.details["retry_after_s"] == 7.0  # the soonest of its leases ends then
    assert (await take(rp, "q", "b"))["owner"] == "b"  # other owners are not affected
    await rp.release("q", [first["token"]])
    assert (await take(rp, "q", "a"))["owner"] == "a"
    assert rp.stats("q")[0]["refusals"] == 1


async def test_waiting_counts_against_the_quota(rp: ResourcePool) -> None:
    await rp.create_pool("q1", "mutex", quota_per_owner=2)
    await take(rp, "q1", "a")
    queued = waiter(rp, "q1", "a")
    await settle()
    with pytest.raises(QuotaExceeded) as refused:
        await take(rp, "q1", "a", wait_s=5)
    assert refused.value.details["waiting"] == 1
    await cancel(queued)


# --- expiry and renewal -----------------------------------------------------------


async def test_a_lease_expires_at_its_deadline_and_its_unit_goes_to_the_next(
    rp: ResourcePool, clock: FakeClock
) -> None:
    holder = await take(rp, "lock", "a", ttl_s=5)
    nxt = waiter(rp, "lock", "b", wait_s=30)
    await settle()
    clock.advance(4.99)
    assert rp.expire_due() == [] and valid(rp, "lock", holder["token"])
    clock.advance(0.01)
    expired = rp.expire_due()
    assert [(e["token"], e["state"], e["ended_at"]) for e in expired] == [
        (holder["token"], "expired", holder["expires_at"])
    ]
    granted = await asyncio.wait_for(nxt, 5)
    assert granted["owner"] == "b" and granted["token"] == holder["token"] + 1
    assert rp.stats("lock")[0]["expiries"] == 1


async def test_renewing_pushes_the_deadline(rp: ResourcePool, clock: FakeClock) -> None:
    lease = await take(rp, "lock", "a", ttl_s=5)
    for _ in range(4):
        clock.advance(4)
        renewed = await rp.renew("lock", lease["token"], owner="a")
        assert renewed["expires_at"] == clock.time() + 5
        rp.expire_due()
        assert valid(rp, "lock", lease["token"])
    longer = await rp.renew("lock", lease["token"], owner="a", ttl_s=20)
    assert longer["ttl_s"] == 20 and longer["renewals"] == 5
    with pytest.raises(NotLeaseHolder):
        await rp.renew("lock", lease["token"], owner="b")
    with pytest.raises(InvalidInput):
        await rp.renew("lock", lease["token"], owner="a", ttl_s=1_000)
    clock.advance(20)
    with pytest.raises(LeaseExpired):
        await rp.renew("lock", lease["token"], owner="a")
    with pytest.raises(LeaseNotFound):
        await rp.renew("lock", 999, owner="a")


async def test_release_is_checked_and_safe_to_repeat(rp: ResourcePool) -> None:
    lease = await take(rp, "lock", "a")
    with pytest.raises(NotLeaseHolder):
        await rp.release("lock", [lease["token"]], owner="b")
    assert valid(rp, "lock", lease["token"])
    first = await rp.release("lock", [lease["token"]], owner="a")
    again = await rp.release("lock", [lease["token"]], owner="a")
    assert first == again and first[0]["state"] == "released"
    with pytest.raises(LeaseNotFound):
        await rp.release("lock", [42])


async def test_release_owner_ends_its_leases_and_waits(rp: ResourcePool) -> None:
    mine = [await take(rp, "sem", "dead") for _ in range(2)]
    other = await take(rp, "sem", "alive")
    held = await take(rp, "lock", "alive")
    queued = waiter(rp, "lock", "dead")
    await settle()
    assert await rp.release_owner("dead") == 2
    with pytest.raises(AcquireCancelled):
        await queued
    assert [valid(rp, "sem", lease["token"]) for lease in mine] == [False, False]
    assert valid(rp, "sem", other["token"]) and valid(rp, "lock", held["token"])


# --- restart -----------------------------------------------------------------------


@pytest.mark.parametrize("snapshot_every", [10_000, 3])
async def test_a_restart_keeps_leases_and_counts(
    open_pool: OpenPool, clock: FakeClock, snapshot_every: int
) -> None:
    rp = await open_pool(snapshot_every=snapshot_every)
    await rp.create_pool("sem", "semaphore", 3, quota_per_owner=2)
    leases = [await take(rp, "sem", owner, ttl_s=50) for owner in ("a", "a", "b")]
    await rp.renew("sem", leases[0]["token"], owner="a")
    await rp.release("sem", [leases[1]["token"]])
    await quiesce(rp)
    restarted = await open_pool(snapshot_every=snapshot_every)
    assert restarted.leases("sem") == rp.leases("sem")
    assert [valid(restarted, "sem", lease["token"]) for lease in leases] == [True, False, True]
    assert restarted.stats("sem") == rp.stats("sem")
    assert restarted.describe("sem")["quota_per_owner"] == 2


async def test_records_and_a_snapshot_bring_the_whole_book_back(
    open_pool: OpenPool, store: SQLiteStore, clock: FakeClock
) -> None:
    # Given every kind of record: pools, a group, grants, a renewal, a release, an expiry
    rp = await open_pool(snapshot_every=3)
    await rp.create_pool("sem", "semaphore", 3, ttl_s=20, quota_per_owner=2, max_waiters=5)
    await rp.create_pool("gpu", "mutex")
    await rp.create_group("all", ["sem", "gpu"])
    leases = [await take(rp, "sem", owner, ttl_s=5) for owner in "aab"]
    await rp.renew("sem", leases[0]["token"], owner="a", ttl_s=30)
    await rp.release("sem", [leases[1]["token"]])
    clock.advance(6)
    assert [lease["owner"] for lease in rp.expire_due()] == ["b"]
    ended_by = rp.journal.assigned
    # and a snapshot taken after them (groups add records, not state: one comes soon)
    for i in range(20):
        await rp.create_group(f"g{i}", ["gpu"])
    await take(rp, "gpu", "c")  # and a record after the snapshot, replayed on top of it
    await quiesce(rp)
    snapshot = await store.read_snapshot("resources-0")
    assert snapshot is not None and ended_by < snapshot[0] < rp.journal.assigned
    # When the actor is opened again from the same store
    restarted = await open_pool(snapshot_every=3)
    # Then pools, units, tokens, free units, counts, groups and ended leases are all back
    assert restarted.book.snapshot() == rp.book.snapshot()
    assert restarted.book.ended == rp.book.ended
    assert [lease.owner for lease in restarted.book.ended.values()] == ["a", "b"]


async def test_leases_that_ran_out_while_down_are_expired_on_recovery(
    rp: ResourcePool, open_pool: OpenPool, clock: FakeClock
) -> None:
    short = await take(rp, "sem", "a", ttl_s=5)
    long = await take(rp, "sem", "b", ttl_s=50)
    await quiesce(rp)
    clock.advance(20)  # the actor was down for 20 s of real time
    restarted = await open_pool()
    assert [lease["token"] for lease in restarted.leases("sem")] == [long["token"]]
    assert restarted.validate("sem", [short["token"]])[0]["reason"] == "expired"
    assert valid(restarted, "sem", long["token"])
    assert restarted.stats("sem")[0]["expiries"] == 1
    clock.advance(30)
    assert [e["token"] for e in restarted.expire_due()] == [long["token"]]


async def test_a_waiter_retried_after_a_restart_queues_again_with_its_deadline(
    rp: ResourcePool, open_pool: OpenPool, clock: FakeClock
) -> None:
    # Given B waits with a deadline, and the actor restarts (its queue is gone)
    holder = await take(rp, "lock", "a", ttl_s=50)
    deadline = clock.time() + 10
    lost = asyncio.ensure_future(rp.acquire("lock", "b", key="b1", wait_until=deadline))
    await settle()
    await quiesce(rp)
    restarted = await open_pool()
    await cancel(lost)
    # When Ray re-sends B's call, it queues again with the same deadline
    retried = asyncio.ensure_future(restarted.acquire("lock", "b", key="b1", wait_until=deadline))
    await settle()
    assert restarted.describe("lock")["waiting"] == 1
    await restarted.release("lock", [holder["token"]])
    granted = await asyncio.wait_for(retried, 5)
    # And once granted, a further repeat of the call gets the same grant
    await quiesce(restarted)
    again = await open_pool()
    assert await again.acquire("lock", "b", key="b1", wait_until=deadline) == granted


# --- pools, groups, input -----------------------------------------------------------


async def test_pool_definitions_are_checked(rp: ResourcePool) -> None:
    before = rp.journal.assigned
    for bad in [
        dict(name="bad name", kind="mutex"),
        dict(name="x", kind="lock"),
        dict(name="x", kind="mutex", capacity=2),
        dict(name="x", kind="semaphore"),
        dict(name="x", kind="semaphore", capacity=0),
        dict(name="x", kind="semaphore", capacity=True),
        dict(name="x", kind="semaphore", capacity=2, ttl_s=-1),
        dict(name="x", kind="semaphore", capacity=2, ttl_s=101),
        dict(name="x", kind="semaphore", capacity=2, quota_per_owner=0),
    ]:
        with pytest.raises(InvalidInput):
            await rp.create_pool(**bad)  # type: ignore[arg-type]
    assert await rp.create_pool("lock", "mutex") == rp.describe("lock")  # same again: no-op
    with pytest.raises(PoolExists):
        await rp.create_pool("lock", "mutex", ttl_s=5)
    with pytest.raises(PoolNotFound):
        await take(rp, "missing", "a")
    with pytest.raises(InvalidInput):
        await take(rp, "lock", "a", ttl_s=0)
    with pytest.raises(InvalidInput):
        await take(rp, "lock", "a", wait_s=62)
    assert rp.journal.assigned == before
    assert rp.describe("lock")["held"] == 0


async def test_groups_pick_the_least_loaded_pool(rp: ResourcePool) -> None:
    await rp.create_pool("gpu-a", "semaphore", 2)
    await rp.create_pool("gpu-b", "semaphore", 4)
    group = await rp.create_group("gpus", ["gpu-a", "gpu-b"])
    assert rp.group("gpus") == group == {"name": "gpus", "pools": ["gpu-a", "gpu-b"]}
    picks = []
    for i in range(6):
        name = pick_least_loaded(rp.loads(rp.group("gpus")["pools"]))
        picks.append(name)
        await take(rp, name, f"o{i}")
    assert picks.count("gpu-a") == 2 and picks.count("gpu-b") == 4
    assert picks[0] == "gpu-a"  # ties go to the group's order
    with pytest.raises(PoolExists):
        await rp.create_group("gpus", ["gpu-b"])
    with pytest.raises(InvalidInput):
        await rp.create_group("dup", ["gpu-a", "gpu-a"])


async def test_stats_count_per_pool_and_owner(rp: ResourcePool, clock: FakeClock) -> None:
    a1 = await take(rp, "sem", "a")
    await take(rp, "sem", "a", ttl_s=1)
    await take(rp, "sem", "b")
    w = waiter(rp, "sem", "c")
    await settle()
    clock.advance(3)
    await rp.release("sem", [a1["token"]])
    await rp.renew("sem", 3, owner="b")
    await w  # granted one of the two units freed meanwhile, after waiting 3 s
    (stats,) = rp.stats("sem")
    assert {k: stats[k] for k in ("grants", "releases", "expiries", "renewals", "held")} == {
        "grants": 4, "releases": 1, "expiries": 1, "renewals": 1, "held": 2,
    }  # fmt: skip
    assert stats["max_waited_s"] == 3
    assert stats["owners"]["a"] | {"waited_s": 0} == {
        "grants": 2, "releases": 1, "expiries": 1, "renewals": 0, "waited_s": 0,
        "max_waited_s": 0.0, "held": 0, "waiting": 0,
    }  # fmt: skip
    assert list(rp.stats("sem", owner="c")[0]["owners"]) == ["c"]


def test_only_an_admin_acts_for_another_owner() -> None:
    from actors.auth.client import Principal
    from actors.runtime.errors import Forbidden
    from apps.resources import holder_check, owner_for

    user = Principal("u1", "ada", ("user",), "s1")
    admin = Principal("u2", "root", ("user", "admin"), "s2")
    assert owner_for(user, None) == owner_for(user, "u1") == "u1"
    with pytest.raises(Forbidden):
        owner_for(user, "u2")
    assert owner_for(admin, "job-7") == "job-7"
    assert (holder_check(user), holder_check(admin)) == ("u1", None)
    with pytest.raises(InvalidInput):
        pick_least_loaded([])


# --- owners: namespaces, quotas, deletion --------------------------------------------


async def test_an_owner_may_have_so_many_pools_and_groups(open_pool: OpenPool) -> None:
    rp = await open_pool(max_pools_per_owner=2, max_groups_per_owner=1)
    await rp.create_pool("u1/a", "mutex")
    await rp.create_pool("u1/b", "semaphore", 2)
    assert await rp.create_pool("u1/a", "mutex") == rp.describe("u1/a")  # the same: no new pool
    before = rp.journal.assigned
    with pytest.raises(LimitReached) as refused:
        await rp.create_pool("u1/c", "mutex")
    assert refused.value.status == 403 and refused.value.details == {"limit": 2}
    assert rp.journal.assigned == before and "u1/c" not in rp.book.pools
    # another owner, and the deployment's own pools, are not counted with u1's
    await rp.create_pool("u2/a", "mutex")
    await rp.create_pool("x", "mutex")
    await rp.create_group("u1/g", ["u1/a", "u1/b"])
    with pytest.raises(LimitReached):
        await rp.create_group("u1/h", ["u1/a"])
    with pytest.raises(InvalidInput):  # a group holds its owner's pools only
        await rp.create_group("u2/g", ["u1/a"])
    # deleting frees the quota
    await rp.delete_group("u1/g")
    await rp.create_group("u1/h", ["u1/a"])
    await rp.delete_pool("u1/b")
    await rp.create_pool("u1/c", "mutex")
    assert rp.book.pool_counts == {"u1": 2, "u2": 1} and rp.book.group_counts == {"u1": 1}


@pytest.mark.parametrize("snapshot_every", [10_000, 2])
async def test_a_pool_made_again_never_reuses_a_token(
    open_pool: OpenPool, snapshot_every: int
) -> None:
    rp = await open_pool(snapshot_every=snapshot_every)
    await rp.create_pool("u1/lock", "mutex")
    old = await take(rp, "u1/lock", "a")
    await rp.release("u1/lock", [old["token"]])
    lease = await take(rp, "u1/lock", "a")
    await rp.release("u1/lock", [lease["token"]])
    await rp.delete_pool("u1/lock")
    with pytest.raises(PoolNotFound):
        rp.describe("u1/lock")
    await quiesce(rp)
    restarted = await open_pool(snapshot_every=snapshot_every)
    assert restarted.book.pool_counts == {}
    await restarted.create_pool("u1/lock", "mutex")
    again = await take(restarted, "u1/lock", "b")
    assert again["token"] == lease["token"] + 1  # above every token the deleted pool gave
    assert not valid(restarted, "u1/lock", lease["token"])
    fresh = await restarted.create_pool("u2/lock", "mutex")  # other owners start at 1
    assert fresh["next_token"] == 1


async def test_a_busy_pool_is_not_deleted(rp: ResourcePool) -> None:
    await rp.create_pool("u1/lock", "mutex")
    await rp.create_group("u1/g", ["u1/lock"])
    holder = await take(rp, "u1/lock", "a")
    with pytest.raises(PoolBusy):
        await rp.delete_pool("u1/lock")
    queued = waiter(rp, "u1/lock", "b")
    await settle()
    await rp.release("u1/lock", [holder["token"]])
    lease = await asyncio.wait_for(queued, 5)
    await rp.release("u1/lock", [lease["token"]])
    holder = await take(rp, "u1/lock", "a")
    queued = waiter(rp, "u1/lock", "b")
    await settle()
    await rp.release("u1/lock", [holder["token"]])  # the unit is promised to the waiter
    with pytest.raises(PoolBusy):
        await rp.delete_pool("u1/lock")
    await rp.release("u1/lock", [(await queued)["token"]])
    deleted = await rp.delete_pool("u1/lock")
    assert deleted["held"] == 0
    with pytest.raises(GroupNotFound):  # its only pool went: so did the group
        rp.group("u1/g")


async def test_a_pool_asks_for_no_longer_queue_than_the_deployment_allows(
    open_pool: OpenPool,
) -> None:
    rp = await open_pool(max_waiters=50)
    with pytest.raises(InvalidInput):
        await rp.create_pool("u1/q", "mutex", max_waiters=51)
    with pytest.raises(InvalidInput):
        await rp.create_pool("u1/q", "semaphore", 2, quota_per_owner=10**9)
    assert (await rp.create_pool("u1/q", "mutex", max_waiters=50))["max_waiters"] == 50


# --- a withdrawn acquire ------------------------------------------------------------


async def test_an_acquire_that_arrives_after_its_withdrawal_is_refused(rp: ResourcePool) -> None:
    # Given A holds the lock, and B's acquire is withdrawn before it reaches the
    # actor (its caller went away; Ray re-sends it, or it was overtaken by its cancel)
    holder = await take(rp, "lock", "a")
    assert not await rp.cancel("lock", "late")
    # When the acquire arrives, it is refused and does not queue
    late = waiter(rp, "lock", "b", key="late")
    await settle()
    assert late.done() and rp.describe("lock")["waiting"] == 0
    with pytest.raises(AcquireCancelled):
        await late
    # Then releasing the lock leaves it free: no grant went to nobody
    await rp.release("lock", [holder["token"]])
    assert rp.describe("lock")["held"] == 0


async def test_a_withdrawn_acquire_repeated_gets_no_grant(rp: ResourcePool) -> None:
    # A grant that raced with the withdrawal is given back, and a repeat of the call
    # (Ray retrying it) does not get it (or another) again
    lease = await take(rp, "lock", "a", key="raced")
    assert await rp.cancel("lock", "raced")
    assert rp.describe("lock")["held"] == 0
    with pytest.raises(AcquireCancelled):
        await take(rp, "lock", "a", key="raced")
    assert rp.validate("lock", [lease["token"]])[0]["reason"] == "released"


async def test_withdrawn_keys_are_forgotten_once_no_acquire_can_wait(
    rp: ResourcePool, clock: FakeClock
) -> None:
    await rp.cancel("lock", "old")
    clock.advance(rp.config.max_wait_s + 2)
    await rp.cancel("lock", "new")  # remembering one forgets those past their time
    assert list(rp._withdrawn) == ["new"]
    assert (await take(rp, "lock", "a", key="old"))["owner"] == "a"
