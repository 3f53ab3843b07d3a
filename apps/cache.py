"""HTTP front of the distributed cache (service 4), under ``/cache``.

Every route takes a principal with the ``cache:read`` or ``cache:write``
scope, and works in the caller's own keyspace: keys belong to the user who
wrote them (for an API key, its user), so one user's ``session`` is not
another's, and another user's key is simply not found. Each owner's share of
a shard is capped (``REALM_CACHE_MAX_BYTES_PER_OWNER``,
``REALM_CACHE_MAX_ENTRIES_PER_OWNER``): past it, a write evicts the owner's own
least recently used entries, nobody else's.

Values are any JSON document. The ingress is a ``CacheClient`` (with a near
cache unless ``REALM_CACHE_HTTP_NEAR_CACHE=false``), so a hot key is served from
the replica's memory while its lease lasts and is dropped the moment a write
to it anywhere is acknowledged.
"""

# No ``from __future__ import annotations``: the request bodies are classes made
# in ``make_app`` (their limits are the deployment's settings), and FastAPI reads
# a route's annotations as objects.
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from actors.auth.client import Principal
from actors.cache.client import CacheClient
from actors.cache.errors import KeyNotFound
from actors.cache.settings import CacheSettings
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.models import Body
from apps.signin import Scope

Reader = Annotated[Principal, Scope("cache:read")]
Writer = Annotated[Principal, Scope("cache:write")]

#: The most ``incr`` adds at once: an integer every JSON reader holds exactly.
MAX_INCR = 2**53 - 1
#: A key: any text but U+001F (which separates owners from keys inside the cache),
#: at most REALM_CACHE_MAX_KEY_BYTES as UTF-8 (longer: 422 ``key_too_long``).
KEY_PATTERN = r"^[^\x1f]*$"
Key = Annotated[str, Field(pattern=KEY_PATTERN)]
KeyInPath = Annotated[str, Path(pattern=KEY_PATTERN)]


def ttl_field(max_ttl_s: float) -> Any:
    return Field(
        None,
        gt=0,
        le=max_ttl_s,
        description="Seconds to live, at most REALM_CACHE_MAX_TTL_S; omitted or null: no expiry.",
    )


class KeyValue(BaseModel):
    key: str
    value: Any


class Stored(BaseModel):
    key: str
    stored: bool = True


class Deleted(BaseModel):
    key: str
    deleted: bool


class KeysBody(Body):
    keys: list[Key] = Field(..., description="At most REALM_CACHE_MAX_BATCH_KEYS keys.")


class IncrBody(Body):
    key: Key
    by: int = Field(
        1, ge=-MAX_INCR, le=MAX_INCR, description="Amount to add; negative to decrement."
    )


class Values(BaseModel):
    values: dict[str, Any]
    missing: list[str]


class StoredCount(BaseModel):
    stored: int


class Counter(BaseModel):
    key: str
    value: int


class Ttl(BaseModel):
    key: str
    exists: bool
    ttl_s: float | None = Field(None, description="Seconds left; null: no expiry.")


class Usage(BaseModel):
    entries: int = Field(..., description="The caller's entries, in every shard.")
    bytes: int = Field(..., description="Bytes of the caller's keys and values, in every shard.")
    shards: list[dict[str, int]] = Field(..., description="The same per shard.")
    max_entries_per_shard: int = Field(..., description="REALM_CACHE_MAX_ENTRIES_PER_OWNER.")
    max_bytes_per_shard: int = Field(..., description="REALM_CACHE_MAX_BYTES_PER_OWNER.")


class Stats(BaseModel):
    usage: Usage
    shards: list[dict[str, Any]] | None = Field(None, description="Admins only.")
    total: dict[str, int] | None = Field(None, description="Admins only.")
    near: dict[str, int] | None = Field(None, description="Admins only.")


def make_app(client: CacheClient, settings: Settings) -> FastAPI:
    config = CacheSettings.of(settings)

    class SetBody(Body):
        value: Any = Field(..., description="Any JSON document.")
        ttl_s: float | None = ttl_field(config.max_ttl_s)

    class ItemsBody(Body):
        items: dict[Key, Any] = Field(..., description="At most REALM_CACHE_MAX_BATCH_KEYS items.")
        ttl_s: float | None = ttl_field(config.max_ttl_s)

    class ExpireBody(Body):
        ttl_s: float | None = ttl_field(config.max_ttl_s)

    app = service_app(
        "cache",
        description="Sharded in-memory cache with TTL, eviction and single-flight loads; "
        "every user has a keyspace of their own.",
        settings=settings,
    )

    @app.get("/keys/{key:path}", response_model=KeyValue)
    async def get_key(key: KeyInPath, user: Reader) -> Response:
        raw = await client.get_raw(key, owner=user.user_id)
        if raw is None:
            raise KeyNotFound(key=key)
        # The stored bytes are already JSON: splice them in, no re-encoding.
        body = b'{"key":' + orjson.dumps(key) + b',"value":' + raw + b"}"
        return Response(body, media_type="application/json")

    @app.put("/keys/{key:path}")
    async def set_key(key: KeyInPath, body: SetBody, user: Writer) -> Stored:
        await client.set(key, body.value, ttl_s=body.ttl_s, owner=user.user_id)
        return Stored(key=key)

    @app.delete("/keys/{key:path}")
    async def delete_key(key: KeyInPath, user: Writer) -> Deleted:
        return Deleted(key=key, deleted=await client.delete(key, owner=user.user_id))

    @app.post("/mget")
    async def mget(body: KeysBody, user: Reader) -> Values:
        found = await client.mget(body.keys, owner=user.user_id)
        return Values(values=found, missing=[key for key in body.keys if key not in found])

    @app.post("/mset")
    async def mset(body: ItemsBody, user: Writer) -> StoredCount:
        stored = await client.mset(body.items, ttl_s=body.ttl_s, owner=user.user_id)
        return StoredCount(stored=stored)

    @app.post("/incr")
    async def incr(body: IncrBody, user: Writer) -> Counter:
        return Counter(key=body.key, value=await client.incr(body.key, body.by, owner=user.user_id))

    @app.post("/expire/{key:path}")
    async def expire(key: KeyInPath, body: ExpireBody, user: Writer) -> Ttl:
        if not await client.expire(key, body.ttl_s, owner=user.user_id):
            raise KeyNotFound(key=key)
        return Ttl(key=key, exists=True, ttl_s=body.ttl_s)

    @app.get("/ttl/{key:path}")
    async def ttl(key: KeyInPath, user: Reader) -> Ttl:
        exists, seconds = await client.ttl(key, owner=user.user_id)
        return Ttl(key=key, exists=exists, ttl_s=seconds)

    @app.get("/stats")
    async def stats(user: Reader) -> Stats:
        """The caller's usage and limits; for an admin also every shard's counters."""
        usage = Usage(
            **await client.usage(user.user_id),
            max_entries_per_shard=config.max_entries_per_owner,
            max_bytes_per_shard=config.max_bytes_per_owner,
        )
        if not user.is_admin:
            return Stats(usage=usage)
        return Stats(usage=usage, **await client.stats())

    return app


@serve.deployment
@serve.ingress()
class CacheIngress(ClientIngress):
    @staticmethod
    def make_client(settings: Settings) -> CacheClient:
        near_cache = CacheSettings.of(settings).http_near_cache
        return CacheClient.connect(settings, near_cache=near_cache)

    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(CacheIngress, settings)
