"""Request body limit with Realm's error envelope.

Starlette's own limiter answers in plain text; this one answers 413 in the
envelope, by the Content-Length header before reading anything, or as soon as
a streamed body passes the limit (raised as an HTTPException that the
envelope handler renders).
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apps.errors import envelope


def _too_large(limit: int) -> HTTPException:
    return HTTPException(status_code=413, detail=f"request body is over {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                error = _too_large(self.max_bytes)
                response = envelope(413, "too_large", str(error.detail), {"limit": self.max_bytes})
                await response(scope, receive, send)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _too_large(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)
