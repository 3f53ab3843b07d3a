"""Resource manager (service 11): leased, fenced grants of counted resources.

A ``ResourcePool`` actor owns some pools (the client routes each pool name to
one actor by hashing). A pool is a semaphore of ``capacity`` numbered units,
or a mutex (one unit). A grant is a lease on one unit:

- **TTL**: it ends at an absolute wall-clock deadline, ``expires_at``, unless
  the holder renews it (keepalive) first; it also ends on release, or when its
  owner is declared dead (``release_owner``, e.g. when a session ends).
- **Fencing token**: every grant of a pool gets the pool's next token (1, 2,
  ...). Tokens are journaled with the grant, so they are never handed out
  twice, across restarts too. ``validate`` says whether a token is its unit's
  current, unexpired grant: a holder that paused past its deadline, and any
  store that checks tokens before it writes, learns that the lease is gone
  (Kleppmann's fix for plain lock leases).
- **Fair waiting**: an acquire that cannot be granted now joins the pool's
  FIFO queue until its deadline. A freed unit goes to the head of the queue;
  while anyone waits, a newcomer queues even if a unit is free at that
  instant (no barging).
- **Quotas**: a pool may cap an owner's concurrent grants (held plus
  waiting); over it, an acquire is refused with 429 ``quota_exceeded``.
- **Groups** name several pools; the client acquires from the least-loaded.
- **Owners**: a pool or group of an owner has the id ``<owner>/<name>``
  (``model.pool_id``), and all of an owner's live on one actor, which counts
  them against ``max_pools_per_owner`` and ``max_groups_per_owner``.
- **Withdrawn acquires**: ``cancel`` (the caller went away) remembers the
  acquire's idempotency key for as long as any acquire may wait, so the same
  call arriving after its withdrawal (Ray re-sending it, or a call overtaken
  by its own cancel) is refused instead of queueing for nobody.

Durability: pools, groups, leases, token counters and usage counts are a fold
of the journal (``Durable``), kept in a ``PoolBook`` (``model.py``); every
change carries its wall time (``at``), so replay is deterministic. Deadlines
are absolute wall-clock times, so a restarted actor expires, right after
recovery, every lease whose deadline passed while it was down, and keeps the
others until their own deadline.

Waiters are not durable. A restart forgets the queue: Ray re-sends the
acquire calls that were waiting (the actor is PERMANENT), each with its
idempotency key and its original absolute deadline, so each waiter queues
again (in the order its call comes back, not its old place) and times out
when it would have; one whose grant was committed before the crash gets that
grant back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import asdict
from typing import Any

from actors.resources.errors import (
    AcquireCancelled,
    AcquireTimedOut,
    NotLeaseHolder,
    PoolBusy,
    QuotaExceeded,
)
from actors.resources.model import (
    BookSnapshot,
    PoolBook,
    PoolSpec,
    PoolState,
    Waiter,
    WaitQueue,
    check_group,
    check_holder,
    check_id,
    check_ttl,
    local_name,
    make_spec,
    tenant_of,
)
from actors.resources.settings import ResourcesSettings
from actors.runtime.clock import Clock, SystemClock, every
from actors.runtime.errors import InvalidInput, LimitReached, QueueFull
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, recover, remote_actor

#: Pool actors are named ``resources-<i>`` (``actors.runtime.shards``).
SHARD_PREFIX = "resources"
#: Slack on an acquire's deadline, which was set on the caller's clock.
CLOCK_SLACK_S = 1.0
#: Withdrawn acquires' keys remembered per actor (the oldest go first beyond it).
WITHDRAWN_KEPT = 100_000


class ResourcePool(Durable):
    """Pools of leased units with fencing tokens, fair queues and quotas: the
    operations, the wait queues and their dispatch, and expiry; the state
    itself is ``self.book``."""

    def __init__(self, config: ResourcesSettings, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.book = PoolBook()
        self._queues: dict[str, WaitQueue] = {}
        #: acquire calls in progress by idempotency key (a repeated call joins the first).
        self._acquiring: dict[str, asyncio.Future[dict[str, Any]]] = {}
        #: Keys of withdrawn acquires -> until when a call with one is refused.
        self._withdrawn: OrderedDict[str, float] = OrderedDict()

    # --- the journal's operations: the book's changes, replayed on recovery ----

    def apply_create_pool(self, spec: PoolSpec, at: float) -> dict[str, Any]:
        return self.book.create_pool(spec, at)

    def apply_delete_pool(self, pool: str) -> dict[str, Any]:
        return self.book.delete_pool(pool)

    def apply_create_group(self, name: str, pools: list[str]) -> dict[str, Any]:
        return self.book.create_group(name, pools)

    def apply_delete_group(self, name: str) -> dict[str, Any]:
        return self.book.delete_group(name)

    def apply_grant(
        self, pool: str, owner: str, ttl_s: float, at: float, waited_s: float
    ) -> dict[str, Any]:
        return self.book.grant(pool, owner, ttl_s, at, waited_s).public()

    def apply_renew(
        self, pool: str, token: int, owner: str | None, ttl_s: float, at: float
    ) -> dict[str, Any]:
        return self.book.renew(pool, token, owner, ttl_s, at).public()

    def apply_release(
        self, pool: str, tokens: list[int], owner: str | None, at: float
    ) -> list[dict[str, Any]]:
        return [lease.public() for lease in self.book.release(pool, tokens, owner, at)]

    def apply_expire(self, at: float) -> list[dict[str, Any]]:
        return [lease.public() for lease in self.book.expire(at)]

    def snapshot_state(self) -> BookSnapshot:
        return self.book.snapshot()

    def state_size(self) -> int:
        return self.book.size()

    def restore_state(self, state: BookSnapshot) -> None:
        self.book = PoolBook.restored(state)

    async def _granted(self, key: str) -> dict[str, Any] | None:
        """The lease the acquire with idempotency key ``key`` was granted, once the
        journal has it (a grant still on its way to the store is waited for)."""
        reply = await self.committed_reply(key)
        return dict(reply[1]) if reply is not None and reply[0] == "grant" else None

    def _withdraw(self, key: str) -> None:
        """Refuse calls with ``key`` for as long as any acquire may wait."""
        now = self.clock.time()
        self._withdrawn[key] = now + self.config.max_wait_s + CLOCK_SLACK_S
        self._withdrawn.move_to_end(key)
        while self._withdrawn and (
            len(self._withdrawn) > WITHDRAWN_KEPT or next(iter(self._withdrawn.values())) <= now
        ):
            self._withdrawn.popitem(last=False)

    def _was_withdrawn(self, key: str) -> bool:
        until = self._withdrawn.get(key)
        return until is not None and until > self.clock.time()

    # --- pools and groups ----------------------------------------------------

    async def create_pool(
        self,
        name: str,
        kind: str,
        capacity: int | None = None,
        *,
        ttl_s: float | None = None,
        quota_per_owner: int | None = None,
        max_waiters: int | None = None,
    ) -> dict[str, Any]:
        """Create a pool (the same definition again is a no-op; another is 409). A
        new pool of an owner counts against ``max_pools_per_owner``."""
        spec = make_spec(
            name, kind, capacity, ttl_s=ttl_s, quota_per_owner=quota_per_owner,
            max_waiters=max_waiters, max_ttl_s=self.config.max_ttl_s,
            max_waiters_cap=self.config.max_waiters,
        )  # fmt: skip
        existing = self.book.pools.get(spec.name)
        tenant = tenant_of(spec.name)
        if existing is None and tenant is not None:
            limit = self.config.max_pools_per_owner
            if self.book.pool_counts.get(tenant, 0) >= limit:
                raise LimitReached(f"an owner may have {limit} pools", limit=limit)
        if existing is None or existing.spec != spec:
            await self.execute("create_pool", spec=spec, at=self.clock.time())
        return self.describe(spec.name)

    async def delete_pool(self, pool: str) -> dict[str, Any]:
        """Delete an idle pool: 409 ``pool_busy`` while a unit is held or an acquire
        waits. Its tokens are not handed out again by a pool made under its name."""
        state = self.book.pool(pool)
        queue = self._queues.get(pool)
        waiting = len(queue.waiters) + queue.promised if queue else 0
        if state.units or waiting:
            raise PoolBusy(pool=local_name(pool), held=len(state.units), waiting=waiting)
        deleted: dict[str, Any] = await self.execute("delete_pool", pool=pool)
        self._queues.pop(pool, None)
        return deleted

    def describe(self, pool: str) -> dict[str, Any]:
        queue = self._queues.get(pool)
        return self.book.pool(pool).describe(len(queue.waiters) if queue else 0)

    def loads(self, pools: list[str]) -> list[dict[str, Any]]:
        """Capacity, held and waiting of each pool that exists, for choosing among a group."""
        return [
            {key: d[key] for key in ("name", "capacity", "held", "waiting")}
            for d in map(self.describe, (p for p in pools if p in self.book.pools))
        ]

    async def create_group(self, name: str, pools: list[str]) -> dict[str, Any]:
        """Name a list of pools (which the caller checked exist; they may live
        elsewhere). A new group of an owner counts against ``max_groups_per_owner``."""
        check_group(name, pools)
        existing = self.book.groups.get(name)
        if existing == pools:
            return {"name": name, "pools": list(pools)}
        tenant = tenant_of(name)
        if existing is None and tenant is not None:
            limit = self.config.max_groups_per_owner
            if self.book.group_counts.get(tenant, 0) >= limit:
                raise LimitReached(f"an owner may have {limit} groups", limit=limit)
        result: dict[str, Any] = await self.execute("create_group", name=name, pools=pools)
        return result

    def group(self, name: str) -> dict[str, Any]:
        return self.book.group(name)

    async def delete_group(self, name: str) -> dict[str, Any]:
        """Forget a group (its pools stay)."""
        self.book.group(name)  # 404 before anything is journaled
        deleted: dict[str, Any] = await self.execute("delete_group", name=name)
        return deleted

    # --- acquiring: now, or in the queue ---------------------------------------

    async def acquire(
        self,
        pool: str,
        owner: str,
        *,
        key: str,
        ttl_s: float | None = None,
        wait_until: float | None = None,
    ) -> dict[str, Any]:
        """Grant a unit of ``pool`` to ``owner``: now, or after queueing until the
        wall-clock time ``wait_until`` (None: do not wait). ``key`` makes the call
        idempotent: a repeat (Ray retrying it after a restart) gets the same grant;
        once the acquire was withdrawn (``cancel``), every call with ``key`` is refused."""
        if self._was_withdrawn(key):
            raise AcquireCancelled("the acquire was withdrawn", key=key)
        if key in self._acquiring:
            return dict(await asyncio.shield(self._acquiring[key]))
        granted = await self._granted(key)
        if granted is not None:
            return granted
        if key in self._acquiring:  # started while the grant's commit was awaited
            return dict(await asyncio.shield(self._acquiring[key]))
        if self._was_withdrawn(key):
            raise AcquireCancelled("the acquire was withdrawn", key=key)
        state = self.book.pool(pool)
        check_holder(owner)
        ttl = check_ttl(
            ttl_s if ttl_s is not None else state.spec.ttl_s or self.config.default_ttl_s,
            self.config.max_ttl_s,
        )
        now = self.clock.time()
        if wait_until is not None and wait_until - now > self.config.max_wait_s + CLOCK_SLACK_S:
            raise InvalidInput(f"an acquire waits at most {self.config.max_wait_s:g} s")
        result: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acquiring[key] = result
        try:
            lease = await self._acquire(state, owner, key, ttl, now, wait_until)
            result.set_result(lease)
            return lease
        except BaseException as error:
            if isinstance(error, asyncio.CancelledError):
                result.cancel()
            else:
                result.set_exception(error)
                result.exception()  # retrieved: a repeat that never came is not an error
            raise
        finally:
            del self._acquiring[key]

    async def _acquire(
        self,
        state: PoolState,
        owner: str,
        key: str,
        ttl: float,
        queued_at: float,
        wait_until: float | None,
    ) -> dict[str, Any]:
        self.expire_due()
        pool = state.spec.name
        queue = self._queues.setdefault(pool, WaitQueue(pool))
        quota = state.spec.quota_per_owner
        if quota is not None:
            held, waiting = state.held_by(owner), queue.waiting_for(owner)
            if held + waiting >= quota:
                queue.refusals += 1
                raise QuotaExceeded(
                    f"owner {owner!r} is at its quota of {quota} for pool {local_name(pool)!r}",
                    pool=local_name(pool), owner=owner, quota=quota, held=held, waiting=waiting,
                    retry_after_s=state.soonest_end(owner, self.clock.time()),
                )  # fmt: skip
        # No barging: only with nobody queued may a newcomer take a free unit.
        if not queue.waiters and state.free_units() - queue.promised > 0:
            return await self._grant(pool, owner, key, ttl, waited_s=0.0)
        if wait_until is None or wait_until <= queued_at:
            raise AcquireTimedOut(
                "no unit is free and the acquire does not wait", pool=local_name(pool)
            )
        limit = state.spec.max_waiters
        limit = self.config.max_waiters if limit is None else limit
        if len(queue.waiters) >= limit:
            queue.refusals += 1
            raise QueueFull(pool=local_name(pool), max_waiters=limit)
        waiter = Waiter(owner, queued_at, asyncio.get_running_loop().create_future())
        queue.waiters[key] = waiter
        await self._wait_turn(queue, key, waiter, wait_until)
        queue.promised -= 1  # taken now: the grant below applies before anything else runs
        try:
            return await self._grant(
                pool, owner, key, ttl, waited_s=max(0.0, self.clock.time() - queued_at)
            )
        finally:
            self._dispatch(pool)

    async def _wait_turn(
        self, queue: WaitQueue, key: str, waiter: Waiter, wait_until: float
    ) -> None:
        timer = asyncio.ensure_future(self.clock.sleep(wait_until - self.clock.time()))
        try:
            await asyncio.wait({waiter.turn, timer}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled: give the place, or the promised unit, back
            timer.cancel()
            turn = waiter.turn
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                queue.promised -= 1
                self._dispatch(queue.pool)
            else:
                queue.waiters.pop(key, None)
            raise
        timer.cancel()
        if waiter.turn.done():
            if waiter.turn.cancelled() or waiter.turn.exception() is not None:
                queue.waiters.pop(key, None)
                raise AcquireCancelled(key=key)
            return
        queue.waiters.pop(key, None)
        queue.timeouts += 1
        raise AcquireTimedOut("no unit was granted before the wait ran out")

    async def _grant(
        self, pool: str, owner: str, key: str, ttl: float, *, waited_s: float
    ) -> dict[str, Any]:
        lease: dict[str, Any] = await self.execute(
            "grant", key=key, pool=pool, owner=owner, ttl_s=ttl, at=self.clock.time(),
            waited_s=waited_s,
        )  # fmt: skip
        return dict(lease)

    def _dispatch(self, pool: str) -> None:
        """Promise free units to the head of the queue, in order."""
        state, queue = self.book.pools.get(pool), self._queues.get(pool)
        if state is None or queue is None:
            return
        while queue.waiters and state.free_units() - queue.promised > 0:
            _, waiter = queue.waiters.popitem(last=False)
            queue.promised += 1
            waiter.turn.set_result(None)

    async def cancel(self, pool: str, key: str) -> bool:
        """Withdraw the acquire with ``key``: leave the queue, or give back what it
        was granted (a waiter whose client went away); and refuse the acquire if it
        has not arrived yet. True if something changed."""
        self._withdraw(key)
        queue = self._queues.get(pool)
        waiter = queue.waiters.pop(key, None) if queue else None
        if waiter is not None:
            waiter.turn.set_exception(AcquireCancelled(key=key))
            return True
        granted = None
        with contextlib.suppress(Exception):  # a grant whose commit failed was never given
            granted = await self._granted(key)
        if granted is None and key in self._acquiring:
            try:  # promised a unit, taking it now: wait for the grant, then give it back
                granted = await asyncio.shield(self._acquiring[key])
            except Exception:
                return False
        if granted is not None and self.book.current(pool, granted["token"]) is not None:
            await self.release(pool, [granted["token"]])
            return True
        return False

    # --- holding: renew, release, expire --------------------------------------

    async def renew(
        self, pool: str, token: int, *, owner: str | None, ttl_s: float | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Push the lease's deadline to now + ttl_s (its current TTL if None)."""
        self.expire_due()
        lease = self.book.held(pool, token, owner)
        ttl = check_ttl(ttl_s if ttl_s is not None else lease.ttl_s, self.config.max_ttl_s)
        renewed: dict[str, Any] = await self.execute(
            "renew", key=key, pool=pool, token=token, owner=owner, ttl_s=ttl, at=self.clock.time()
        )
        return renewed

    async def release(
        self, pool: str, tokens: list[int], *, owner: str | None = None
    ) -> list[dict[str, Any]]:
        """End leases now. A lease that already ended answers how it ended (no change),
        so a release is safe to repeat."""
        self.expire_due()
        answers: dict[int, dict[str, Any]] = {}
        live = []
        for token in tokens:
            ended = self.book.ended.get((pool, token))
            if ended is not None:
                if owner is not None and ended.owner != owner:
                    raise NotLeaseHolder(pool=local_name(pool), token=token)
                answers[token] = ended.public()
            else:
                self.book.held(pool, token, owner)  # raises if unknown or someone else's
                live.append(token)
        if live:
            # Hand the units on before the commit: the grants are journaled after
            # this release, so the next holder's grant is never acknowledged first.
            released, committed = self.record(
                "release", pool=pool, tokens=live, owner=owner, at=self.clock.time()
            )
            self._dispatch(pool)
            await committed
            answers.update({lease["token"]: lease for lease in released})
        return [answers[token] for token in tokens]

    async def release_owner(self, owner: str, tenant: str | None = None) -> int:
        """The owner is gone (its session ended): end its leases and its waits here,
        in ``tenant``'s pools (in every pool for None)."""
        released = 0
        for pool in self.book.owned_by(tenant):
            state = self.book.pools.get(pool)
            if state is None:  # deleted meanwhile
                continue
            queue = self._queues.get(pool)
            for key, waiter in list(queue.waiters.items()) if queue else []:
                if waiter.owner == owner:
                    await self.cancel(pool, key)
            tokens = [lease.token for lease in state.units.values() if lease.owner == owner]
            if tokens:
                released += len(await self.release(pool, tokens))
        return released

    def expire_due(self) -> list[dict[str, Any]]:
        """End every lease whose deadline has passed, and wake waiters for their units.

        Applied and journaled at once, without waiting for the commit: whatever
        is granted next is journaled after it, and acknowledged only once its own
        record (hence this one) is committed."""
        now = self.clock.time()
        if not self.book.due(now):
            return []
        expired, committed = self.record("expire", at=now)
        committed.add_done_callback(lambda f: f.cancelled() or f.exception())
        for pool in {lease["pool"] for lease in expired}:
            self._dispatch(pool)
        return list(expired)

    # --- reads -------------------------------------------------------------------

    def validate(self, pool: str, tokens: list[int]) -> list[dict[str, Any]]:
        """For each token: is it its unit's current grant, before its deadline?"""
        return self.book.validate(pool, tokens, self.clock.time())

    def leases(self, pool: str, owner: str | None = None) -> list[dict[str, Any]]:
        return self.book.leases(pool, owner)

    def stats(
        self, pool: str | None = None, owner: str | None = None, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """Usage per pool (and per owner within it) of the pools here: ``pool``, or
        ``tenant``'s (every pool for None)."""
        names = [check_id(pool)] if pool is not None else self.book.owned_by(tenant)
        answers = []
        for name in names:
            state = self.book.pool(name)
            queue = self._queues.get(name, WaitQueue(name))
            owners = {}
            for who, usage in sorted(state.owners.items()):
                if owner is None or who == owner:
                    owners[who] = asdict(usage) | {
                        "held": state.held_by(who),
                        "waiting": queue.waiting_for(who),
                    }
            answers.append(
                self.describe(name)
                | asdict(state.usage)
                | {"timeouts": queue.timeouts, "refusals": queue.refusals, "owners": owners}
            )
        return answers

    def __repr__(self) -> str:
        waiting = sum(len(q.waiters) for q in self._queues.values())
        return f"<ResourcePool {self.book!r} waiting={waiting}>"


# --- the actor --------------------------------------------------------------


class _ResourcePoolProcess(ResourcePool):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        super().__init__(ResourcesSettings.of(settings))
        self.restarts = await recover(self, settings, name)
        self.expire_due()  # leases whose deadline passed while this actor was down
        self._sweeper = every(self.clock, self.config.sweep_interval_s, self.expire_due)

    async def ping(self) -> int:
        return len(self.book.pools)

    async def info(self) -> dict[str, Any]:
        import ray

        return {"restarts": self.restarts, "node_id": ray.get_runtime_context().get_node_id()}


#: Durable leases; a call in flight at a crash is retried on the restarted actor
#: (acquire and renew carry idempotency keys; a release is safe to repeat).
#: Waiters are calls in progress, hence the high concurrency.
ResourcePoolActor = remote_actor(
    _ResourcePoolProcess,
    restart=Restart.PERMANENT,
    scheduling_strategy="SPREAD",
    max_concurrency=20_000,
)

__all__ = ["SHARD_PREFIX", "ResourcePool", "ResourcePoolActor"]
