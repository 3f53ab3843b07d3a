"""Errors of the scheduler service (codes and HTTP statuses in the envelope)."""

from __future__ import annotations

from actors.runtime.errors import InvalidInput, NotFound


class ScheduleNotFound(NotFound):
    """No such schedule (or it belongs to someone else)."""

    code = "schedule_not_found"


class BadCron(InvalidInput):
    """The cron expression is not valid (five fields, or six with seconds first)."""

    code = "bad_cron"


class UnknownTimeZone(InvalidInput):
    """The time zone is not an IANA zone name (such as Europe/Paris)."""

    code = "unknown_time_zone"


class UnknownTarget(InvalidInput):
    """The schedule's target type is not one the scheduler knows."""

    code = "unknown_target"
