"""Auth's records and token rules: accounts, sessions, and bearer tokens.

``User`` and ``Session`` are what the stores journal and snapshot (encoded
by value, typed again on replay from these annotations), and what a session
lookup answers. A token is ``<session id>.<secret>``: the id routes it to its
session shard, and only the secret's SHA-256 is ever stored.
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


__all__ = [
    "Role",
    "Session",
    "User",
    "hash_secret",
    "new_token",
    "normalize_username",
    "parse_token",
    "secret_matches",
]
