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
from fastapi import FastAPI

from actors.auth.client import Principal
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


__all__ = ["calling_as", "principal"]
