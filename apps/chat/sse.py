"""A room over Server-Sent Events (``GET /chat/rooms/{room}/sse``), for read-only clients.

EventSource-compatible. Each event's ``data`` is one JSON message of the
WebSocket protocol (``type`` ``event``, ``presence``, ``presence_diff``,
``typing``, ``receipt``, ``room_deleted``, ``left``). A numbered room event
carries an ``id`` of ``<epoch>:<seq>``: a reconnecting EventSource sends it
back as ``Last-Event-ID`` and the stream resumes after it with no gap and no
duplicate (or, if history no longer reaches back that far or the room was
made again, says so in its first message, ``joined``, with ``recovered:
false``). ``?after_seq=&epoch=`` does the same for a first connection. The
stream opens with a ``retry`` hint, carries a ``: keepalive`` comment every
``REALM_CHAT_KEEPALIVE_S``, and ends with an event ``error``
(``{"code", "message"}``) when the client fell too far behind
(``slow_consumer``: reconnect and resume) or its session ended
(``unauthorized``). An SSE client reads; it is not present in the room.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Path, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from actors.auth.client import Principal
from actors.chat.client import ChatClient, Post, Watch
from actors.chat.settings import EVENT_OVERHEAD_BYTES, ChatSettings
from actors.runtime.errors import InvalidInput
from apps.chat.frames import users
from apps.signin import StreamUser, until_signed_out, verifier_of
from apps.streams import SLOW, error_event, retry_hint, sse_event, sse_response

LAST_EVENT_ID = re.compile(r"^([0-9a-f]{1,64}):([0-9]{1,18})$")


def parse_last_event_id(value: str | None) -> tuple[int, str] | None:
    """``<epoch>:<seq>`` as ``(seq, epoch)``; None for no value."""
    if not value:
        return None
    found = LAST_EVENT_ID.match(value)
    if found is None:
        raise InvalidInput(
            "Last-Event-ID is not an id this stream gave out", last_event_id=value[:100]
        )
    return int(found.group(2)), found.group(1)


class Stream:
    """One SSE client of one room: a buffer of (id, line) filled by its watch, bounded
    in count and bytes as a WebSocket's is."""

    def __init__(self, config: ChatSettings, epoch: str) -> None:
        self.max_lines, self.max_bytes = config.send_buffer, config.send_buffer_bytes
        self.epoch = epoch
        self.lines: deque[tuple[str | None, str]] = deque()
        self.bytes = 0
        self.ready = asyncio.Event()
        self.over = False  #: the client fell too far behind
        self.ended: str | None = None

    def put(self, event_id: str | None, line: str) -> None:
        size = len(line) + EVENT_OVERHEAD_BYTES
        if self.lines and (len(self.lines) >= self.max_lines or self.bytes + size > self.max_bytes):
            self.over = True
        else:
            self.lines.append((event_id, line))
            self.bytes += size
        self.ready.set()

    def sink(self, post: Post, text: str) -> None:
        if not self.over:
            self.put(f"{self.epoch}:{post.event.seq}" if post.event is not None else None, text)

    def end(self, watch: Watch, reason: str) -> None:
        self.ended = reason
        self.put(
            None, orjson.dumps({"type": "left", "room": watch.room, "reason": reason}).decode()
        )

    async def next(self) -> tuple[str | None, str] | None:
        """The next (id, line), or None once the client is too far behind."""
        while not self.lines and not self.over:
            self.ready.clear()
            await self.ready.wait()
        if self.over:
            return None
        event_id, line = self.lines.popleft()
        self.bytes -= len(line) + EVENT_OVERHEAD_BYTES
        return event_id, line


def router(client: ChatClient, config: ChatSettings) -> APIRouter:
    routes = APIRouter()

    @routes.get(
        "/rooms/{room}/sse",
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}}, 401: {}, 403: {}, 404: {}, 422: {}},
    )
    async def sse(
        http: Request,
        user: StreamUser,
        room: Annotated[str, Path(max_length=40)],
        after_seq: Annotated[int | None, Query(ge=0)] = None,
        epoch: Annotated[str | None, Query(max_length=64)] = None,
        last_event_id: Annotated[str | None, Header(max_length=200)] = None,
    ) -> EventSourceResponse:
        """The room's events (and presence and typing) as Server-Sent Events; resumes from
        ``Last-Event-ID`` (or ``after_seq`` and ``epoch``)."""
        user.require("chat:read")
        resume = parse_last_event_id(last_event_id)
        if resume is None and after_seq is not None:
            if epoch is None:
                raise InvalidInput("after_seq needs the room's epoch too")
            resume = (after_seq, epoch)
        stream: Stream | None = None

        def sink(post: Post, text: str) -> None:
            assert stream is not None
            stream.sink(post, text)

        def on_end(watch: Watch, reason: str) -> None:
            assert stream is not None
            stream.end(watch, reason)

        watch, answer = await client.open(
            room, user.user_id, user.username, sink=sink, on_end=on_end, present=False, join=False
        )
        stream = Stream(config, answer["room"]["epoch"])
        try:
            caught = await client.missed(watch, answer["visible_seq"], resume)
        except BaseException:
            await client.close_watch(watch)
            raise
        joined = {
            "type": "joined",
            "room": answer["room"],
            "last_seq": answer["visible_seq"],
            "epoch": answer["room"]["epoch"],
            "presence": users(answer["presence"]["users"]),
            "recovered": caught.recovered,
            "missed": len(caught.history),
        }
        stream.put(None, orjson.dumps(joined).decode())
        watch.begin(caught.start, caught.history)
        return sse_response(events(stream, watch, client, user, http, config), config.keepalive_s)

    return routes


async def events(
    stream: Stream,
    watch: Watch,
    client: ChatClient,
    user: Principal,
    http: Request,
    config: ChatSettings,
) -> AsyncIterator[ServerSentEvent | bytes]:
    signed_out = asyncio.create_task(until_signed_out(verifier_of(http), user, config.keepalive_s))
    try:
        yield retry_hint()
        while True:
            waiting = asyncio.ensure_future(stream.next())
            await asyncio.wait([waiting, signed_out], return_when=asyncio.FIRST_COMPLETED)
            if signed_out.done():
                waiting.cancel()
                yield error_event("unauthorized", "the session ended")
                return
            item = waiting.result()
            if item is None:
                yield error_event("slow_consumer", SLOW)
                return
            event_id, line = item
            yield sse_event(event_id, line)
            if stream.ended is not None and not stream.lines:
                return
    finally:
        signed_out.cancel()
        await client.close_watch(watch)
