"""The skeleton every long-lived client connection shares: WebSocket and SSE.

A service's WebSocket (``apps/<svc>/ws.py``) is a ``StreamConnection``
subclass that says what a client frame does (``handle_text``) and what to let
go when the connection ends (``release``); this module owns the rest:

- ``open_stream``: the handshake: sign-in (header or single-use ``?ticket=``,
  refused in the error envelope), accept, and a scope check (close 4403);
- ``Outbox``: what waits to be sent to one client, bounded in count and in
  bytes; a client that falls behind it is closed 4008 (slow consumer); a
  producer that should go only as fast as its client reads awaits ``drained``;
- ``FrameRate``: how fast a client may send (a token bucket), and when a client
  that keeps sending over it is flooding (the service closes it);
- ``StreamConnection.run``: read, write, watch the session (4401 once it ended,
  rechecked every ``keepalive_s``), watch the heartbeat (4408, if the service
  asks for one), until the first of them ends or ``end(code, reason)`` is
  called; then release, and close with that code;
- ``parse_frame``: a client frame read by the service's pydantic frames, or
  ``InvalidInput`` naming each problem;
- ``send_error``: the ``error`` frame, built by ``apps.errors.public_error``;
- the close codes, one set for every service.

For Server-Sent Events: the ``retry`` hint, the ``: keepalive`` comment, the
closing ``error`` event and an event framed by hand (``sse_event``),
``until_signed_out_events`` which ends a stream (with an ``unauthorized``
event) once its session ends, idle or not, and ``sse_response`` which sends the
keepalives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson
from fastapi import WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.websockets import WebSocketState

from actors.auth.client import Principal, SessionVerifier
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import InvalidInput, RealmError
from apps.errors import public_error, request_id_of
from apps.signin import sign_in_websocket, until_signed_out

# --- close codes ------------------------------------------------------------------

#: The client fell too far behind its outbox: reconnect and resume.
CLOSE_SLOW_CONSUMER = 4008
#: What the client asked for cannot be served (a bad query or cursor in the URL).
CLOSE_BAD_REQUEST = 4400
#: The session (or API key) the stream signed in with ended.
CLOSE_UNAUTHORIZED = 4401
#: The credential lacks the scope the stream needs.
CLOSE_FORBIDDEN = 4403
#: The client was silent longer than its heartbeat timeout.
CLOSE_HEARTBEAT = 4408
#: The client sent frames faster than it may.
CLOSE_TOO_MANY = 4429
#: A client frame over the size limit.
CLOSE_TOO_BIG = 1009
#: Something failed inside: reconnect and resume.
CLOSE_INTERNAL = 1011
#: How long a close frame may wait behind what a slow client has not read yet.
CLOSE_TIMEOUT_S = 30.0
#: The reason a slow consumer is closed with.
SLOW = "slow consumer: reconnect and resume from your last seq"

#: A server frame takes more queued lines while it is under this size.
MAX_FRAME_BYTES = 64 * 1024


# --- the send buffer -----------------------------------------------------------------


class Outbox:
    """Lines waiting to be sent to one client: at most ``max_lines`` of them and
    ``max_bytes`` (each line counts ``size_of(line)``); one line always fits when
    it is empty. ``next_frame`` joins what is queued into one frame, one line per
    line, up to ``MAX_FRAME_BYTES``: with ``fill_frames`` a frame takes lines
    while it is under that size (so may end one line over), without it only those
    that keep it under."""

    #: What one queued line counts against ``max_bytes``.
    size_of: Callable[[str], int] = staticmethod(len)
    fill_frames = False
    #: A frame carries one line only (a protocol whose client reads one JSON object
    #: a message).
    one_line_per_frame = False

    def __init__(self, max_lines: int, max_bytes: int) -> None:
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.lines: deque[str] = deque()
        self.size = 0
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()

    def put(self, line: str) -> bool:
        """Queue ``line``; False (and nothing queued) if it does not fit."""
        size = self.size_of(line)
        if self.lines and (len(self.lines) >= self.max_lines or self.size + size > self.max_bytes):
            return False
        self.lines.append(line)
        self.size += size
        self._ready.set()
        self._drained.clear()
        return True

    async def drained(self) -> None:
        """Wait until every queued line has been taken into a frame."""
        while self.lines:
            await self._drained.wait()

    async def next_frame(self) -> str:
        """Wait for a queued line; join those queued behind it into one frame."""
        while not self.lines:
            self._ready.clear()
            await self._ready.wait()
        taken = [self.lines.popleft()]
        length = len(taken[0])
        while (
            self.lines
            and not self.one_line_per_frame
            and (
                length < MAX_FRAME_BYTES
                if self.fill_frames
                else length + len(self.lines[0]) < MAX_FRAME_BYTES
            )
        ):
            taken.append(self.lines.popleft())
            length += len(taken[-1]) + 1
        self.size -= sum(self.size_of(line) for line in taken)
        if not self.lines:
            self._drained.set()
        return "\n".join(taken)

    def __len__(self) -> int:
        return len(self.lines)


# --- a client's frame rate ------------------------------------------------------------


class FrameRate:
    """How fast one client may send: ``per_s`` frames a second, with a burst of as
    many (a token bucket). ``take`` says whether a frame may be handled; a client
    refused without a pause for ``grace_s`` is ``flooding`` (its service closes
    it), while one that comes back under the rate never is. ``warn`` is true at
    most once every ``warn_every_s``: one error frame about the throttle, not one
    per dropped frame."""

    def __init__(
        self, per_s: float, *, grace_s: float, clock: Clock, warn_every_s: float = 1.0
    ) -> None:
        self.per_s, self.grace_s, self.clock = per_s, grace_s, clock
        self.warn_every_s = warn_every_s
        self.tokens = float(per_s)
        self.refill_at = clock.now()
        self.throttled_since: float | None = None
        self.warned_at = -1e18
        self.refused = 0
        self.flooding = False

    def take(self) -> bool:
        """A token for one frame; False (the frame dropped) when over the rate."""
        now = self.clock.now()
        self.tokens = min(self.per_s, self.tokens + (now - self.refill_at) * self.per_s)
        self.refill_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            if self.tokens >= 1:  # under the rate again (not just the token that came back)
                self.throttled_since = None
            return True
        if self.throttled_since is None:
            self.throttled_since = now
        elif now - self.throttled_since >= self.grace_s:
            self.flooding = True
        self.refused += 1
        return False

    def warn(self) -> bool:
        """Whether to tell the client about the throttle now."""
        now = self.clock.now()
        if now - self.warned_at < self.warn_every_s:
            return False
        self.warned_at = now
        return True

    def __repr__(self) -> str:
        return f"<FrameRate per_s={self.per_s:g} refused={self.refused} flooding={self.flooding}>"


# --- client frames -----------------------------------------------------------------


def parse_frame(frames: TypeAdapter[Any], text: str) -> Any:
    """A client frame (JSON text) as ``frames`` reads it; ``InvalidInput`` naming
    each problem if it is not one."""
    try:
        return frames.validate_json(text)
    except ValidationError as error:
        problems = [
            {"where": ".".join(str(p) for p in problem["loc"]), "problem": problem["msg"]}
            for problem in error.errors()
        ]
        raise InvalidInput("the frame is not valid", problems=problems) from None


# --- the handshake -------------------------------------------------------------------


async def open_stream(ws: WebSocket, scope: str | None = None) -> tuple[Principal, str] | None:
    """Sign a WebSocket handshake in and accept it: its principal and the credential
    it signed in with. None once it has been refused (in the error envelope) or
    closed 4403 for lacking ``scope``."""
    signed_in = await sign_in_websocket(ws)
    if signed_in is None:
        return None
    user, _ = signed_in
    await ws.accept()
    if scope is not None and not user.allows(scope):
        await ws.close(CLOSE_FORBIDDEN, f"this API key lacks the {scope} scope")
        return None
    return signed_in


# --- one connection ---------------------------------------------------------------------


class StreamConnection:
    """One client's WebSocket: its bounded outbox and the tasks that serve it.

    A subclass gives ``handle_text`` (one client frame, checked for size already)
    and may give ``release`` (let go what the connection holds) and ``where`` (names
    the stream in the log line of a fault). A ``heartbeat_timeout_s`` closes a client
    silent that long (any frame counts); ``max_frame_chars`` closes one whose frame
    is longer (1009)."""

    where = "WebSocket"
    #: The close reason of a client too far behind its outbox.
    slow_reason = SLOW
    #: How often a connection with a heartbeat checks that its client was heard from.
    heartbeat_check_s = 1.0
    heartbeat_reason = "no heartbeat"

    def __init__(
        self,
        websocket: WebSocket,
        *,
        verifier: SessionVerifier,
        user: Principal,
        signed_in: Principal | str,
        outbox: Outbox,
        keepalive_s: float,
        max_frame_chars: int,
        heartbeat_timeout_s: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.ws, self.verifier, self.user = websocket, verifier, user
        self.signed_in = signed_in  #: what the session watch rechecks
        self.outbox = outbox
        self.keepalive_s, self.max_frame_chars = keepalive_s, max_frame_chars
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.clock = clock or SystemClock()
        self.last_heard = self.clock.now()
        self.ended = asyncio.Event()
        self.close_code = 1000
        self.close_reason = ""

    # what the service gives

    async def handle_text(self, text: str) -> None:
        raise NotImplementedError

    async def release(self) -> None:
        """Let go what the connection holds (subscriptions, watches); it is closing."""

    # sending

    def end(self, code: int, reason: str) -> None:
        """End the connection with ``code`` (the first reason given wins)."""
        if not self.ended.is_set():
            self.close_code, self.close_reason = code, reason
            self.ended.set()

    def send_line(self, line: str) -> None:
        """Queue one JSON line; a client too far behind is closed (slow consumer)."""
        if not self.outbox.put(line):
            self.end(CLOSE_SLOW_CONSUMER, self.slow_reason)

    def send(self, body: dict[str, Any]) -> None:
        self.send_line(orjson.dumps(body).decode())

    def send_error(self, ref: str | None, error: RealmError) -> None:
        """The ``error`` frame answering the client's frame ``ref``; a fault shows no
        internal detail and is logged first, under the handshake's request id."""
        request_id = request_id_of(self.ws.scope) if error.is_fault else ""
        public = public_error(error, request_id, self.where)
        self.send({"type": "error", "ref": ref, "error": public})

    # the run loop

    async def run(self) -> None:
        """Serve the connection until it ends; then release and close it."""
        work: list[Coroutine[Any, Any, None]] = [
            self._read(),
            self._write(),
            self._watch_session(),
            self.ended.wait(),  # type: ignore[list-item]
        ]
        if self.heartbeat_timeout_s is not None:
            work.append(self._watch_heartbeat())
        tasks = [asyncio.create_task(each) for each in work]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await self.release()
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self.ws.close(self.close_code, self.close_reason), CLOSE_TIMEOUT_S
                    )

    def heard(self) -> None:
        self.last_heard = self.clock.now()

    async def _read(self) -> None:
        while True:
            try:
                text = await self.ws.receive_text()
            except (WebSocketDisconnect, RuntimeError):
                return
            except KeyError:  # a binary frame
                self.heard()
                self.send_error(None, InvalidInput("frames are JSON text"))
                continue
            self.heard()
            if len(text) > self.max_frame_chars:
                self.end(CLOSE_TOO_BIG, f"a frame is at most {self.max_frame_chars} bytes")
                return
            await self.handle_text(text)

    async def _write(self) -> None:
        while True:
            await self.ws.send_text(await self.outbox.next_frame())

    async def _watch_session(self) -> None:
        """A session revoked or expired while connected ends the connection."""
        await until_signed_out(self.verifier, self.signed_in, self.keepalive_s)
        self.end(CLOSE_UNAUTHORIZED, "the session ended")

    async def _watch_heartbeat(self) -> None:
        """A client not heard from for ``heartbeat_timeout_s`` is closed."""
        assert self.heartbeat_timeout_s is not None
        while True:
            await self.clock.sleep(self.heartbeat_check_s)
            if self.clock.now() - self.last_heard > self.heartbeat_timeout_s:
                self.end(CLOSE_HEARTBEAT, self.heartbeat_reason)
                return


# --- Server-Sent Events ------------------------------------------------------------------

#: How long an EventSource waits before it reconnects, in milliseconds (the ``retry`` hint).
RETRY_MS = 1_000
#: Lines end with a bare newline, as EventSource and every SSE parser accept.
SEP = "\n"


def retry_hint() -> ServerSentEvent:
    """A stream's first event: how long to wait before reconnecting."""
    return ServerSentEvent(retry=RETRY_MS, sep=SEP)


def error_event(code: str, message: str) -> ServerSentEvent:
    """A stream's last event when the server ends it: ``{"code", "message"}``."""
    body = orjson.dumps({"code": code, "message": message}).decode()
    return ServerSentEvent(body, event="error", sep=SEP)


def keepalive() -> ServerSentEvent:
    return ServerSentEvent(comment="keepalive", sep=SEP)


def sse_event(event_id: str | None, data: str, event: str | None = None) -> bytes:
    """An event, as ``ServerSentEvent`` would frame it, but without its line
    splitting (about 2 us per event): neither ``event_id`` nor ``data`` (compact
    JSON) may hold a line break."""
    head = "" if event_id is None else f"id: {event_id}{SEP}"
    kind = "" if event is None else f"event: {event}{SEP}"
    return f"{head}{kind}data: {data}{SEP}{SEP}".encode()


_Item = TypeVar("_Item")


async def until_signed_out_events(
    items: AsyncIterator[_Item], signed_out: Callable[[], Awaitable[None]]
) -> AsyncIterator[_Item | ServerSentEvent]:
    """``items`` until they end or ``signed_out()`` returns (the session ended): then
    an ``unauthorized`` error event ends the stream, even while ``items`` waits."""
    watcher = asyncio.ensure_future(signed_out())
    step: asyncio.Future[_Item] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(items))
            await asyncio.wait([step, watcher], return_when=asyncio.FIRST_COMPLETED)
            if watcher.done():
                yield error_event("unauthorized", "the session ended")
                return
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        watcher.cancel()
        if step is not None and not step.done():
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await step  # whatever it came to, the stream is over
        closing = getattr(items, "aclose", None)
        if closing is not None:
            await closing()


def sse_response(
    events: AsyncIterator[ServerSentEvent | bytes], keepalive_s: float, **options: Any
) -> EventSourceResponse:
    """The response streaming ``events``, with a ``: keepalive`` every ``keepalive_s``."""
    return EventSourceResponse(
        events, ping=keepalive_s, ping_message_factory=keepalive, sep=SEP, **options
    )
