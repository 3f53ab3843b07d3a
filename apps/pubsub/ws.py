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
carries one. A bad frame gets an ``error`` and changes nothing; the
connection stays open. Close codes: 4008 slow consumer (the client fell more than
``REALM_PUBSUB_SEND_BUFFER`` messages behind; reconnect and resume), 4401 the
session ended (checked every ``REALM_PUBSUB_KEEPALIVE_S``), 1009 a frame over
the size limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocketState

from actors.auth.client import Principal, SessionVerifier
from actors.pubsub.acl import Acl
from actors.pubsub.broker import MAX_GROUP_CHARS
from actors.pubsub.client import Message, PubSubClient, SlowConsumer, Subscription, check_pattern
from actors.pubsub.settings import PubSubSettings
from actors.runtime.errors import Conflict, InvalidInput, NotFound, RealmError, TooLarge
from apps.pubsub.messages import Topic, encode_data, message_json
from apps.signin import sign_in_websocket, until_signed_out, verifier_of

#: Close codes of the WebSocket protocol.
CLOSE_SLOW_CONSUMER = 4008
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_BIG = 1009
#: How long a close frame may wait behind what a slow client has not read yet.
CLOSE_TIMEOUT_S = 30.0
#: Longest subscription id or publish ref a client may choose.
MAX_REF_CHARS = 64
#: A server frame takes more queued messages while it is under this size.
MAX_FRAME_BYTES = 64 * 1024
#: Room in a client's frame for the envelope around a publish's data.
ENVELOPE_BYTES = 4096

Ref = Annotated[str, Field(min_length=1, max_length=MAX_REF_CHARS)]
SLOW = "slow consumer: reconnect and resume from your last seq"


# --- frames ---------------------------------------------------------------------


class SubscribeFrame(BaseModel):
    type: Literal["subscribe"]
    id: Ref | None = Field(None, description="Names the subscription; the pattern if omitted.")
    pattern: Topic
    group: Annotated[str, Field(min_length=1, max_length=MAX_GROUP_CHARS)] | None = None
    resume: dict[str, int] | None = None


class UnsubscribeFrame(BaseModel):
    type: Literal["unsubscribe"]
    id: Ref


class PublishFrame(BaseModel):
    type: Literal["publish"]
    ref: Ref | None = None
    topic: Topic
    data: Any
    reply_to: Topic | None = None


class PingFrame(BaseModel):
    type: Literal["ping"]


Frame = Annotated[
    SubscribeFrame | UnsubscribeFrame | PublishFrame | PingFrame, Field(discriminator="type")
]
FRAME = TypeAdapter(Frame)


def parse_frame(text: str) -> Any:
    try:
        return FRAME.validate_json(text)
    except ValidationError as error:
        problems = [
            {"where": ".".join(str(p) for p in problem["loc"]), "problem": problem["msg"]}
            for problem in error.errors()
        ]
        raise InvalidInput("the frame is not valid", problems=problems) from None


def message_frame(sub_json: str, message: Message) -> str:
    """The ``message`` frame for the subscription whose id is ``sub_json`` (JSON)."""
    return f'{{"type":"message","sub":{sub_json},{message_json(message)[1:]}'


async def next_frame(outbox: asyncio.Queue[str]) -> str:
    """Wait for a queued message; join those queued behind it, one per line, while
    the frame is under ``MAX_FRAME_BYTES``."""
    lines = [await outbox.get()]
    size = len(lines[0])
    while size < MAX_FRAME_BYTES and not outbox.empty():
        lines.append(outbox.get_nowait())
        size += len(lines[-1]) + 1
    return "\n".join(lines)


# --- one connection ---------------------------------------------------------------


class Connection:
    """A subscriber's WebSocket: its subscriptions and its bounded send buffer."""

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
        self.ws, self.client, self.verifier, self.acl = websocket, client, verifier, acl
        self.user, self.token, self.config = user, token, config
        self.outbox: asyncio.Queue[str] = asyncio.Queue(config.send_buffer)
        self.subscriptions: dict[str, tuple[Subscription, asyncio.Task[None]]] = {}
        self.ended = asyncio.Event()
        self.close_code = 1000
        self.close_reason = ""

    def end(self, code: int, reason: str) -> None:
        if not self.ended.is_set():
            self.close_code, self.close_reason = code, reason
            self.ended.set()

    def send(self, frame: dict[str, Any]) -> None:
        self.send_json(orjson.dumps(frame).decode())

    def send_json(self, text: str) -> None:
        try:
            self.outbox.put_nowait(text)
        except asyncio.QueueFull:
            self.end(CLOSE_SLOW_CONSUMER, SLOW)

    def send_error(self, ref: str | None, error: RealmError) -> None:
        self.send({"type": "error", "ref": ref, "error": error.to_dict()})

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._write()),
            asyncio.create_task(self._watch_session()),
            asyncio.create_task(self.ended.wait()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for subscription, pump in self.subscriptions.values():
                pump.cancel()
                await subscription.close()
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self.ws.close(self.close_code, self.close_reason), CLOSE_TIMEOUT_S
                    )

    async def _write(self) -> None:
        while True:
            await self.ws.send_text(await next_frame(self.outbox))

    async def _watch_session(self) -> None:
        """A session revoked or expired while connected ends the connection."""
        await until_signed_out(self.verifier, self.token, self.config.keepalive_s)
        self.end(CLOSE_UNAUTHORIZED, "the session ended")

    async def _read(self) -> None:
        limit = self.config.max_payload_bytes + ENVELOPE_BYTES
        while True:
            try:
                text = await self.ws.receive_text()
            except (WebSocketDisconnect, RuntimeError):
                return
            except KeyError:  # a binary frame
                self.send_error(None, InvalidInput("frames are JSON text"))
                continue
            if len(text) > limit:
                self.end(CLOSE_TOO_BIG, f"a frame is at most {limit} bytes")
                return
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
            self.acl.check_publish(self.user, frame.topic)
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
        self.acl.check_subscribe(self.user, frame.pattern)
        for topic in frame.resume or {}:
            self.acl.check_read(self.user, topic)
        subscription = await self.client.subscribe(
            frame.pattern, group=frame.group, resume=frame.resume
        )
        self.send({"type": "subscribed", "id": sub_id, "pattern": frame.pattern})
        pump = asyncio.create_task(self._pump(sub_id, subscription))
        self.subscriptions[sub_id] = (subscription, pump)

    async def _pump(self, sub_id: str, subscription: Subscription) -> None:
        sub_json = orjson.dumps(sub_id).decode()
        try:
            async for message in subscription:
                if self.acl.may_read(self.user, message.topic):
                    self.send_json(message_frame(sub_json, message))
        except SlowConsumer:
            self.end(CLOSE_SLOW_CONSUMER, SLOW)


def router(client: PubSubClient, acl: Acl, config: PubSubSettings) -> APIRouter:
    routes = APIRouter()

    @routes.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        signed_in = await sign_in_websocket(ws)
        if signed_in is None:
            return
        user, token = signed_in
        await ws.accept()
        connection = Connection(
            ws, client, verifier=verifier_of(ws), acl=acl, user=user, token=token, config=config
        )
        await connection.run()

    return routes
