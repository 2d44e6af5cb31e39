"""Wedding-day split of a policy's schedule into two RRULE sets (two Prefect deployments in
two queues): together exactly the original runs, wedding-day runs only on wedding days."""

from __future__ import annotations

import datetime as dt

import pytest
from dateutil.rrule import rrulestr

from vowvault.scheduling import (
    cron_rrules,
    effective_schedules,
    fires_between,
    normalize_cron,
    wedding_day_split,
)

START = dt.date(2026, 6, 1)
END = dt.datetime(2026, 8, 15)


def local_fires(rules: str) -> set[dt.datetime]:
    begin = dt.datetime.combine(START, dt.time())
    return set(rrulestr(rules, forceset=True).between(begin, END, inc=True)) - {END}


def cron_fires(crons: list[str]) -> set[dt.datetime]:
    start = dt.datetime.combine(START, dt.time()).replace(tzinfo=dt.UTC) - dt.timedelta(minutes=1)
    return {t.replace(tzinfo=None) for c in crons
            for t in fires_between(c, "UTC", start, END.replace(tzinfo=dt.UTC))
            if t.replace(tzinfo=None) < END}


@pytest.mark.parametrize("cron", ["0 2 * * *", "*/20 9-17 * * 1-5", "0 3 1,15 * *",
                                  "30 4 13 * 5", "0 0 * 6 6", "15 1 * * 0"])
def test_rrules_match_cron(cron: str) -> None:
    canon = normalize_cron(cron)
    rules = "DTSTART:20260601T000000\n" + "\n".join(cron_rrules(canon))
    assert local_fires(rules) == cron_fires([canon])


@pytest.mark.parametrize("cron", ["0 1 * * *", "0 */6 * * *", "0 3 1,15 * *",
                                  "30 4 13 * 5"])
def test_split_partitions_the_schedule(cron: str) -> None:
    weddings = [dt.date(2026, 6, 12), dt.date(2026, 8, 7), dt.date(2026, 8, 8),
                dt.date(2025, 6, 1)]
    schedules = effective_schedules(normalize_cron(cron), 5) \
        if "1,15" not in cron and "13" not in cron else [normalize_cron(cron)]
    split = wedding_day_split(schedules, weddings, START)
    regular, wedding = local_fires(split.regular), local_fires(split.wedding)
    assert not regular & wedding
    assert regular | wedding == cron_fires(schedules)
    wedding_days = {d for d in weddings if d >= START}
    assert all(t.weekday() == 5 or t.date() in wedding_days for t in wedding)
    assert all(t.weekday() != 5 and t.date() not in wedding_days for t in regular)


def test_weekday_only_policy_has_an_empty_wedding_set() -> None:
    split = wedding_day_split(["30 3 * * 1-5"], [], START)
    assert local_fires(split.wedding) == set()
