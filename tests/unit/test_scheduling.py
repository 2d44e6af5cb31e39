"""Scheduling rules: cron in a timezone across DST and month ends, peak season, wedding days."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from vowvault.domain import Priority
from vowvault.scheduling import (
    ScheduleError,
    effective_priority,
    effective_schedules,
    expected_runs,
    explain_priority,
    fires_between,
    is_wedding_day,
    next_fire,
    next_run,
    normalize_cron,
)

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("expr", "canonical"), [
    ("0 2 * * *", "0 2 * * *"),
    ("@daily", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
    ("*/15 9-17 * * MON-FRI", "0,15,30,45 9-17 * * 1-5"),
    ("0 3 * JAN,JUL SUN", "0 3 * 1,7 0"),
    ("0 3 * * 7", "0 3 * * 0"),
    ("0 3 1 * */1", "0 3 1 * *"),  # '*/1' allows every day: treated as '*' (Vixie cron)
    ("0  4   *  * 0-6", "0 4 * * *"),
])
def test_normalize_cron(expr: str, canonical: str) -> None:
    assert normalize_cron(expr) == canonical


@pytest.mark.parametrize(("expr", "fragment"), [
    ("61 2 * * *", "invalid cron"),
    ("0 2 * *", "5 fields"),
    ("0 2 * * * *", "5 fields"),
    ("0 0 30 2 *", "never fires"),
    ("0 0 L * *", "L, W, # or ?"),
    ("every day", "5 fields"),
])
def test_bad_crons_are_refused_with_a_reason(expr: str, fragment: str) -> None:
    with pytest.raises(ScheduleError, match=fragment):
        normalize_cron(expr)


def test_next_fire_in_a_timezone() -> None:
    # 02:00 London in winter is 02:00 UTC, in summer 01:00 UTC.
    assert next_fire("0 2 * * *", "Europe/London", at("2026-01-10 12:00")) == at(
        "2026-01-11 02:00")
    assert next_fire("0 2 * * *", "Europe/London", at("2026-07-10 12:00")) == at(
        "2026-07-11 01:00")


def test_spring_forward_skipped_time_runs_an_hour_later() -> None:
    # 2026-03-29 01:30 does not exist in London: it fires at 02:30 BST = 01:30 UTC.
    assert next_fire("30 1 * * *", "Europe/London", at("2026-03-28 12:00")) == at(
        "2026-03-29 01:30")
    # New York 2026-03-08 02:30 does not exist: offset before the change (EST), 07:30 UTC.
    assert next_fire("30 2 * * *", "America/New_York", at("2026-03-08 00:00")) == at(
        "2026-03-08 07:30")


def test_fall_back_repeated_time_fires_once_at_second_occurrence() -> None:
    fires = fires_between("30 1 * * *", "Europe/London", at("2026-10-24 12:00"),
                          at("2026-10-26 12:00"))
    # 25th: 01:30 happens at 00:30 UTC (BST) and 01:30 UTC (GMT): only the second counts.
    assert fires == [at("2026-10-25 01:30"), at("2026-10-26 01:30")]


def test_hourly_runs_on_dst_days() -> None:
    # A 23-hour day and a 25-hour day in London: one run per distinct wall-clock hour.
    assert expected_runs(["0 * * * *"], "Europe/London", at("2026-03-28 23:59"),
                         at("2026-03-29 22:59")) == 23
    assert expected_runs(["0 * * * *"], "Europe/London", at("2026-10-24 22:59"),
                         at("2026-10-25 23:59")) == 24


def test_half_hour_dst_zone() -> None:
    # Lord Howe Island moves its clocks by 30 minutes.
    after = at("2026-10-03 12:00")
    fire = next_fire("15 2 * * *", "Australia/Lord_Howe", after)
    assert fire is not None and fire > after


@pytest.mark.parametrize(("cron", "after", "expected"), [
    ("0 3 31 * *", "2026-01-31 12:00", "2026-03-31 03:00"),  # February and April lack a 31st
    ("0 3 30 * *", "2026-01-30 12:00", "2026-03-30 03:00"),
    ("0 3 29-31 * *", "2028-02-01 00:00", "2028-02-29 03:00"),  # leap year
    ("0 3 29-31 * *", "2027-02-01 00:00", "2027-03-29 03:00"),
    ("0 0 1 * *", "2026-12-31 23:59", "2027-01-01 00:00"),  # year end
])
def test_month_ends(cron: str, after: str, expected: str) -> None:
    assert next_fire(cron, "UTC", at(after)) == at(expected)


def test_day_of_month_and_day_of_week_are_ored_when_both_restricted() -> None:
    # The 13th, or any Friday.
    fires = fires_between("0 0 13 * 5", "UTC", at("2026-02-01 00:00"), at("2026-02-28 00:00"))
    days = [f.day for f in fires]
    assert days == [6, 13, 20, 27]  # Fridays 6, 13, 20, 27 (13th is also a Friday)


def test_leap_day_cron_waits_years() -> None:
    assert next_fire("0 0 29 2 *", "UTC", at("2029-03-01 00:00")) == at("2032-02-29 00:00")


def test_peak_season_multiplies_a_daily_schedule_by_five() -> None:
    schedules = effective_schedules("0 2 * * *", 5)
    assert "0 2 * 1-4,11,12 *" in schedules
    june = fires_between_all(schedules, "UTC", at("2026-06-01 00:00"), at("2026-06-08 00:00"))
    january = fires_between_all(schedules, "UTC", at("2026-01-01 00:00"),
                                at("2026-01-08 00:00"))
    assert len(june) == 35 and len(january) == 7
    gaps = {(b - a) for a, b in itertools.pairwise(june)}
    assert gaps == {dt.timedelta(hours=4, minutes=48)}


def test_peak_season_keeps_an_hourly_schedule_regular() -> None:
    schedules = effective_schedules("0 * * * *", 5)
    assert schedules == ["0 * * 1-4,11,12 *", "0,12,24,36,48 * * 5-10 *"]


def test_peak_season_for_a_weekday_schedule_subdivides_the_weekend_gap() -> None:
    schedules = effective_schedules("30 3 * * 1-5", 2)
    week = fires_between_all(schedules, "UTC", at("2026-06-01 00:00"), at("2026-06-08 00:00"))
    assert len(week) == 10  # 5 weekday runs + 5 midpoints


def test_peak_season_multiplier_one_and_custom_months() -> None:
    assert effective_schedules("0 2 * * *", 1) == ["0 2 * * *"]
    assert effective_schedules("0 2 * 1 *", 5) == ["0 2 * 1 *"]  # January only: no peak
    assert effective_schedules("0 2 * * *", 2, [12]) == ["0 2 * 1-11 *", "0 2,14 * 12 *"]


def test_peak_season_needs_a_weekly_pattern() -> None:
    with pytest.raises(ScheduleError, match="days of the month"):
        effective_schedules("0 2 1 * *", 5)
    assert effective_schedules("0 2 1 * *", 5, peak_schedules=["0 2 * * 1"]) == [
        "0 2 * 5-10 1", "0 2 1 1-4,11,12 *"]


def test_next_run_takes_the_earliest_schedule() -> None:
    assert next_run(["0 5 * * *", "0 3 * * *"], "UTC", at("2026-01-01 00:00")) == at(
        "2026-01-01 03:00")


def test_wedding_days_raise_priority_one_level_up_to_critical() -> None:
    saturday, friday = dt.date(2026, 6, 13), dt.date(2026, 6, 12)
    assert is_wedding_day(saturday) and not is_wedding_day(friday)
    assert is_wedding_day(friday, {friday})
    assert effective_priority(Priority.NORMAL, True, saturday) == Priority.HIGH
    assert effective_priority(Priority.HIGH, True, friday, {friday}) == Priority.CRITICAL
    assert effective_priority(Priority.CRITICAL, True, saturday) == Priority.CRITICAL
    assert effective_priority(Priority.EMERGENCY, True, saturday) == Priority.EMERGENCY
    assert effective_priority(Priority.LOW, False, saturday) == Priority.LOW
    assert effective_priority(Priority.LOW, True, friday) == Priority.LOW


@pytest.mark.parametrize("base, wdp, day, weddings, expected, reason", [
    (Priority.HIGH, True, dt.date(2026, 6, 13), (), Priority.CRITICAL,
     "wedding day (Saturday): raised from HIGH"),
    (Priority.NORMAL, True, dt.date(2026, 6, 12), (dt.date(2026, 6, 12),), Priority.HIGH,
     "wedding day (a wedding in the organization): raised from NORMAL"),
    (Priority.CRITICAL, True, dt.date(2026, 6, 13), (), Priority.CRITICAL, "already CRITICAL"),
    (Priority.LOW, False, dt.date(2026, 6, 13), (), Priority.LOW, "no wedding-day priority"),
    (Priority.LOW, True, dt.date(2026, 6, 11), (), Priority.LOW, "no wedding; base priority"),
])
def test_the_priority_comes_with_its_reason(base: Priority, wdp: bool, day: dt.date,
                                            weddings: tuple[dt.date, ...],
                                            expected: Priority, reason: str) -> None:
    effective, why = explain_priority(base, wdp, day, weddings)
    assert effective == expected == effective_priority(base, wdp, day, weddings)
    assert reason in why and str(day) in why


def fires_between_all(schedules: list[str], tz: str, start: dt.datetime,
                      end: dt.datetime) -> list[dt.datetime]:
    found: set[dt.datetime] = set()
    for cron in schedules:
        found.update(fires_between(cron, tz, start, end))
    return sorted(found)
