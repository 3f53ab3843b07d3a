"""Auth's accounts: the ``UserStore`` actor (one, named ``auth-users``).

It keeps accounts with their argon2id hashes, roles and disabled flag, and
single-use password-reset tokens, all journaled. It also throttles failed
logins per username (whether or not the account exists, so throttling
reveals nothing) and per client address, and registrations and reset
requests per client address; that state is ephemeral by design (a restart
forgives).

The admin account is made (or given the admin role) only by
``ensure_admin``, from the operator's settings or the bootstrap command:
registering its name is refused.

Passwords are hashed and checked by the caller (the client, off its event
loop): the actor never sees a password and never spends CPU on argon2.
Operations that change state take the current wall time as an argument, so
replaying the journal gives the same state.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from actors.auth.errors import InvalidResetToken, TooManyAttempts, UsernameTaken
from actors.auth.model import Role, User, hash_secret, normalize_username
from actors.auth.settings import AuthSettings
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import InvalidInput, NotFound, RateLimited, RealmError
from actors.runtime.journal import Durable
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, recover, remote_actor

#: The user store's actor name (there is one).
USERS_NAME = "auth-users"
#: An address is locked after this many times ``max_failures`` failures.
ADDRESS_LOCKOUT_FACTOR = 4
#: Outstanding reset tokens per account; a further request replaces the oldest.
RESET_TOKENS_KEPT = 3


@dataclass(slots=True)
class _Reset:
    """An outstanding password-reset token (kept under its hash)."""

    user_id: str
    expires_at: float


@dataclass(slots=True)
class _UserState:
    """What the user store journals: its snapshot, as stored."""

    users: dict[str, User] = field(default_factory=dict)  #: by id
    by_name: dict[str, str] = field(default_factory=dict)  #: normalized name -> id
    resets: dict[str, _Reset] = field(default_factory=dict)  #: by token hash


@dataclass(slots=True)
class _Bucket:
    """A client address's allowance for one kind of request (a token bucket)."""

    tokens: float
    at: float  #: wall time ``tokens`` was counted at


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last_at: float = 0.0  #: wall time of the last failure
    next_try_at: float = 0.0  #: wall time before which another try is refused


class UserStore(Durable):
    """Accounts and reset tokens (journaled), login throttling (ephemeral)."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.config = AuthSettings.of(settings)
        self.clock = clock or SystemClock()
        self.state = _UserState()
        self._failures: dict[str, _Failures] = {}  #: "user:<name>" / "addr:<address>"
        self._buckets: dict[str, _Bucket] = {}  #: "<kind>:<address>"

    # state changes (deterministic; replayed on recovery)

    def apply_create_user(self, user: User) -> dict[str, Any]:
        if user.username in self.state.by_name:
            raise UsernameTaken(username=user.username)
        self.state.users[user.id] = user
        self.state.by_name[user.username] = user.id
        return user.public()

    def apply_set_password(
        self, user_id: str, password_hash: str, at: float, void_resets: bool = False
    ) -> None:
        # ``void_resets`` is absent from records written before a password change
        # voided reset tokens, so their replay keeps the tokens as it did then.
        user = self._user(user_id)
        user.password_hash, user.password_changed_at = password_hash, at
        if void_resets:
            self._void_resets(user_id)

    def apply_make_admin(self, user_id: str, password_hash: str, at: float) -> dict[str, Any]:
        """The configured admin name's account gets the admin role and the
        operator's password, and is enabled."""
        user = self._user(user_id)
        self.apply_set_password(user_id, password_hash, at, void_resets=True)
        if Role.ADMIN.value not in user.roles:
            user.roles = [*user.roles, Role.ADMIN.value]
        user.disabled = False
        return user.public()

    def apply_set_disabled(self, user_id: str, disabled: bool) -> dict[str, Any]:
        user = self._user(user_id)
        user.disabled = disabled
        return user.public()

    def apply_create_reset(self, token_hash: str, user_id: str, expires_at: float) -> None:
        self._user(user_id)
        mine = [h for h, reset in self.state.resets.items() if reset.user_id == user_id]
        for oldest in mine[: max(0, len(mine) - RESET_TOKENS_KEPT + 1)]:
            del self.state.resets[oldest]
        self.state.resets[token_hash] = _Reset(user_id, expires_at)

    def apply_use_reset(self, token_hash: str, password_hash: str, at: float) -> str:
        found = self.state.resets.get(token_hash)
        if found is None or found.expires_at <= at:
            raise InvalidResetToken()
        user_id = found.user_id
        # Single use, and one reset voids the user's other outstanding tokens.
        self.apply_set_password(user_id, password_hash, at, void_resets=True)
        return user_id

    def _void_resets(self, user_id: str) -> None:
        for other in [h for h, reset in self.state.resets.items() if reset.user_id == user_id]:
            del self.state.resets[other]

    def snapshot_state(self) -> _UserState:
        now = self.clock.time()
        self.state.resets = {h: r for h, r in self.state.resets.items() if r.expires_at > now}
        return self.state

    def restore_state(self, state: _UserState) -> None:
        self.state = state

    def state_size(self) -> int:
        return len(self.state.users)

    def _user(self, user_id: str) -> User:
        user = self.state.users.get(user_id)
        if user is None:
            raise NotFound("no such user", user_id=user_id)
        return user

    # calls

    def _is_admin_name(self, name: str) -> bool:
        admin = self.config.admin_username
        return bool(admin) and name == normalize_username(admin)

    async def register(self, username: str, password_hash: str, *, key: str | None = None) -> Any:
        name = normalize_username(username)
        if self._is_admin_name(name):
            raise UsernameTaken(username=name)  # reserved for ensure_admin
        user = User(secrets.token_hex(8), name, password_hash, [Role.USER.value], self.clock.time())
        return await self.execute("create_user", key=key, user=user)

    async def ensure_admin(
        self, username: str, password_hash: str, *, reset: bool = False
    ) -> dict[str, Any]:
        """Make the admin account, or give the account of that name the admin
        role and this password. An account that is already admin keeps its
        password (its owner may have changed it) unless ``reset``. Answers
        ``{"user", "changed"}``; when changed, the caller ends its sessions."""
        name = normalize_username(username)
        if not name:
            raise InvalidInput("the admin needs a username")
        user_id = self.state.by_name.get(name)
        if user_id is None:
            roles = [Role.USER.value, Role.ADMIN.value]
            user = User(secrets.token_hex(8), name, password_hash, roles, self.clock.time())
            return {"user": await self.execute("create_user", user=user), "changed": True}
        found = self.state.users[user_id]
        if Role.ADMIN.value in found.roles and not reset:
            return {"user": found.public(), "changed": False}
        public = await self.execute(
            "make_admin", user_id=user_id, password_hash=password_hash, at=self.clock.time()
        )
        return {"user": public, "changed": True}

    async def find_user(self, username: str) -> dict[str, Any] | None:
        user_id = self.state.by_name.get(normalize_username(username))
        return None if user_id is None else self.state.users[user_id].public()

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
        """A new password; the user's outstanding reset tokens are void."""
        await self.execute(
            "set_password",
            user_id=user_id,
            password_hash=password_hash,
            at=self.clock.time(),
            void_resets=True,
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
        expires_at = self.clock.time() + self.config.reset_token_ttl_s
        await self.execute(
            "create_reset", token_hash=hash_secret(token), user_id=user_id, expires_at=expires_at
        )
        return token

    async def check_reset(self, token: str) -> None:
        """Raise ``InvalidResetToken`` unless ``token`` could be used now."""
        found = self.state.resets.get(hash_secret(token))
        if found is None or found.expires_at <= self.clock.time():
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
    # Per username: the first failure costs ``backoff_base_s``, each next one
    # doubles it, ``max_failures`` lock the name for ``lockout_s``. Per address
    # (many users may share one): the first ``max_failures`` cost nothing, then
    # the same doubling, and four times as many lock it. Counts are forgotten
    # after ``lockout_s`` without a failure.

    def _throttle_keys(self, username: str, address: str) -> list[str]:
        keys = [f"user:{normalize_username(username)}"]
        if address:
            keys.append(f"addr:{address}")
        return keys

    def _delay(self, key: str, count: int) -> float:
        limit, base = self.config.max_failures, self.config.backoff_base_s
        if key.startswith("addr:"):
            if count <= limit:
                return 0.0
            if count >= ADDRESS_LOCKOUT_FACTOR * limit:
                return self.config.lockout_s
            return base * 2.0 ** (count - limit - 1)
        if count >= limit:
            return self.config.lockout_s
        return base * 2.0 ** (count - 1)

    def _count(self, key: str, by: int, now: float) -> float:
        failures = self._failures.get(key)
        if failures is None or now - failures.last_at > self.config.lockout_s:
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

    async def login_steps(self, steps: list[tuple[str, ...]]) -> list[tuple[bool, Any]]:
        """Several logins' steps in one call, taken in order: ``("begin", username,
        address)`` is ``begin_login`` and ``("finish", username, address, user_id)``
        is ``finish_login``. Each answers ``(True, its result)`` or ``(False, the
        error it raised)``. Clients coalesce the steps of concurrent logins into
        these calls, as an actor call costs the same CPU whatever it carries."""
        answers: list[tuple[bool, Any]] = []
        for step, *args in steps:
            try:
                if step == "begin":
                    answers.append((True, await self.begin_login(*args)))
                elif step == "finish":
                    answers.append((True, await self.finish_login(*args)))
                else:
                    raise InvalidInput(f"no login step called {step!r}")
            except RealmError as error:
                answers.append((False, error))
        return answers

    def _forget_old_failures(self, now: float) -> None:
        if len(self._failures) > 100_000:  # bounded memory under a spray of names
            quiet = now - self.config.lockout_s
            self._failures = {k: f for k, f in self._failures.items() if f.last_at > quiet}

    # rate limits per client address (ephemeral)
    #
    # A token bucket per address and kind: a burst of ``limit`` requests, then
    # one more each ``rate_window_s / limit``. An unknown address ("") is not
    # limited (nothing to key on; the login throttle does the same).

    def _limit(self, kind: str) -> int:
        if kind == "register":
            return self.config.register_per_address
        if kind == "reset":
            return self.config.reset_requests_per_address
        raise ValueError(f"no rate limit called {kind!r}")

    def _tokens(self, key: str, now: float) -> float:
        """What is left of ``key``'s allowance now."""
        limit = self._limit(key.partition(":")[0])
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(limit)
        return min(limit, bucket.tokens + (now - bucket.at) * limit / self.config.rate_window_s)

    async def take(self, kind: str, address: str) -> None:
        """Count one ``kind`` request ("register" or "reset") from ``address``;
        ``RateLimited`` (with ``retry_after_s``) once its allowance is spent."""
        limit = self._limit(kind)
        if not address:
            return
        now, key = self.clock.time(), f"{kind}:{address}"
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            wait = (1.0 - tokens) * self.config.rate_window_s / limit
            raise RateLimited(
                f"too many {kind} requests from this address", retry_after_s=round(wait, 3)
            )
        self._buckets[key] = _Bucket(tokens - 1.0, now)
        if len(self._buckets) > 100_000:  # bounded memory: a full bucket need not be kept
            self._buckets = {
                k: b
                for k, b in self._buckets.items()
                if self._tokens(k, now) < self._limit(k.partition(":")[0])
            }

    def __repr__(self) -> str:
        return (
            f"<UserStore users={len(self.state.users)} throttled={len(self._failures)} "
            f"limited={len(self._buckets)}>"
        )


class _UserStoreProcess(UserStore):
    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]
        super().__init__(settings)
        self.restarts = await recover(self, settings, USERS_NAME)

    async def ping(self) -> int:
        return len(self.state.users)


#: Durable: restarted after any crash; calls in flight are retried (idempotent by
#: key, or by nature: setting a password or a flag twice).
UserStoreActor = remote_actor(_UserStoreProcess, restart=Restart.PERMANENT)


__all__ = ["ADDRESS_LOCKOUT_FACTOR", "USERS_NAME", "UserStore", "UserStoreActor"]
