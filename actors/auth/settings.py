"""Settings of auth: ``REALM_AUTH_*`` variables (``docs/configuration.md``)."""

from __future__ import annotations

from pydantic import Field

from actors.runtime.settings import Section


class AuthSettings(Section, service="auth"):
    """Auth: read once, where the deployment is built."""

    session_shards: int = Field(2, ge=1, le=256)
    """Session-store actors; sessions are spread over them by hashing their id."""

    idle_timeout_s: float = Field(1800.0, gt=0)
    """A session ends after this long without use (or at ``absolute_timeout_s``)."""

    absolute_timeout_s: float = Field(7 * 86400.0, gt=0)
    """A session ends this long after login, whatever its use."""

    touch_interval_s: float = Field(60.0, gt=0)
    """How stale a session's last-use time may get before a check refreshes it."""

    session_lease_s: float = Field(2.0, gt=0)
    """Longest a replica trusts its copy of a session without hearing from its shard."""

    argon2_memory_kib: int = Field(19_456, ge=8)
    """argon2id cost (OWASP's minimum: 19 MiB, 2 passes, 1 lane)."""

    argon2_time_cost: int = Field(2, ge=1)
    """argon2id passes."""

    argon2_parallelism: int = Field(1, ge=1)
    """argon2id lanes."""

    min_password_chars: int = Field(8, ge=1)
    """Shortest password accepted."""

    max_password_bytes: int = Field(1024, ge=8)
    """Longer passwords are refused before hashing (a 1 MB password is not a minute of work).
    """

    max_username_chars: int = Field(64, ge=1)
    """Longest username accepted."""

    max_failures: int = Field(5, ge=1)
    """Failed logins allowed (per username and per client address) before a lockout."""

    backoff_base_s: float = Field(1.0, ge=0)
    """Wait after the first failed login; it doubles with each further failure."""

    lockout_s: float = Field(900.0, gt=0)
    """How long a username or client address stays locked out after too many failed logins."""

    reset_token_ttl_s: float = Field(900.0, gt=0)
    """How long a password-reset token stays usable."""

    admin_username: str = ""
    """A user registering with this name gets the admin role (empty: nobody)."""

    dev_mode: bool = False
    """Development only: password-reset tokens are also written to the log."""
