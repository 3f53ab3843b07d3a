"""HTTP front of the resource manager (service 11), under ``/resources``.

Every route takes a principal with a ``resources:*`` scope: ``read`` (pools,
groups, leases, validate, stats), ``acquire`` (acquire, renew, release, the
wait WebSocket) or ``manage`` (create and delete pools and groups). Pools and
groups belong to the user who created them (for an API key, its user): the
names a caller uses are looked up among its own, so another user's pool
answers 404 on every route, as one that does not exist.

A lease's holder (``owner``) is the calling user, unless an admin names
another (``owner`` in an acquire, or any lease for renew, release and
``/owners/{owner}/release``). An acquire long-polls up to its ``timeout_s``;
``/pools/{name}/wait`` is the same over a WebSocket, which is told when the
request is queued and when it is granted. A request that goes away while
waiting withdraws its wait (and gives back a grant that raced with it).
"""

# No ``from __future__ import annotations``: some request bodies are classes made
# in ``make_app`` (their limits are the deployment's settings), and FastAPI reads
# a route's annotations as objects.
import asyncio
import contextlib
import logging
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Path, Query, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, ValidationError
from ray import serve
from ray.serve import Application

from actors.auth.client import Principal
from actors.resources.client import ResourcesClient
from actors.resources.errors import TooManyAcquires
from actors.resources.model import MAX_CAPACITY, MAX_GROUP_POOLS, check_holder
from actors.resources.settings import ResourcesSettings
from actors.runtime.errors import Forbidden, InvalidInput, RealmError, TooLarge
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.errors import error_response, public_error, request_id_of
from apps.models import Body
from apps.signin import Scope, sign_in_websocket, until_signed_out, verifier_of

log = logging.getLogger(__name__)

#: Largest fencing token a request may name: an integer every JSON reader holds exactly.
MAX_TOKEN = 2**53 - 1
#: Longest text frame a wait WebSocket reads.
MAX_FRAME_BYTES = 4096
NAME_PATTERN = r"^[A-Za-z0-9._:-]+$"

Reader = Annotated[Principal, Scope("resources:read")]
Acquirer = Annotated[Principal, Scope("resources:acquire")]
Manager = Annotated[Principal, Scope("resources:manage")]

Name = Annotated[str, Path(min_length=1, max_length=128, pattern=NAME_PATTERN)]
Token = Annotated[int, Path(ge=1, le=MAX_TOKEN, description="The lease's fencing token.")]
Owner = Annotated[str, Field(min_length=1, max_length=256)]


def ttl_field(max_ttl_s: float, what: str = "the pool's or the default") -> Any:
    return Field(
        None,
        gt=0,
        le=max_ttl_s,
        description=f"Lease TTL in seconds, at most REALM_RESOURCES_MAX_TTL_S; omitted: {what}.",
    )


def timeout_field(max_wait_s: float) -> Any:
    return Field(
        0.0,
        ge=0,
        le=max_wait_s,
        description="How long to wait in the queue, at most REALM_RESOURCES_MAX_WAIT_S; "
        "0: no wait.",
    )


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


class GroupBody(Body):
    pools: list[Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]] = Field(
        ..., min_length=1, max_length=MAX_GROUP_POOLS
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
    """The holder of a new grant: the caller, or whoever an admin names."""
    if requested is None or requested == user.user_id:
        return user.user_id
    if not user.is_admin:
        raise Forbidden("only an admin may act for another owner")
    return check_holder(requested)


def holder_check(user: Principal) -> str | None:
    """The holder a lease must have for this caller to renew or release it (None: any)."""
    return None if user.is_admin else user.user_id


def make_app(client: ResourcesClient, settings: Settings) -> FastAPI:
    config = ResourcesSettings.of(settings)

    class PoolBody(Body):
        kind: Literal["mutex", "semaphore"]
        capacity: int | None = Field(
            None, ge=1, le=MAX_CAPACITY, description="Units of a semaphore; a mutex has 1."
        )
        ttl_s: float | None = ttl_field(config.max_ttl_s, "the deployment's default")
        quota_per_owner: int | None = Field(
            None, ge=1, le=MAX_CAPACITY, description="Most grants (held and waiting) per holder."
        )
        max_waiters: int | None = Field(
            None,
            ge=0,
            le=config.max_waiters,
            description="Longest queue, at most REALM_RESOURCES_MAX_WAITERS; omitted: that.",
        )

    class AcquireBody(Body):
        ttl_s: float | None = ttl_field(config.max_ttl_s)
        timeout_s: float = timeout_field(config.max_wait_s)
        owner: Owner | None = Field(None, description="The holder; admins only.")

    class RenewBody(Body):
        ttl_s: float | None = ttl_field(config.max_ttl_s, "the lease's TTL")

    class Wait(WaitMessage):
        ttl_s: float | None = ttl_field(config.max_ttl_s)
        timeout_s: float = timeout_field(config.max_wait_s)

    app = service_app(
        "resources",
        description="Leased mutexes and semaphores with fencing tokens, fair queues and quotas. "
        "Pools and groups belong to the user who creates them.",
        settings=settings,
    )

    # --- pools and groups --------------------------------------------------

    @app.put("/pools/{name}")
    async def create_pool(name: Name, body: PoolBody, user: Manager) -> Pool:
        """Create a pool (the same definition again answers it; another is 409). One
        more than REALM_RESOURCES_MAX_POOLS_PER_OWNER is 403 ``limit_reached``."""
        return Pool(**await client.create_pool(name, **body.model_dump(), tenant=user.user_id))

    @app.get("/pools/{name}")
    async def get_pool(name: Name, user: Reader) -> Pool:
        return Pool(**await client.get_pool(name, tenant=user.user_id))

    @app.delete("/pools/{name}")
    async def delete_pool(name: Name, user: Manager) -> Pool:
        """Delete an idle pool (409 ``pool_busy`` while a lease is held or an acquire
        waits); it leaves its groups. A pool made again under the name goes on with
        higher fencing tokens."""
        return Pool(**await client.delete_pool(name, tenant=user.user_id))

    @app.get("/pools/{name}/leases")
    async def list_leases(
        name: Name,
        user: Reader,
        owner: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    ) -> Leases:
        found = await client.leases(name, owner, tenant=user.user_id)
        return Leases(leases=[Lease(**x) for x in found])

    @app.put("/groups/{name}")
    async def create_group(name: Name, body: GroupBody, user: Manager) -> Group:
        """Name some of the caller's pools as a group (404 if one does not exist). One
        more than REALM_RESOURCES_MAX_GROUPS_PER_OWNER is 403 ``limit_reached``."""
        return Group(**await client.create_group(name, body.pools, tenant=user.user_id))

    @app.get("/groups/{name}")
    async def get_group(name: Name, user: Reader) -> Group:
        group = await client.get_group(name, tenant=user.user_id)
        loads = await client.group_loads(name, tenant=user.user_id)
        return Group(**group, loads=[Load(**x) for x in loads])

    @app.delete("/groups/{name}")
    async def delete_group(name: Name, user: Manager) -> Group:
        """Forget a group; its pools stay."""
        return Group(**await client.delete_group(name, tenant=user.user_id))

    # --- leases --------------------------------------------------------------

    @app.post("/pools/{name}/acquire")
    async def acquire(name: Name, body: AcquireBody, user: Acquirer) -> Lease:
        """Long-polls up to ``timeout_s``; 409 ``acquire_timed_out`` if not granted by then."""
        owner = owner_for(user, body.owner)
        lease = await client.acquire(
            name, owner, ttl_s=body.ttl_s, timeout_s=body.timeout_s, tenant=user.user_id
        )
        return Lease(**lease)

    @app.post("/groups/{name}/acquire")
    async def acquire_from_group(name: Name, body: AcquireBody, user: Acquirer) -> Lease:
        """From the group's least-loaded pool."""
        owner = owner_for(user, body.owner)
        lease = await client.acquire_group(
            name, owner, ttl_s=body.ttl_s, timeout_s=body.timeout_s, tenant=user.user_id
        )
        return Lease(**lease)

    @app.post("/pools/{name}/leases/{token}/renew")
    async def renew(name: Name, token: Token, body: RenewBody, user: Acquirer) -> Lease:
        lease = await client.renew(
            name, token, owner=holder_check(user), ttl_s=body.ttl_s, tenant=user.user_id
        )
        return Lease(**lease)

    @app.delete("/pools/{name}/leases/{token}")
    async def release(name: Name, token: Token, user: Acquirer) -> Lease:
        """Ends the lease; one that already ended answers how (``state``, ``ended_at``)."""
        lease = await client.release(name, token, owner=holder_check(user), tenant=user.user_id)
        return Lease(**lease)

    @app.get("/pools/{name}/leases/{token}/validate")
    async def validate(name: Name, token: Token, user: Reader) -> Validation:
        """Whether ``token`` is its unit's current grant, before its deadline."""
        return Validation(**await client.validate(name, token, tenant=user.user_id))

    @app.post("/owners/{owner}/release")
    async def release_owner(
        owner: Annotated[str, Path(min_length=1, max_length=256)], user: Acquirer
    ) -> Released:
        """The holder is gone: end its leases and waits. ``me`` (or the caller's id):
        in the caller's pools; another holder (admins only): in every pool."""
        if owner in ("me", user.user_id):
            released = await client.release_owner(user.user_id, tenant=user.user_id)
        else:
            released = await client.release_owner(owner_for(user, owner))
        return Released(released=released)

    @app.get("/stats")
    async def stats(
        user: Reader,
        pool: Annotated[str | None, Query(min_length=1, max_length=128, pattern=NAME_PATTERN)] = (
            None
        ),
        owner: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    ) -> Stats:
        """Usage of the caller's pools (or one of them), per pool and per holder."""
        return Stats(**await client.stats(pool, owner, tenant=user.user_id))

    # --- WebSocket: follow a wait ----------------------------------------------

    @app.websocket("/pools/{name}/wait")
    async def wait(ws: WebSocket, name: str) -> None:
        """Send ``{"type": "acquire", "ttl_s"?, "timeout_s"?, "ref"?}``; answers
        ``queued``, then ``granted`` (with the lease) or ``error``, each with a
        ``seq``. At most REALM_RESOURCES_MAX_ACQUIRES_PER_SOCKET acquires are in
        progress at once. Closing the socket, or the session ending, withdraws
        waits still in progress."""
        signed_in = await sign_in_websocket(ws)
        if signed_in is None:
            return
        user, _ = signed_in
        if not user.allows("resources:acquire"):
            refused = Forbidden("this API key lacks the resources:acquire scope")
            await ws.send_denial_response(error_response(ws, refused))
            return
        await ws.accept()
        await Waiter(ws, client, name, user, config, Wait).run()

    return app


class WaitMessage(Body):
    """A wait WebSocket's request; ``make_app`` bounds its numbers by the settings."""

    type: Literal["acquire"]
    ref: str | None = Field(None, max_length=256)
    ttl_s: float | None = None
    timeout_s: float = 0.0


class Waiter:
    """One WebSocket following acquires of one pool of its user."""

    def __init__(
        self,
        ws: WebSocket,
        client: ResourcesClient,
        pool: str,
        user: Principal,
        config: ResourcesSettings,
        messages: type[WaitMessage] = WaitMessage,
    ) -> None:
        self.ws, self.client, self.pool, self.user = ws, client, pool, user
        self.config = config
        self.messages = messages
        self.seq = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        async with self.lock:
            self.seq += 1
            await self.ws.send_text(orjson.dumps({**frame, "seq": self.seq}).decode())

    async def send_error(self, ref: str | None, error: RealmError) -> None:
        public = public_error(error, request_id_of(self.ws), f"WS {self.ws.url.path}")
        await self.send({"type": "error", "ref": ref, "status": error.status, "error": public})

    async def run(self) -> None:
        reader = asyncio.create_task(self.read())
        signed_out = asyncio.create_task(
            until_signed_out(verifier_of(self.ws), self.user, self.config.session_check_s)
        )
        try:
            await asyncio.wait({reader, signed_out}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, signed_out, *self.tasks):  # the client withdraws their waits
                task.cancel()
            with contextlib.suppress(Exception):
                await self.ws.close(code=4401 if signed_out.done() else 1000)

    async def read(self) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                raw = await self.ws.receive_text()
                if len(raw) > MAX_FRAME_BYTES:
                    await self.send_error(None, TooLarge(size=len(raw), limit=MAX_FRAME_BYTES))
                    continue
                try:
                    message = self.messages.model_validate_json(raw)
                except ValidationError as error:
                    problems = [e["msg"] for e in error.errors()]
                    await self.send_error(None, InvalidInput(problems=problems))
                    continue
                if len(self.tasks) >= self.config.max_acquires_per_socket:
                    limit = self.config.max_acquires_per_socket
                    await self.send_error(message.ref, TooManyAcquires(limit=limit))
                    continue
                task = asyncio.create_task(self.acquire(message))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def acquire(self, message: WaitMessage) -> None:
        ref = message.ref
        try:
            await self.send({"type": "queued", "ref": ref, "pool": self.pool})
            lease = await self.client.acquire(
                self.pool,
                self.user.user_id,
                ttl_s=message.ttl_s,
                timeout_s=message.timeout_s,
                tenant=self.user.user_id,
            )
        except RealmError as error:
            with contextlib.suppress(Exception):
                await self.send_error(ref, error)
            return
        except Exception:
            log.exception("an acquire over a wait WebSocket failed")
            with contextlib.suppress(Exception):
                await self.send_error(ref, RealmError())
            return
        try:
            await self.send({"type": "granted", "ref": ref, "lease": Lease(**lease).model_dump()})
        except (Exception, asyncio.CancelledError):  # nobody to tell: give the grant back
            await self.client.release(
                self.pool, lease["token"], owner=lease["owner"], tenant=self.user.user_id
            )


@serve.deployment
@serve.ingress()
class ResourcesIngress(ClientIngress):
    make_client = ResourcesClient
    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(ResourcesIngress, settings, streams=True)
