"""The resource manager's Python API, for its HTTP ingress and any Ray task or actor.

Pools (and groups) are spread over ``REALM_RESOURCES_SHARDS`` pool actors
(``Shards``) by rendezvous hashing of their names. An acquire carries an idempotency key and
an absolute wall-clock deadline, so when Ray re-sends it to a restarted actor
it neither waits longer than asked nor gets a second grant. If the caller
stops waiting (its HTTP request or WebSocket went away), the client withdraws
the wait, and gives back a grant that raced with the withdrawal.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from actors.resources.model import check_name, make_spec, pick_least_loaded
from actors.resources.pool import SHARD_PREFIX, ResourcePoolActor
from actors.resources.settings import ResourcesSettings
from actors.runtime.errors import InvalidInput
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards
from actors.runtime.supervision import ActorRef

log = logging.getLogger(__name__)

#: How long a call keeps retrying a pool actor that is restarting (longer than
#: the default: a restart with many leases to replay must not fail an acquire).
PATIENCE_S = 120.0


class ResourcesClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = ResourcesSettings.of(settings)
        self.shards = Shards(ResourcePoolActor, SHARD_PREFIX, self.config.shards, settings)
        self._cancels: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Start (or find) every pool actor and wait until each answers."""
        await self.shards.start()

    async def close(self) -> None:
        if self._cancels:
            await asyncio.gather(*self._cancels, return_exceptions=True)

    def shard(self, pool: str) -> ActorRef:
        """The actor that owns ``pool``."""
        return self.shards.owner(check_name(pool))

    def _group_shard(self, group: str) -> ActorRef:
        return self.shards.owner("group:" + check_name(group, "group"))

    async def _call(self, ref: ActorRef, method: str, *args: Any, **kw: Any) -> Any:
        return await ref.call(method, *args, patience_s=PATIENCE_S, **kw)

    async def _call_all(self, method: str, *args: Any, **kw: Any) -> list[Any]:
        return await self.shards.call_all(method, *args, patience_s=PATIENCE_S, **kw)

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
        """Create a pool; the same definition again answers the pool, another is 409."""
        make_spec(name, kind, capacity, ttl_s=ttl_s, quota_per_owner=quota_per_owner,
                  max_waiters=max_waiters, max_ttl_s=self.config.max_ttl_s)  # fmt: skip
        pool: dict[str, Any] = await self._call(
            self.shard(name), "create_pool", name, kind, capacity,
            ttl_s=ttl_s, quota_per_owner=quota_per_owner, max_waiters=max_waiters,
        )  # fmt: skip
        return pool

    async def get_pool(self, name: str) -> dict[str, Any]:
        pool: dict[str, Any] = await self._call(self.shard(name), "describe", name)
        return pool

    async def create_group(self, name: str, pools: list[str]) -> dict[str, Any]:
        """Name existing pools as a group (404 if one does not exist)."""
        check_name(name, "group")
        await asyncio.gather(*(self.get_pool(pool) for pool in pools))
        group: dict[str, Any] = await self._call(
            self._group_shard(name), "create_group", name, pools
        )
        return group

    async def get_group(self, name: str) -> dict[str, Any]:
        group: dict[str, Any] = await self._call(self._group_shard(name), "group", name)
        return group

    async def group_loads(self, name: str) -> list[dict[str, Any]]:
        """Capacity, held and waiting of each pool of the group, in the group's order."""
        pools = (await self.get_group(name))["pools"]
        answers = await asyncio.gather(
            *(
                self._call(self.shards[index], "loads", [pools[p] for p in positions])
                for index, positions in self.shards.split(pools).items()
            )
        )
        found = {load["name"]: load for loads in answers for load in loads}
        return [found[pool] for pool in pools]

    # --- leases --------------------------------------------------------------

    async def acquire(
        self,
        pool: str,
        owner: str,
        *,
        ttl_s: float | None = None,
        timeout_s: float = 0.0,
        key: str | None = None,
    ) -> dict[str, Any]:
        """A lease on one unit of ``pool``, waiting in its queue up to ``timeout_s``
        (0: only if one can be granted now). Raises ``AcquireTimedOut`` (409),
        ``QuotaExceeded`` / ``QueueFull`` (429)."""
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s < 0:
            raise InvalidInput("timeout_s is a number >= 0", timeout_s=timeout_s)
        if timeout_s > self.config.max_wait_s:
            raise InvalidInput(
                f"an acquire waits at most {self.config.max_wait_s:g} s",
                timeout_s=timeout_s,
            )
        key = key or uuid.uuid4().hex
        ref = self.shard(pool)
        wait_until = time.time() + timeout_s if timeout_s > 0 else None
        try:
            lease: dict[str, Any] = await self._call(
                ref, "acquire", pool, owner, key=key, ttl_s=ttl_s, wait_until=wait_until
            )
        except asyncio.CancelledError:
            self._withdraw(ref, pool, key)
            raise
        return lease

    def _withdraw(self, ref: ActorRef, pool: str, key: str) -> None:
        """The caller stopped waiting: leave the queue, or give back the grant."""
        task = asyncio.ensure_future(self._call(ref, "cancel", pool, key))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def acquire_group(
        self, group: str, owner: str, *, ttl_s: float | None = None, timeout_s: float = 0.0
    ) -> dict[str, Any]:
        """A lease from the least-loaded pool of ``group`` (held + waiting per unit)."""
        chosen = pick_least_loaded(await self.group_loads(group))
        return await self.acquire(chosen, owner, ttl_s=ttl_s, timeout_s=timeout_s)

    async def renew(
        self, pool: str, token: int, *, owner: str | None, ttl_s: float | None = None
    ) -> dict[str, Any]:
        """Push the lease's deadline to now + ttl_s (its TTL so far if None)."""
        lease: dict[str, Any] = await self._call(
            self.shard(pool), "renew", pool, token, owner=owner, ttl_s=ttl_s, key=uuid.uuid4().hex
        )
        return lease

    async def release(self, pool: str, token: int, *, owner: str | None) -> dict[str, Any]:
        """End the lease; a lease that already ended answers how and when it did."""
        (lease,) = await self._call(self.shard(pool), "release", pool, [token], owner=owner)
        return dict(lease)

    async def release_owner(self, owner: str) -> int:
        """The owner is gone: end its leases and withdraw its waits, everywhere."""
        return sum(await self._call_all("release_owner", owner))

    async def validate(self, pool: str, token: int) -> dict[str, Any]:
        """Is ``token`` its unit's current grant, before its deadline?"""
        (answer,) = await self.validate_many(pool, [token])
        return answer

    async def validate_many(self, pool: str, tokens: list[int]) -> list[dict[str, Any]]:
        """``validate`` for several tokens of one pool, all answered at one instant."""
        answers: list[dict[str, Any]] = await self._call(self.shard(pool), "validate", pool, tokens)
        return answers

    async def leases(self, pool: str, owner: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._call(self.shard(pool), "leases", pool, owner)
        return found

    async def stats(self, pool: str | None = None, owner: str | None = None) -> dict[str, Any]:
        """Usage per pool (and per owner within each pool)."""
        if pool is not None:
            pools = await self._call(self.shard(pool), "stats", pool, owner)
        else:
            parts = await self._call_all("stats", None, owner)
            pools = sorted((p for part in parts for p in part), key=lambda p: p["name"])
        totals = {
            k: sum(p[k] for p in pools)
            for k in ("held", "waiting", "grants", "releases", "expiries", "renewals", "timeouts")
        }
        return {"pools": pools, "total": totals}

    async def restarts(self) -> list[int]:
        infos = await self._call_all("info")
        return [info["restarts"] for info in infos]

    def __repr__(self) -> str:
        return f"<ResourcesClient shards={len(self.shards)}>"


__all__ = ["ResourcesClient"]
