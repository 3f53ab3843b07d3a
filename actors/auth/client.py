"""The auth service's Python API, for its own ingress and for every other service.

``SessionVerifier`` checks bearer tokens, which is all another service's
ingress needs: session records are kept in a near cache under leases, so a
check is usually a local lookup, and a revocation anywhere is acknowledged
only once no copy can accept the token. ``AuthClient`` adds the rest for the
auth ingress: accounts, logins and sessions on the ``UserStore`` and the
``SessionStore`` shards, with passwords hashed and checked here (argon2id, in
a worker thread so the event loop keeps serving), never in an actor.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from actors.auth.errors import InvalidCredentials, WrongPassword
from actors.auth.model import Role, Session, hash_secret, new_token, parse_token, secret_matches
from actors.auth.sessions import SESSIONS_PREFIX, SessionStoreActor
from actors.auth.settings import AuthSettings
from actors.auth.users import USERS_NAME, UserStoreActor
from actors.runtime.batching import Coalescer
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import Forbidden, InvalidInput, NotFound, TooLarge, Unauthorized
from actors.runtime.near_cache import NearCache
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards
from actors.runtime.supervision import ActorRef

#: Session records one client keeps near.
SESSIONS_REMEMBERED = 50_000
#: Usernames: letters, digits and . _ - @ + (after case folding).
USERNAME = re.compile(r"^[\w.@+-]+$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user behind a valid session token, or a service
    holding an API key on a user's behalf.

    ``user_id`` is the owner of everything the caller creates, for a key as
    for its user: objects belong to users, and another user's are answered
    404. A user holds every scope; a key holds only ``scopes`` (names from
    ``actors.runtime.registry.SCOPES``, such as ``queue:enqueue``) and never
    the admin role.
    """

    user_id: str
    username: str
    roles: tuple[str, ...]
    #: The session's id, or for an API key the key's id.
    session_id: str
    #: None for a signed-in user (every scope); a key's scopes otherwise.
    scopes: frozenset[str] | None = None

    @property
    def is_admin(self) -> bool:
        return self.is_user and Role.ADMIN.value in self.roles

    @property
    def is_user(self) -> bool:
        """A person's session rather than an API key."""
        return self.scopes is None

    def allows(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes

    def require(self, scope: str) -> None:
        """``Forbidden`` unless the caller holds ``scope``."""
        if not self.allows(scope):
            raise Forbidden(f"this API key lacks the {scope} scope", scope=scope)


class SessionVerifier:
    """Checks bearer tokens: what every ingress needs, and nothing more.

    It follows the ``SessionStore`` shards only; it builds no password hasher
    and never touches the user store, so a replica that checks tokens pays for
    neither. Session records are kept near under leases (``NearCache``), so a
    check is usually a local lookup, and a revocation anywhere is acknowledged
    only once no copy can accept the token."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.config = AuthSettings.of(settings)
        self.clock = clock or SystemClock()
        self.shards = Shards(
            SessionStoreActor, SESSIONS_PREFIX, self.config.session_shards, settings
        )
        self.near = NearCache(self.clock, max_entries=SESSIONS_REMEMBERED, owners=self.shards.refs)
        self._lookups = [
            Coalescer(partial(self._lookup_shard, index), max_batch=1_000)
            for index in range(len(self.shards))
        ]

    async def start(self) -> None:
        """Start (or find) the session shards and wait until each answers."""
        await self.shards.start()

    def _shard(self, session_id: str) -> ActorRef:
        return self.shards.owner(session_id)

    async def _lookup_shard(self, index: int, ids: list[str]) -> list[tuple[Session | None, float]]:
        answers: list[tuple[Session | None, float]] = await self.shards[index].call(
            "lookup", ids, self.near.follower
        )
        return answers

    async def _session(self, session_id: str) -> Session | None:
        found: Session | None = self.near.lookup(session_id)
        if found is not None:
            return found
        index = self.shards.index(session_id)
        [session] = await self.near.read_through(index, [session_id], self._lookups[index].submit)
        return cast(Session | None, session)

    async def authenticate(self, token: str) -> Principal:
        """The principal behind a bearer token; ``Unauthorized`` if it is not valid now."""
        session_id, secret = parse_token(token)
        session = await self._session(session_id)
        now = self.clock.time()
        if session is None or not secret_matches(session, secret) or session.expires_at() <= now:
            raise Unauthorized("invalid or expired session")
        stale = now - session.last_seen_at >= self.config.touch_interval_s
        if stale and await self._shard(session_id).call("touch", session_id) is None:
            raise Unauthorized("invalid or expired session")
        return Principal(session.user_id, session.username, tuple(session.roles), session.id)

    async def close(self) -> None:
        await self.near.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} shards={len(self.shards)} near={self.near!r}>"


class AuthClient(SessionVerifier):
    """Everything the auth service does: accounts, passwords, sessions, and
    (inherited) token checks. Its own ingress uses it; other services need
    only a ``SessionVerifier``."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        super().__init__(settings, clock=clock)
        self.users = ActorRef(UserStoreActor, USERS_NAME, settings, namespace=settings.namespace)
        self.hasher = PasswordHasher(
            time_cost=self.config.argon2_time_cost,
            memory_cost=self.config.argon2_memory_kib,
            parallelism=self.config.argon2_parallelism,
        )
        self._background: set[asyncio.Task[None]] = set()
        #: Checked against when the user does not exist, so both take as long.
        self._decoy_hash = self.hasher.hash(secrets.token_urlsafe(16))

    async def start(self) -> None:
        """Start (or find) the auth actors and wait until each answers."""
        await asyncio.gather(self.users.call("ping"), super().start())

    # --- passwords -------------------------------------------------------

    def _check_password(self, password: str) -> None:
        size = len(password.encode())
        if size > self.config.max_password_bytes:
            raise TooLarge("password is too long", size=size, limit=self.config.max_password_bytes)
        if len(password) < self.config.min_password_chars:
            raise InvalidInput("password is too short", minimum=self.config.min_password_chars)

    async def _hash(self, password: str) -> str:
        self._check_password(password)
        return await asyncio.to_thread(self.hasher.hash, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        if len(password.encode()) > self.config.max_password_bytes:
            return False  # never hash an oversized input
        try:
            return await asyncio.to_thread(self.hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def _check_username(self, username: str) -> None:
        name = username.strip()
        if not 1 <= len(name) <= self.config.max_username_chars or not USERNAME.match(name):
            raise InvalidInput(
                f"usernames are 1 to {self.config.max_username_chars} letters, digits or . _ - @ +"
            )

    # --- accounts and login ---------------------------------------------

    async def register(self, username: str, password: str) -> dict[str, Any]:
        self._check_username(username)
        password_hash = await self._hash(password)
        user: dict[str, Any] = await self.users.call(
            "register", username, password_hash, key=uuid.uuid4().hex
        )
        return user

    async def login(
        self, username: str, password: str, *, device: str = "", address: str = ""
    ) -> dict[str, Any]:
        """A new session for good credentials. Unknown users and wrong passwords
        get the same answer after the same work; attempts are throttled."""
        account = await self.users.call("begin_login", username, address)
        password_hash = account["password_hash"] if account else self._decoy_hash
        if not await self._verify(password_hash, password) or account is None:
            raise InvalidCredentials()  # the attempt stays counted as a failure
        if account["disabled"]:
            await self.users.call("finish_login", username, address, account["id"])
            raise Forbidden("this account is disabled")
        session_id, secret, token = new_token()
        now = self.clock.time()
        session = Session(
            id=session_id,
            user_id=account["id"],
            username=account["username"],
            roles=list(account["roles"]),
            secret_hash=hash_secret(secret),
            created_at=now,
            last_seen_at=now,
            idle_timeout_s=self.config.idle_timeout_s,
            absolute_expires_at=now + self.config.absolute_timeout_s,
            device=device[:200],
            address=address[:100],
        )
        shard = self._shard(session_id)
        public = await shard.call("create", session)
        # Checked again after the session exists: a disable, password change or
        # reset that ended the user's sessions meanwhile must end this one too.
        state = await self.users.call("finish_login", username, address, account["id"])
        if state["disabled"] or state["password_changed_at"] != account["password_changed_at"]:
            await shard.call("end", [session_id])
            raise Forbidden("the account changed during login; log in again")
        user = {key: account[key] for key in ("id", "username", "roles", "disabled", "created_at")}
        return {"token": token, "session": public, "user": user}

    # --- sessions -----------------------------------------------------------

    async def logout(self, principal: Principal) -> None:
        await self._shard(principal.session_id).call("end", [principal.session_id])

    async def _end_for_user(self, user_id: str, keep: str | None = None) -> int:
        return sum(await self.shards.call_all("end_for_user", user_id, keep))

    async def logout_everywhere(self, principal: Principal) -> int:
        return await self._end_for_user(principal.user_id)

    async def sessions(self, user_id: str) -> list[dict[str, Any]]:
        found = await self.shards.call_all("for_user", user_id)
        return sorted((s for part in found for s in part), key=lambda s: s["created_at"])

    async def revoke(self, principal: Principal, session_id: str) -> None:
        """End one of the caller's sessions (an admin may end anyone's)."""
        [(session, _)] = await self._shard(session_id).call("lookup", [session_id])
        if session is None or (session.user_id != principal.user_id and not principal.is_admin):
            raise NotFound("no such session", session_id=session_id)
        await self._shard(session_id).call("end", [session_id])

    # --- passwords ----------------------------------------------------------

    async def change_password(self, principal: Principal, current: str, new: str) -> int:
        """Change the caller's password (throttled like a login); every other
        session of theirs ends."""
        self._check_password(new)
        account = await self.users.call("begin_login", principal.username, "")
        if account is None or not await self._verify(account["password_hash"], current):
            raise WrongPassword()
        await self.users.call("finish_login", principal.username, "", principal.user_id)
        await self.users.call("set_password", principal.user_id, await self._hash(new))
        return await self._end_for_user(principal.user_id, keep=principal.session_id)

    async def request_reset(self, username: str) -> str | None:
        """A reset token for the account (None if there is none: callers must not tell)."""
        token: str | None = await self.users.call("create_reset", username)
        return token

    async def reset_token_for(self, user_id: str) -> str:
        user = await self.users.call("user", user_id)
        token: str | None = await self.users.call("create_reset", user["username"])
        assert token is not None
        return token

    def request_reset_soon(self, username: str, deliver: Callable[[str], None]) -> None:
        """Make a reset token in the background and hand it to ``deliver``: the
        caller answers at once, in the same time whether the account exists."""

        async def work() -> None:
            token = await self.request_reset(username)
            if token is not None:
                deliver(token)

        task = asyncio.create_task(work())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def confirm_reset(self, token: str, new_password: str) -> None:
        """Set a new password with a reset token; every session of the user ends."""
        self._check_password(new_password)
        await self.users.call("check_reset", token)  # before any argon2 work
        password_hash = await self._hash(new_password)
        user_id = await self.users.call("use_reset", token, password_hash, key=uuid.uuid4().hex)
        await self._end_for_user(user_id)

    # --- administration -------------------------------------------------------

    async def list_users(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        users: dict[str, Any] = await self.users.call("list_users", offset, limit)
        return users

    async def set_disabled(self, user_id: str, disabled: bool) -> dict[str, Any]:
        """Disable (ending every session at once) or enable an account."""
        user: dict[str, Any] = await self.users.call("set_disabled", user_id, disabled)
        if disabled:
            await self._end_for_user(user_id)
        return user


__all__ = ["AuthClient", "Principal", "SessionVerifier"]
