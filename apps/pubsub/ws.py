"""Pub/sub over WebSocket (``GET /pubsub/ws``): JSON text frames with a ``type``.

::

    -> {"type": "subscribe", "id": "s1", "pattern": "room.*",
        "resume": {"room.1": 41}, "group": null}
    <- {"type": "subscribed", "id": "s1", "pattern": "room.*"}
    <- {"type": "message", "sub": "s1", "topic": "room.1", "seq": 42,
        "at": 1733000000.5, "data": ..., "reply_to": null}
    -> {"type": "unsubscribe", "id": "s1"}          <- {"type": "unsubscribed", "id": "s1"}
    -> {"type": "publish", "ref": "p1", "topic": "room.1", "data": ...}
    <- {"type": "published", "ref": "p1", "topic": "room.1", "seq": 43, "at": ...}
    -> {"type": "ping"}                              <- {"type": "pong"}
    <- {"type": "error", "ref": "p1", "error": {"code", "message", "details"}}

A frame from the server carries one or more of these JSON messages, one per
line (newline-delimited, as Centrifugo does): several when the client is
behind, so a busy connection costs fewer frames. A frame from the client
carries one, of at most ``REALM_PUBSUB_MAX_PAYLOAD_BYTES`` + 4096 bytes. A bad
frame gets an ``error`` and changes nothing; the connection stays open.
Subscribing needs the scope ``pubsub:subscribe``, publishing ``pubsub:publish``
(a signed-in user holds both). A ``group`` is the caller's own: another user's
group of the same name is another group. Close codes: 4008 slow consumer (the
client fell more than ``REALM_PUBSUB_SEND_BUFFER`` messages or
``REALM_PUBSUB_SEND_BUFFER_BYTES`` behind; reconnect and resume), 4401 the
session ended (checked every ``REALM_PUBSUB_KEEPALIVE_S``), 1009 a frame over
the size limit, 1011 a subscription failed inside (reconnect and resume).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, WebSocket
from pydantic import Field, TypeAdapter

from actors.auth.client import Principal, SessionVerifier
from actors.pubsub.acl import Acl
from actors.pubsub.broker import MAX_GROUP_CHARS, MAX_SEQ
from actors.pubsub.client import Message, PubSubClient, SlowConsumer, Subscription, check_pattern
from actors.pubsub.settings import PubSubSettings
from actors.runtime.errors import Conflict, NotFound, RealmError, TooLarge
from apps import streams
from apps.models import Body
from apps.pubsub.messages import Topic, encode_data, message_json
from apps.signin import verifier_of
from apps.streams import CLOSE_INTERNAL, CLOSE_SLOW_CONSUMER, SLOW, StreamConnection, open_stream
from apps.streams import MAX_FRAME_BYTES as MAX_FRAME_BYTES

log = logging.getLogger(__name__)

#: Longest subscription id or publish ref a client may choose.
MAX_REF_CHARS = 64
#: Room in a client's frame for the envelope around a publish's data.
ENVELOPE_BYTES = 4096


def max_frame_bytes(config: PubSubSettings) -> int:
    """The largest frame a client may send."""
    return config.max_payload_bytes + ENVELOPE_BYTES


Ref = Annotated[str, Field(min_length=1, max_length=MAX_REF_CHARS)]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]


# --- frames ---------------------------------------------------------------------


class SubscribeFrame(Body):
    type: Literal["subscribe"]
    id: Ref | None = Field(None, description="Names the subscription; the pattern if omitted.")
    pattern: Topic
    group: Annotated[str, Field(min_length=1, max_length=MAX_GROUP_CHARS)] | None = None
    resume: dict[Topic, Seq] | None = None


class UnsubscribeFrame(Body):
    type: Literal["unsubscribe"]
    id: Ref


class PublishFrame(Body):
    type: Literal["publish"]
    ref: Ref | None = None
    topic: Topic
    data: Any
    reply_to: Topic | None = None


class PingFrame(Body):
    type: Literal["ping"]


Frame = Annotated[
    SubscribeFrame | UnsubscribeFrame | PublishFrame | PingFrame, Field(discriminator="type")
]
FRAME = TypeAdapter(Frame)


def parse_frame(text: str) -> Any:
    return streams.parse_frame(FRAME, text)


def message_frame(sub_json: str, message: Message) -> str:
    """The ``message`` frame for the subscription whose id is ``sub_json`` (JSON)."""
    return f'{{"type":"message","sub":{sub_json},{message_json(message)[1:]}'


class Outbox(streams.Outbox):
    """What waits to be sent to one client: at most ``max_items`` messages and
    ``max_bytes`` (their size in memory); one message always fits when it is empty.
    A frame takes queued messages while it is under ``MAX_FRAME_BYTES``."""

    size_of = staticmethod(sys.getsizeof)
    fill_frames = True

    @property
    def items(self) -> Any:
        return self.lines


def limit_websocket_messages(max_bytes: int) -> None:
    """Have the uvicorn servers this process starts from now on refuse a WebSocket
    message over ``max_bytes`` as soon as its frame header announces it (close
    1009), before reading it.

    Serve (Ray 2.60) starts uvicorn itself, in every replica under the HAProxy
    ingress (``replica.py``, ``start_asgi_http_server`` in
    ``serve/_private/http_util.py``) and in its Python proxy actor, with
    ``uvicorn.Config(...)`` and no ``ws_max_size``: uvicorn's default, 16 MiB,
    read whole before the app sees a byte. Serve has no option for it (not in
    ``HTTPOptions``, nor per application), and ``uvicorn.Config`` reads no
    environment variable. A replica builds its server after its ingress's
    constructor has run, so calling this there (``PubSubIngress``) makes the
    replica's own server, the one HAProxy forwards WebSockets to, apply the
    limit; Serve's Python proxy, another process, keeps 16 MiB.
    """
    import uvicorn

    current: Any = uvicorn.Config
    base = getattr(current, "realm_base", current)

    class LimitedConfig(base):  # type: ignore[misc,valid-type]
        realm_base = base
        realm_ws_max_size = max_bytes

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("ws_max_size", max_bytes)
            super().__init__(*args, **kwargs)

    uvicorn.Config = LimitedConfig  # type: ignore[misc]


# --- one connection ---------------------------------------------------------------


class Connection(StreamConnection):
    """A subscriber's WebSocket: its subscriptions and its bounded send buffer."""

    where = "pubsub WebSocket"

    def __init__(
        self,
        websocket: WebSocket,
        client: PubSubClient,
        *,
        verifier: SessionVerifier,
        acl: Acl,
        user: Principal,
        token: str,
        config: PubSubSettings,
    ) -> None:
        super().__init__(
            websocket,
            verifier=verifier,
            user=user,
            signed_in=user,
            outbox=Outbox(config.send_buffer, config.send_buffer_bytes),
            keepalive_s=config.keepalive_s,
            max_frame_chars=max_frame_bytes(config),
        )
        self.client, self.acl, self.token, self.config = client, acl, token, config
        self.may_read = acl.reader(user)
        self.subscriptions: dict[str, tuple[Subscription, asyncio.Task[None]]] = {}

    async def release(self) -> None:
        for subscription, pump in self.subscriptions.values():
            pump.cancel()
            await subscription.close()

    async def handle_text(self, text: str) -> None:
        ref = None
        try:
            frame = parse_frame(text)
            ref = getattr(frame, "ref", None) or getattr(frame, "id", None)
            await self._handle(frame)
        except RealmError as error:
            self.send_error(ref, error)

    async def _handle(self, frame: Any) -> None:
        if isinstance(frame, PingFrame):
            self.send({"type": "pong"})
        elif isinstance(frame, PublishFrame):
            self.user.require("pubsub:publish")
            self.acl.check_publish(self.user, frame.topic)
            self.acl.check_reply_to(self.user, frame.reply_to)
            payload = encode_data(frame.data, self.config)
            seq, at = await self.client.publish(frame.topic, payload, reply_to=frame.reply_to)
            self.send(
                {"type": "published", "ref": frame.ref, "topic": frame.topic, "seq": seq, "at": at}
            )
        elif isinstance(frame, SubscribeFrame):
            await self._subscribe(frame)
        elif isinstance(frame, UnsubscribeFrame):
            found = self.subscriptions.pop(frame.id, None)
            if found is None:
                raise NotFound("no subscription with that id", id=frame.id)
            subscription, pump = found
            pump.cancel()
            await subscription.close()
            self.send({"type": "unsubscribed", "id": frame.id})

    async def _subscribe(self, frame: SubscribeFrame) -> None:
        check_pattern(frame.pattern)
        sub_id = frame.id or frame.pattern
        if sub_id in self.subscriptions:
            raise Conflict("a subscription with that id exists", id=sub_id)
        if len(self.subscriptions) >= self.config.max_subscriptions:
            raise TooLarge(
                "too many subscriptions on one connection", limit=self.config.max_subscriptions
            )
        self.user.require("pubsub:subscribe")
        self.acl.check_subscribe(self.user, frame.pattern)
        for topic in frame.resume or {}:
            self.acl.check_read(self.user, topic)
        subscription = await self.client.subscribe(
            frame.pattern, group=frame.group, owner=self.user.user_id, resume=frame.resume
        )
        self.send({"type": "subscribed", "id": sub_id, "pattern": frame.pattern})
        pump = asyncio.create_task(self._pump(sub_id, subscription))
        self.subscriptions[sub_id] = (subscription, pump)

    async def _pump(self, sub_id: str, subscription: Subscription) -> None:
        sub_json = orjson.dumps(sub_id).decode()

        def deliver(message: Message) -> None:
            if self.may_read(message.topic):
                self.send_line(message_frame(sub_json, message))

        subscription.deliver_to(deliver)  # live messages skip this task while it waits
        try:
            async for message in subscription:
                deliver(message)
        except SlowConsumer:
            self.end(CLOSE_SLOW_CONSUMER, SLOW)
        except Exception:  # e.g. history out of reach: the client reconnects and resumes
            log.exception("a WebSocket subscription failed; closing its connection")
            self.end(CLOSE_INTERNAL, "internal error: reconnect and resume")


def router(client: PubSubClient, acl: Acl, config: PubSubSettings) -> APIRouter:
    routes = APIRouter()

    @routes.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        signed_in = await open_stream(ws)
        if signed_in is None:
            return
        user, token = signed_in
        connection = Connection(
            ws, client, verifier=verifier_of(ws), acl=acl, user=user, token=token, config=config
        )
        await connection.run()

    return routes
