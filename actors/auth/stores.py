"""Auth (service 6): users, sessions and login throttling, as durable actors.

- ``UserStore`` (one actor, ``auth-users``): accounts with their argon2id
  hashes, roles and disabled flag, and single-use password-reset tokens, all
  journaled. It also throttles failed logins per username (whether or not the
  account exists, so throttling reveals nothing) and per client address;
  that state is ephemeral by design (a restart forgives).
- ``SessionStore`` shards (``auth-sessions-<i>``): sessions, journaled. A token
  is ``<session id>.<secret>``: the id routes to the shard, only the secret's
  SHA-256 is stored. Replicas keep near copies of session records under
  leases (``actors.runtime.leases``), so a revocation is acknowledged only once no
  replica can accept the token any more.

Passwords are hashed and checked by the caller (the ingress, off its event
loop): the actors never see a password and never spend CPU on argon2.
Operations that change state take the current wall time as an argument, so
replaying the journal gives the same state.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from actors.auth.errors import InvalidResetToken, TooManyAttempts, UsernameTaken
from actors.runtime.clock import Clock, SystemClock, every
from actors.runtime.errors import NotFound, Unauthorized
from actors.runtime.journal import Durable
from actors.runtime.leases import LeaseOwner, Leases
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, recover, remote_actor


class Role(str, Enum):
    #: Every account.
    USER = "user"
    #: May list, disable and enable accounts and issue reset tokens.
    ADMIN = "admin"


@dataclass
class User:
    id: str
    username: str
    password_hash: str
    roles: list[str]
    created_at: float
    disabled: bool = False
    password_changed_at: float = 0.0

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "roles": self.roles,
            "disabled": self.disabled,
            "created_at": self.created_at,
        }


@dataclass
class Session:
    id: str
    user_id: str
    username: str
    roles: list[str]
    secret_hash: str
    created_at: float
    last_seen_at: float
    idle_timeout_s: float
    absolute_expires_at: float
    device: str = ""
    address: str = ""

    def expires_at(self) -> float:
        return min(self.last_seen_at + self.idle_timeout_s, self.absolute_expires_at)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "device": self.device,
            "address": self.address,
            "created_at": self.created_at,
            "last_seen_at": self.last_seen_at,
            "expires_at": self.expires_at(),
        }


def normalize_username(username: str) -> str:
    return username.strip().casefold()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """``(session_id, secret, token)``: 64 random bits of id, 256 of secret."""
    session_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return session_id, secret, f"{session_id}.{secret}"


def parse_token(token: str) -> tuple[str, str]:
    session_id, dot, secret = token.partition(".")
    if not dot or len(session_id) != 16 or not secret or len(token) > 128:
        raise Unauthorized("malformed token")
    return session_id, secret


def secret_matches(session: Session, secret: str) -> bool:
    return hmac.compare_digest(session.secret_hash, hash_secret(secret))


# --- users ------------------------------------------------------------------


#: An address is locked after this many times ``auth_max_failures`` failures.
ADDRESS_LOCKOUT_FACTOR = 4
#: Outstanding reset tokens per account; a further request replaces the oldest.
RESET_TOKENS_KEPT = 3


@dataclass
class _Failures:
    count: int = 0
    last_at: float = 0.0  #: wall time of the last failure
    next_try_at: float = 0.0  #: wall time before which another try is refused


@dataclass
class _UserState:
    users: dict[str, User] = field(default_factory=dict)
    by_name: dict[str, str] = field(default_factory=dict)
    resets: dict[str, tuple[str, float]] = field(default_factory=dict)  #: hash -> user, expiry


class UserStore(Durable):
    """Accounts and reset tokens (journaled), login throttling (ephemeral)."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.state = _UserState()
        self._failures: dict[str, _Failures] = {}  #: "user:<name>" / "addr:<address>"

    # state changes (deterministic; replayed on recovery)

    def apply_create_user(self, user: dict[str, Any]) -> dict[str, Any]:
        created = User(**user)
        if created.username in self.state.by_name:
            raise UsernameTaken(username=created.username)
        self.state.users[created.id] = created
        self.state.by_name[created.username] = created.id
        return created.public()

    def apply_set_password(self, user_id: str, password_hash: str, at: float) -> None:
        user = self._user(user_id)
        user.password_hash, user.password_changed_at = password_hash, at

    def apply_set_disabled(self, user_id: str, disabled: bool) -> dict[str, Any]:
        user = self._user(user_id)
        user.disabled = disabled
        return user.public()

    def apply_create_reset(self, token_hash: str, user_id: str, expires_at: float) -> None:
        self._user(user_id)
        mine = [h for h, (uid, _) in self.state.resets.items() if uid == user_id]
        for oldest in mine[: max(0, len(mine) - RESET_TOKENS_KEPT + 1)]:
            del self.state.resets[oldest]
        self.state.resets[token_hash] = (user_id, expires_at)

    def apply_use_reset(self, token_hash: str, password_hash: str, at: float) -> str:
        found = self.state.resets.get(token_hash)
        if found is None or found[1] <= at:
            raise InvalidResetToken()
        user_id = found[0]
        self.apply_set_password(user_id, password_hash, at)
        # Single use, and one reset voids the user's other outstanding tokens.
        for other in [h for h, (uid, _) in self.state.resets.items() if uid == user_id]:
            del self.state.resets[other]
        return user_id

    def snapshot_state(self) -> _UserState:
        now = self.clock.time()
        self.state.resets = {h: v for h, v in self.state.resets.items() if v[1] > now}
        return self.state

    def restore_state(self, state: _UserState) -> None:
        self.state = state

    def _user(self, user_id: str) -> User:
        user = self.state.users.get(user_id)
        if user is None:
            raise NotFound("no such user", user_id=user_id)
        return user

    # calls

    async def register(self, username: str, password_hash: str, *, key: str | None = None) -> Any:
        name = normalize_username(username)
        roles = [Role.USER.value]
        if self.settings.auth_admin_username and name == normalize_username(
            self.settings.auth_admin_username
        ):
            roles.append(Role.ADMIN.value)
        user = User(secrets.token_hex(8), name, password_hash, roles, self.clock.time())
        return await self.execute("create_user", key=key, user=asdict(user))

    async def credentials(self, username: str) -> dict[str, Any] | None:
        """The account's id, hash, roles and state, for the caller to check a password."""
        user_id = self.state.by_name.get(normalize_username(username))
        if user_id is None:
            return None
        user = self.state.users[user_id]
        return {
            **user.public(),
            "password_hash": user.password_hash,
            "password_changed_at": user.password_changed_at,
        }

    async def user(self, user_id: str) -> dict[str, Any]:
        return self._user(user_id).public()

    async def list_users(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        users = sorted(self.state.users.values(), key=lambda u: (u.created_at, u.id))
        return {
            "total": len(users),
            "users": [u.public() for u in users[offset : offset + limit]],
        }

    async def set_password(self, user_id: str, password_hash: str) -> None:
        await self.execute(
            "set_password", user_id=user_id, password_hash=password_hash, at=self.clock.time()
        )

    async def set_disabled(self, user_id: str, disabled: bool) -> dict[str, Any]:
        result: dict[str, Any] = await self.execute(
            "set_disabled", user_id=user_id, disabled=disabled
        )
        return result

    async def create_reset(self, username: str) -> str | None:
        """A single-use reset token for the account, or None if there is none."""
        user_id = self.state.by_name.get(normalize_username(username))
        if user_id is None:
            return None
        token = secrets.token_urlsafe(32)
        expires_at = self.clock.time() + self.settings.auth_reset_token_ttl_s
        await self.execute(
            "create_reset", token_hash=hash_secret(token), user_id=user_id, expires_at=expires_at
        )
        return token

    async def check_reset(self, token: str) -> None:
        """Raise ``InvalidResetToken`` unless ``token`` could be used now."""
        found = self.state.resets.get(hash_secret(token))
        if found is None or found[1] <= self.clock.time():
            raise InvalidResetToken()

    async def use_reset(self, token: str, password_hash: str, *, key: str | None = None) -> str:
        user_id: str = await self.execute(
            "use_reset",
            key=key,
            token_hash=hash_secret(token),
            password_hash=password_hash,
            at=self.clock.time(),
        )
        return user_id

    # throttling (ephemeral)
    #
    # Every attempt counts as a failure from the moment it begins (so parallel
    # guesses cannot all slip past the check) until ``finish_login`` undoes it.
    # Per username: the first failure costs ``auth_backoff_base_s``, each next
    # one doubles it, ``auth_max_failures`` lock the name for ``auth_lockout_s``.
    # Per address (many users may share one): the first ``auth_max_failures``
    # cost nothing, then the same doubling, and four times as many lock it.
    # Counts are forgotten after ``auth_lockout_s`` without a failure.

    def _throttle_keys(self, username: str, address: str) -> list[str]:
        keys = [f"user:{normalize_username(username)}"]
        if address:
            keys.append(f"addr:{address}")
        return keys

    def _delay(self, key: str, count: int) -> float:
        limit, base = self.settings.auth_max_failures, self.settings.auth_backoff_base_s
        if key.startswith("addr:"):
            if count <= limit:
                return 0.0
            if count >= ADDRESS_LOCKOUT_FACTOR * limit:
                return self.settings.auth_lockout_s
            return base * 2 ** (count - limit - 1)
        if count >= limit:
            return self.settings.auth_lockout_s
        return base * 2 ** (count - 1)

    def _count(self, key: str, by: int, now: float) -> float:
        failures = self._failures.get(key)
        if failures is None or now - failures.last_at > self.settings.auth_lockout_s:
            failures = _Failures()  # a quiet window forgives
        failures.count = max(0, failures.count + by)
        if failures.count == 0:
            self._failures.pop(key, None)
            return 0.0
        failures.last_at = now
        delay = self._delay(key, failures.count)
        failures.next_try_at = now + delay if by > 0 else min(failures.next_try_at, now + delay)
        self._failures[key] = failures
        return delay

    async def check_throttle(self, username: str, address: str = "") -> None:
        """Refuse an attempt that comes too soon after failures."""
        now = self.clock.time()
        waits = [
            self._failures[k].next_try_at - now
            for k in self._throttle_keys(username, address)
            if k in self._failures
        ]
        wait = max(waits, default=0.0)
        if wait > 0:
            raise TooManyAttempts(retry_after_s=round(wait, 3))

    async def login_failed(self, username: str, address: str = "") -> float:
        """Count a failure; returns how long the next attempt must wait."""
        now = self.clock.time()
        wait = max(self._count(key, +1, now) for key in self._throttle_keys(username, address))
        self._forget_old_failures(now)
        return wait

    async def login_succeeded(self, username: str, address: str = "") -> None:
        """Undo the attempt ``begin_login`` counted: the username is in good standing."""
        now = self.clock.time()
        self._failures.pop(f"user:{normalize_username(username)}", None)
        if address:
            self._count(f"addr:{address}", -1, now)

    async def begin_login(self, username: str, address: str = "") -> dict[str, Any] | None:
        """Start an attempt: refuse it if throttled, else count it as a failure
        until ``finish_login`` and return the account's credentials (None if none)."""
        await self.check_throttle(username, address)
        await self.login_failed(username, address)
        return await self.credentials(username)

    async def finish_login(self, username: str, address: str, user_id: str) -> dict[str, Any]:
        """The password was right: undo the attempt's count, and return the
        account's state now (the caller refuses if it changed meanwhile)."""
        await self.login_succeeded(username, address)
        user = self._user(user_id)
        return {"disabled": user.disabled, "password_changed_at": user.password_changed_at}

    def _forget_old_failures(self, now: float) -> None:
        if len(self._failures) > 100_000:  # bounded memory under a spray of names
            quiet = now - self.settings.auth_lockout_s
            self._failures = {k: f for k, f in self._failures.items() if f.last_at > quiet}

    def __repr__(self) -> str:
        return f"<UserStore users={len(self.state.users)} throttled={len(self._failures)}>"


# --- sessions ---------------------------------------------------------------


class SessionStore(LeaseOwner, Durable):
    """One shard of sessions (journaled), with near-cache leases for replicas."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.sessions: dict[str, Session] = {}
        self.by_user: dict[str, set[str]] = {}
        self.leases = Leases(self.clock, lease_s=settings.auth_session_lease_s)

    def apply_create(self, session: dict[str, Any]) -> dict[str, Any]:
        created = Session(**session)
        self.sessions[created.id] = created
        self.by_user.setdefault(created.user_id, set()).add(created.id)
        return created.public()

    def apply_touch(self, session_id: str, at: float) -> None:
        session = self.sessions.get(session_id)
        if session is not None:
            session.last_seen_at = max(session.last_seen_at, at)

    def apply_end(self, session_ids: list[str]) -> int:
        ended = 0
        for session_id in session_ids:
            session = self.sessions.pop(session_id, None)
            if session is not None:
                ended += 1
                owned = self.by_user.get(session.user_id, set())
                owned.discard(session_id)
                if not owned:
                    self.by_user.pop(session.user_id, None)
        return ended

    def snapshot_state(self) -> dict[str, Session]:
        return self.sessions

    def restore_state(self, state: dict[str, Session]) -> None:
        self.sessions = state
        self.by_user = {}
        for session in state.values():
            self.by_user.setdefault(session.user_id, set()).add(session.id)

    def _live(self, session_id: str) -> Session | None:
        session = self.sessions.get(session_id)
        if session is None or session.expires_at() <= self.clock.time():
            return None
        return session

    async def create(self, session: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.execute("create", session=session)
        return result

    async def lookup(
        self, session_ids: list[str], follower: str | None = None
    ) -> list[tuple[Session | None, float]]:
        """Live sessions (or None) and, for a follower, how long it may keep each."""
        answers: list[tuple[Session | None, float]] = []
        for session_id in session_ids:
            session = self._live(session_id)
            if session is None or follower is None:
                answers.append((session, 0.0))
                continue
            expires_in = session.expires_at() - self.clock.time()
            answers.append(
                (session, self.leases.grant(session_id, follower, expires_in_s=expires_in))
            )
        return answers

    async def touch(self, session_id: str) -> Session | None:
        """Slide the idle expiry; followers drop their older copy."""
        if self._live(session_id) is None:
            return None
        await self.leases.before_write()
        await self.execute("touch", session_id=session_id, at=self.clock.time())
        await self._invalidate([session_id])
        return self._live(session_id)

    async def end(self, session_ids: list[str]) -> int:
        """End sessions; returns once no replica can accept them any more."""
        session_ids = [s for s in session_ids if s in self.sessions]
        if not session_ids:
            return 0  # nothing live, so no copy of it can be held either
        await self.leases.before_write()
        ended: int = await self.execute("end", session_ids=session_ids)
        await self._invalidate(session_ids)
        return ended

    async def end_for_user(self, user_id: str, keep: str | None = None) -> int:
        return await self.end([s for s in self.by_user.get(user_id, ()) if s != keep])

    async def for_user(self, user_id: str) -> list[dict[str, Any]]:
        live = [self._live(s) for s in self.by_user.get(user_id, ())]
        return [s.public() for s in live if s is not None]

    async def sweep(self) -> int:
        """End expired sessions so memory and the journal stay bounded."""
        now = self.clock.time()
        expired = [s.id for s in self.sessions.values() if s.expires_at() <= now]
        self.leases.sweep()
        return await self.end(expired) if expired else 0

    def __repr__(self) -> str:
        return f"<SessionStore sessions={len(self.sessions)} users={len(self.by_user)}>"


# --- the actors -------------------------------------------------------------

USERS_NAME = "auth-users"
#: How often session shards end expired sessions.
SESSION_SWEEP_S = 60.0


def session_shard_name(index: int) -> str:
    return f"auth-sessions-{index}"


class _UserStoreProcess(UserStore):
    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]
        super().__init__(settings)
        self.restarts = await recover(self, settings, USERS_NAME)

    async def ping(self) -> int:
        return len(self.state.users)


class _SessionStoreProcess(SessionStore):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        super().__init__(settings)
        if await recover(self, settings, name):
            self.leases.hold_writes()  # copies granted before the crash may still be held
        self._sweeper = every(self.clock, SESSION_SWEEP_S, self.sweep)


#: Durable: restarted after any crash; calls in flight are retried (idempotent by key
#: or by nature: creating a session under a fresh id, ending one twice).
UserStoreActor = remote_actor(_UserStoreProcess, restart=Restart.PERMANENT)
SessionStoreActor = remote_actor(
    _SessionStoreProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD"
)
