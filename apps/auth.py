"""HTTP front of auth (service 6), under ``/auth``.

Accounts, login sessions (bearer tokens), tickets for streams, password
change and reset, scoped API keys and a few admin routes. The ingress is an
``AuthClient``: it hashes and checks passwords off the event loop, and checks
tokens and keys against a near cache of their records, so a revoked one is
refused on every replica once its revocation is acknowledged. Other services
sign their callers in the same way, with ``apps.signin``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from actors.auth.client import MAX_KEY_NAME_CHARS, MAX_KEY_TTL_S, AuthClient, Principal
from actors.runtime.registry import SCOPES
from actors.runtime.settings import Settings
from apps.common import ClientIngress, ingress_application, service_app
from apps.forwarded import client_address
from apps.models import Body
from apps.signin import AdminUser, CurrentUser, current_principal, install_verifier

log = logging.getLogger(__name__)

#: The model's bound only keeps absurd input out; the client enforces the real rule
#: (``REALM_AUTH_MAX_USERNAME_CHARS`` and the allowed characters).
Username = Annotated[str, Field(min_length=1, max_length=256)]
#: Passwords are plain strings here: the client refuses one over
#: ``REALM_AUTH_MAX_PASSWORD_BYTES`` (413) or too short (422) before any hashing.
Password = str


class Credentials(Body):
    username: Username
    password: Password


class User(BaseModel):
    id: str
    username: str
    roles: list[str]
    disabled: bool
    created_at: float = Field(..., description="Unix time.")


class Session(BaseModel):
    id: str
    user_id: str
    device: str = Field(..., description="The User-Agent the session logged in with.")
    address: str = Field(..., description="The client address it logged in from.")
    created_at: float
    last_seen_at: float
    expires_at: float = Field(..., description="Unix time; use slides the idle expiry.")


class LoggedIn(BaseModel):
    token: str = Field(..., description="Send as `Authorization: Bearer <token>`.")
    token_type: Literal["bearer"] = "bearer"
    session: Session
    user: User


class Me(BaseModel):
    id: str
    username: str
    roles: list[str]
    session_id: str


class Sessions(BaseModel):
    sessions: list[Session]


class Ended(BaseModel):
    ended: int


class PasswordChange(Body):
    current_password: Password
    new_password: Password


class PasswordChanged(BaseModel):
    ended_other_sessions: int


class ResetRequest(Body):
    username: Username


class Accepted(BaseModel):
    accepted: bool = True


class ResetConfirm(Body):
    token: str = Field(..., min_length=1, max_length=256)
    new_password: Password


class Users(BaseModel):
    total: int
    users: list[User]


class ResetToken(BaseModel):
    token: str
    expires_in_s: float


class Ticket(BaseModel):
    ticket: str = Field(..., description="Pass as `?ticket=` once, within `expires_in_s`.")
    expires_in_s: float


Scope = Annotated[str, Field(min_length=1, max_length=64, description="e.g. `queue:enqueue`")]


class NewApiKey(Body):
    scopes: list[Scope] = Field(
        ..., min_length=1, max_length=len(SCOPES), description=f"Of: {', '.join(sorted(SCOPES))}."
    )
    name: str = Field("", max_length=MAX_KEY_NAME_CHARS, description="What the key is for.")
    user_id: str | None = Field(
        None, max_length=64, description="The user the key acts for (default: you)."
    )
    username: str | None = Field(
        None, max_length=256, description="The same, by name (not with `user_id`)."
    )
    expires_in_s: float | None = Field(
        None, gt=0, le=MAX_KEY_TTL_S, description="Seconds; absent: it never expires."
    )


class ApiKey(BaseModel):
    id: str
    user_id: str = Field(..., description="Owns whatever the key creates.")
    username: str
    name: str
    scopes: list[str]
    created_at: float
    created_by: str = Field(..., description="The admin who made it.")
    expires_at: float | None = Field(..., description="Unix time; null: never.")


class CreatedApiKey(ApiKey):
    key: str = Field(
        ..., description="`rk_<id>.<secret>`, shown this once: send as `Authorization: Bearer`."
    )


class ApiKeys(BaseModel):
    keys: list[ApiKey]


def make_app(client: AuthClient, settings: Settings) -> FastAPI:
    app = service_app(
        "auth",
        description="Accounts, bearer-token sessions, password change and reset, login throttling.",
        settings=settings,
    )
    install_verifier(app, client)

    # --- accounts and sessions -------------------------------------------

    @app.post("/register", status_code=201, responses={409: {}, 413: {}, 422: {}, 429: {}})
    async def register(body: Credentials, request: Request) -> User:
        """A new account (never an admin: the admin's name is reserved). Limited
        per client address (``REALM_AUTH_REGISTER_PER_ADDRESS``)."""
        user = await client.register(body.username, body.password, address=client_address(request))
        return User(**user)

    @app.post("/login", responses={401: {}, 403: {}, 429: {}})
    async def login(body: Credentials, request: Request) -> LoggedIn:
        answer = await client.login(
            body.username,
            body.password,
            device=request.headers.get("user-agent", ""),
            address=client_address(request),
        )
        return LoggedIn(**answer)

    @app.post("/logout", status_code=204, responses={401: {}})
    async def logout(user: CurrentUser) -> None:
        await client.logout(user)

    @app.post("/logout-everywhere", responses={401: {}})
    async def logout_everywhere(user: CurrentUser) -> Ended:
        return Ended(ended=await client.logout_everywhere(user))

    @app.get("/me", responses={401: {}})
    async def me(user: CurrentUser) -> Me:
        return Me(
            id=user.user_id,
            username=user.username,
            roles=list(user.roles),
            session_id=user.session_id,
        )

    @app.get("/sessions", responses={401: {}})
    async def sessions(user: CurrentUser) -> Sessions:
        found: list[Any] = await client.sessions(user.user_id)
        return Sessions(sessions=found)

    @app.delete("/sessions/{session_id}", status_code=204, responses={401: {}, 404: {}})
    async def revoke(session_id: Annotated[str, Path(max_length=64)], user: CurrentUser) -> None:
        await client.revoke(user, session_id)

    @app.post("/ticket", responses={401: {}, 429: {}})
    async def ticket(principal: Annotated[Principal, Depends(current_principal)]) -> Ticket:
        """A single-use ticket, valid ``REALM_AUTH_TICKET_TTL_S`` (30 s), that signs a
        stream in as the caller (``?ticket=`` on SSE, long polls and WebSocket
        handshakes, for clients that cannot set headers). It fails once the
        caller's session ends (or key is revoked), and so does the stream."""
        return Ticket(**await client.issue_ticket(principal))

    # --- passwords -----------------------------------------------------------

    @app.post("/password", responses={401: {}, 413: {}, 422: {}})
    async def change_password(body: PasswordChange, user: CurrentUser) -> PasswordChanged:
        ended = await client.change_password(user, body.current_password, body.new_password)
        return PasswordChanged(ended_other_sessions=ended)

    @app.post("/password-reset/request", status_code=202, responses={422: {}, 429: {}})
    async def request_reset(body: ResetRequest, request: Request) -> Accepted:
        """Accepted alike whether or not the account exists (no user enumeration).
        The token goes to the user out of band (development mode: the log); it is
        made after the answer, so the answer takes as long either way. Limited
        per client address (``REALM_AUTH_RESET_REQUESTS_PER_ADDRESS``)."""

        def deliver(token: str) -> None:
            if client.config.dev_mode:
                log.warning("password reset token for %r (dev mode): %s", body.username, token)

        await client.request_reset_soon(body.username, deliver, address=client_address(request))
        return Accepted()

    @app.post("/password-reset/confirm", status_code=204, responses={413: {}, 422: {}})
    async def confirm_reset(body: ResetConfirm) -> None:
        await client.confirm_reset(body.token, body.new_password)

    # --- administration ------------------------------------------------------

    @app.get("/admin/users", responses={401: {}, 403: {}})
    async def list_users(
        _: AdminUser,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Users:
        return Users(**await client.list_users(offset, limit))

    @app.post("/admin/users/{user_id}/disable", responses={401: {}, 403: {}, 404: {}})
    async def disable(user_id: str, _: AdminUser) -> User:
        return User(**await client.set_disabled(user_id, True))

    @app.post("/admin/users/{user_id}/enable", responses={401: {}, 403: {}, 404: {}})
    async def enable(user_id: str, _: AdminUser) -> User:
        return User(**await client.set_disabled(user_id, False))

    @app.post("/admin/users/{user_id}/reset-token", responses={401: {}, 403: {}, 404: {}})
    async def reset_token(user_id: str, _: AdminUser) -> ResetToken:
        token = await client.reset_token_for(user_id)
        return ResetToken(token=token, expires_in_s=client.config.reset_token_ttl_s)

    # --- API keys (admin) ------------------------------------------------------

    @app.post("/keys", status_code=201, responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}})
    async def create_key(body: NewApiKey, admin: AdminUser) -> CreatedApiKey:
        """A scoped API key acting for a user (its ``user_id`` owns what it
        creates). The key is in this answer only; Realm keeps its hash."""
        created = await client.create_api_key(
            admin,
            scopes=list(body.scopes),
            name=body.name,
            user_id=body.user_id,
            username=body.username,
            expires_in_s=body.expires_in_s,
        )
        return CreatedApiKey(**created)

    @app.get("/keys", responses={401: {}, 403: {}, 422: {}})
    async def list_keys(
        _: AdminUser, user_id: Annotated[str | None, Query(max_length=64)] = None
    ) -> ApiKeys:
        """Live API keys (every one, or ``user_id``'s), without their secrets."""
        return ApiKeys(keys=[ApiKey(**k) for k in await client.list_api_keys(user_id)])

    @app.delete("/keys/{key_id}", status_code=204, responses={401: {}, 403: {}, 404: {}})
    async def revoke_key(key_id: Annotated[str, Path(max_length=64)], _: AdminUser) -> None:
        """Revoke a key: once answered, no replica accepts it."""
        await client.revoke_api_key(key_id)

    return app


@serve.deployment
@serve.ingress()
class AuthIngress(ClientIngress):
    make_client = AuthClient
    make_app = staticmethod(make_app)


def build(settings: Settings) -> Application:
    return ingress_application(AuthIngress, settings)
