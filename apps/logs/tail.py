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
are seen), and answers a
client's ``{"type": "ping"}`` with ``{"type": "pong"}``. Close codes: 4401 the
session ended, 4400 a bad query or cursor (sent as an ``error`` frame first).

Entries are read only as fast as the client takes them: a tail holds at most
one poll's entries (``REALM_LOGS_TAIL_BATCH`` per shard, and
``REALM_LOGS_TAIL_SEND_BUFFER_BYTES``) in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, WebSocket, WebSocketDisconnect
from sse_starlette import EventSourceResponse, ServerSentEvent

from actors.auth.client import Principal
from actors.logs.client import LogsClient
from actors.logs.logql import MAX_QUERY_CHARS, LogQuery, parse_log
from actors.logs.settings import LogsSettings
from actors.runtime.errors import RealmError
from apps.logs.routes import tenant_of
from apps.signin import StreamUser, sign_in_websocket, until_signed_out, verifier_of

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_REQUEST = 4400
SEP = "\n"
RETRY_MS = 1_000
MAX_CURSOR_CHARS = 4_096


def entry_json(
    labels: dict[str, str], ts: int, line: str, metadata: dict[str, str], cursor: str
) -> dict[str, Any]:
    return {"stream": labels, "ts": str(ts), "line": line, "metadata": metadata, "cursor": cursor}


async def batches(
    client: LogsClient, config: LogsSettings, tenant: str, query: LogQuery, cursor: str | None
) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
    """Entries as they come, in batches no larger than the send buffer, and the cursor
    after each batch; polls every ``tail_poll_s`` while there is nothing new."""
    position = cursor or await client.tail_start()
    while True:
        found, after = await client.tail_next(tenant, query, position)
        if not found:
            position = after
            await asyncio.sleep(config.tail_poll_s)
            continue
        batch: list[dict[str, Any]] = []
        size = 0
        for labels, ts, line, metadata, entry_cursor in found:
            batch.append(entry_json(labels, ts, line, metadata, entry_cursor))
            size += len(line) + 200
            if size >= config.tail_send_buffer_bytes:
                yield batch, entry_cursor
                batch, size = [], 0
        position = after
        if batch:
            yield batch, after


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
        user.require("logs:read")
        who = tenant_of(user, tenant)
        parsed = parse_log(query)
        resume = last_event_id or cursor
        if resume:
            await client.tail_next(who, parsed, resume)  # a bad cursor is a 422 now
        signed_out = functools.partial(
            until_signed_out, verifier_of(http), user, config.keepalive_s
        )
        return EventSourceResponse(
            events(client, config, who, parsed, resume, signed_out),
            ping=config.keepalive_s,
            ping_message_factory=lambda: ServerSentEvent(comment="keepalive", sep=SEP),
            sep=SEP,
        )

    @routes.websocket("/tail/ws")
    async def websocket(ws: WebSocket) -> None:
        signed_in = await sign_in_websocket(ws)
        if signed_in is None:
            return
        user, _ = signed_in
        await ws.accept()
        await run_socket(ws, client, config, user)

    return routes


async def events(
    client: LogsClient,
    config: LogsSettings,
    tenant: str,
    query: LogQuery,
    cursor: str | None,
    signed_out: Callable[[], Coroutine[Any, Any, None]],
) -> AsyncIterator[ServerSentEvent | bytes]:
    yield ServerSentEvent(retry=RETRY_MS, sep=SEP)
    cursor = cursor or await client.tail_start()
    ready = orjson.dumps({"cursor": cursor}).decode()
    yield ServerSentEvent(ready, event="ready", id=cursor, sep=SEP)
    watcher = asyncio.create_task(signed_out())
    try:
        async for batch, _ in batches(client, config, tenant, query, cursor):
            if watcher.done():
                break
            for entry in batch:
                data = orjson.dumps(entry).decode()
                yield f"id: {entry['cursor']}{SEP}event: entry{SEP}data: {data}{SEP}{SEP}".encode()
        body = orjson.dumps({"code": "unauthorized", "message": "the session ended"}).decode()
        yield ServerSentEvent(body, event="error", sep=SEP)
    finally:
        watcher.cancel()


async def run_socket(
    ws: WebSocket, client: LogsClient, config: LogsSettings, user: Principal
) -> None:
    params = ws.query_params
    try:
        user.require("logs:read")
        who = tenant_of(user, params.get("tenant"))
        text = params.get("query", "")
        if not text or len(text) > MAX_QUERY_CHARS:
            raise RealmError.from_code("invalid_input", "query is required", {})
        query = parse_log(text)
        cursor = params.get("cursor") or None
        if cursor is not None:
            await client.tail_next(who, query, cursor)
        else:
            cursor = await client.tail_start()
    except RealmError as error:
        await ws.send_text(orjson.dumps({"type": "error", "error": error.to_dict()}).decode())
        await ws.close(CLOSE_BAD_REQUEST)
        return

    await ws.send_text(orjson.dumps({"type": "ready", "cursor": cursor}).decode())

    async def send_entries() -> None:
        async for batch, after in batches(client, config, who, query, cursor):
            await ws.send_text(
                orjson.dumps({"type": "entries", "entries": batch, "cursor": after}).decode()
            )

    async def receive() -> None:
        while True:
            text = await ws.receive_text()
            with contextlib.suppress(orjson.JSONDecodeError):
                if isinstance(frame := orjson.loads(text), dict) and frame.get("type") == "ping":
                    await ws.send_text('{"type":"pong"}')

    tasks = {
        asyncio.create_task(send_entries()): "entries",
        asyncio.create_task(receive()): "client",
        asyncio.create_task(until_signed_out(verifier_of(ws), user, config.keepalive_s)): "session",
    }
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    ended = next(iter(done))
    if tasks[ended] == "session":
        with contextlib.suppress(Exception):
            await ws.close(CLOSE_UNAUTHORIZED, "the session ended")
        return
    failure = ended.exception()
    if failure is not None and not isinstance(failure, WebSocketDisconnect | RuntimeError):
        log.warning("a log tail ended: %r", failure)
        with contextlib.suppress(Exception):
            await ws.close(1011, "internal error: reconnect with your cursor")
