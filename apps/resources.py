"""HTTP front of the resource manager (service 11), under ``/resources``.

Every route requires a user; a lease's owner is the calling user, unless an
admin names another owner (``owner`` in an acquire, or any lease for renew,
release and ``/owners/{owner}/release``). An acquire long-polls up to its
``timeout_s``; ``/pools/{name}/wait`` is the same over a WebSocket, which is
told when the request is queued and when it is granted. A request that goes
away while waiting withdraws its wait (and gives back a grant that raced with
it).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Path, Query, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, ValidationError
from ray import serve
from ray.serve import Application

from actors.auth.client import Principal
from actors.resources.client import ResourcesClient
from actors.runtime.errors import Forbidden, InvalidInput, RealmError
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.signin import CurrentUser, sign_in_websocket

Name = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
Token = Annotated[int, Path(ge=1, description="The lease's fencing token.")]
TtlS = Field(None, gt=0, description="Lease TTL in seconds; omitted: the pool's or the default.")


class PoolBody(BaseModel):
    kind: Literal["mutex", "semaphore"]
    capacity: int | None = Field(None, ge=1, description="Units of a semaphore; a mutex has 1.")
    ttl_s: float | None = TtlS
    quota_per_owner: int | None = Field(None, ge=1, description="Most grants per owner.")
    max_waiters: int | None = Field(None, ge=0, description="Longest queue; omitted: default.")


class Pool(BaseModel):
    name: str
    kind: Literal["mutex", "semaphore"]
    capacity: int
    ttl_s: float | None
    quota_per_owner: int | None
    max_waiters: int | None
    held: int
    waiting: int
    next_token: int = Field(..., description="The fencing token the next grant gets.")
    created_at: float


class GroupBody(BaseModel):
    pools: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        ..., min_length=1, max_length=64
    )


class Load(BaseModel):
    name: str
    capacity: int
    held: int
    waiting: int


class Group(BaseModel):
    name: str
    pools: list[str]
    loads: list[Load] | None = None


class AcquireBody(BaseModel):
    ttl_s: float | None = TtlS
    timeout_s: float = Field(0.0, ge=0, description="How long to wait in the queue; 0: no wait.")
    owner: str | None = Field(None, min_length=1, max_length=256, description="Admins only.")


class RenewBody(BaseModel):
    ttl_s: float | None = Field(None, gt=0, description="New TTL; omitted: the lease's TTL.")


class Lease(BaseModel):
    pool: str
    unit: int
    token: int = Field(..., description="Fencing token: pass it to whatever the lease guards.")
    owner: str
    granted_at: float = Field(..., description="Unix time.")
    expires_at: float = Field(..., description="Unix time; renew before it.")
    ttl_s: float
    renewals: int
    state: Literal["held", "released", "expired"]
    ended_at: float | None = None


class Leases(BaseModel):
    leases: list[Lease]


class Validation(BaseModel):
    pool: str
    token: int
    valid: bool
    reason: str = Field(..., description="held, expired, released, ended or unknown.")
    unit: int | None = None
    owner: str | None = None
    expires_at: float | None = None
    current_token: int | None = Field(None, description="The unit's valid token now, if any.")


class Released(BaseModel):
    released: int


class Stats(BaseModel):
    pools: list[dict[str, Any]]
    total: dict[str, int]


def owner_for(user: Principal, requested: str | None) -> str:
    """The owner of a new grant: the caller, or whoever an admin names."""
    if requested is None or requested == user.user_id:
        return user.user_id
    if not user.is_admin:
        raise Forbidden("only an admin may act for another owner", owner=requested)
    return requested


def holder_check(user: Principal) -> str | None:
    """The owner a lease must have for this caller to renew or release it (None: any)."""
    return None if user.is_admin else user.user_id


def make_app(client: ResourcesClient, settings: Settings) -> FastAPI:
    app = service_app(
        title="resources",
        description="Leased mutexes and semaphores with fencing tokens, fair queues and quotas.",
        settings=settings,
    )

    # --- pools and groups --------------------------------------------------

    @app.put("/pools/{name}", responses={409: {}, 422: {}})
    async def create_pool(name: Name, body: PoolBody, user: CurrentUser) -> Pool:
        return Pool(**await client.create_pool(name, **body.model_dump()))

    @app.get("/pools/{name}", responses={404: {}})
    async def get_pool(name: Name, user: CurrentUser) -> Pool:
        return Pool(**await client.get_pool(name))

    @app.get("/pools/{name}/leases", responses={404: {}})
    async def list_leases(name: Name, user: CurrentUser, owner: str | None = None) -> Leases:
        return Leases(leases=[Lease(**x) for x in await client.leases(name, owner)])

    @app.put("/groups/{name}", responses={404: {}, 409: {}, 422: {}})
    async def create_group(name: Name, body: GroupBody, user: CurrentUser) -> Group:
        return Group(**await client.create_group(name, body.pools))

    @app.get("/groups/{name}", responses={404: {}})
    async def get_group(name: Name, user: CurrentUser) -> Group:
        group = await client.get_group(name)
        return Group(**group, loads=[Load(**x) for x in await client.group_loads(name)])

    # --- leases --------------------------------------------------------------

    @app.post("/pools/{name}/acquire", responses={403: {}, 404: {}, 409: {}, 429: {}})
    async def acquire(name: Name, body: AcquireBody, user: CurrentUser) -> Lease:
        """Long-polls up to ``timeout_s``; 409 ``acquire_timed_out`` if not granted by then."""
        owner = owner_for(user, body.owner)
        return Lease(
            **await client.acquire(name, owner, ttl_s=body.ttl_s, timeout_s=body.timeout_s)
        )

    @app.post("/groups/{name}/acquire", responses={403: {}, 404: {}, 409: {}, 429: {}})
    async def acquire_from_group(name: Name, body: AcquireBody, user: CurrentUser) -> Lease:
        """From the group's least-loaded pool."""
        owner = owner_for(user, body.owner)
        lease = await client.acquire_group(name, owner, ttl_s=body.ttl_s, timeout_s=body.timeout_s)
        return Lease(**lease)

    @app.post("/pools/{name}/leases/{token}/renew", responses={403: {}, 404: {}, 409: {}})
    async def renew(name: Name, token: Token, body: RenewBody, user: CurrentUser) -> Lease:
        lease = await client.renew(name, token, owner=holder_check(user), ttl_s=body.ttl_s)
        return Lease(**lease)

    @app.delete("/pools/{name}/leases/{token}", responses={403: {}, 404: {}})
    async def release(name: Name, token: Token, user: CurrentUser) -> Lease:
        """Ends the lease; one that already ended answers how (``state``, ``ended_at``)."""
        return Lease(**await client.release(name, token, owner=holder_check(user)))

    @app.get("/pools/{name}/leases/{token}/validate", responses={404: {}})
    async def validate(name: Name, token: Token, user: CurrentUser) -> Validation:
        """Whether ``token`` is its unit's current grant, before its deadline."""
        return Validation(**await client.validate(name, token))

    @app.post("/owners/{owner}/release")
    async def release_owner(
        owner: Annotated[str, Path(min_length=1, max_length=256)], user: CurrentUser
    ) -> Released:
        """The owner is gone: end its leases and waits (``me``, or any owner for an admin)."""
        owner = user.user_id if owner == "me" else owner_for(user, owner)
        return Released(released=await client.release_owner(owner))

    @app.get("/stats")
    async def stats(
        user: CurrentUser,
        pool: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
        owner: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    ) -> Stats:
        return Stats(**await client.stats(pool, owner))

    # --- WebSocket: follow a wait ----------------------------------------------

    @app.websocket("/pools/{name}/wait")
    async def wait(
        ws: WebSocket, name: str, access_token: Annotated[str | None, Query()] = None
    ) -> None:
        """Send ``{"type": "acquire", "ttl_s"?, "timeout_s"?, "ref"?}``; answers
        ``queued``, then ``granted`` (with the lease) or ``error``, each with a
        ``seq``. Closing the socket withdraws waits still in progress."""
        signed_in = await sign_in_websocket(ws)
        if signed_in is None:
            return
        user, _ = signed_in
        await ws.accept()
        await Waiter(ws, client, name, user).run()

    return app


class WaitMessage(BaseModel):
    type: Literal["acquire"]
    ref: str | None = Field(None, max_length=256)
    ttl_s: float | None = TtlS
    timeout_s: float = Field(0.0, ge=0)


class Waiter:
    """One WebSocket following acquires of one pool."""

    def __init__(self, ws: WebSocket, client: ResourcesClient, pool: str, user: Principal) -> None:
        self.ws, self.client, self.pool, self.user = ws, client, pool, user
        self.seq = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        async with self.lock:
            self.seq += 1
            await self.ws.send_text(orjson.dumps({**frame, "seq": self.seq}).decode())

    async def run(self) -> None:
        try:
            while True:
                raw = await self.ws.receive_text()
                try:
                    message = WaitMessage.model_validate_json(raw)
                except ValidationError as error:
                    refused = InvalidInput(problems=[e["msg"] for e in error.errors()])
                    await self.send({"type": "error", "ref": None, "error": refused.to_dict()})
                    continue
                task = asyncio.create_task(self.acquire(message))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        except WebSocketDisconnect:
            pass
        finally:
            for task in list(self.tasks):  # the client withdraws their waits
                task.cancel()
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def acquire(self, message: WaitMessage) -> None:
        ref = message.ref
        try:
            await self.send({"type": "queued", "ref": ref, "pool": self.pool})
            lease = await self.client.acquire(
                self.pool, self.user.user_id, ttl_s=message.ttl_s, timeout_s=message.timeout_s
            )
        except RealmError as error:
            with contextlib.suppress(Exception):
                await self.send({"type": "error", "ref": ref, "status": error.status,
                                 "error": error.to_dict()})  # fmt: skip
            return
        try:
            await self.send({"type": "granted", "ref": ref, "lease": Lease(**lease).model_dump()})
        except (Exception, asyncio.CancelledError):  # nobody to tell: give the grant back
            await self.client.release(self.pool, lease["token"], owner=lease["owner"])


@serve.deployment
@serve.ingress()
class ResourcesIngress(ClientIngress):
    make_client = ResourcesClient
    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(ResourcesIngress, settings, streams=True)
