"""Due times: cron (5 and 6 fields), intervals, one-shots, and the DST rules."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from actors.runtime.errors import InvalidInput
from actors.scheduler.errors import BadCron, UnknownTimeZone
from actors.scheduler.triggers import (
    Cron,
    Every,
    Once,
    check_cron,
    check_interval_s,
    from_ms,
    parse_at,
    to_ms,
    zone,
)

NY = zone("America/New_York")


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)  # type: ignore[arg-type,misc]


def dues(trigger: Cron | Every | Once, start: datetime, count: int) -> list[str]:
    out, t = [], to_ms(start)
    for _ in range(count):
        nxt = trigger.next_after(t)
        if nxt is None:
            break
        out.append(from_ms(nxt, NY).isoformat())
        t = nxt
    return out


def test_five_field_cron_in_utc():
    trigger = Cron("*/15 9 * * MON", "UTC")
    start = to_ms(datetime.fromisoformat("2026-11-30T08:50:00+00:00"))  # a Monday
    first = trigger.next_after(start)
    assert first is not None
    assert from_ms(first).isoformat() == "2026-11-30T09:00:00+00:00"
    assert from_ms(trigger.next_after(first) or 0).isoformat() == "2026-11-30T09:15:00+00:00"
    last = to_ms(datetime.fromisoformat("2026-11-30T09:45:00+00:00"))
    assert from_ms(trigger.next_after(last) or 0).isoformat() == "2026-12-07T09:00:00+00:00"


def test_six_field_cron_has_seconds_first():
    trigger = Cron("*/20 * * * * *", "UTC")
    start = to_ms(datetime.fromisoformat("2026-01-01T00:00:05+00:00"))
    assert dues(trigger, from_ms(start), 3) == [
        "2025-12-31T19:00:20-05:00",
        "2025-12-31T19:00:40-05:00",
        "2025-12-31T19:01:00-05:00",
    ]


def test_next_after_is_strictly_after():
    trigger = Cron("0 12 * * *", "UTC")
    noon = to_ms(datetime.fromisoformat("2026-05-01T12:00:00+00:00"))
    assert trigger.next_after(noon) == noon + 86_400_000
    assert trigger.next_after(noon - 1) == noon


@pytest.mark.parametrize("expr", ["30 2 * * *", "0 30 2 * * *"])
def test_spring_forward_a_0230_job_fires_once_at_0300(expr: str):
    # 2026-03-08: New York's clocks jump from 02:00 EST to 03:00 EDT.
    assert dues(Cron(expr, "America/New_York"), local(2026, 3, 7, 3, 0), 3) == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]


@pytest.mark.parametrize("expr", ["30 1 * * *", "0 30 1 * * *"])
def test_fall_back_a_0130_job_fires_once_at_its_first_occurrence(expr: str):
    # 2026-11-01: 01:00-02:00 happens twice (EDT, then EST).
    assert dues(Cron(expr, "America/New_York"), local(2026, 10, 31, 3, 0), 3) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
        "2026-11-03T01:30:00-05:00",
    ]


def test_fall_back_started_inside_the_repeated_hour_does_not_fire_again():
    second_pass = datetime(2026, 11, 1, 1, 10, tzinfo=NY, fold=1)  # 01:10 EST
    assert dues(Cron("30 1 * * *", "America/New_York"), second_pass, 1) == [
        "2026-11-02T01:30:00-05:00"
    ]


def test_frequent_cron_follows_real_time_across_dst():
    every_half_hour = Cron("*/30 * * * *", "America/New_York")
    assert dues(every_half_hour, local(2026, 11, 1, 0, 50), 4) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",  # the repeated hour elapses twice
        "2026-11-01T01:30:00-05:00",
    ]
    assert dues(every_half_hour, local(2026, 3, 8, 1, 10), 3) == [
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T03:00:00-04:00",  # 02:00-02:59 does not exist
        "2026-03-08T03:30:00-04:00",
    ]


def test_interval_is_elapsed_time_across_dst():
    anchor = to_ms(local(2026, 3, 7, 12, 0))
    daily = Every(86_400_000, anchor)
    assert dues(daily, local(2026, 3, 7, 12, 0), 2) == [
        "2026-03-08T13:00:00-04:00",  # 24 hours later, an hour later on the wall
        "2026-03-09T13:00:00-04:00",
    ]
    assert daily.next_after(anchor - 5) == anchor


def test_one_shot():
    once = Once(5_000)
    assert once.next_after(4_999) == 5_000
    assert once.next_after(5_000) is None


def test_one_shot_local_times_follow_the_wall_clock_rule():
    assert from_ms(parse_at("2026-03-08T02:30:00", NY), NY).isoformat() == (
        "2026-03-08T03:00:00-04:00"
    )
    assert from_ms(parse_at("2026-11-01T01:30:00", NY), NY).isoformat() == (
        "2026-11-01T01:30:00-04:00"
    )
    assert parse_at("2026-11-01T06:30:00Z", NY) == parse_at("2026-11-01T01:30:00-05:00", NY)
    with pytest.raises(InvalidInput):
        parse_at("yesterday", NY)


@pytest.mark.parametrize(
    "expr",
    ["", "* * * *", "60 * * * *", "* 24 * * *", "0 0 31 2 *", "a b c d e", "* * * * * * *", 7],
)
def test_bad_cron_is_refused(expr: object):
    with pytest.raises(BadCron):
        check_cron(expr)


def test_cron_is_normalized():
    assert check_cron("  0   12 * * mon ") == "0 12 * * mon"


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../../etc/passwd", "/etc/localtime", 5])
def test_bad_time_zone_is_refused(name: object):
    with pytest.raises(UnknownTimeZone):
        zone(name)


@pytest.mark.parametrize("value", [0, 0.5, -3, float("nan"), "60", True, 400 * 86_400])
def test_bad_intervals_are_refused(value: object):
    with pytest.raises(InvalidInput):
        check_interval_s(value)


def test_interval_in_ms():
    assert check_interval_s(1.5) == 1_500
    assert from_ms(0) + timedelta(seconds=1) == from_ms(1000)
