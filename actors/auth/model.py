"""Auth's records and token rules: accounts, sessions, API keys and tickets.

``User``, ``Session`` and ``ApiKey`` are what the stores journal and snapshot
(encoded by value, typed again on replay from these annotations), and what a
lookup answers. Three kinds of credential, told apart by their shape alone:

- a session token is ``<session id>.<secret>`` (16 hex digits, a dot, the secret);
- an API key is ``rk_<key id>.<secret>``;
- a ticket (single use, for ``?ticket=`` on streams) is ``rt_<ticket id>.<secret>``.

The id routes a credential to its session shard, and only the secret's
SHA-256 is ever stored. A session id is hex, so it never starts with ``rk_``
or ``rt_``: no credential can pass for another kind.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Any

from actors.runtime.errors import Unauthorized


class Role(str, Enum):
    #: Every account.
    USER = "user"
    #: May list, disable and enable accounts and issue reset tokens.
    ADMIN = "admin"


@dataclass(slots=True)
class User:
    id: str
    username: str  #: normalized (``normalize_username``)
    password_hash: str  #: argon2id, made and checked by the client, never by an actor
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


@dataclass(slots=True)
class Session:
    id: str
    user_id: str
    username: str
    roles: list[str]
    secret_hash: str  #: SHA-256 of the token's secret
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


@dataclass(slots=True)
class ApiKey:
    """A scoped API key, held by a service and acting for ``user_id``."""

    id: str  #: 16 hex digits; the key is ``rk_<id>.<secret>``
    user_id: str  #: owns everything the key creates
    username: str
    name: str  #: what the admin called it
    scopes: list[str]  #: names from ``actors.runtime.registry.SCOPES``
    secret_hash: str  #: SHA-256 of the key's secret
    created_at: float
    created_by: str  #: the admin's user id
    expires_at: float = 0.0  #: Unix time; 0 never

    def live(self, now: float) -> bool:
        return not self.expires_at or self.expires_at > now

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "username": self.username,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at or None,
        }


#: An API key starts with this; its lookups and leases use ``key_ref(id)``.
KEY_PREFIX = "rk_"
#: A ticket starts with this.
TICKET_PREFIX = "rt_"
_ID_CHARS = 16
_MAX_CREDENTIAL_CHARS = 128


def key_ref(key_id: str) -> str:
    """Where a key lives in a shard's lookups, leases and near caches (a session
    id never looks like this)."""
    return KEY_PREFIX + key_id


def normalize_username(username: str) -> str:
    return username.strip().casefold()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """``(session_id, secret, token)``: 64 random bits of id, 256 of secret."""
    session_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return session_id, secret, f"{session_id}.{secret}"


def new_api_key() -> tuple[str, str, str]:
    """``(key_id, secret, key)``: the key is ``rk_<id>.<secret>``."""
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return key_id, secret, f"{KEY_PREFIX}{key_id}.{secret}"


def new_ticket() -> tuple[str, str, str]:
    """``(ticket_id, secret, ticket)``: the ticket is ``rt_<id>.<secret>``."""
    ticket_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return ticket_id, secret, f"{TICKET_PREFIX}{ticket_id}.{secret}"


def parse_token(token: str) -> tuple[str, str]:
    """A session token's ``(session_id, secret)``; ``Unauthorized`` if malformed."""
    session_id, dot, secret = token.partition(".")
    if not dot or len(session_id) != _ID_CHARS or not secret or len(token) > _MAX_CREDENTIAL_CHARS:
        raise Unauthorized("malformed token")
    return session_id, secret


def _parse(credential: str, prefix: str, what: str) -> tuple[str, str]:
    if len(credential) > _MAX_CREDENTIAL_CHARS or not credential.startswith(prefix):
        raise Unauthorized(f"malformed {what}")
    found_id, dot, secret = credential[len(prefix) :].partition(".")
    if not dot or len(found_id) != _ID_CHARS or not secret:
        raise Unauthorized(f"malformed {what}")
    return found_id, secret


def parse_api_key(key: str) -> tuple[str, str]:
    """An API key's ``(key_id, secret)``; ``Unauthorized`` if malformed."""
    return _parse(key, KEY_PREFIX, "API key")


def parse_ticket(ticket: str) -> tuple[str, str]:
    """A ticket's ``(ticket_id, secret)``; ``Unauthorized`` if malformed."""
    return _parse(ticket, TICKET_PREFIX, "ticket")


def secret_matches(record: Session | ApiKey, secret: str) -> bool:
    return hmac.compare_digest(record.secret_hash, hash_secret(secret))


__all__ = [
    "KEY_PREFIX",
    "TICKET_PREFIX",
    "ApiKey",
    "Role",
    "Session",
    "User",
    "hash_secret",
    "key_ref",
    "new_api_key",
    "new_ticket",
    "new_token",
    "normalize_username",
    "parse_api_key",
    "parse_ticket",
    "parse_token",
    "secret_matches",
]
