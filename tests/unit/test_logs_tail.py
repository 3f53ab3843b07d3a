"""The live tail on the shared stream skeleton (apps/logs/tail.py over apps/streams.py),
without Ray: a fake logs client, a fake socket, a fake clock for the polls.

Frames, resume from a cursor without gap or duplicate, flow control (a client that
does not read holds the tail back instead of filling memory), the close codes
(4400 bad cursor, 4401 session ended, 1011 a failing shard), and the SSE stream
ending when the session does, while idle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from sse_starlette import ServerSentEvent

from actors.auth.client import Principal
from actors.logs.client import format_cursor, parse_cursor
from actors.logs.logql import LogQuery, parse_log
from actors.logs.settings import LogsSettings
from actors.runtime.clock import FakeClock
from actors.runtime.settings import Settings
from apps import streams
from apps.logs import make_app
from apps.logs.tail import TailConnection, events
from apps.streams import (
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    CLOSE_UNAUTHORIZED,
    until_signed_out_events,
)
from tests.unit.conftest import cancel, settle
from tests.unit.test_streams import FakeSocket, FakeVerifier

QUERY = '{app="x"}'


class FakeLogs:
    """One shard of numbered lines; ``tail_next`` answers as ``LogsClient`` does."""

    def __init__(self, batch: int = 1_000) -> None:
        self.lines: list[str] = []
        self.batch = batch
        self.polls = 0
        self.fail = False

    def push(self, *lines: str) -> None:
        self.lines.extend(lines)

    async def tail_start(self) -> str:
        return format_cursor([len(self.lines)])

    async def tail_next(
        self, tenant: str, query: LogQuery, cursor: str
    ) -> tuple[list[tuple[dict[str, str], int, str, dict[str, str], str]], str]:
        self.polls += 1
        if self.fail:
            raise ConnectionError("a shard is away")
        (after,) = parse_cursor(cursor, 1)
        taken = self.lines[after : after + self.batch]
        found = [
            ({"app": "x"}, 1_000 + n, line, {}, format_cursor([n]))
            for n, line in enumerate(taken, start=after + 1)
        ]
        return found, format_cursor([after + len(taken)])


def config(**values: Any) -> LogsSettings:
    return LogsSettings(**{"tail_poll_s": 1.0, "keepalive_s": 0.01, **values})


async def tail(
    logs: FakeLogs, *, cursor: str | None = None, blocked: bool = False, **values: Any
) -> tuple[FakeSocket, FakeVerifier, FakeClock, asyncio.Task[None]]:
    ws = FakeSocket(blocked=blocked)
    await ws.accept()
    verifier, clock = FakeVerifier(), FakeClock()
    user = Principal("ada", "ada", ("user",), "s1")
    connection = TailConnection(
        ws,
        logs,  # type: ignore[arg-type]
        config(**values),
        verifier=verifier,  # type: ignore[arg-type]
        user=user,
        clock=clock,
    )
    running = asyncio.ensure_future(connection.serve(None, QUERY, cursor))
    await settle()
    return ws, verifier, clock, running


def frames(ws: FakeSocket) -> list[dict[str, Any]]:
    """Every frame as one JSON message (a frame never carries two)."""
    return [orjson.loads(frame) for frame in ws.sent]


def lines(ws: FakeSocket) -> list[str]:
    return [e["line"] for f in frames(ws) if f["type"] == "entries" for e in f["entries"]]


async def test_ready_then_entries_then_resume_from_a_cursor_without_gap_or_duplicate() -> None:
    logs = FakeLogs()
    logs.push("old")  # before the tail: not sent
    ws, _, clock, running = await tail(logs)
    ready = frames(ws)[0]
    assert ready == {"type": "ready", "cursor": "c1-1"}
    logs.push("a", "b", "c")
    clock.advance(1.0)
    await settle()
    assert lines(ws) == ["a", "b", "c"]
    entries = frames(ws)[1]
    assert entries["cursor"] == "c1-4"
    assert [e["cursor"] for e in entries["entries"]] == ["c1-2", "c1-3", "c1-4"]
    await ws.client.put('{"type": "ping"}')
    await ws.client.put('{"type": "nope"}')  # an error frame; the tail goes on
    await settle()
    assert frames(ws)[-2] == {"type": "pong"}
    assert frames(ws)[-1]["type"] == "error"
    assert frames(ws)[-1]["error"]["code"] == "invalid_input"
    await cancel(running)

    logs.push("d")
    again, _, _, resumed = await tail(logs, cursor=entries["entries"][0]["cursor"])
    assert frames(again)[0] == {"type": "ready", "cursor": "c1-2"}
    assert lines(again) == ["b", "c", "d"]  # right after the cursor: no gap, no duplicate
    await cancel(resumed)


async def test_a_client_that_does_not_read_holds_the_tail_back() -> None:
    logs = FakeLogs(batch=100)
    logs.push(*(f"{n:04d} " + "x" * 1_000 for n in range(100)))
    ws, _, _, running = await tail(logs, cursor="c1-0", blocked=True, tail_send_buffer_bytes=4_096)
    polls = logs.polls
    await settle()
    assert ws.sent == []  # nothing read by the client...
    assert logs.polls == polls  # ...so no more polls, and one piece at most waits
    ws.unblocked.set()
    for _ in range(1_000):  # a few loop turns per piece
        if len(lines(ws)) == 100:
            break
        await asyncio.sleep(0)
    got = lines(ws)
    assert len(got) == 100 and got == sorted(got)
    assert all(len(f["entries"]) <= 4 for f in frames(ws) if f["type"] == "entries")
    assert ws.closed is None  # never a slow consumer for its own entries
    await cancel(running)


async def test_a_bad_cursor_is_an_error_frame_then_4400() -> None:
    logs = FakeLogs()
    ws, _, _, running = await tail(logs, cursor="c1-zz")
    await asyncio.wait_for(running, 1)
    (error,) = frames(ws)
    assert error["type"] == "error" and error["error"]["code"] == "invalid_input"
    assert ws.closed is not None and ws.closed[0] == CLOSE_BAD_REQUEST


async def test_the_session_ending_closes_4401_and_a_failing_shard_1011() -> None:
    logs = FakeLogs()
    ws, verifier, _, running = await tail(logs)
    verifier.signed_out = True
    await asyncio.wait_for(running, 5)
    assert ws.closed == (CLOSE_UNAUTHORIZED, "the session ended")

    failing, _, clock, running = await tail(logs)
    logs.fail = True
    clock.advance(1.0)
    await asyncio.wait_for(running, 1)
    assert failing.closed is not None and failing.closed[0] == CLOSE_INTERNAL


async def test_sse_sends_ready_and_entries_with_their_cursors_as_ids() -> None:
    logs = FakeLogs()
    logs.push("a", "b")
    clock = FakeClock()
    stream = events(logs, config(), "ada", parse_log(QUERY), "c1-0", clock)  # type: ignore[arg-type]
    assert isinstance(await anext(stream), ServerSentEvent)  # the retry hint
    assert await anext(stream) == b'id: c1-0\nevent: ready\ndata: {"cursor":"c1-0"}\n\n'
    chunk = await anext(stream)
    assert isinstance(chunk, bytes)
    assert chunk.count(b"event: entry\n") == 2
    assert chunk.startswith(b"id: c1-1\n") and b"id: c1-2\n" in chunk
    await stream.aclose()


async def test_an_idle_sse_stream_ends_when_the_session_does() -> None:
    started = asyncio.Event()

    async def idle() -> AsyncIterator[bytes]:
        started.set()
        await asyncio.Event().wait()  # nothing new, ever
        yield b""

    session = asyncio.Event()
    stream = until_signed_out_events(idle(), session.wait)
    waiting = asyncio.ensure_future(anext(stream))
    await started.wait()
    session.set()
    last = await asyncio.wait_for(waiting, 1)
    assert isinstance(last, ServerSentEvent) and last.event == "error"
    assert orjson.loads(str(last.data))["code"] == "unauthorized"


async def test_an_sse_stream_closed_by_its_client_while_waiting_closes_what_it_reads() -> None:
    closed = asyncio.Event()
    started = asyncio.Event()

    async def idle() -> AsyncIterator[bytes]:
        try:
            started.set()
            await asyncio.Event().wait()
            yield b""
        finally:
            closed.set()

    never = asyncio.Event()
    stream = until_signed_out_events(idle(), never.wait)
    waiting = asyncio.ensure_future(anext(stream))
    await started.wait()
    waiting.cancel()  # what the server does when the client goes away
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await stream.aclose()
    assert closed.is_set()


class AsgiSocket:
    """A WebSocket client of an ASGI app, in the test's own loop."""

    def __init__(self, app: Any, path: str, query: dict[str, str]) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "query_string": urlencode(query).encode(),
            "headers": [(b"host", b"test")],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 80),
            "subprotocols": [],
        }
        self.incoming.put_nowait({"type": "websocket.connect"})
        self.task = asyncio.ensure_future(app(scope, self.incoming.get, self.sent.put))

    async def next(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.sent.get(), 5)

    async def close(self) -> None:
        await self.incoming.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 5)


async def test_the_websocket_route_signs_in_checks_the_scope_and_tails(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The route itself: the shared handshake (sign-in stood in for; a key without
    ``logs:read`` is closed 4403), then the tail."""
    caller = [Principal("ada", "ada", ("user",), "s1")]

    async def signed_in(ws: Any) -> tuple[Principal, str]:
        return caller[0], "token"

    monkeypatch.setattr(streams, "sign_in_websocket", signed_in)
    logs = FakeLogs()
    settings = make_settings(sections={"logs": config(tail_poll_s=0.01, keepalive_s=60)})
    app = make_app(logs, settings)  # type: ignore[arg-type]
    app.state.session_verifier = FakeVerifier()
    ws = AsgiSocket(app, "/tail/ws", {"query": QUERY})
    assert (await ws.next())["type"] == "websocket.accept"
    assert orjson.loads((await ws.next())["text"]) == {"type": "ready", "cursor": "c1-0"}
    logs.push("a")
    frame = orjson.loads((await ws.next())["text"])
    assert frame["type"] == "entries" and frame["entries"][0]["line"] == "a"
    await ws.close()

    caller[0] = Principal("ada", "ada", ("user",), "s1", scopes=frozenset({"logs:push"}))
    refused = AsgiSocket(app, "/tail/ws", {"query": QUERY})
    assert (await refused.next())["type"] == "websocket.accept"
    closing = await refused.next()
    assert closing["type"] == "websocket.close" and closing["code"] == CLOSE_FORBIDDEN
    await asyncio.wait_for(refused.task, 5)
