"""Live tail over Server-Sent Events (``GET /logs/tail/sse``) and WebSocket (``/logs/tail/ws``).

Both take ``query`` (a log query: selector, line filters, parsers, label
filters) and optionally ``cursor``; without one the tail starts at the newest
entry. Every entry carries a cursor: reconnecting with the last one seen
resumes right after it, with no gap and no duplicate, for as long as the
entries are within retention (and not deleted). A cursor counts entries per
shard, so it stays valid across restarts of the shards and of the replicas.

SSE: an event ``ready`` (``{"cursor"}``) once the tail is in place, then an event
``entry`` per entry, whose ``id`` is its cursor (an EventSource
sends it back as ``Last-Event-ID`` when it reconnects), and whose ``data`` is
``{"stream": {...}, "ts": "<ns>", "line": ..., "metadata": {...}, "cursor": ...}``;
a ``: keepalive`` comment every ``REALM_LOGS_KEEPALIVE_S``; an event ``error``
(``{"code", "message"}``) ends the stream when the session ends (``unauthorized``).

WebSocket: the server sends ``{"type": "ready", "cursor": ...}`` once the tail is in
place (whatever is pushed after it arrives), then ``{"type": "entries", "entries":
[<as above>], "cursor": ...}`` frames (``cursor``: where to resume once all of them
are seen), one JSON message a frame, and answers a client's ``{"type": "ping"}``
with ``{"type": "pong"}`` (any other frame gets an ``error`` frame). Close codes:
4400 a bad query or cursor (sent as an ``error`` frame first), 4401 the session
ended, 4403 an API key without ``logs:read``, 4008 a client that sent frames
without reading the answers, 1009 a client frame over 4 KiB, 1011 an internal
failure (reconnect with the cursor).

Entries are read only as fast as the client takes them: a tail holds at most
one poll's entries (``REALM_LOGS_TAIL_BATCH`` per shard, sent in pieces of
``REALM_LOGS_TAIL_SEND_BUFFER_BYTES``) in memory, and polls the shards again
only once what it sent has gone out. The connection itself (sign-in, the
bounded send buffer, the session re-check, close codes) is the shared one of
``apps/streams.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Query, Request, WebSocket
from pydantic import BaseModel, ConfigDict, TypeAdapter
from sse_starlette import EventSourceResponse

from actors.auth.client import Principal, SessionVerifier
from actors.logs.client import LogsClient
from actors.logs.logql import MAX_QUERY_CHARS, LogQuery, parse_log
from actors.logs.settings import LogsSettings
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import InvalidInput, RealmError
from apps import streams
from apps.logs.routes import tenant_of
from apps.signin import StreamUser, until_signed_out, verifier_of
from apps.streams import (
    CLOSE_BAD_REQUEST,
    CLOSE_INTERNAL,
    StreamConnection,
    open_stream,
    retry_hint,
    sse_event,
    sse_response,
    until_signed_out_events,
)

log = logging.getLogger(__name__)

MAX_CURSOR_CHARS = 4_096
#: A client frame (a ping) is small; a longer one closes the connection (1009).
MAX_CLIENT_FRAME_CHARS = 4_096
#: Frames a client may leave unread (answers to its pings, errors) before it is
#: closed as a slow consumer; entries never wait there (see ``TailConnection``).
MAX_QUEUED_FRAMES = 64
#: What an entry counts against the send buffer beyond its line.
ENTRY_OVERHEAD_BYTES = 200

Entry = dict[str, Any]


def entry_json(
    labels: dict[str, str], ts: int, line: str, metadata: dict[str, str], cursor: str
) -> Entry:
    return {"stream": labels, "ts": str(ts), "line": line, "metadata": metadata, "cursor": cursor}


async def batches(
    client: LogsClient,
    config: LogsSettings,
    tenant: str,
    query: LogQuery,
    cursor: str,
    clock: Clock,
) -> AsyncIterator[tuple[list[Entry], str]]:
    """Entries as they come after ``cursor``, in batches no larger than the send buffer,
    and the cursor after each batch; polls every ``tail_poll_s`` while there is nothing
    new. The next poll waits until the caller asks for the next batch."""
    position = cursor
    while True:
        found, after = await client.tail_next(tenant, query, position)
        if not found:
            position = after
            await clock.sleep(config.tail_poll_s)
            continue
        batch: list[Entry] = []
        size = 0
        for labels, ts, line, metadata, entry_cursor in found:
            batch.append(entry_json(labels, ts, line, metadata, entry_cursor))
            size += len(line) + ENTRY_OVERHEAD_BYTES
            if size >= config.tail_send_buffer_bytes:
                yield batch, entry_cursor
                batch, size = [], 0
        position = after
        if batch:
            yield batch, after


async def start(
    client: LogsClient, user: Principal, tenant: str | None, text: str, cursor: str | None
) -> tuple[str, LogQuery, str]:
    """Check a tail's request: its tenant, parsed query and starting cursor (a given
    cursor is tried once, so a bad one is refused before anything is streamed)."""
    user.require("logs:read")
    who = tenant_of(user, tenant)
    if not text or len(text) > MAX_QUERY_CHARS:
        raise InvalidInput(f"query is required, at most {MAX_QUERY_CHARS} characters")
    if cursor is not None and len(cursor) > MAX_CURSOR_CHARS:
        raise InvalidInput(f"cursor is at most {MAX_CURSOR_CHARS} characters")
    query = parse_log(text)
    if cursor:
        await client.tail_next(who, query, cursor)
    else:
        cursor = await client.tail_start()
    return who, query, cursor


# --- WebSocket ----------------------------------------------------------------------------


class PingFrame(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["ping"]


FRAME: TypeAdapter[PingFrame] = TypeAdapter(PingFrame)


class TailOutbox(streams.Outbox):
    """A tail's send buffer: one JSON message a frame (a client reads each frame as
    one message)."""

    one_line_per_frame = True


class TailConnection(StreamConnection):
    """One WebSocket tail: a pump reads the shards and queues an ``entries`` frame
    only once the previous one has gone out, so the buffer holds one batch at most
    (plus small answers to the client's pings)."""

    where = "logs tail WebSocket"

    def __init__(
        self,
        websocket: WebSocket,
        client: LogsClient,
        config: LogsSettings,
        *,
        verifier: SessionVerifier,
        user: Principal,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            websocket,
            verifier=verifier,
            user=user,
            signed_in=user,
            outbox=TailOutbox(MAX_QUEUED_FRAMES, config.tail_send_buffer_bytes),
            keepalive_s=config.keepalive_s,
            max_frame_chars=MAX_CLIENT_FRAME_CHARS,
            clock=clock,
        )
        self.client, self.config = client, config
        self.pump: asyncio.Task[None] | None = None  #: reads the shards, once started

    async def serve(self, tenant: str | None, text: str, cursor: str | None) -> None:
        """Check the request (an ``error`` frame and close 4400 if it is bad), then
        tail until the connection ends."""
        try:
            who, query, cursor = await start(self.client, self.user, tenant, text, cursor)
        except RealmError as error:
            self.send_error(None, error)
            with contextlib.suppress(Exception):  # a client already gone
                await self.ws.send_text(await self.outbox.next_frame())
                await self.ws.close(CLOSE_BAD_REQUEST, error.code)
            return
        self.send({"type": "ready", "cursor": cursor})
        self.pump = asyncio.create_task(self._pump(who, query, cursor))
        await self.run()

    async def _pump(self, tenant: str, query: LogQuery, cursor: str) -> None:
        try:
            async for batch, after in batches(
                self.client, self.config, tenant, query, cursor, self.clock
            ):
                await self.outbox.drained()
                self.send({"type": "entries", "entries": batch, "cursor": after})
        except Exception:
            log.exception("a log tail failed; closing its connection")
            self.end(CLOSE_INTERNAL, "internal error: reconnect with your cursor")

    async def handle_text(self, text: str) -> None:
        try:
            streams.parse_frame(FRAME, text)
        except RealmError as error:
            self.send_error(None, error)
            return
        self.send({"type": "pong"})

    async def release(self) -> None:
        if self.pump is not None:
            self.pump.cancel()


# --- the routes ---------------------------------------------------------------------------


def router(client: LogsClient, config: LogsSettings) -> APIRouter:
    routes = APIRouter()

    @routes.get(
        "/tail/sse",
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def sse(
        http: Request,
        user: StreamUser,
        query: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)],
        cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
        tenant: Annotated[str | None, Query(max_length=64)] = None,
        last_event_id: Annotated[str | None, Header(max_length=MAX_CURSOR_CHARS)] = None,
    ) -> EventSourceResponse:
        """Server-sent events of new entries; resumes from ``cursor`` or ``Last-Event-ID``."""
        who, parsed, start_at = await start(client, user, tenant, query, last_event_id or cursor)
        signed_out = functools.partial(
            until_signed_out, verifier_of(http), user, config.keepalive_s
        )
        return sse_response(
            until_signed_out_events(
                events(client, config, who, parsed, start_at, SystemClock()), signed_out
            ),
            config.keepalive_s,
        )

    @routes.websocket("/tail/ws")
    async def websocket(ws: WebSocket) -> None:
        signed_in = await open_stream(ws, "logs:read")
        if signed_in is None:
            return
        user, _ = signed_in
        connection = TailConnection(ws, client, config, verifier=verifier_of(ws), user=user)
        params = ws.query_params
        await connection.serve(
            params.get("tenant"), params.get("query", ""), params.get("cursor") or None
        )

    return routes


async def events(
    client: LogsClient,
    config: LogsSettings,
    tenant: str,
    query: LogQuery,
    cursor: str,
    clock: Clock,
) -> AsyncIterator[Any]:
    """The SSE stream: the retry hint, ``ready``, then each batch's ``entry`` events
    as one chunk."""
    yield retry_hint()
    yield sse_event(cursor, orjson.dumps({"cursor": cursor}).decode(), "ready")
    async for batch, _ in batches(client, config, tenant, query, cursor, clock):
        yield b"".join(
            sse_event(entry["cursor"], orjson.dumps(entry).decode(), "entry") for entry in batch
        )
