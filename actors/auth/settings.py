"""Settings of auth: ``REALM_AUTH_*`` variables (``docs/configuration.md``)."""

from __future__ import annotations

from pydantic import Field, field_validator

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

    register_per_address: int = Field(20, ge=1)
    """Registrations one client address may make per ``rate_window_s`` (a burst of
    this many, then one per ``rate_window_s / register_per_address``)."""

    reset_requests_per_address: int = Field(10, ge=1)
    """Password-reset requests one client address may make per ``rate_window_s``."""

    rate_window_s: float = Field(3600.0, gt=0)
    """The window of ``register_per_address`` and ``reset_requests_per_address``;
    past them the answer is 429 ``rate_limited`` with ``Retry-After``."""

    ticket_ttl_s: float = Field(30.0, gt=0, le=300)
    """How long a ticket from ``POST /auth/ticket`` stays usable (once) as ``?ticket=``."""

    max_api_keys_per_user: int = Field(100, ge=1)
    """API keys one user may hold (each acting for them); more is 403 ``limit_reached``."""

    admin_username: str = ""
    """The admin account's name (empty: no admin). It is made, or given the admin
    role, when an auth replica starts with ``admin_password_file`` or
    ``admin_password_hash`` set, or by ``python -m actors.auth.bootstrap``;
    registering this name is refused."""

    admin_password_file: str = ""
    """A file holding the admin's password (its first line), read by each auth replica
    as it starts: keep it mode 600 on the nodes that run the auth ingress."""

    admin_password_hash: str = ""
    """The admin's password as an argon2id hash (``python -m actors.auth.bootstrap
    --print-hash`` makes one): the password itself then appears nowhere."""

    dev_mode: bool = False
    """Development only: password-reset tokens are also written to the log."""

    @field_validator("admin_password_hash")
    @classmethod
    def _argon2id(cls, value: str) -> str:
        if value and not value.startswith("$argon2id$"):
            raise ValueError("an argon2id hash ($argon2id$...), or empty")
        return value
