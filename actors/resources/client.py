"""The resource manager's Python API, for its HTTP ingress and any Ray task or actor.

Pools and groups belong to an owner, ``tenant`` here (the HTTP ingress passes
the caller's user id): an owner's pool ``gpus`` is kept as ``<tenant>/gpus``,
so another owner's pool of the same name is another pool, and a name that is
not the caller's is simply not found. Answers name pools as their owner does.
Every pool and group of one owner lives on the same of the
``REALM_RESOURCES_SHARDS`` pool actors (``Shards``, rendezvous hashing of the
owner), which counts them against the owner's quotas; ones without an owner
(``tenant=None``: other services, tests) are spread by their names.

An acquire carries an idempotency key and an absolute wall-clock deadline, so
when Ray re-sends it to a restarted actor it neither waits longer than asked
nor gets a second grant. If the caller stops waiting (its HTTP request or
WebSocket went away), the client withdraws the wait, and gives back a grant
that raced with the withdrawal; the actor then refuses that acquire if it
arrives (again) later.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from actors.resources.model import check_name, local_name, make_spec, pick_least_loaded, pool_id
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


def _named(answer: dict[str, Any], *fields: str) -> dict[str, Any]:
    """``answer`` with the pool ids in ``fields`` as their owner names them."""
    return answer | {f: local_name(answer[f]) for f in fields if isinstance(answer.get(f), str)}


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

    def shard(self, pool: str, tenant: str | None = None) -> ActorRef:
        """The actor that holds ``tenant``'s pool ``pool``."""
        check_name(pool)
        return self.shards.owner(pool if tenant is None else check_name(tenant, "owner"))

    def _group_shard(self, group: str, tenant: str | None) -> ActorRef:
        check_name(group, "group")
        return self.shards.owner("group:" + group if tenant is None else tenant)

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
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """Create ``tenant``'s pool; the same definition again answers the pool,
        another is 409; one pool more than ``max_pools_per_owner`` is 403."""
        pool = pool_id(name, tenant)
        make_spec(pool, kind, capacity, ttl_s=ttl_s, quota_per_owner=quota_per_owner,
                  max_waiters=max_waiters, max_ttl_s=self.config.max_ttl_s,
                  max_waiters_cap=self.config.max_waiters)  # fmt: skip
        created: dict[str, Any] = await self._call(
            self.shard(name, tenant), "create_pool", pool, kind, capacity,
            ttl_s=ttl_s, quota_per_owner=quota_per_owner, max_waiters=max_waiters,
        )  # fmt: skip
        return _named(created, "name")

    async def get_pool(self, name: str, *, tenant: str | None = None) -> dict[str, Any]:
        found = await self._call(self.shard(name, tenant), "describe", pool_id(name, tenant))
        return _named(found, "name")

    async def delete_pool(self, name: str, *, tenant: str | None = None) -> dict[str, Any]:
        """Delete an idle pool (409 ``pool_busy`` while anything is held or waiting);
        it leaves its groups."""
        deleted = await self._call(self.shard(name, tenant), "delete_pool", pool_id(name, tenant))
        return _named(deleted, "name")

    async def create_group(
        self, name: str, pools: list[str], *, tenant: str | None = None
    ) -> dict[str, Any]:
        """Name existing pools of ``tenant`` as a group (404 if one does not exist)."""
        group = pool_id(name, tenant, "group")
        await asyncio.gather(*(self.get_pool(pool, tenant=tenant) for pool in pools))
        created = await self._call(
            self._group_shard(name, tenant),
            "create_group",
            group,
            [pool_id(pool, tenant) for pool in pools],
        )
        return self._group(created)

    async def get_group(self, name: str, *, tenant: str | None = None) -> dict[str, Any]:
        found = await self._call(
            self._group_shard(name, tenant), "group", pool_id(name, tenant, "group")
        )
        return self._group(found)

    async def delete_group(self, name: str, *, tenant: str | None = None) -> dict[str, Any]:
        """Forget a group; its pools stay."""
        deleted = await self._call(
            self._group_shard(name, tenant), "delete_group", pool_id(name, tenant, "group")
        )
        return self._group(deleted)

    @staticmethod
    def _group(answer: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": local_name(answer["name"]),
            "pools": [local_name(p) for p in answer["pools"]],
        }

    async def group_loads(self, name: str, *, tenant: str | None = None) -> list[dict[str, Any]]:
        """Capacity, held and waiting of each pool of the group, in the group's order
        (a pool deleted since is left out)."""
        pools = [pool_id(p, tenant) for p in (await self.get_group(name, tenant=tenant))["pools"]]
        if tenant is not None:  # all on the owner's actor
            answers = [await self._call(self.shards.owner(tenant), "loads", pools)]
        else:
            answers = await asyncio.gather(
                *(
                    self._call(self.shards[index], "loads", [pools[p] for p in positions])
                    for index, positions in self.shards.split(
                        [local_name(p) for p in pools]
                    ).items()
                )
            )
        found = {load["name"]: load for loads in answers for load in loads}
        return [_named(found[pool], "name") for pool in pools if pool in found]

    # --- leases --------------------------------------------------------------

    async def acquire(
        self,
        pool: str,
        owner: str,
        *,
        ttl_s: float | None = None,
        timeout_s: float = 0.0,
        key: str | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """A lease on one unit of ``tenant``'s ``pool`` for ``owner`` (its holder),
        waiting in its queue up to ``timeout_s`` (0: only if one can be granted now).
        Raises ``AcquireTimedOut`` (409), ``QuotaExceeded`` / ``QueueFull`` (429)."""
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s < 0:
            raise InvalidInput("timeout_s is a number >= 0", timeout_s=timeout_s)
        if timeout_s > self.config.max_wait_s:
            raise InvalidInput(
                f"an acquire waits at most {self.config.max_wait_s:g} s",
                timeout_s=timeout_s,
            )
        key = key or uuid.uuid4().hex
        ref = self.shard(pool, tenant)
        pid = pool_id(pool, tenant)
        wait_until = time.time() + timeout_s if timeout_s > 0 else None
        try:
            lease: dict[str, Any] = await self._call(
                ref, "acquire", pid, owner, key=key, ttl_s=ttl_s, wait_until=wait_until
            )
        except asyncio.CancelledError:
            self._withdraw(ref, pid, key)
            raise
        return _named(lease, "pool")

    def _withdraw(self, ref: ActorRef, pool: str, key: str) -> None:
        """The caller stopped waiting: leave the queue, or give back the grant."""
        task = asyncio.ensure_future(self._call(ref, "cancel", pool, key))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def acquire_group(
        self,
        group: str,
        owner: str,
        *,
        ttl_s: float | None = None,
        timeout_s: float = 0.0,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """A lease from the least-loaded pool of ``group`` (held + waiting per unit)."""
        chosen = pick_least_loaded(await self.group_loads(group, tenant=tenant))
        return await self.acquire(chosen, owner, ttl_s=ttl_s, timeout_s=timeout_s, tenant=tenant)

    async def renew(
        self,
        pool: str,
        token: int,
        *,
        owner: str | None,
        ttl_s: float | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """Push the lease's deadline to now + ttl_s (its TTL so far if None)."""
        lease: dict[str, Any] = await self._call(
            self.shard(pool, tenant), "renew", pool_id(pool, tenant), token,
            owner=owner, ttl_s=ttl_s, key=uuid.uuid4().hex,
        )  # fmt: skip
        return _named(lease, "pool")

    async def release(
        self, pool: str, token: int, *, owner: str | None, tenant: str | None = None
    ) -> dict[str, Any]:
        """End the lease; a lease that already ended answers how and when it did."""
        (lease,) = await self._call(
            self.shard(pool, tenant), "release", pool_id(pool, tenant), [token], owner=owner
        )
        return _named(dict(lease), "pool")

    async def release_owner(self, owner: str, *, tenant: str | None = None) -> int:
        """The holder ``owner`` is gone: end its leases and withdraw its waits, in
        ``tenant``'s pools (everywhere for None)."""
        if tenant is not None:
            released: int = await self._call(
                self.shards.owner(check_name(tenant, "owner")), "release_owner", owner, tenant
            )
            return released
        return sum(await self._call_all("release_owner", owner))

    async def validate(self, pool: str, token: int, *, tenant: str | None = None) -> dict[str, Any]:
        """Is ``token`` its unit's current grant, before its deadline?"""
        (answer,) = await self.validate_many(pool, [token], tenant=tenant)
        return answer

    async def validate_many(
        self, pool: str, tokens: list[int], *, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """``validate`` for several tokens of one pool, all answered at one instant."""
        answers: list[dict[str, Any]] = await self._call(
            self.shard(pool, tenant), "validate", pool_id(pool, tenant), tokens
        )
        return [_named(answer, "pool") for answer in answers]

    async def leases(
        self, pool: str, owner: str | None = None, *, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._call(
            self.shard(pool, tenant), "leases", pool_id(pool, tenant), owner
        )
        return [_named(lease, "pool") for lease in found]

    async def stats(
        self, pool: str | None = None, owner: str | None = None, *, tenant: str | None = None
    ) -> dict[str, Any]:
        """Usage per pool (and per holder within each pool): ``pool``, or every pool
        of ``tenant`` (of everyone for None, named by their ids)."""
        if pool is not None:
            pools = await self._call(
                self.shard(pool, tenant), "stats", pool_id(pool, tenant), owner
            )
        elif tenant is not None:
            ref = self.shards.owner(check_name(tenant, "owner"))
            pools = await self._call(ref, "stats", None, owner, tenant)
        else:
            parts = await self._call_all("stats", None, owner)
            pools = sorted((p for part in parts for p in part), key=lambda p: p["name"])
        if tenant is not None:
            pools = [_named(p, "name") for p in pools]
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
