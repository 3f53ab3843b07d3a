"""Requiring a user: the FastAPI dependency every service uses.

A service's ingress makes one ``AuthClient`` and installs it with
``install_auth(app, client)``; routes then take ``CurrentUser`` (any valid
session) or ``AdminUser``. A token check is usually a local lookup in the
client's near cache of sessions; a revoked session is refused on every
replica once its revocation is acknowledged.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request

from actors.auth.client import AuthClient, Principal
from actors.runtime.errors import Forbidden, Unauthorized


def install_auth(app: FastAPI, client: AuthClient) -> None:
    app.state.auth_client = client


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("an Authorization: Bearer <token> header is required")
    return token.strip()


async def current_user(request: Request) -> Principal:
    client: AuthClient = request.app.state.auth_client
    return await client.authenticate(bearer_token(request))


CurrentUser = Annotated[Principal, Depends(current_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise Forbidden("this needs the admin role")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]
