"""The auth service's Python API, for its own ingress and for every other service.

``SessionVerifier`` checks bearer credentials (session tokens and API keys)
and redeems tickets, which is all another service's ingress needs: session
and key records are kept in a near cache under leases, so a check is usually
a local lookup, and a revocation anywhere is acknowledged only once no copy
can accept the credential. ``AuthClient`` adds the rest for the auth ingress:
accounts, logins, sessions, API keys and tickets on the ``UserStore`` and the
``SessionStore`` shards, with passwords hashed and checked here (argon2id, in
a worker thread so the event loop keeps serving), never in an actor.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from actors.auth.errors import InvalidCredentials, WrongPassword
from actors.auth.model import (
    KEY_PREFIX,
    TICKET_PREFIX,
    ApiKey,
    Role,
    Session,
    hash_secret,
    key_ref,
    new_api_key,
    new_ticket,
    new_token,
    parse_api_key,
    parse_ticket,
    parse_token,
    secret_matches,
)
from actors.auth.sessions import SESSIONS_PREFIX, SessionStoreActor
from actors.auth.settings import AuthSettings
from actors.auth.users import USERS_NAME, UserStoreActor
from actors.runtime.batching import Coalescer
from actors.runtime.clock import Clock, SystemClock
from actors.runtime.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    LimitReached,
    NotFound,
    TooLarge,
    Unauthorized,
)
from actors.runtime.near_cache import NearCache
from actors.runtime.registry import SCOPES
from actors.runtime.settings import Settings
from actors.runtime.shards import Shards
from actors.runtime.supervision import ActorRef

log = logging.getLogger(__name__)

#: Session and key records one client keeps near.
SESSIONS_REMEMBERED = 50_000
#: Tickets a verifier remembers having redeemed, for ``recheck`` of a stream that
#: names its ticket rather than its principal (least recently checked forgotten first).
TICKETS_REMEMBERED = 50_000
#: Usernames: letters, digits and . _ - @ + (after case folding).
USERNAME = re.compile(r"^[\w.@+-]+$")
#: Longest name an admin may give an API key.
MAX_KEY_NAME_CHARS = 200
#: Longest life an API key may be given (ten years); without one it never expires.
MAX_KEY_TTL_S = 10 * 365 * 86400.0
#: Most login steps (or sessions) one coalesced actor call carries.
LOGIN_BATCH = 256


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


#: A session or key record as a verifier keeps it near: with its principal.
Known = tuple[Session | ApiKey, Principal]


def _principal(record: Session | ApiKey) -> Principal:
    if isinstance(record, ApiKey):
        return Principal(record.user_id, record.username, (), record.id, frozenset(record.scopes))
    return Principal(record.user_id, record.username, tuple(record.roles), record.id)


class SessionVerifier:
    """Checks bearer credentials and redeems tickets: what every ingress needs,
    and nothing more.

    It follows the ``SessionStore`` shards only; it builds no password hasher
    and never touches the user store, so a replica that checks credentials
    pays for neither. Session and API-key records are kept near under leases
    (``NearCache``), so a check is usually a local lookup, and a revocation
    anywhere is acknowledged only once no copy can accept the credential."""

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
        #: ticket -> the principal it signed in as (only ``recheck`` reads it)
        self._redeemed: OrderedDict[str, Principal] = OrderedDict()

    async def start(self) -> None:
        """Start (or find) the session shards and wait until each answers."""
        await self.shards.start()

    def _shard(self, session_id: str) -> ActorRef:
        return self.shards.owner(session_id)

    async def _lookup_shard(self, index: int, refs: list[str]) -> list[tuple[Known | None, float]]:
        answers: list[tuple[Session | ApiKey | None, float]] = await self.shards[index].call(
            "lookup", refs, self.near.follower
        )
        # The near cache keeps each record with its principal, made once.
        return [(None if r is None else (r, _principal(r)), lease) for r, lease in answers]

    async def _fetch(self, ref: str, shard_key: str) -> Known | None:
        """A session (``ref`` its id) or key (``ref`` its ``key_ref``) from its
        shard (which ``shard_key`` hashes to), kept near under its lease."""
        index = self.shards.index(shard_key)
        [known] = await self.near.read_through(index, [ref], self._lookups[index].submit)
        return cast(Known | None, known)

    async def authenticate(self, token: str) -> Principal:
        """The principal behind a bearer credential (a session token or an API
        key); ``Unauthorized`` if it is not valid now. Tickets are not bearer
        credentials: they are redeemed (``redeem_ticket``). Usually a lookup in
        the near cache, whatever the kind."""
        if token.startswith(KEY_PREFIX):
            key_id, secret = parse_api_key(token)
            ref = KEY_PREFIX + key_id
            known = self.near.lookup(ref) or await self._fetch(ref, key_id)
            if (
                known is None
                or type(key := known[0]) is not ApiKey
                or not secret_matches(key, secret)
                or (key.expires_at and key.expires_at <= self.clock.time())
            ):
                raise Unauthorized("invalid, revoked or expired API key")
            return known[1]
        session_id, secret = parse_token(token)
        known = self.near.lookup(session_id) or await self._fetch(session_id, session_id)
        if known is None or type(session := known[0]) is not Session:
            raise Unauthorized("invalid or expired session")
        now = self.clock.time()
        if not secret_matches(session, secret) or session.expires_at() <= now:
            raise Unauthorized("invalid or expired session")
        stale = now - session.last_seen_at >= self.config.touch_interval_s
        if stale and await self._shard(session_id).call("touch", session_id) is None:
            raise Unauthorized("invalid or expired session")
        return known[1]

    async def redeem_ticket(self, ticket: str) -> Principal:
        """The principal a ticket was issued to, using the ticket up (a ticket
        signs in once); ``Unauthorized`` if it is unknown, used or expired, or
        the session or key behind it has ended."""
        ticket_id, secret = parse_ticket(ticket)
        credential = await self._shard(ticket_id).call("redeem_ticket", ticket_id, secret)
        if credential is None:
            raise Unauthorized("invalid, used or expired ticket")
        principal = await self._credential_principal(credential)
        self._redeemed[ticket] = principal
        while len(self._redeemed) > TICKETS_REMEMBERED:
            self._redeemed.popitem(last=False)
        return principal

    async def _credential_principal(self, credential: str) -> Principal:
        """The principal of a live session id or ``key_ref``, without its secret."""
        is_key = credential.startswith(KEY_PREFIX)
        shard_key = credential[len(KEY_PREFIX) :] if is_key else credential
        known = self.near.lookup(credential) or await self._fetch(credential, shard_key)
        now = self.clock.time()
        if known is not None and isinstance(key := known[0], ApiKey) and key.live(now):
            return known[1]
        if known is None or not isinstance(session := known[0], Session):
            raise Unauthorized("the session has ended or the key was revoked")
        if session.expires_at() <= now:
            raise Unauthorized("the session has ended")
        stale = now - session.last_seen_at >= self.config.touch_interval_s
        if stale and await self._shard(session.id).call("touch", session.id) is None:
            raise Unauthorized("the session has ended")
        return known[1]

    async def recheck(self, signed_in: Principal | str) -> Principal:
        """Check again that a principal (or the bearer credential or ticket it
        signed in with) may still act: ``Unauthorized`` once its session has
        ended or its key has been revoked. A session in use stays alive (its
        idle expiry slides), as with ``authenticate``. What streams call to
        outlive nothing they were opened with."""
        if isinstance(signed_in, Principal):
            credential = signed_in.session_id
            if not signed_in.is_user:
                credential = key_ref(credential)
            principal = await self._credential_principal(credential)
            if principal.user_id != signed_in.user_id:
                raise Unauthorized("the session has ended")
            return principal
        if signed_in.startswith(TICKET_PREFIX):
            remembered = self._redeemed.get(signed_in)
            if remembered is None:
                raise Unauthorized("the ticket was not redeemed here")
            self._redeemed.move_to_end(signed_in)
            return await self.recheck(remembered)
        return await self.authenticate(signed_in)

    async def close(self) -> None:
        await self.near.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} shards={len(self.shards)} near={self.near!r}>"


def read_password_file(path: str) -> str:
    """A password file's first line (without its line end)."""
    lines = Path(path).expanduser().read_text().splitlines()
    return lines[0] if lines else ""


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
        # Concurrent logins share actor calls: their steps on the user store go
        # in one ``login_steps`` call, their sessions on a shard in one
        # ``create_many`` (each waits only while another call is in flight).
        self._login_steps = Coalescer(self._send_login_steps, max_batch=LOGIN_BATCH)
        self._creates = [
            Coalescer(partial(self._create_sessions, index), max_batch=LOGIN_BATCH)
            for index in range(len(self.shards))
        ]
        #: Checked against when the user does not exist, so both take as long.
        self._decoy_hash = self.hasher.hash(secrets.token_urlsafe(16))

    async def start(self) -> None:
        """Start (or find) the auth actors and wait until each answers; then make
        the admin account if the settings hold its password."""
        await asyncio.gather(self.users.call("ping"), super().start())
        try:
            await self.bootstrap_admin()
        except (OSError, InvalidInput) as error:  # the service runs on without an admin
            log.error("auth: the admin account was not made: %s", error)

    async def bootstrap_admin(self) -> dict[str, Any] | None:
        """Make the admin account from the settings (``admin_username`` with
        ``admin_password_hash`` or ``admin_password_file``), if they name one."""
        config = self.config
        if not config.admin_username:
            return None
        if config.admin_password_hash:
            password_hash = config.admin_password_hash
        elif config.admin_password_file:
            password = await asyncio.to_thread(read_password_file, config.admin_password_file)
            password_hash = await self._hash(password)
        else:
            return None
        return await self.ensure_admin(config.admin_username, password_hash=password_hash)

    async def ensure_admin(
        self,
        username: str,
        *,
        password: str | None = None,
        password_hash: str | None = None,
        reset: bool = False,
    ) -> dict[str, Any]:
        """Make the admin account ``username``, or give the account of that name
        the admin role and this password, ending its sessions (a squatter's
        tokens must not become an admin's). An account that is admin already
        keeps its password unless ``reset``. Answers ``{"user", "changed"}``."""
        self._check_username(username)
        if password_hash is None:
            if password is None:
                raise InvalidInput("the admin needs a password")
            password_hash = await self._hash(password)
        result: dict[str, Any] = await self.users.call(
            "ensure_admin", username, password_hash, reset=reset
        )
        if result["changed"]:
            await self._end_for_user(result["user"]["id"])
            log.warning("auth: %r is the admin account", result["user"]["username"])
        return result

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

    async def _send_login_steps(self, steps: list[tuple[str, ...]]) -> list[tuple[bool, Any]]:
        answers: list[tuple[bool, Any]] = await self.users.call("login_steps", steps)
        return answers

    async def _login_step(self, *step: str) -> Any:
        """One ``begin``/``finish`` step of a login on the user store, in a call
        it may share with other logins' steps; raises what the step raised."""
        [(ok, answer)] = await self._login_steps.submit([step])
        if not ok:
            raise answer
        return answer

    async def _create_sessions(self, index: int, sessions: list[Session]) -> list[dict[str, Any]]:
        public: list[dict[str, Any]] = await self.shards[index].call("create_many", sessions)
        return public

    async def register(self, username: str, password: str, *, address: str = "") -> dict[str, Any]:
        """A new account (never an admin). Limited per client ``address``."""
        await self.users.call("take", "register", address)
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
        account = await self._login_step("begin", username, address)
        password_hash = account["password_hash"] if account else self._decoy_hash
        if not await self._verify(password_hash, password) or account is None:
            raise InvalidCredentials()  # the attempt stays counted as a failure
        if account["disabled"]:
            await self._login_step("finish", username, address, account["id"])
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
        index = self.shards.index(session_id)
        [public] = await self._creates[index].submit([session])
        # Checked again after the session exists: a disable, password change or
        # reset that ended the user's sessions meanwhile must end this one too.
        state = await self._login_step("finish", username, address, account["id"])
        if state["disabled"] or state["password_changed_at"] != account["password_changed_at"]:
            await self.shards[index].call("end", [session_id])
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
        if not isinstance(session, Session) or (
            session.user_id != principal.user_id and not principal.is_admin
        ):
            raise NotFound("no such session", session_id=session_id)
        await self._shard(session_id).call("end", [session_id])

    # --- tickets ------------------------------------------------------------

    async def issue_ticket(self, principal: Principal) -> dict[str, Any]:
        """A ticket that signs in once as ``principal`` (its session, or its API
        key), within ``ticket_ttl_s``: for ``?ticket=`` where a client cannot set
        headers. It fails once that session ends or that key is revoked."""
        credential = principal.session_id if principal.is_user else key_ref(principal.session_id)
        ticket_id, secret, ticket = new_ticket()
        ttl = self.config.ticket_ttl_s
        await self._shard(ticket_id).call(
            "issue_ticket", ticket_id, hash_secret(secret), credential, self.clock.time() + ttl
        )
        return {"ticket": ticket, "expires_in_s": ttl}

    # --- API keys -------------------------------------------------------------

    async def create_api_key(
        self,
        admin: Principal,
        *,
        scopes: list[str],
        name: str = "",
        user_id: str | None = None,
        username: str | None = None,
        expires_in_s: float | None = None,
    ) -> dict[str, Any]:
        """A new API key with ``scopes``, acting for ``user_id`` or ``username``
        (by default the admin making it). The answer holds the key itself
        (``rk_<id>.<secret>``), shown this once: only its hash is kept."""
        unknown = sorted(set(scopes) - SCOPES)
        if unknown or not scopes:
            raise InvalidInput(
                "scopes must be a non-empty list of known scopes",
                unknown=unknown,
                known=sorted(SCOPES),
            )
        if len(name) > MAX_KEY_NAME_CHARS:
            raise InvalidInput("the name is too long", limit=MAX_KEY_NAME_CHARS)
        if expires_in_s is not None and not 0 < expires_in_s <= MAX_KEY_TTL_S:
            raise InvalidInput("expires_in_s is out of range", limit=MAX_KEY_TTL_S)
        owner = await self._key_owner(admin, user_id=user_id, username=username)
        held = sum(await self.shards.call_all("count_keys", owner["id"]))
        if held >= self.config.max_api_keys_per_user:
            raise LimitReached(
                "this user holds as many API keys as allowed",
                limit=self.config.max_api_keys_per_user,
            )
        key_id, secret, token = new_api_key()
        now = self.clock.time()
        key = ApiKey(
            id=key_id,
            user_id=owner["id"],
            username=owner["username"],
            name=name,
            scopes=sorted(set(scopes)),
            secret_hash=hash_secret(secret),
            created_at=now,
            created_by=admin.user_id,
            expires_at=now + expires_in_s if expires_in_s is not None else 0.0,
        )
        shard = self._shard(key_id)
        public: dict[str, Any] = await shard.call("create_key", key)
        # Checked again once the key exists: disabling the user meanwhile must revoke it too.
        if (await self.users.call("user", owner["id"]))["disabled"]:
            await shard.call("revoke_keys", [key_id])
            raise Conflict("the account was disabled; the key was not made")
        return {**public, "key": token}

    async def _key_owner(
        self, admin: Principal, *, user_id: str | None, username: str | None
    ) -> dict[str, Any]:
        if user_id is not None and username is not None:
            raise InvalidInput("name the key's user by user_id or by username, not both")
        if username is not None:
            owner: dict[str, Any] | None = await self.users.call("find_user", username)
            if owner is None:
                raise NotFound("no such user", username=username)
        else:
            owner = await self.users.call("user", user_id or admin.user_id)
            assert owner is not None
        if owner["disabled"]:
            raise Conflict("the account is disabled")
        return owner

    async def list_api_keys(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """Every live key (or ``user_id``'s), oldest first, without secrets."""
        found = await self.shards.call_all("list_keys", user_id)
        return sorted((k for part in found for k in part), key=lambda k: (k["created_at"], k["id"]))

    async def revoke_api_key(self, key_id: str) -> None:
        """Revoke a key; returns once no replica accepts it any more."""
        if not await self._shard(key_id).call("revoke_keys", [key_id]):
            raise NotFound("no such API key", key_id=key_id)

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

    async def request_reset_soon(
        self, username: str, deliver: Callable[[str], None], *, address: str = ""
    ) -> None:
        """Make a reset token in the background and hand it to ``deliver``: the
        caller answers at once, in the same time whether the account exists.
        Limited per client ``address`` (``RateLimited``), whatever the name."""
        await self.users.call("take", "reset", address)

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
        """Disable (ending every session and revoking every API key of the user
        at once) or enable an account (which revives neither)."""
        user: dict[str, Any] = await self.users.call("set_disabled", user_id, disabled)
        if disabled:
            await asyncio.gather(
                self._end_for_user(user_id), self.shards.call_all("revoke_keys_for_user", user_id)
            )
        return user


__all__ = ["MAX_KEY_NAME_CHARS", "MAX_KEY_TTL_S", "AuthClient", "Principal", "SessionVerifier"]
