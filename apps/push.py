"""HTTP front of push notifications (service 12), under ``/push``.

Every route needs a principal: a signed-in user, or an API key holding the
route's scope (``push:read``, ``push:register`` or ``push:send``). Devices
belong to the user who registered them; another user's device or
notification is a 404. Sending to another user, to every follower of a topic
or to a segment needs the admin or an API key holding ``push:send`` (keys are
issued by the admin); anyone may send to their own devices. Bodies are strict
(``apps.models.Body``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Path, Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from actors.auth.client import Principal
from actors.push.client import MAX_WAIT_S, PushClient
from actors.push.errors import BadDevice
from actors.push.model import (
    MAX_BODY_CHARS,
    MAX_KEY_CHARS,
    MAX_LOCALE_CHARS,
    MAX_TITLE_CHARS,
    PLATFORMS,
)
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.models import Body
from apps.signin import AdminUser, Scope

Reader = Annotated[Principal, Scope("push:read")]
Registrar = Annotated[Principal, Scope("push:register")]
Sender = Annotated[Principal, Scope("push:send")]
DeviceId = Annotated[str, Path(min_length=1, max_length=64)]
NotificationId = Annotated[str, Path(min_length=1, max_length=64)]
IdempotencyKey = Annotated[str | None, Header(max_length=64)]
Platform = Literal["webpush", "fcm", "apns", "webhook", "inapp"]
assert set(PLATFORMS) == set(Platform.__args__)  # type: ignore[attr-defined]


class SubscriptionKeys(Body):
    p256dh: str = Field(..., min_length=16, max_length=256)
    auth: str = Field(..., min_length=16, max_length=256)


class Subscription(Body):
    """A Web Push subscription, as ``PushSubscription.toJSON()`` gives it."""

    endpoint: str = Field(..., min_length=1, max_length=65_536)
    keys: SubscriptionKeys
    expirationTime: float | None = None


class DeviceIn(Body):
    platform: Platform
    token: str | None = Field(
        None,
        min_length=1,
        max_length=65_536,
        description="FCM or APNs token, webhook URL, or in-app installation id",
    )
    subscription: Subscription | None = Field(None, description="Web Push only")
    app: str = Field(..., min_length=1, max_length=64)
    locale: str = Field("en", min_length=2, max_length=MAX_LOCALE_CHARS)
    topics: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=1_000
    )


class DeviceOut(BaseModel):
    id: str
    platform: Platform
    token: str
    app: str
    locale: str
    topics: list[str]
    created_at: float
    last_seen: float
    created: bool | None = None
    secret: str | None = Field(
        None, description="webhook only, on first registration: the HMAC-SHA256 signing secret"
    )


class Devices(BaseModel):
    devices: list[DeviceOut]


class Target(Body):
    device: str | None = Field(None, min_length=1, max_length=64)
    user: str | None = Field(None, min_length=1, max_length=64)
    topic: str | None = Field(None, min_length=1, max_length=64)
    users: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, min_length=1, max_length=10_000
    )
    app: str | None = Field(None, min_length=1, max_length=64)

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class SendIn(Body):
    to: Target
    title: str = Field("", max_length=MAX_TITLE_CHARS)
    body: str = Field("", max_length=MAX_BODY_CHARS)
    data: dict[str, Any] = Field(default_factory=dict)
    ttl_s: float | None = Field(None, gt=0, le=28 * 86_400.0)
    collapse_key: str | None = Field(None, min_length=1, max_length=64)
    priority: Literal["high", "normal"] = "normal"
    idempotency_key: str | None = Field(None, min_length=1, max_length=MAX_KEY_CHARS)
    mode: Literal["sync", "async"] = "async"
    wait_timeout_s: float = Field(30.0, ge=0, le=MAX_WAIT_S)
    feedback_url: str | None = Field(
        None,
        min_length=1,
        max_length=4_096,
        description="POSTed every device's result once all are final, signed with "
        "the answer's feedback_secret (the rules of a webhook device's URL)",
    )


class Result(BaseModel):
    device: str
    user: str
    platform: str
    app: str
    state: Literal["pending", "delivered", "failed", "dead", "expired", "collapsed", "lost"]
    reason: str | None
    attempts: int
    latency_ms: float | None


class NotificationOut(BaseModel):
    id: str
    target: dict[str, str]
    priority: str
    collapse_key: str | None
    created_at: float
    expires_at: float
    finished: bool
    finished_at: float | None
    feedback: str | None = Field(
        None, description="none asked, waiting, due, sent or failed:<reason>"
    )
    counts: dict[str, int]
    results: list[Result]
    duplicate: bool | None = None
    feedback_secret: str | None = Field(
        None, description="the send's answer only: the feedback webhook's signing secret"
    )


class Accepted(BaseModel):
    id: str
    devices: int
    duplicate: bool
    feedback_secret: str | None = Field(
        None, description="with a feedback_url: the HMAC-SHA256 secret its POST is signed with"
    )


class InboxMessage(BaseModel):
    model_config = {"extra": "allow"}
    seq: int
    id: str


class InboxOut(BaseModel):
    device: str
    messages: list[InboxMessage]


class AckIn(Body):
    seq: int = Field(..., ge=0, le=2**62)


class Acked(BaseModel):
    device: str
    dropped: int


ERRORS: dict[int | str, dict[str, Any]] = {}
SENDS: dict[int | str, dict[str, Any]] = {
    202: {"model": Accepted, "description": "async mode: accepted, results by id"},
    413: {"description": "A notification, or its number of devices, over the limit."},
    429: {"description": "The sender's or the app's quota of deliveries is used up."},
}


def privileged(user: Principal) -> bool:
    """The admin, or an API key (issued by the admin) holding ``push:send``."""
    return user.is_admin or (not user.is_user and user.allows("push:send"))


def make_app(client: PushClient, settings: Settings) -> FastAPI:
    app = service_app(
        "push",
        description="Device registry and push notifications: Web Push, FCM, APNs, signed "
        "webhooks and in-app inboxes, delivered through the task queue.",
        settings=settings,
    )

    @app.post("/devices", status_code=201, responses={200: {"model": DeviceOut}})
    async def register(body: DeviceIn, user: Registrar, response: Response) -> DeviceOut:
        token: str | None = body.token
        keys: dict[str, str] | None = None
        if body.platform == "webpush":
            if body.subscription is None or body.token is not None:
                raise BadDevice("a Web Push device gives its subscription, not a token")
            token = body.subscription.endpoint
            keys = body.subscription.keys.model_dump()
        elif body.subscription is not None or token is None:
            raise BadDevice("this platform takes a token, not a subscription")
        made = await client.register(
            user.user_id, platform=body.platform, token=token, keys=keys, app=body.app,
            locale=body.locale, topics=list(body.topics),
        )  # fmt: skip
        if not made["created"]:
            response.status_code = 200
        return DeviceOut(**made)

    @app.get("/devices")
    async def list_devices(user: Reader) -> Devices:
        return Devices(devices=[DeviceOut(**d) for d in await client.devices(user.user_id)])

    @app.get("/devices/{device_id}")
    async def get_device(device_id: DeviceId, user: Reader) -> DeviceOut:
        return DeviceOut(**await client.device(user.user_id, device_id))

    @app.delete("/devices/{device_id}", status_code=204)
    async def unregister(device_id: DeviceId, user: Registrar) -> Response:
        await client.unregister(user.user_id, device_id)
        return Response(status_code=204)

    @app.post("/send", responses=SENDS)
    async def send(
        body: SendIn, user: Sender, response: Response, idempotency_key: IdempotencyKey = None
    ) -> NotificationOut | Accepted:
        sync = body.mode == "sync"
        sent = await client.send(
            user.user_id,
            to=body.to.given(),
            title=body.title,
            body=body.body,
            data=body.data,
            ttl_s=body.ttl_s,
            collapse_key=body.collapse_key,
            priority=body.priority,
            idempotency_key=body.idempotency_key or idempotency_key,
            wait=sync,
            wait_timeout_s=body.wait_timeout_s,
            privileged=privileged(user),
            feedback_url=body.feedback_url,
        )
        if sync:
            return NotificationOut(**sent)
        response.status_code = 202
        return Accepted(
            id=sent["id"],
            devices=len(sent.get("results", [])),
            duplicate=sent["duplicate"],
            feedback_secret=sent.get("feedback_secret"),
        )

    @app.get("/notifications/{notification_id}")
    async def notification(notification_id: NotificationId, user: Reader) -> NotificationOut:
        return NotificationOut(**await client.notification(user.user_id, notification_id))

    @app.get("/devices/{device_id}/inbox")
    async def inbox(device_id: DeviceId, user: Reader) -> InboxOut:
        return InboxOut(**await client.inbox(user.user_id, device_id))

    @app.post("/devices/{device_id}/inbox/ack")
    async def ack(device_id: DeviceId, body: AckIn, user: Reader) -> Acked:
        dropped = await client.ack(user.user_id, device_id, body.seq)
        return Acked(device=device_id, dropped=dropped)

    @app.get("/stats")
    async def stats(user: AdminUser) -> dict[str, Any]:
        return await client.stats()

    return app


@serve.deployment
@serve.ingress()
class PushIngress(ClientIngress):
    make_client = staticmethod(PushClient)
    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(PushIngress, settings)
