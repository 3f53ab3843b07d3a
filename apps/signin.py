"""Signing in, written once: every route's principal comes from here.

A service's ingress holds one ``SessionVerifier`` (``ClientIngress`` with
``requires_user``; the auth service's own ``AuthClient`` is one) and installs
it with ``install_verifier``. Then routes take:

- ``Scope("queue:enqueue")``: a principal holding that scope, from an
  ``Authorization: Bearer <credential>`` header: a signed-in user's session
  token (who holds every scope) or an API key granted it. Every service route
  takes one;
- ``CurrentUser`` (or ``AdminUser``): a signed-in user only, never an API key
  (the auth service's own account routes);
- ``StreamUser``: the header, or ``?ticket=`` (single use, short-lived, from
  ``POST /auth/ticket``) for the clients that cannot set headers (a browser's
  ``EventSource``), on SSE streams and long polls. Credentials never go in a
  URL: a URL ends up in access logs;
- ``sign_in_websocket(ws)``: the same for a WebSocket's opening handshake,
  refused with the error envelope (401) before the socket is accepted;
- ``until_signed_out``: a stream's session (or key) checked again for as long
  as the stream lasts, so no stream outlives a revoked or expired session,
  including one opened with a ticket that is long used up.

A check is usually a local lookup in the verifier's near cache of sessions
and keys; a revoked session or key is refused on every replica once its
revocation is acknowledged.
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
from apps.errors import error_response

log = logging.getLogger(__name__)


def install_verifier(app: FastAPI, verifier: SessionVerifier) -> None:
    app.state.session_verifier = verifier


def verifier_of(connection: HTTPConnection) -> SessionVerifier:
    verifier: SessionVerifier = connection.app.state.session_verifier
    return verifier


def _header_credential(connection: HTTPConnection) -> str | None:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _missing(connection: HTTPConnection, *, query: bool) -> Unauthorized:
    if not query:
        return Unauthorized("an Authorization: Bearer <token> header is required")
    if "access_token" in connection.query_params:
        return Unauthorized(
            "?access_token= is not accepted (URLs get logged): send the Authorization "
            "header, or a ticket from POST /auth/ticket as ?ticket="
        )
    return Unauthorized("an Authorization: Bearer <token> header or ?ticket= is required")


def bearer_token(connection: HTTPConnection, *, query: bool = False) -> str:
    """The credential a request or handshake signs in with: its ``Authorization:
    Bearer`` header or, with ``query``, its ``?ticket=`` (which
    ``until_signed_out`` accepts too, though passing it the principal is better)."""
    credential = _header_credential(connection)
    if credential is None and query:
        credential = connection.query_params.get("ticket") or None
    if credential is None:
        raise _missing(connection, query=query)
    return credential


async def sign_in_stream(connection: HTTPConnection) -> tuple[Principal, str]:
    """The principal of a stream's request or handshake, and the credential it
    signed in with: the header's token or key, or else a ``?ticket=``, which
    this uses up."""
    verifier = verifier_of(connection)
    header = _header_credential(connection)
    if header is not None:
        return await verifier.authenticate(header), header
    ticket = connection.query_params.get("ticket")
    if not ticket:
        raise _missing(connection, query=True)
    return await verifier.redeem_ticket(ticket), ticket


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
    ticket: Annotated[
        str | None,
        Query(
            max_length=128,
            description="a ticket from POST /auth/ticket (single use, short-lived), "
            "for clients that cannot set the Authorization header",
        ),
    ] = None,
) -> Principal:
    principal, _ = await sign_in_stream(request)
    return principal


StreamUser = Annotated[Principal, Depends(stream_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise Forbidden("this needs the admin role")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]


async def sign_in_websocket(ws: WebSocket) -> tuple[Principal, str] | None:
    """The principal of a WebSocket handshake (header, or ``?ticket=``, used up)
    and the credential it signed in with; None once the handshake has been
    refused in the envelope."""
    try:
        return await sign_in_stream(ws)
    except RealmError as error:
        await ws.send_denial_response(error_response(ws, error))
        return None


async def until_signed_out(
    verifier: SessionVerifier, signed_in: Principal | str, every_s: float
) -> None:
    """Return once the session (or API key) behind ``signed_in`` has ended,
    checking it every ``every_s``. ``signed_in`` is the stream's principal
    (best), or the credential it signed in with (a bearer token, or a ticket
    this verifier redeemed: the session behind it is what is checked).

    Only a refusal ends it: while the auth service cannot answer, the stream
    goes on and the next check asks again.
    """
    while True:
        await asyncio.sleep(every_s)
        try:
            await verifier.recheck(signed_in)
        except Unauthorized:
            return
        except Exception as error:  # the auth service away is no reason to cut streams
            log.warning("could not re-check a stream's session (%r); will ask again", error)
