"""When a schedule is due: one-shot, interval and cron triggers, with time zones.

Due times are whole milliseconds since the epoch (UTC), so they compare and
key exactly. A trigger answers one question, ``next_after(t)``: the first due
time strictly after ``t`` (None when there is none).

Time zones and DST (the rules the scheduler documents):

- **Wall-clock cron** (the minute and hour fields are both fixed values or
  lists, such as ``30 2 * * *``) is computed on local wall time, as Debian's
  cron does:
  a local time the spring-forward gap skips (02:30 on 2026-03-08 in
  America/New_York) fires once, at the first minute after the gap (03:00 EDT);
  a local time the fall-back repeats (01:30 on 2026-11-01) fires once, at its
  first occurrence (01:30 EDT), not again an hour later. This holds for five
  and six field expressions alike (cronsim itself only does it for five).
- **Frequent cron** (``*`` or a step in the minute or hour field, e.g.
  ``*/15 * * * *``) follows real time: minutes inside the gap do not exist and
  do not fire, and the repeated hour fires twice (once per real occurrence),
  because that is how many intervals actually elapsed.
- **Intervals** (``every_s``) are elapsed time from an anchor: DST never moves them.
- **One-shot** times given without an offset are local to the schedule's zone
  and resolved with the wall-clock rule (a time in the gap moves to the end of
  the gap, an ambiguous time means its first occurrence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from actors.runtime.errors import InvalidInput
from actors.scheduler.errors import BadCron, UnknownTimeZone

UTC = timezone.utc
#: Longest cron expression and zone name accepted.
MAX_CRON_CHARS = 200
MAX_ZONE_CHARS = 64
#: Shortest interval: a schedule firing faster than this is a loop, not a schedule.
MIN_INTERVAL_MS = 1_000
#: Wall-clock iteration gives up after this many local times that all fall before ``t``.
_MAX_STEPS = 10_000


class Trigger(Protocol):
    def next_after(self, after_ms: int) -> int | None:
        """The first due time strictly after ``after_ms``, or None."""


def zone(name: object) -> ZoneInfo:
    """The IANA zone ``name``; ``UnknownTimeZone`` otherwise."""
    if not isinstance(name, str) or not name or len(name) > MAX_ZONE_CHARS:
        raise UnknownTimeZone(timezone=str(name)[:MAX_ZONE_CHARS])
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise UnknownTimeZone(timezone=name) from None


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def to_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def from_ms(ms: int, tz: ZoneInfo | timezone = UTC) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=tz)


def is_imaginary(local: datetime) -> bool:
    """Whether an aware local time falls in a DST gap (the wall clock never shows it)."""
    return local.replace(tzinfo=None) != local.astimezone(UTC).astimezone(local.tzinfo).replace(
        tzinfo=None
    )


def resolve_local(naive: datetime, tz: ZoneInfo) -> datetime:
    """A local wall time as an instant: a time in a gap moves to the first whole
    minute after the gap (where the clock jumped to); an ambiguous time is its
    first occurrence (``fold=0``)."""
    local = naive.replace(tzinfo=tz, fold=0)
    if not is_imaginary(local):
        return local
    moved = naive.replace(second=0, microsecond=0)
    for _ in range(24 * 60):
        moved += timedelta(minutes=1)
        if not is_imaginary(moved.replace(tzinfo=tz)):
            return moved.replace(tzinfo=tz, fold=0)
    raise InvalidInput("local time falls in a gap longer than a day", time=naive.isoformat())


@dataclass(frozen=True)
class Once:
    at_ms: int

    def next_after(self, after_ms: int) -> int | None:
        return self.at_ms if self.at_ms > after_ms else None


@dataclass(frozen=True)
class Every:
    interval_ms: int
    anchor_ms: int  #: the first due time; the others are anchor + k * interval

    def next_after(self, after_ms: int) -> int | None:
        if after_ms < self.anchor_ms:
            return self.anchor_ms
        steps = (after_ms - self.anchor_ms) // self.interval_ms + 1
        return self.anchor_ms + steps * self.interval_ms


@dataclass(frozen=True)
class Cron:
    expr: str
    tz_name: str

    @property
    def wall_clock(self) -> bool:
        """Fixed minute and hour (a job at a time of day): computed on wall time."""
        fields = self.expr.split()
        minute, hour = fields[-5], fields[-4]
        return not minute.startswith("*") and not hour.startswith("*") and "/" not in minute + hour

    def next_after(self, after_ms: int) -> int | None:
        tz = zone(self.tz_name)
        start = from_ms(after_ms, tz)
        try:
            if self.wall_clock:
                # Naive datetimes make cronsim walk wall time: no gaps, no repeats.
                for step, naive in enumerate(CronSim(self.expr, start.replace(tzinfo=None))):
                    due = to_ms(resolve_local(naive, tz))
                    if due > after_ms:
                        return due
                    if step >= _MAX_STEPS:
                        return None
            else:
                for step, moment in enumerate(CronSim(self.expr, start)):
                    due = to_ms(moment)
                    if due > after_ms:
                        return due
                    if step >= _MAX_STEPS:
                        return None
        except StopIteration:  # cronsim found nothing within 50 years
            return None
        return None


def check_cron(expr: object) -> str:
    """A cron expression cronsim accepts (5 fields, or 6 with seconds first), normalized."""
    if not isinstance(expr, str) or len(expr) > MAX_CRON_CHARS:
        raise BadCron(cron=str(expr)[:MAX_CRON_CHARS])
    normalized = " ".join(expr.split())
    if len(normalized.split()) not in (5, 6):
        raise BadCron("a cron expression has 5 fields, or 6 with seconds first", cron=expr)
    try:
        CronSim(normalized, datetime(2026, 1, 1))
    except (CronSimError, ValueError, IndexError, KeyError) as error:
        raise BadCron(f"bad cron expression: {error}", cron=expr) from None
    return normalized


def parse_at(value: object, tz: ZoneInfo) -> int:
    """An ISO 8601 time as epoch ms; without an offset it is local to ``tz``."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and len(value) <= 64:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput("not an ISO 8601 date and time", at=value) from None
    else:
        raise InvalidInput("not an ISO 8601 date and time", at=str(value)[:64])
    if moment.tzinfo is None:
        moment = resolve_local(moment, tz)
    return to_ms(moment)


def check_interval_s(value: object) -> int:
    """An interval in seconds as whole milliseconds, at least MIN_INTERVAL_MS."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput("every_s must be a number of seconds", every_s=str(value)[:32])
    interval_ms = round(value * 1000)
    if interval_ms < MIN_INTERVAL_MS or interval_ms > 366 * 86_400_000:
        raise InvalidInput(
            "every_s must be between 1 second and a year",
            every_s=value,
            min_s=MIN_INTERVAL_MS / 1000,
        )
    return interval_ms


__all__ = [
    "Cron",
    "Every",
    "Once",
    "Trigger",
    "check_cron",
    "check_interval_s",
    "from_ms",
    "parse_at",
    "resolve_local",
    "to_ms",
    "zone",
]
