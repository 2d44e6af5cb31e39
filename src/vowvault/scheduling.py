"""Scheduling rules as pure functions: cron in a timezone, peak season, wedding days.

The PostgreSQL functions ``vowvault_cron_next``, ``calculate_next_backup_time`` and
``backup_priority_at`` implement the same rules in SQL; a property-based test proves that
both agree.

Time rules (the same as PostgreSQL's ``timestamp AT TIME ZONE``, written down so that the
SQL and Python versions can agree exactly):

- A cron expression matches *wall-clock* times in the policy's timezone.
- A wall-clock time that does not exist (the hour skipped when clocks go forward) is
  taken with the UTC offset in force before the change, i.e. it fires one hour later on
  the new wall clock.
- A wall-clock time that happens twice (clocks go back) fires once, at its second
  occurrence (standard time).

Peak season (May to October by default) multiplies a policy's frequency through extra cron
schedules: each gap between two consecutive runs of the base schedule is cut into
``multiplier`` equal parts. The result is a list of plain cron expressions that Prefect
schedules as they are, so no home-made scheduler is involved.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from vowvault.domain import Priority

UTC = dt.UTC
PEAK_MONTHS: tuple[int, ...] = (5, 6, 7, 8, 9, 10)
DEFAULT_PEAK_MULTIPLIER = 5
SATURDAY = 5  # date.weekday()

_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
# Margin around a search window: larger than any real UTC-offset change (<= 2 hours).
_DST_MARGIN = dt.timedelta(hours=3)
_WEEK_MINUTES = 7 * 24 * 60
# 2024-01-01 is a Monday: the reference week for peak-season derivation.
_REF_MONDAY = dt.datetime(2024, 1, 1)


class ScheduleError(ValueError):
    """A cron expression or timezone that cannot be used; the message says why."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown timezone {name!r} (use an IANA name such as "
                            f"'Europe/London')") from exc


def normalize_cron(expr: str) -> str:
    """Validate a 5-field cron expression and return its canonical numeric form.

    Each field becomes ``*`` when it allows every value, otherwise a list of numbers and
    ranges (``1-5,7``). Names (MON, JAN) and macros (@daily) are accepted. The canonical
    form is what the catalog stores and Prefect runs; day-of-month and day-of-week are
    OR-ed when both are restricted, as in Vixie cron.
    """
    text = " ".join(expr.split())
    text = _MACROS.get(text.lower(), text)
    fields = text.split(" ")
    if len(fields) != 5:
        raise ScheduleError(f"cron {expr!r} must have 5 fields (minute hour day-of-month "
                            f"month day-of-week), not {len(fields)}")
    for name, field in zip(_FIELD_NAMES, fields, strict=True):
        bare = re.sub(r"[A-Z]{3}", "", field.upper())  # month and day names are fine
        if any(ch in bare for ch in "L#W?"):
            raise ScheduleError(f"cron {expr!r}: {name} field {field!r} uses L, W, # or ?, "
                                f"which vowvault does not support")
    try:
        expanded = croniter(text).expanded
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise ScheduleError(f"invalid cron {expr!r}: {exc}") from exc
    out = []
    for i, values in enumerate(expanded):
        lo, hi = _FIELD_RANGES[i]
        if values == ["*"]:
            out.append("*")
            continue
        nums = sorted({7 % 7 if (i == 4 and v == 7) else int(v) for v in values})
        if any(n < lo or n > hi for n in nums):
            raise ScheduleError(f"cron {expr!r}: {_FIELD_NAMES[i]} out of range {lo}-{hi}")
        # A restricted-looking field that allows every value still counts as "*": this
        # is where croniter and Vixie cron disagree (e.g. '*/1' in day-of-week).
        out.append("*" if nums == list(range(lo, hi + 1)) else _compact(nums))
    canonical = " ".join(out)
    try:
        croniter(canonical, _REF_MONDAY).get_next(dt.datetime)
    except CroniterBadDateError as exc:
        raise ScheduleError(f"cron {expr!r} never fires (no such date)") from exc
    return canonical


def _compact(nums: Sequence[int]) -> str:
    """[1,2,3,5] -> '1-3,5'."""
    parts: list[str] = []
    run: list[int] = []
    for n in nums:
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            parts.append(_run(run))
        run = [n]
    if run:
        parts.append(_run(run))
    return ",".join(parts)


def _run(run: list[int]) -> str:
    if len(run) >= 3:
        return f"{run[0]}-{run[-1]}"
    return ",".join(str(n) for n in run)


def local_to_instant(local: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The instant a naive wall-clock time denotes, with PostgreSQL's rules (module doc)."""
    first = local.replace(tzinfo=tz, fold=0)
    second = local.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first.astimezone(UTC)
    round_trip = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    if round_trip == local:  # happens twice: take the second (standard-time) occurrence
        return second.astimezone(UTC)
    return first.astimezone(UTC)  # does not exist: offset before the change


def _local_fires(cron: str, start_local: dt.datetime) -> Iterator[dt.datetime]:
    """Naive wall-clock fire times strictly after ``start_local``."""
    it = croniter(cron, start_local)
    while True:
        try:
            yield it.get_next(dt.datetime)
        except CroniterBadDateError:
            return


def next_fire(cron: str, tz: str | ZoneInfo, after: dt.datetime) -> dt.datetime | None:
    """The first instant strictly after ``after`` at which ``cron`` fires in ``tz``."""
    tzinfo = zone(tz) if isinstance(tz, str) else tz
    after = _aware(after)
    local_after = after.astimezone(tzinfo).replace(tzinfo=None, second=0, microsecond=0)
    best: dt.datetime | None = None
    best_local: dt.datetime | None = None
    for local in _local_fires(cron, local_after - _DST_MARGIN):
        if best_local is not None and local > best_local + _DST_MARGIN:
            break
        instant = local_to_instant(local, tzinfo)
        if instant > after and (best is None or instant < best):
            best, best_local = instant, local
    return best


def fires_between(cron: str, tz: str | ZoneInfo, start: dt.datetime,
                  end: dt.datetime) -> list[dt.datetime]:
    """Distinct instants in ``(start, end]`` at which ``cron`` fires, in order."""
    tzinfo = zone(tz) if isinstance(tz, str) else tz
    start, end = _aware(start), _aware(end)
    local_start = start.astimezone(tzinfo).replace(tzinfo=None, second=0, microsecond=0)
    local_end = end.astimezone(tzinfo).replace(tzinfo=None)
    found: set[dt.datetime] = set()
    for local in _local_fires(cron, local_start - _DST_MARGIN):
        if local > local_end + _DST_MARGIN:
            break
        instant = local_to_instant(local, tzinfo)
        if start < instant <= end:
            found.add(instant)
    return sorted(found)


def next_run(schedules: Iterable[str], tz: str, after: dt.datetime) -> dt.datetime | None:
    """The next run of a policy: the earliest next fire among its effective schedules."""
    fires = [f for f in (next_fire(c, tz, after) for c in schedules) if f is not None]
    return min(fires) if fires else None


def expected_runs(schedules: Iterable[str], tz: str, start: dt.datetime,
                  end: dt.datetime) -> int:
    """How many runs the schedules promise in ``(start, end]`` (distinct instants)."""
    found: set[dt.datetime] = set()
    for cron in schedules:
        found.update(fires_between(cron, tz, start, end))
    return len(found)


def effective_schedules(cron: str, multiplier: int = DEFAULT_PEAK_MULTIPLIER,
                        peak_months: Iterable[int] = PEAK_MONTHS,
                        peak_schedules: Sequence[str] | None = None) -> list[str]:
    """The cron expressions that together run ``cron`` off-peak and ``multiplier`` times as
    often during the peak months, or ``peak_schedules`` instead when given. Every cron must
    be canonical (``normalize_cron``)."""
    peak = set(peak_months)
    if multiplier < 1:
        raise ScheduleError(f"peak-season multiplier must be at least 1, not {multiplier}")
    if not peak or (multiplier == 1 and peak_schedules is None):
        return [cron]
    minute, hour, dom, month, dow = cron.split(" ")
    months = set(range(1, 13)) if month == "*" else _expand(month)
    on, off = months & peak, months - peak
    out = [] if not off else [_with_month(cron, off)]
    if not on:
        return out or [cron]
    if peak_schedules is not None:
        return sorted({*out, *(_with_month(c, on) for c in peak_schedules)})
    if dom != "*":
        raise ScheduleError(
            f"cannot multiply cron {cron!r} in peak season: it names days of the month, so "
            f"its runs do not repeat weekly; give peak_season.schedules explicitly or set "
            f"peak_season.multiplier: 1")
    week = [int((t - _REF_MONDAY).total_seconds() // 60)
            for t in _fires_in_week(f"{minute} {hour} * * {dow}")]
    points: set[int] = set()
    for i, start in enumerate(week):
        gap = (week[(i + 1) % len(week)] - start) % _WEEK_MINUTES or _WEEK_MINUTES
        for k in range(multiplier):
            points.add((start + (k * gap) // multiplier) % _WEEK_MINUTES)
    out.extend(_points_to_crons(points, _compact(sorted(on)) if len(on) < 12 else "*"))
    return out


def _fires_in_week(cron: str) -> list[dt.datetime]:
    end = _REF_MONDAY + dt.timedelta(days=7)
    fires = []
    for t in _local_fires(cron, _REF_MONDAY - dt.timedelta(minutes=1)):
        if t >= end:
            break
        fires.append(t)
    return fires


def _points_to_crons(points: set[int], months: str) -> list[str]:
    """Minute-of-week points -> a few cron expressions that fire exactly at them."""
    days_of: dict[tuple[int, int], set[int]] = defaultdict(set)
    for p in points:
        day, rest = divmod(p, 1440)
        days_of[divmod(rest, 60)].add((day + 1) % 7)  # day 0 is Monday, cron's 1
    by_days: dict[frozenset[int], dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for (h, m), days in days_of.items():
        by_days[frozenset(days)][h].add(m)
    crons = []
    for days, hours in by_days.items():
        dow = "*" if len(days) == 7 else _compact(sorted(days))
        by_minutes: dict[frozenset[int], list[int]] = defaultdict(list)
        for h, minutes in hours.items():
            by_minutes[frozenset(minutes)].append(h)
        for minutes, hs in by_minutes.items():
            hour = "*" if len(hs) == 24 else _compact(sorted(hs))
            crons.append(f"{_compact(sorted(minutes))} {hour} * {months} {dow}")
    return sorted(crons)


def _expand(field: str) -> set[int]:
    out: set[int] = set()
    for part in field.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _with_month(cron: str, months: set[int]) -> str:
    minute, hour, dom, _month, dow = cron.split(" ")
    month = "*" if len(months) == 12 else _compact(sorted(months))
    return f"{minute} {hour} {dom} {month} {dow}"


def is_peak_season(day: dt.date, peak_months: Iterable[int] = PEAK_MONTHS) -> bool:
    return day.month in set(peak_months)


def is_wedding_day(day: dt.date, wedding_dates: Iterable[dt.date] = ()) -> bool:
    """Saturdays, and every date on which the organization has a wedding."""
    return day.weekday() == SATURDAY or day in set(wedding_dates)


def effective_priority(base: Priority, wedding_day_priority: bool, day: dt.date,
                       wedding_dates: Iterable[dt.date] = ()) -> Priority:
    """A run on a wedding day of a wedding-day-priority policy is raised one level, up to
    CRITICAL (EMERGENCY is kept for emergencies declared by people)."""
    if not wedding_day_priority or not is_wedding_day(day, wedding_dates):
        return base
    if base.rank >= Priority.CRITICAL.rank:
        return base
    return list(Priority)[base.rank + 1]


def explain_priority(base: Priority, wedding_day_priority: bool, day: dt.date,
                     wedding_dates: Iterable[dt.date] = ()) -> tuple[Priority, str]:
    """``effective_priority`` with the reason, in words, for what ``policies list`` shows."""
    weddings = set(wedding_dates)
    why = ("a wedding in the organization" if day in weddings else
           "Saturday" if day.weekday() == SATURDAY else None)
    effective = effective_priority(base, wedding_day_priority, day, weddings)
    if why is None:
        return effective, f"{day}: no wedding; base priority"
    if not wedding_day_priority:
        return effective, f"{day}: wedding day ({why}), but the policy has no wedding-day " \
                          f"priority; base priority"
    if effective == base:
        return effective, f"{day}: wedding day ({why}); already {base.value}, the highest " \
                          f"a wedding day raises to"
    return effective, f"{day}: wedding day ({why}): raised from {base.value}"


def local_date(instant: dt.datetime, tz: str) -> dt.date:
    return _aware(instant).astimezone(zone(tz)).date()


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: give a timezone")
    return value


_RRULE_DAYS = ("SU", "MO", "TU", "WE", "TH", "FR", "SA")  # cron day numbers 0..6
CRON_SATURDAY = 6


def cron_rrules(cron: str, days: Iterable[int] | None = None) -> list[str]:
    """RFC 5545 RRULE lines equivalent to a canonical cron, optionally restricted to cron
    days of week ``days`` (AND). Two lines when day-of-month and day-of-week are both
    restricted (cron ORs them, an RRULE ANDs its parts)."""
    minute, hour, dom, month, dow = cron.split(" ")
    allowed = set(range(7)) if days is None else set(days)
    base = (f"FREQ=DAILY;BYHOUR={_rr(hour, 0, 23)};BYMINUTE={_rr(minute, 0, 59)};"
            f"BYSECOND=0" + (f";BYMONTH={_rr(month, 1, 12)}" if month != "*" else ""))

    def with_days(day_set: set[int], monthdays: str | None) -> str | None:
        if not day_set:
            return None
        parts = [base]
        if monthdays:
            parts.append(f"BYMONTHDAY={monthdays}")
        if len(day_set) < 7:
            parts.append("BYDAY=" + ",".join(_RRULE_DAYS[d] for d in sorted(day_set)))
        return "RRULE:" + ";".join(parts)

    rules: list[str | None]
    if dom == "*":
        cron_days = allowed if dow == "*" else allowed & _expand(dow)
        rules = [with_days(cron_days, None)]
    elif dow == "*":
        rules = [with_days(allowed, _rr(dom, 1, 31))]
    else:
        rules = [with_days(allowed, _rr(dom, 1, 31)), with_days(allowed & _expand(dow), None)]
    return [r for r in rules if r]


def _rr(field: str, lo: int, hi: int) -> str:
    values = range(lo, hi + 1) if field == "*" else sorted(_expand(field))
    return ",".join(str(v) for v in values)


def _local_fires_on(cron: str, day: dt.date) -> list[dt.datetime]:
    start = dt.datetime.combine(day, dt.time()) - dt.timedelta(minutes=1)
    end = start + dt.timedelta(days=1, minutes=1)
    out = []
    for t in _local_fires(cron, start):
        if t >= end:
            break
        out.append(t)
    return out


@dataclass(frozen=True)
class WeddingDaySplit:
    """A wedding-day-priority policy's runs as two Prefect RRULE sets: every run on a
    Saturday or a wedding-calendar date goes to ``wedding`` (a higher-priority queue),
    every other run to ``regular``; together they are exactly the policy's schedule."""

    regular: str
    wedding: str


def wedding_day_split(schedules: Sequence[str], wedding_dates: Iterable[dt.date],
                      start: dt.date) -> WeddingDaySplit:
    weekdays = [d for d in range(7) if d != CRON_SATURDAY]
    dtstart = f"DTSTART:{start:%Y%m%d}T000000"
    regular = [dtstart]
    wedding = [dtstart]
    for cron in schedules:
        regular += cron_rrules(cron, weekdays)
        wedding += cron_rrules(cron, [CRON_SATURDAY])
    extra = sorted({t for day in wedding_dates if day >= start and day.weekday() != SATURDAY
                    for cron in schedules for t in _local_fires_on(cron, day)})
    if extra:
        stamps = ",".join(f"{t:%Y%m%dT%H%M%S}" for t in extra)
        regular.append(f"EXDATE:{stamps}")
        wedding.append(f"RDATE:{stamps}")
    if len(wedding) == 1:  # nothing at all on wedding days (e.g. a weekday-only policy)
        wedding.append(f"RDATE:{start:%Y%m%d}T000000")
        wedding.append(f"EXDATE:{start:%Y%m%d}T000000")
    return WeddingDaySplit("\n".join(regular), "\n".join(wedding))
