"""Errors of the push service (codes and HTTP statuses in the envelope)."""

from __future__ import annotations

from actors.runtime.errors import InvalidInput, NotFound, RateLimited


class DeviceNotFound(NotFound):
    """No such device (or it belongs to someone else, or its token died)."""

    code = "device_not_found"


class NotificationNotFound(NotFound):
    """No such notification (or someone else sent it, or its results expired)."""

    code = "notification_not_found"


class BadDevice(InvalidInput):
    """The device's token, subscription or address is not one the platform can use."""

    code = "bad_device"


class PushQuotaExceeded(RateLimited):
    """The sender (or the app) sent more deliveries this minute than its quota."""

    code = "push_quota_exceeded"
