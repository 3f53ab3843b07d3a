"""The shared connection skeleton (apps/streams.py): the outbox's bounds and
frames, the run loop's endings and their close codes, the handshake, SSE framing."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter
from starlette.websockets import WebSocketDisconnect, WebSocketState

import apps.streams as streams
from actors.auth.client import Principal
from actors.runtime.clock import FakeClock
from actors.runtime.errors import Forbidden, InvalidInput, RealmError, Unauthorized, Unavailable
from apps.streams import (
    CLOSE_FORBIDDEN,
    CLOSE_HEARTBEAT,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHORIZED,
    MAX_FRAME_BYTES,
    SLOW,
    Outbox,
    StreamConnection,
    error_event,
    open_stream,
    parse_frame,
    sse_event,
)
from tests.unit.conftest import settle

# --- fakes ------------------------------------------------------------------------------


class FakeSocket:
    """A WebSocket whose client is the test: ``client`` holds what it sends (text, or
    an exception to raise in ``receive_text``); ``sent`` what the server sent."""

    def __init__(self, *, blocked: bool = False) -> None:
        self.client: asyncio.Queue[Any] = asyncio.Queue()
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.accepted = False
        self.application_state = WebSocketState.CONNECTING
        self.scope: dict[str, Any] = {"type": "websocket", "headers": []}
        self.unblocked = asyncio.Event()
        if not blocked:
            self.unblocked.set()

    async def accept(self) -> None:
        self.accepted = True
        self.application_state = WebSocketState.CONNECTED

    async def receive_text(self) -> str:
        item = await self.client.get()
        if isinstance(item, BaseException):
            raise item
        text: str = item
        return text

    async def send_text(self, text: str) -> None:
        await self.unblocked.wait()  # a client that does not read
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)
        self.application_state = WebSocketState.DISCONNECTED

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for frame in self.sent for line in frame.split("\n")]


class FakeVerifier:
    def __init__(self) -> None:
        self.signed_out = False
        self.checked: list[Any] = []

    async def recheck(self, signed_in: Any) -> None:
        self.checked.append(signed_in)
        if self.signed_out:
            raise Unauthorized("the session has ended")


class Echo(StreamConnection):
    """Answers each frame with ``{"echo": text}``; remembers being released."""

    def __init__(self, ws: FakeSocket, verifier: FakeVerifier, **options: Any) -> None:
        user = Principal("ada", "ada", ("user",), "s1")
        settings: dict[str, Any] = {
            "outbox": Outbox(100, 1 << 20),
            "keepalive_s": 0.01,
            "max_frame_chars": 100,
        } | options
        super().__init__(ws, verifier=verifier, user=user, signed_in="tok", **settings)  # type: ignore[arg-type]
        self.released = 0

    async def handle_text(self, text: str) -> None:
        self.send({"echo": text})

    async def release(self) -> None:
        self.released += 1


async def connected(**options: Any) -> tuple[FakeSocket, FakeVerifier, Echo]:
    ws = FakeSocket(blocked=options.pop("blocked", False))
    await ws.accept()
    verifier = FakeVerifier()
    return ws, verifier, Echo(ws, verifier, **options)


# --- the outbox -------------------------------------------------------------------------


def test_an_outbox_is_bounded_in_lines_and_in_bytes() -> None:
    by_count = Outbox(2, 1 << 20)
    assert [by_count.put("a") for _ in range(3)] == [True, True, False]
    assert len(by_count) == 2
    by_bytes = Outbox(100, 2_500)
    assert [by_bytes.put("x" * 1_000) for _ in range(3)] == [True, True, False]
    assert by_bytes.size == 2_000  # the refused line counted nothing
    huge = Outbox(10, 10)
    assert huge.put("y" * 1_000)  # one line always fits an empty outbox...
    assert not huge.put("z")  # ...and nothing after it


async def test_an_outbox_counts_its_own_measure_and_gives_room_back_once_sent() -> None:
    class Weighted(Outbox):
        @staticmethod
        def size_of(line: str) -> int:
            return len(line) + 100

    outbox = Weighted(100, 300)
    assert [outbox.put("ab") for _ in range(3)] == [True, True, False]
    assert outbox.size == 204
    assert await outbox.next_frame() == "ab\nab"
    assert outbox.size == 0 and len(outbox) == 0
    assert outbox.put("ab")


async def test_a_frame_joins_queued_lines_up_to_its_size() -> None:
    third = "w" * (MAX_FRAME_BYTES // 3)
    under = Outbox(100, 1 << 30)
    for _ in range(3):
        under.put(third)
    assert (await under.next_frame()).count("\n") == 1  # a third line would pass the size

    class Filling(Outbox):
        fill_frames = True

    half = "x" * (MAX_FRAME_BYTES // 2)
    filling = Filling(100, 1 << 30)
    for _ in range(5):
        filling.put(half)
    sizes = [len((await filling.next_frame()).split("\n")) for _ in range(3)]
    assert sizes == [2, 2, 1]  # takes lines while under the size


async def test_next_frame_waits_for_a_line() -> None:
    outbox = Outbox(10, 1_000)
    waiting = asyncio.ensure_future(outbox.next_frame())
    await settle()
    assert not waiting.done()
    outbox.put("late")
    assert await waiting == "late"


# --- the run loop -----------------------------------------------------------------------


async def test_frames_are_handled_and_answers_written_until_the_client_goes() -> None:
    ws, _, connection = await connected()
    running = asyncio.ensure_future(connection.run())
    await ws.client.put("hello")
    await settle()
    assert ws.lines() == [{"echo": "hello"}]
    await ws.client.put(WebSocketDisconnect(1000))
    await asyncio.wait_for(running, 1)
    assert connection.released == 1
    assert ws.closed == (1000, "")


async def test_a_client_behind_its_outbox_is_closed_as_a_slow_consumer() -> None:
    ws, _, connection = await connected(blocked=True, outbox=Outbox(3, 1 << 20))
    running = asyncio.ensure_future(connection.run())
    for n in range(6):
        await ws.client.put(f"m{n}")
    await asyncio.wait_for(running, 1)
    assert ws.closed == (CLOSE_SLOW_CONSUMER, SLOW)
    assert connection.released == 1


async def test_a_frame_over_the_limit_closes_1009_and_a_binary_one_gets_an_error() -> None:
    ws, _, connection = await connected(max_frame_chars=10)
    running = asyncio.ensure_future(connection.run())
    await ws.client.put(KeyError("text"))  # what starlette raises for a binary frame
    await ws.client.put("0123456789")  # at the limit: handled
    await settle()
    [error, echo] = ws.lines()
    assert error["type"] == "error" and error["ref"] is None
    assert error["error"]["code"] == "invalid_input"
    assert echo == {"echo": "0123456789"}
    await ws.client.put("0123456789!")
    await asyncio.wait_for(running, 1)
    assert ws.closed is not None and ws.closed[0] == CLOSE_TOO_BIG
    assert "10 bytes" in ws.closed[1]


async def test_a_session_that_ends_closes_4401() -> None:
    ws, verifier, connection = await connected()
    running = asyncio.ensure_future(connection.run())
    await asyncio.sleep(0.03)
    assert not running.done() and verifier.checked[0] == "tok"  # the credential it was given
    verifier.signed_out = True
    await asyncio.wait_for(running, 1)
    assert ws.closed == (CLOSE_UNAUTHORIZED, "the session ended")


async def test_a_silent_client_is_closed_4408_and_any_frame_is_a_heartbeat(
    clock: FakeClock,
) -> None:
    ws, _, connection = await connected(heartbeat_timeout_s=5.0, clock=clock)
    connection.heartbeat_reason = "ping"
    running = asyncio.ensure_future(connection.run())
    for _ in range(4):
        clock.advance(1.0)
        await settle()
    await ws.client.put("still here")
    await settle()
    for _ in range(5):
        clock.advance(1.0)
        await settle()
    assert not running.done()  # heard 5 s ago: not over the timeout yet
    clock.advance(1.0)
    await asyncio.wait_for(running, 1)
    assert ws.closed == (CLOSE_HEARTBEAT, "ping")


async def test_the_first_ending_wins_and_a_closed_socket_is_not_closed_again() -> None:
    ws, _, connection = await connected()
    connection.end(4001, "first")
    connection.end(4002, "second")
    await asyncio.wait_for(connection.run(), 1)
    assert ws.closed == (4001, "first") and connection.released == 1
    again = FakeSocket()  # never accepted: nothing to close
    _, _, other = await connected()
    other.ws = again  # type: ignore[assignment]
    other.end(4001, "x")
    await asyncio.wait_for(other.run(), 1)
    assert again.closed is None and other.released == 1


async def test_an_error_frame_shows_no_detail_of_a_fault() -> None:
    _, _, connection = await connected()
    connection.send_error("r1", Unavailable("shard 7 at 10.0.0.3 is down", host="10.0.0.3"))
    connection.send_error("r2", Forbidden("no", scope="svc:act"))
    fault, refusal = [orjson.loads(line) for line in connection.outbox.lines]
    assert fault["ref"] == "r1" and fault["error"]["code"] == "unavailable"
    assert "10.0.0.3" not in orjson.dumps(fault).decode()
    assert refusal["error"] == Forbidden("no", scope="svc:act").to_dict()
    assert isinstance(RealmError().to_dict()["message"], str)


# --- client frames ----------------------------------------------------------------------


def test_a_frame_that_is_not_valid_names_each_problem() -> None:
    frames = TypeAdapter(dict[str, int])
    assert parse_frame(frames, '{"a": 1}') == {"a": 1}
    with pytest.raises(InvalidInput) as refused:
        parse_frame(frames, '{"a": "x", "b": 2}')
    [problem] = refused.value.details["problems"]
    assert problem["where"] == "a"


# --- the handshake ----------------------------------------------------------------------


async def test_open_stream_accepts_a_user_and_closes_4403_without_the_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = Principal("ada", "ada", ("api_key",), "k1", scopes=frozenset({"svc:read"}))

    async def signed_in(ws: Any) -> tuple[Principal, str]:
        return key, "cred"

    monkeypatch.setattr(streams, "sign_in_websocket", signed_in)
    allowed = FakeSocket()
    assert await open_stream(allowed, "svc:read") == (key, "cred")  # type: ignore[arg-type]
    assert allowed.accepted and allowed.closed is None
    refused = FakeSocket()
    assert await open_stream(refused, "svc:write") is None  # type: ignore[arg-type]
    assert refused.closed is not None and refused.closed[0] == CLOSE_FORBIDDEN
    assert "svc:write" in refused.closed[1]

    async def denied(ws: Any) -> None:
        return None

    monkeypatch.setattr(streams, "sign_in_websocket", denied)
    stranger = FakeSocket()
    assert await open_stream(stranger, "svc:read") is None  # type: ignore[arg-type]
    assert not stranger.accepted


# --- Server-Sent Events -------------------------------------------------------------------


def test_sse_events_are_framed_as_eventsource_reads_them() -> None:
    assert sse_event("7", '{"a":1}', "message") == b'id: 7\nevent: message\ndata: {"a":1}\n\n'
    assert sse_event(None, "{}") == b"data: {}\n\n"
    ending = error_event("slow_consumer", "reconnect").encode()
    assert ending.startswith(b"event: error\n")
    assert b'"code":"slow_consumer"' in ending
