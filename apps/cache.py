"""HTTP front of the distributed cache (service 4), under ``/cache``.

Values are any JSON document. The ingress is a ``CacheClient`` (with a near
cache unless ``REALM_CACHE_HTTP_NEAR_CACHE=false``), so a hot key is served from
the replica's memory while its lease lasts and is dropped the moment a write
to it anywhere is acknowledged.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from actors.cache.client import CacheClient
from actors.cache.errors import KeyNotFound
from actors.cache.settings import CacheSettings
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app

TtlS = Field(None, gt=0, description="Seconds to live; omitted or null: no expiry.")


class SetBody(BaseModel):
    value: Any = Field(..., description="Any JSON document.")
    ttl_s: float | None = TtlS


class KeyValue(BaseModel):
    key: str
    value: Any


class Stored(BaseModel):
    key: str
    stored: bool = True


class Deleted(BaseModel):
    key: str
    deleted: bool


class KeysBody(BaseModel):
    keys: list[str]


class Values(BaseModel):
    values: dict[str, Any]
    missing: list[str]


class ItemsBody(BaseModel):
    items: dict[str, Any]
    ttl_s: float | None = TtlS


class StoredCount(BaseModel):
    stored: int


class IncrBody(BaseModel):
    key: str
    by: int = Field(1, description="Amount to add; negative to decrement.")


class Counter(BaseModel):
    key: str
    value: int


class ExpireBody(BaseModel):
    ttl_s: float | None = TtlS


class Ttl(BaseModel):
    key: str
    exists: bool
    ttl_s: float | None = Field(None, description="Seconds left; null: no expiry.")


class Stats(BaseModel):
    shards: list[dict[str, Any]]
    total: dict[str, int]
    near: dict[str, int] | None


def make_app(client: CacheClient, settings: Settings) -> FastAPI:
    app = service_app(
        title="cache",
        description="Sharded in-memory cache with TTL, eviction and single-flight loads.",
        settings=settings,
    )

    @app.get("/keys/{key:path}", response_model=KeyValue, responses={404: {}})
    async def get_key(key: str) -> Response:
        raw = await client.get_raw(key)
        if raw is None:
            raise KeyNotFound(key=key)
        # The stored bytes are already JSON: splice them in, no re-encoding.
        body = b'{"key":' + orjson.dumps(key) + b',"value":' + raw + b"}"
        return Response(body, media_type="application/json")

    @app.put("/keys/{key:path}")
    async def set_key(key: str, body: SetBody) -> Stored:
        await client.set(key, body.value, ttl_s=body.ttl_s)
        return Stored(key=key)

    @app.delete("/keys/{key:path}")
    async def delete_key(key: str) -> Deleted:
        return Deleted(key=key, deleted=await client.delete(key))

    @app.post("/mget")
    async def mget(body: KeysBody) -> Values:
        found = await client.mget(body.keys)
        return Values(values=found, missing=[key for key in body.keys if key not in found])

    @app.post("/mset")
    async def mset(body: ItemsBody) -> StoredCount:
        return StoredCount(stored=await client.mset(body.items, ttl_s=body.ttl_s))

    @app.post("/incr")
    async def incr(body: IncrBody) -> Counter:
        return Counter(key=body.key, value=await client.incr(body.key, body.by))

    @app.post("/expire/{key:path}", responses={404: {}})
    async def expire(key: str, body: ExpireBody) -> Ttl:
        if not await client.expire(key, body.ttl_s):
            raise KeyNotFound(key=key)
        return Ttl(key=key, exists=True, ttl_s=body.ttl_s)

    @app.get("/ttl/{key:path}")
    async def ttl(key: str) -> Ttl:
        exists, seconds = await client.ttl(key)
        return Ttl(key=key, exists=exists, ttl_s=seconds)

    @app.get("/stats")
    async def stats() -> Stats:
        return Stats(**await client.stats())

    return app


@serve.deployment
@serve.ingress()
class CacheIngress(ClientIngress):
    @staticmethod
    def make_client(settings: Settings) -> CacheClient:
        near_cache = CacheSettings.of(settings).http_near_cache
        return CacheClient.connect(settings, near_cache=near_cache)

    make_app = staticmethod(make_app)


def build(settings: Settings) -> Application:
    return ingress_application(CacheIngress, settings)
