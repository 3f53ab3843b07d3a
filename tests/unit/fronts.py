"""A service's HTTP front in process, called as whoever a test says.

``principal(...)`` makes a caller: a signed-in user (``scopes=None``) or an
API key holding ``scopes``. ``calling_as(app, caller)`` gives an HTTP client
of ``app`` whose every request is made by ``caller[0]``: the test changes who
calls by setting it, and routes see that principal instead of a checked token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request

from actors.auth.client import Principal
from actors.runtime.errors import Unauthorized
from apps.signin import current_principal


def principal(
    user_id: str = "ada", scopes: set[str] | None = None, roles: tuple[str, ...] = ("user",)
) -> Principal:
    """A caller: ``user_id`` itself, or with ``scopes`` an API key of theirs."""
    return Principal(
        user_id=user_id,
        username=user_id,
        roles=roles,
        session_id="s",
        scopes=None if scopes is None else frozenset(scopes),
    )


@asynccontextmanager
async def calling_as(
    app: FastAPI,
    caller: list[Principal],
    *,
    also: tuple[Callable[..., Any], ...] = (),
    base_url: str = "http://test",
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``app`` whose requests are made by ``caller[0]``; ``also``
    names further sign-in dependencies to answer the same way (a stream's)."""
    for dependency in (current_principal, *also):
        app.dependency_overrides[dependency] = lambda: caller[0]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as http:
        yield http


class Callers:
    """Clients of ``app``, each signed in as its own principal (or anonymous):
    ``http(caller)`` marks its requests with a test header, and the app's
    sign-in answers that header's principal, or 401 without one."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.callers: dict[str, Principal] = {}

        async def principal_of(request: Request) -> Principal:
            who = request.headers.get("x-test-as")
            if who is None:
                raise Unauthorized("an Authorization: Bearer <token> header is required")
            return self.callers[who]

        app.dependency_overrides[current_principal] = principal_of

    def http(self, caller: Principal | None) -> httpx.AsyncClient:
        headers = {}
        if caller is not None:
            self.callers[caller.session_id] = caller
            headers["x-test-as"] = caller.session_id
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers)


__all__ = ["Callers", "calling_as", "principal"]
