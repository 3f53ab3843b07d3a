"""Errors of the auth service (codes and HTTP statuses in the envelope)."""

from __future__ import annotations

from actors.runtime.errors import Conflict, Forbidden, InvalidInput, RealmError, Unauthorized


class InvalidCredentials(Unauthorized):
    """Wrong username or password."""

    code = "invalid_credentials"


class TooManyAttempts(RealmError):
    """Too many failed attempts; retry later (see retry_after_s)."""

    code = "too_many_attempts"
    status = 429


class UsernameTaken(Conflict):
    """That username is taken."""

    code = "username_taken"


class WrongPassword(Forbidden):
    """The current password is wrong."""

    code = "wrong_password"


class InvalidResetToken(InvalidInput):
    """The password-reset token is unknown, used or expired."""

    code = "invalid_reset_token"
