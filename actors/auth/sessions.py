"""Auth's sessions and API keys: ``SessionStore`` shards (``auth-sessions-<i>``).

A session (or an API key) lives on the shard its id hashes to (the id is the
first part of its token). Both are journaled. Clients keep near copies of
them under leases (``actors.runtime.leases``), so a logout or a key's
revocation is acknowledged only once no copy can accept the credential any
more. A key is looked up, leased and invalidated as ``key_ref(id)``
(``rk_<id>``), which no session id can equal.

Tickets (single use, ``REALM_AUTH_TICKET_TTL_S`` short, for ``?ticket=``) live
here too, on the shard their own id hashes to, in memory only: a restarted
shard has forgotten them, and their holders ask for new ones.
"""

from __future__ import annotations

import asyncio
import hmac
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from actors.auth.model import KEY_PREFIX, ApiKey, Session, hash_secret, key_ref
from actors.auth.settings import AuthSettings
from actors.runtime.clock import Clock, SystemClock, every
from actors.runtime.errors import RateLimited
from actors.runtime.journal import Durable
from actors.runtime.leases import LeaseOwner, Leases
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, recover, remote_actor

#: Session-store actors are named ``auth-sessions-<i>`` (``shard_names``).
SESSIONS_PREFIX = "auth-sessions"
#: How often session shards end expired sessions (and keys, and tickets).
SESSION_SWEEP_S = 60.0
#: Outstanding tickets one shard keeps; past it, new ones are refused (429).
TICKETS_KEPT = 100_000
#: Outstanding tickets one credential may hold; a further one replaces the oldest.
TICKETS_PER_CREDENTIAL = 16


@dataclass(slots=True)
class ShardState:
    """What a session shard journals: its snapshot, as stored (version 2)."""

    sessions: dict[str, Session] = field(default_factory=dict)  #: by id
    keys: dict[str, ApiKey] = field(default_factory=dict)  #: by key id


@dataclass(slots=True)
class _Ticket:
    secret_hash: str
    credential: str  #: the session id, or ``key_ref(key id)``, it signs in as
    expires_at: float


class SessionStore(LeaseOwner, Durable):
    """One shard of sessions and API keys (journaled), with near-cache leases
    for clients, and tickets (ephemeral)."""

    #: 2: the snapshot holds sessions and keys (1 held sessions only).
    schema_version = 2

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.sessions: dict[str, Session] = {}
        self.by_user: dict[str, set[str]] = {}
        self.keys: dict[str, ApiKey] = {}
        self.keys_by_user: dict[str, set[str]] = {}
        self.tickets: OrderedDict[str, _Ticket] = OrderedDict()
        self._tickets_of: dict[str, list[str]] = {}  #: credential -> its ticket ids
        self.leases = Leases(self.clock, lease_s=AuthSettings.of(settings).session_lease_s)

    # state changes (deterministic; replayed on recovery)

    def apply_create(self, session: Session) -> dict[str, Any]:
        self.sessions[session.id] = session
        self.by_user.setdefault(session.user_id, set()).add(session.id)
        return session.public()

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

    def apply_create_key(self, api_key: ApiKey) -> dict[str, Any]:
        self.keys[api_key.id] = api_key
        self.keys_by_user.setdefault(api_key.user_id, set()).add(api_key.id)
        return api_key.public()

    def apply_revoke_keys(self, key_ids: list[str]) -> int:
        revoked = 0
        for key_id in key_ids:
            key = self.keys.pop(key_id, None)
            if key is not None:
                revoked += 1
                owned = self.keys_by_user.get(key.user_id, set())
                owned.discard(key_id)
                if not owned:
                    self.keys_by_user.pop(key.user_id, None)
        return revoked

    def snapshot_state(self) -> ShardState:
        return ShardState(self.sessions, self.keys)

    def restore_state(self, state: ShardState) -> None:
        self.sessions, self.keys = state.sessions, state.keys
        self.by_user, self.keys_by_user = {}, {}
        for session in state.sessions.values():
            self.by_user.setdefault(session.user_id, set()).add(session.id)
        for key in state.keys.values():
            self.keys_by_user.setdefault(key.user_id, set()).add(key.id)

    def upgrade_state(self, version: int, state: Any) -> Any:
        if version == 1:  # sessions by id, nothing else
            return {"sessions": state, "keys": {}}
        return super().upgrade_state(version, state)

    def upgrade_record(
        self, version: int, op: str, args: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        if version == 1:  # records did not change, only the snapshot
            return op, args
        return super().upgrade_record(version, op, args)

    def state_size(self) -> int:
        return len(self.sessions) + len(self.keys)

    # calls

    def _live(self, session_id: str) -> Session | None:
        session = self.sessions.get(session_id)
        if session is None or session.expires_at() <= self.clock.time():
            return None
        return session

    def _live_key(self, key_id: str) -> ApiKey | None:
        key = self.keys.get(key_id)
        if key is None or not key.live(self.clock.time()):
            return None
        return key

    async def create(self, session: Session) -> dict[str, Any]:
        result: dict[str, Any] = await self.execute("create", session=session)
        return result

    async def create_many(self, sessions: list[Session]) -> list[dict[str, Any]]:
        """Several sessions at once (what clients coalesce concurrent logins'
        sessions into): each journaled, their records committed together;
        answers once every one of them is durable."""
        recorded = [self.record("create", session=session) for session in sessions]
        await asyncio.gather(*(committed for _, committed in recorded))
        return [public for public, _ in recorded]

    async def lookup(
        self, refs: list[str], follower: str | None = None
    ) -> list[tuple[Session | ApiKey | None, float]]:
        """Live sessions and keys (or None) and, for a follower, how long it may
        keep each. A ref is a session id, or ``key_ref(id)`` for a key."""
        answers: list[tuple[Session | ApiKey | None, float]] = []
        now = self.clock.time()
        for ref in refs:
            record: Session | ApiKey | None
            if ref.startswith(KEY_PREFIX):
                record = key = self._live_key(ref[len(KEY_PREFIX) :])
                expires_in = None if key is None or not key.expires_at else key.expires_at - now
            else:
                record = session = self._live(ref)
                expires_in = None if session is None else session.expires_at() - now
            if record is None or follower is None:
                answers.append((record, 0.0))
                continue
            answers.append((record, self.leases.grant(ref, follower, expires_in_s=expires_in)))
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
        """End sessions; returns once no client can accept them any more."""
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
        """End expired sessions, keys and tickets so memory and the journal stay
        bounded; answers how many sessions and keys ended."""
        now = self.clock.time()
        expired = [s.id for s in self.sessions.values() if s.expires_at() <= now]
        old_keys = [k.id for k in self.keys.values() if not k.live(now)]
        self._drop_expired_tickets(now)
        self.leases.sweep()
        ended = await self.end(expired) if expired else 0
        return ended + (await self.revoke_keys(old_keys) if old_keys else 0)

    # API keys

    async def create_key(self, api_key: ApiKey) -> dict[str, Any]:
        result: dict[str, Any] = await self.execute("create_key", api_key=api_key)
        return result

    async def revoke_keys(self, key_ids: list[str]) -> int:
        """Revoke keys; returns once no client can accept them any more."""
        key_ids = [k for k in key_ids if k in self.keys]
        if not key_ids:
            return 0
        await self.leases.before_write()
        revoked: int = await self.execute("revoke_keys", key_ids=key_ids)
        await self._invalidate([key_ref(k) for k in key_ids])
        return revoked

    async def revoke_keys_for_user(self, user_id: str) -> int:
        return await self.revoke_keys(list(self.keys_by_user.get(user_id, ())))

    async def list_keys(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """Live keys (every key, or ``user_id``'s), without their hashes."""
        now = self.clock.time()
        ids = self.keys if user_id is None else self.keys_by_user.get(user_id, ())
        return [self.keys[k].public() for k in ids if self.keys[k].live(now)]

    async def count_keys(self, user_id: str) -> int:
        return len(self.keys_by_user.get(user_id, ()))

    # tickets (ephemeral)

    async def issue_ticket(
        self, ticket_id: str, secret_hash: str, credential: str, expires_at: float
    ) -> None:
        """Keep a ticket until ``expires_at`` or its first use."""
        now = self.clock.time()
        self._drop_expired_tickets(now)
        if len(self.tickets) >= TICKETS_KEPT:
            raise RateLimited("too many tickets outstanding", retry_after_s=expires_at - now)
        mine = self._tickets_of.setdefault(credential, [])
        while len(mine) >= TICKETS_PER_CREDENTIAL:
            self.tickets.pop(mine.pop(0), None)
        mine.append(ticket_id)
        self.tickets[ticket_id] = _Ticket(secret_hash, credential, expires_at)

    async def redeem_ticket(self, ticket_id: str, secret: str) -> str | None:
        """Use a ticket up: the credential it signs in as, or None if it is
        unknown, used or expired, or its secret is wrong (which uses it up too)."""
        ticket = self.tickets.pop(ticket_id, None)
        if ticket is None:
            return None
        self._forget_ticket(ticket_id, ticket.credential)
        if ticket.expires_at <= self.clock.time():
            return None
        if not hmac.compare_digest(ticket.secret_hash, hash_secret(secret)):
            return None
        return ticket.credential

    def _forget_ticket(self, ticket_id: str, credential: str) -> None:
        mine = self._tickets_of.get(credential, [])
        if ticket_id in mine:
            mine.remove(ticket_id)
        if not mine:
            self._tickets_of.pop(credential, None)

    def _drop_expired_tickets(self, now: float) -> None:
        # Tickets are kept in the order they were issued, all for the same time.
        while self.tickets:
            ticket_id, ticket = next(iter(self.tickets.items()))
            if ticket.expires_at > now:
                return
            del self.tickets[ticket_id]
            self._forget_ticket(ticket_id, ticket.credential)

    def __repr__(self) -> str:
        return (
            f"<SessionStore sessions={len(self.sessions)} users={len(self.by_user)} "
            f"keys={len(self.keys)} tickets={len(self.tickets)}>"
        )


class _SessionStoreProcess(SessionStore):
    async def __init__(self, settings: Settings, name: str) -> None:  # type: ignore[misc]
        super().__init__(settings)
        if await recover(self, settings, name):
            self.leases.hold_writes()  # copies granted before the crash may still be held
        self._sweeper = every(self.clock, SESSION_SWEEP_S, self.sweep)


#: Durable: restarted after any crash; calls in flight are retried (idempotent by
#: nature: creating a session under a fresh id, ending one twice).
SessionStoreActor = remote_actor(
    _SessionStoreProcess, restart=Restart.PERMANENT, scheduling_strategy="SPREAD"
)


__all__ = ["SESSIONS_PREFIX", "SessionStore", "SessionStoreActor", "ShardState"]
