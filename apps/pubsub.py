"""HTTP, WebSocket and SSE front of pub/sub (service 5), under ``/pubsub``.

Every route needs a signed-in user (``Authorization: Bearer``; WebSocket and
SSE clients that cannot set headers, such as browsers, may pass
``?access_token=`` instead). Message data is any JSON document.

Each replica holds one ``PubSubClient``: it follows every broker once, and
fans each message out to its own WebSocket and SSE clients, so a message
crosses the cluster once per replica whatever the number of subscribers.

WebSocket protocol (JSON text frames with a ``type``)::

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
session ended, 1009 a frame over the size limit.

SSE (``GET /pubsub/sse?pattern=...``, EventSource-compatible): each message is
an event ``message`` whose ``id`` is the resume cursor: the sequence number
for a plain topic, or ``{"topic": seq, ...}`` (the topics seen on the stream,
at most ``SSE_CURSOR_TOPICS``) for a wildcard pattern. A reconnecting
EventSource sends it back as ``Last-Event-ID`` and the stream resumes from
history with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from ray import serve
from ray.serve import Application
from starlette.websockets import WebSocketState

from actors.auth.client import Principal, SessionVerifier
from actors.pubsub.broker import MAX_GROUP_CHARS, Message
from actors.pubsub.client import PubSubClient, SlowConsumer, Subscription
from actors.pubsub.topics import MAX_TOPIC_CHARS, ONE, REST, check_pattern
from actors.runtime.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    RealmError,
    TooLarge,
    Unauthorized,
)
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.pubsub_acl import Acl, load_hook
from apps.signin import CurrentUser, bearer_token, sign_in_websocket, verifier_of

log = logging.getLogger(__name__)

#: Close codes of the WebSocket protocol.
CLOSE_SLOW_CONSUMER = 4008
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_BIG = 1009
#: How long a close frame may wait behind what a slow client has not read yet.
CLOSE_TIMEOUT_S = 30.0
#: Topics an SSE cursor keeps for a wildcard pattern (the most recently seen).
SSE_CURSOR_TOPICS = 64
#: Longest subscription id or publish ref a client may choose.
MAX_REF_CHARS = 64
#: A server frame takes more queued messages while it is under this size.
MAX_FRAME_BYTES = 64 * 1024

Topic = Annotated[str, Field(min_length=1, max_length=MAX_TOPIC_CHARS)]
Ref = Annotated[str, Field(min_length=1, max_length=MAX_REF_CHARS)]


# --- message encoding --------------------------------------------------------


def encode_data(data: Any) -> bytes:
    return orjson.dumps(data)


def message_body(message: Message) -> dict[str, Any]:
    """A message as clients see it: ``data`` is the JSON it was published as
    (``data_base64`` for a payload published from Python that is not JSON)."""
    body: dict[str, Any] = {"topic": message.topic, "seq": message.seq, "at": message.at}
    try:
        body["data"] = orjson.loads(message.payload)
    except orjson.JSONDecodeError:
        body["data_base64"] = base64.b64encode(message.payload).decode()
    body["reply_to"] = message.reply_to
    return body


@functools.lru_cache(maxsize=64)
def message_json(message: Message) -> str:
    """``message_body`` as JSON, made once however many subscribers get the message."""
    return orjson.dumps(message_body(message)).decode()


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


def check_size(payload: bytes, settings: Settings) -> bytes:
    if len(payload) > settings.pubsub_max_payload_bytes:
        raise TooLarge(
            "the message data is over the size limit",
            size=len(payload),
            limit=settings.pubsub_max_payload_bytes,
        )
    return payload


# --- HTTP bodies ---------------------------------------------------------------


class PublishBody(BaseModel):
    topic: Topic
    data: Any = Field(..., description="Any JSON document.")
    reply_to: Topic | None = Field(None, description="Where a reply should be published.")


class Published(BaseModel):
    topic: str
    seq: int
    at: float


class MessageOut(BaseModel):
    topic: str
    seq: int
    at: float
    data: Any = None
    data_base64: str | None = None
    reply_to: str | None = None


class History(BaseModel):
    messages: list[MessageOut]
    complete: bool = Field(..., description="False if messages after the cursor were trimmed.")
    last_seq: int


class RequestBody(BaseModel):
    topic: Topic
    data: Any
    timeout_s: float = Field(5.0, gt=0, le=60)


# --- WebSocket frames from the client -------------------------------------------


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


# --- authentication for streams ----------------------------------------------------


# --- SSE cursors ------------------------------------------------------------------


def is_plain(pattern: str) -> bool:
    return all(token not in (ONE, REST) for token in pattern.split("."))


def parse_cursor(pattern: str, last_event_id: str | None) -> dict[str, int]:
    """The resume map a Last-Event-ID stands for (see the module docstring)."""
    if not last_event_id:
        return {}
    if is_plain(pattern) and last_event_id.isdigit():
        return {pattern: int(last_event_id)}
    try:
        cursor = orjson.loads(last_event_id)
    except orjson.JSONDecodeError:
        cursor = None
    if not isinstance(cursor, dict) or not all(
        isinstance(t, str) and isinstance(s, int) and not isinstance(s, bool) and s >= 0
        for t, s in cursor.items()
    ):
        raise InvalidInput(
            "Last-Event-ID is not a cursor this stream gave out", last_event_id=last_event_id[:200]
        )
    return cursor


def format_cursor(pattern: str, cursor: dict[str, int]) -> str:
    if is_plain(pattern):
        return str(cursor.get(pattern, 0))
    return orjson.dumps(cursor).decode()


# --- one WebSocket connection -------------------------------------------------------


class Connection:
    """A subscriber's WebSocket: its subscriptions and its bounded send buffer."""

    def __init__(
        self,
        websocket: WebSocket,
        client: PubSubClient,
        auth: SessionVerifier,
        acl: Acl,
        user: Principal,
        token: str,
        settings: Settings,
    ) -> None:
        self.ws, self.client, self.auth, self.acl = websocket, client, auth, acl
        self.user, self.token, self.settings = user, token, settings
        self.outbox: asyncio.Queue[str] = asyncio.Queue(settings.pubsub_send_buffer)
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
            self.end(CLOSE_SLOW_CONSUMER, "slow consumer: reconnect and resume from your last seq")

    def send_error(self, ref: str | None, error: RealmError) -> None:
        self.send({"type": "error", "ref": ref, "error": error.to_dict()})

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._write()),
            asyncio.create_task(self._recheck_session()),
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

    async def _recheck_session(self) -> None:
        """A session revoked or expired while connected ends the connection."""
        while True:
            await asyncio.sleep(self.settings.pubsub_keepalive_s)
            try:
                await self.auth.authenticate(self.token)
            except Unauthorized:
                self.end(CLOSE_UNAUTHORIZED, "the session ended")
                return

    async def _read(self) -> None:
        limit = self.settings.pubsub_max_payload_bytes + 4096  # the data plus its envelope
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
            payload = check_size(encode_data(frame.data), self.settings)
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
        if len(self.subscriptions) >= self.settings.pubsub_max_subscriptions:
            raise TooLarge(
                "too many subscriptions on one connection",
                limit=self.settings.pubsub_max_subscriptions,
            )
        self.acl.check_subscribe(self.user, frame.pattern)
        for topic in frame.resume or {}:
            self.acl.check_read(self.user, topic)
        subscription = await self.client.subscribe(
            frame.pattern,
            group=frame.group,
            resume=frame.resume,
            max_pending=self.settings.pubsub_send_buffer,
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
            self.end(CLOSE_SLOW_CONSUMER, "slow consumer: reconnect and resume from your last seq")


# --- the app ---------------------------------------------------------------------------


def make_app(client: PubSubClient, settings: Settings) -> FastAPI:
    app = service_app(
        title="pub/sub",
        description=__doc__ or "",
        settings=settings,
    )
    acl = Acl(load_hook(settings.pubsub_acl_hook))

    @app.post("/publish", responses={401: {}, 403: {}, 413: {}, 422: {}})
    async def publish(
        body: PublishBody,
        user: CurrentUser,
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> Published:
        """Publish; answered once the message is durable. A repeated
        ``Idempotency-Key`` answers the first publish again."""
        acl.check_publish(user, body.topic)
        payload = check_size(encode_data(body.data), settings)
        key = f"{user.user_id}:{idempotency_key}" if idempotency_key else None
        seq, at = await client.publish(body.topic, payload, key=key, reply_to=body.reply_to)
        return Published(topic=body.topic, seq=seq, at=at)

    @app.get("/history", responses={401: {}, 403: {}, 422: {}})
    async def history(
        user: CurrentUser,
        topic: Annotated[str, Query(min_length=1, max_length=MAX_TOPIC_CHARS)],
        after_seq: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> History:
        """Messages after ``after_seq``, oldest first."""
        acl.check_read(user, topic)
        page = await client.history(topic, after_seq, limit)
        return History(
            messages=[MessageOut(**message_body(m)) for m in page["messages"]],
            complete=page["complete"],
            last_seq=page["last_seq"],
        )

    @app.post("/request", responses={401: {}, 403: {}, 413: {}, 422: {}, 504: {}})
    async def request(body: RequestBody, user: CurrentUser) -> MessageOut:
        """Publish with a private reply topic; the first reply (504 if none in time)."""
        acl.check_publish(user, body.topic)
        payload = check_size(encode_data(body.data), settings)
        reply = await client.request(body.topic, payload, timeout_s=body.timeout_s)
        return MessageOut(**message_body(reply))

    @app.get(
        "/sse",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, 401: {}, 403: {}, 422: {}},
    )
    async def sse(
        http: Request,
        pattern: Annotated[str, Query(min_length=1, max_length=MAX_TOPIC_CHARS)],
        group: Annotated[str | None, Query(min_length=1, max_length=MAX_GROUP_CHARS)] = None,
        access_token: Annotated[str | None, Query()] = None,
        last_event_id: Annotated[str | None, Header(max_length=8192)] = None,
    ) -> StreamingResponse:
        """Server-sent events for ``pattern``; resumes from ``Last-Event-ID``."""
        user = await verifier_of(http).authenticate(bearer_token(http, query=True))
        acl.check_subscribe(user, pattern)
        resume = parse_cursor(pattern, last_event_id)
        for topic in resume:
            acl.check_read(user, topic)
        subscription = await client.subscribe(
            pattern,
            group=group,
            resume=resume or None,
            max_pending=settings.pubsub_send_buffer,
        )
        return StreamingResponse(
            _events(subscription, pattern, resume, user, acl, settings),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    @app.websocket("/ws")
    async def websocket(
        ws: WebSocket,
        access_token: Annotated[str | None, Query()] = None,
    ) -> None:
        signed_in = await sign_in_websocket(ws)
        if signed_in is None:
            return
        user, token = signed_in
        await ws.accept()
        await Connection(ws, client, verifier_of(ws), acl, user, token, settings).run()

    return app


async def _events(
    subscription: Subscription,
    pattern: str,
    resume: dict[str, int],
    user: Principal,
    acl: Acl,
    settings: Settings,
) -> AsyncIterator[str]:
    cursor: OrderedDict[str, int] = OrderedDict(resume)
    next_message = asyncio.ensure_future(anext(subscription))
    try:
        yield "retry: 1000\n\n"
        while True:
            done, _ = await asyncio.wait([next_message], timeout=settings.pubsub_keepalive_s)
            if not done:
                yield ": keepalive\n\n"
                continue
            try:
                message = next_message.result()
            except SlowConsumer:
                error = {"code": "slow_consumer", "message": "reconnect to resume"}
                yield f"event: error\ndata: {orjson.dumps(error).decode()}\n\n"
                return
            except StopAsyncIteration:
                return
            next_message = asyncio.ensure_future(anext(subscription))
            if not acl.may_read(user, message.topic):
                continue
            lines = []
            if message.seq:
                cursor[message.topic] = message.seq
                cursor.move_to_end(message.topic)
                while len(cursor) > SSE_CURSOR_TOPICS:
                    cursor.popitem(last=False)
                lines.append(f"id: {format_cursor(pattern, cursor)}\n")
            yield "".join([*lines, "event: message\n", f"data: {message_json(message)}\n\n"])
    finally:
        next_message.cancel()
        await subscription.close()


@serve.deployment
@serve.ingress()
class PubSubIngress(ClientIngress):
    make_client = PubSubClient
    make_app = staticmethod(make_app)
    requires_user = True


def build(settings: Settings) -> Application:
    return ingress_application(PubSubIngress, settings, streams=True)
