"""Auth's sessions: ``SessionStore`` shards (``auth-sessions-<i>``), journaled.

A session lives on the shard its id hashes to (the id is the first part of
its token). Clients keep near copies of session records under leases
(``actors.runtime.leases``), so a revocation is acknowledged only once no
copy can accept the token any more.
"""

from __future__ import annotations

from typing import Any

from actors.auth.model import Session
from actors.auth.settings import AuthSettings
from actors.runtime.clock import Clock, SystemClock, every
from actors.runtime.journal import Durable
from actors.runtime.leases import LeaseOwner, Leases
from actors.runtime.settings import Settings
from actors.runtime.supervision import Restart, recover, remote_actor

#: Session-store actors are named ``auth-sessions-<i>`` (``shard_names``).
SESSIONS_PREFIX = "auth-sessions"
#: How often session shards end expired sessions.
SESSION_SWEEP_S = 60.0


class SessionStore(LeaseOwner, Durable):
    """One shard of sessions (journaled), with near-cache leases for clients."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.sessions: dict[str, Session] = {}
        self.by_user: dict[str, set[str]] = {}
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

    def snapshot_state(self) -> dict[str, Session]:
        return self.sessions

    def restore_state(self, state: dict[str, Session]) -> None:
        self.sessions = state
        self.by_user = {}
        for session in state.values():
            self.by_user.setdefault(session.user_id, set()).add(session.id)

    def state_size(self) -> int:
        return len(self.sessions)

    # calls

    def _live(self, session_id: str) -> Session | None:
        session = self.sessions.get(session_id)
        if session is None or session.expires_at() <= self.clock.time():
            return None
        return session

    async def create(self, session: Session) -> dict[str, Any]:
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
        """End expired sessions so memory and the journal stay bounded."""
        now = self.clock.time()
        expired = [s.id for s in self.sessions.values() if s.expires_at() <= now]
        self.leases.sweep()
        return await self.end(expired) if expired else 0

    def __repr__(self) -> str:
        return f"<SessionStore sessions={len(self.sessions)} users={len(self.by_user)}>"


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


__all__ = ["SESSIONS_PREFIX", "SessionStore", "SessionStoreActor"]
