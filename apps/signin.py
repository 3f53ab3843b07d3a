"""Signing in, written once: every route's principal comes from here.

A service's ingress holds one ``SessionVerifier`` (``ClientIngress`` with
``requires_user``; the auth service's own ``AuthClient`` is one) and installs
it with ``install_verifier``. Then routes take:

- ``Scope("queue:enqueue")``: a principal holding that scope, from an
  ``Authorization: Bearer <token>`` header: a signed-in user (who holds every
  scope) or an API key granted it. Every service route takes one;
- ``CurrentUser`` (or ``AdminUser``): a signed-in user only, never an API key
  (the auth service's own account routes);
- ``StreamUser``: the header, or ``?access_token=`` for the clients that cannot
  set headers (a browser's ``EventSource``), on SSE streams and long polls;
- ``sign_in_websocket(ws)``: the same for a WebSocket's opening handshake,
  refused with the error envelope (401) before the socket is accepted;
- ``until_signed_out``: a stream's session checked again for as long as the
  stream lasts, so no stream outlives a revoked or expired session.

A token check is usually a local lookup in the verifier's near cache of
sessions; a revoked session is refused on every replica once its revocation
is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, WebSocket
from starlette.requests import HTTPConnection

from actors.auth.client import Principal, SessionVerifier
from actors.runtime.errors import Forbidden, RealmError, Unauthorized
from actors.runtime.registry import SCOPES
from apps.errors import envelope

log = logging.getLogger(__name__)


def install_verifier(app: FastAPI, verifier: SessionVerifier) -> None:
    app.state.session_verifier = verifier


def verifier_of(connection: HTTPConnection) -> SessionVerifier:
    verifier: SessionVerifier = connection.app.state.session_verifier
    return verifier


def bearer_token(connection: HTTPConnection, *, query: bool = False) -> str:
    """The bearer token of a request or handshake: its ``Authorization`` header,
    or with ``query`` its ``access_token`` parameter."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if query and connection.query_params.get("access_token"):
        return connection.query_params["access_token"]
    where = "header or ?access_token=" if query else "header"
    raise Unauthorized(f"an Authorization: Bearer <token> {where} is required")


async def current_principal(request: Request) -> Principal:
    return await verifier_of(request).authenticate(bearer_token(request))


def Scope(scope: str) -> Any:
    """A dependency: the caller, who must hold ``scope`` (403 otherwise)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}: add it to its service in the registry")

    async def principal_with_scope(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        principal.require(scope)
        return principal

    return Depends(principal_with_scope)


async def current_user(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_user:
        raise Forbidden("this needs a signed-in user, not an API key")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


async def stream_user(
    request: Request,
    access_token: Annotated[
        str | None, Query(description="the bearer token, for clients that cannot set headers")
    ] = None,
) -> Principal:
    return await verifier_of(request).authenticate(bearer_token(request, query=True))


StreamUser = Annotated[Principal, Depends(stream_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise Forbidden("this needs the admin role")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]


async def sign_in_websocket(ws: WebSocket) -> tuple[Principal, str] | None:
    """The principal and token of a WebSocket handshake (header or
    ``?access_token=``); None once the handshake has been refused in the envelope."""
    try:
        token = bearer_token(ws, query=True)
        return await verifier_of(ws).authenticate(token), token
    except RealmError as error:
        await ws.send_denial_response(
            envelope(error.status, error.code, error.message, error.details)
        )
        return None


async def until_signed_out(verifier: SessionVerifier, token: str, every_s: float) -> None:
    """Return once ``token``'s session has ended, checking it every ``every_s``.

    Only a refusal ends it: while the auth service cannot answer, the stream
    goes on and the next check asks again.
    """
    while True:
        await asyncio.sleep(every_s)
        try:
            await verifier.authenticate(token)
        except Unauthorized:
            return
        except Exception as error:  # the auth service away is no reason to cut streams
            log.warning("could not re-check a stream's session (%r); will ask again", error)
