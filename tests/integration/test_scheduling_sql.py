"""The PostgreSQL scheduling functions (0001_a_scheduling.up.sql) agree with
``vowvault.scheduling``: property-based comparisons on random canonical crons, timezones
with odd DST rules and instants near clock changes, plus worked examples."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from importlib import resources
from zoneinfo import ZoneInfo

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vowvault.catalog.db import make_engine
from vowvault.domain import Priority
from vowvault.scheduling import (
    ScheduleError,
    effective_priority,
    effective_schedules,
    expected_runs,
    fires_between,
    local_date,
    next_fire,
    next_run,
    normalize_cron,
)

UTC = dt.UTC
TIMEZONES = [
    "UTC", "Europe/London", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe",
    "Asia/Kolkata", "America/Sao_Paulo", "Pacific/Auckland",
]
# Years with rule changes (US 2007, Sao Paulo DST until 2019) and far-future ones.
_TRANSITION_YEARS = (2000, 2006, 2007, 2011, 2014, 2018, 2019, 2024, 2025, 2031, 2035)

HYPOTHESIS = settings(deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])


# --- strategies -----------------------------------------------------------------------------

def _offset(tz: ZoneInfo, instant: dt.datetime) -> dt.timedelta | None:
    return instant.astimezone(tz).utcoffset()


def _transitions(name: str) -> list[dt.datetime]:
    """UTC instants (to the minute) at which ``name`` changes its UTC offset."""
    tz = ZoneInfo(name)
    found = []
    for year in _TRANSITION_YEARS:
        for month in range(1, 13):
            lo = dt.datetime(year, month, 1, tzinfo=UTC)
            hi = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            if _offset(tz, lo) == _offset(tz, hi):
                continue
            while hi - lo > dt.timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if _offset(tz, mid) == _offset(tz, lo):
                    lo = mid
                else:
                    hi = mid
            found.append(hi.replace(second=0, microsecond=0))
    return found


TRANSITIONS = [(name, t) for name in TIMEZONES for t in _transitions(name)]

any_instant = st.datetimes(min_value=dt.datetime(2000, 1, 1),
                           max_value=dt.datetime(2035, 12, 31, 23, 59, 59),
                           timezones=st.just(UTC))
near_transition = st.builds(
    lambda pair, minutes, micros: (pair[0], pair[1] + dt.timedelta(minutes=minutes,
                                                                   microseconds=micros)),
    st.sampled_from(TRANSITIONS), st.integers(-6 * 60, 6 * 60),
    st.sampled_from([0, 0, 1, 30_000_000, 59_999_999]))
# Half the cases are within six hours of a clock change in that very timezone.
zone_and_instant = st.one_of(st.tuples(st.sampled_from(TIMEZONES), any_instant),
                             near_transition)


def _field(lo: int, hi: int, stars: int, extra: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """One raw cron field; ``stars`` weights '*' (the cron fires more often)."""
    nums = st.integers(lo, hi)
    return st.one_of(
        *[st.just("*")] * stars,
        nums.map(str),
        st.lists(nums, min_size=2, max_size=4, unique=True).map(
            lambda vs: ",".join(map(str, vs))),
        st.tuples(nums, nums).map(lambda ab: f"{min(ab)}-{max(ab)}"),
        st.integers(2, max(2, (hi - lo) // 2)).map(lambda s: f"*/{s}"),
        *[st.just(e) for e in extra],
    )


def _canonical(raw: str) -> str | None:
    try:
        return normalize_cron(raw)
    except ScheduleError:
        return None  # never fires (31 February...)


_DST_HOURS = ("1", "2", "3", "0-3", "1,2", "2,3", "1-2")
crons = st.tuples(
    _field(0, 59, 1, ("0", "30", "15,45")),
    _field(0, 23, 1, _DST_HOURS),
    _field(1, 31, 4, ("29", "30", "31")),
    _field(1, 12, 4, ("2", "3,4,10,11")),
    _field(0, 7, 3, ("0", "6", "7")),
).map(" ".join).map(_canonical).filter(bool)

# Base schedules of policies: few runs a week, so that peak-season derivation stays small.
policy_crons = st.tuples(
    st.sampled_from(["0", "30", "15,45", "5", "0,20,40", "59"]),
    st.one_of(_field(0, 23, 1, _DST_HOURS).filter(lambda f: f != "*" and "/" not in f),
              st.just("*/6"), st.just("*/8")),
    st.one_of(*[st.just("*")] * 5, st.sampled_from(["1", "15", "29", "1,15"])),
    st.one_of(*[st.just("*")] * 3, st.sampled_from(["1-4", "5-10", "11,12", "6"])),
    st.one_of(*[st.just("*")] * 3, st.sampled_from(["1-5", "0,6", "6", "3"])),
).map(" ".join).map(_canonical).filter(bool)


# --- helpers --------------------------------------------------------------------------------

@pytest.fixture
def db(pg_url: str) -> Iterator[psycopg.Connection]:
    """One connection for all the examples of a test, to a freshly migrated catalog."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # The functions must not depend on the session's zone: use an unusual one.
        conn.execute("SET TIME ZONE 'Pacific/Chatham'")
        yield conn


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # Compare in UTC: aware datetimes in different zones compare unequal inside a fold.
    return None if value is None else value.astimezone(UTC)


def _one(conn: psycopg.Connection, sql: str, *params: object) -> object:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def _org(conn: psycopg.Connection) -> uuid.UUID:
    slug = f"org-{uuid.uuid4().hex[:12]}"
    return _one(conn, "INSERT INTO organizations (slug, name) VALUES (%s, %s) RETURNING id",
                slug, slug)


def _policy(conn: psycopg.Connection, org: uuid.UUID, cron: str, tz: str, *,
            schedules: list[str] | None = None, multiplier: int = 1,
            priority: Priority = Priority.NORMAL, wedding_day_priority: bool = False,
            active: bool = True, name: str | None = None) -> uuid.UUID:
    return _one(
        conn,
        """INSERT INTO backup_policies
               (organization_id, name, backup_type, source_kind, source_config, schedule_cron,
                effective_schedules, storage_targets, lifecycle_rules, spec_hash, timezone,
                peak_season_multiplier, priority, wedding_day_priority, is_active)
           VALUES (%s, %s, 'FULL', 'DIRECTORY', '{}', %s, %s::jsonb, '[]', '[]', 'x', %s,
                   %s, %s, %s, %s)
           RETURNING id""",
        org, name or f"policy-{uuid.uuid4().hex}", cron, json.dumps(schedules or [cron]), tz,
        multiplier, priority.value, wedding_day_priority, active)


def _sql_next(conn: psycopg.Connection, cron: str, tz: str,
              after: dt.datetime) -> dt.datetime | None:
    return _utc(_one(conn, "SELECT vowvault_cron_next(%s, %s, %s)", cron, tz, after))


def _sql_fires(conn: psycopg.Connection, cron: str, tz: str, start: dt.datetime,
               end: dt.datetime) -> list[dt.datetime]:
    rows = conn.execute("SELECT f FROM vowvault_cron_fires(%s, %s, %s, %s) AS f",
                        (cron, tz, start, end)).fetchall()
    return [_utc(r[0]) for r in rows]


def _at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# --- properties -----------------------------------------------------------------------------

@settings(HYPOTHESIS, max_examples=300)
@given(cron=crons, zone_at=zone_and_instant)
def test_cron_next_agrees_with_python(db: psycopg.Connection, cron: str,
                                      zone_at: tuple[str, dt.datetime]) -> None:
    tz, after = zone_at
    expected = next_fire(cron, tz, after)
    assert _sql_next(db, cron, tz, after) == expected, (cron, tz, after.isoformat())


@settings(HYPOTHESIS, max_examples=100)
@given(cron=crons, zone_at=zone_and_instant,
       length=st.integers(0, 3 * 24 * 3600).map(lambda s: dt.timedelta(seconds=s)))
def test_cron_fires_agree_with_python(db: psycopg.Connection, cron: str,
                                      zone_at: tuple[str, dt.datetime],
                                      length: dt.timedelta) -> None:
    tz, start = zone_at
    end = start + length
    expected = fires_between(cron, tz, start, end)
    assert _sql_fires(db, cron, tz, start, end) == expected, (cron, tz, start.isoformat(),
                                                              end.isoformat())


@settings(HYPOTHESIS, max_examples=100)
@given(cron=policy_crons, multiplier=st.integers(1, 6), zone_at=zone_and_instant,
       length=st.integers(0, 3 * 24 * 3600).map(lambda s: dt.timedelta(seconds=s)))
def test_policy_next_run_and_expected_runs_agree_with_python(
        db: psycopg.Connection, cron: str, multiplier: int,
        zone_at: tuple[str, dt.datetime], length: dt.timedelta) -> None:
    try:
        schedules: list[str] | None = effective_schedules(cron, multiplier)
    except ScheduleError:
        schedules = None  # names days of the month and runs in peak season: no derivation
    assume(schedules is not None)
    assert schedules is not None
    tz, after = zone_at
    policy = _policy(db, _org(db), cron, tz, schedules=schedules, multiplier=multiplier)
    got = _utc(_one(db, "SELECT calculate_next_backup_time(%s, %s)", policy, after))
    assert got == next_run(schedules, tz, after), (schedules, tz, after.isoformat())
    runs = _one(db, "SELECT vowvault_expected_runs(%s, %s, %s)", policy, after, after + length)
    assert runs == expected_runs(schedules, tz, after, after + length), (
        schedules, tz, after.isoformat(), length)


@settings(HYPOTHESIS, max_examples=100)
@given(zone_at=zone_and_instant, base=st.sampled_from(list(Priority)),
       wedding_day_priority=st.booleans(),
       offsets=st.lists(st.integers(-3, 3), max_size=4))
def test_priority_agrees_with_python(db: psycopg.Connection, zone_at: tuple[str, dt.datetime],
                                     base: Priority, wedding_day_priority: bool,
                                     offsets: list[int]) -> None:
    tz, at = zone_at
    day = local_date(at, tz)
    dates = [day + dt.timedelta(days=o) for o in offsets]
    org, other = _org(db), _org(db)
    # A wedding of another organization that very day must not count.
    for owner, date in [(org, d) for d in dates] + [(other, day)]:
        db.execute("INSERT INTO wedding_calendar (organization_id, wedding_id, wedding_date) "
                   "VALUES (%s, %s, %s)", (owner, uuid.uuid4(), date))
    policy = _policy(db, org, "0 3 * * *", tz, priority=base,
                     wedding_day_priority=wedding_day_priority)
    got = _one(db, "SELECT backup_priority_at(%s, %s)", policy, at)
    assert Priority(got) == effective_priority(base, wedding_day_priority, day, dates), (
        tz, at.isoformat(), day, dates)


# --- examples -------------------------------------------------------------------------------

def test_london_spring_forward_fires_with_the_offset_before_the_change(
        db: psycopg.Connection) -> None:
    # 2024-03-31: clocks go from 01.00 GMT to 02.00 BST; 01.30 does not exist and is read
    # as GMT, i.e. 02.30 BST.
    after = _at(2024, 3, 31, 0, 0)
    assert _sql_next(db, "30 1 * * *", "Europe/London", after) == _at(2024, 3, 31, 1, 30)
    assert next_fire("30 1 * * *", "Europe/London", after) == _at(2024, 3, 31, 1, 30)
    # 01.30 (read as GMT) and 02.30 BST are the same instant: one run, not two.
    start, end = _at(2024, 3, 30, 12), _at(2024, 3, 31, 12)
    assert _sql_fires(db, "30 1,2 * * *", "Europe/London", start, end) == [
        _at(2024, 3, 31, 1, 30)]
    assert fires_between("30 1,2 * * *", "Europe/London", start, end) == [
        _at(2024, 3, 31, 1, 30)]


def test_london_fall_back_fires_once_at_the_second_occurrence(db: psycopg.Connection) -> None:
    # 2024-10-27: clocks go from 02.00 BST back to 01.00 GMT; 01.30 happens twice (00.30 and
    # 01.30 UTC) and fires only at the second, standard-time occurrence.
    after = _at(2024, 10, 27, 0, 0)
    assert _sql_next(db, "30 1 * * *", "Europe/London", after) == _at(2024, 10, 27, 1, 30)
    assert next_fire("30 1 * * *", "Europe/London", after) == _at(2024, 10, 27, 1, 30)
    start, end = _at(2024, 10, 26, 12), _at(2024, 10, 27, 12)
    assert _sql_fires(db, "30 1 * * *", "Europe/London", start, end) == [
        _at(2024, 10, 27, 1, 30)]
    assert fires_between("30 1 * * *", "Europe/London", start, end) == [
        _at(2024, 10, 27, 1, 30)]


def test_lord_howe_half_hour_changes(db: psycopg.Connection) -> None:
    tz = "Australia/Lord_Howe"
    # 2024-04-07: 02.00 (+11) back to 01.30 (+10.30): 01.45 fires at its second occurrence.
    after = _at(2024, 4, 6, 14, 0)
    assert _sql_next(db, "45 1 * * *", tz, after) == _at(2024, 4, 6, 15, 15)
    assert next_fire("45 1 * * *", tz, after) == _at(2024, 4, 6, 15, 15)
    # 2024-10-06: 02.00 (+10.30) forward to 02.30 (+11): 02.15 is read as +10.30.
    after = _at(2024, 10, 5, 14, 0)
    assert _sql_next(db, "15 2 * * *", tz, after) == _at(2024, 10, 5, 15, 45)
    assert next_fire("15 2 * * *", tz, after) == _at(2024, 10, 5, 15, 45)
    # There 02.20 (read as +10.30, 15.50 UTC) comes before 02.35 (+11, 15.35 UTC) on the wall
    # clock but after it in time: the earliest instant wins, not the first wall-clock match.
    after = _at(2024, 10, 5, 15, 0)
    assert _sql_next(db, "20,35 2 * * *", tz, after) == _at(2024, 10, 5, 15, 35)
    assert next_fire("20,35 2 * * *", tz, after) == _at(2024, 10, 5, 15, 35)


def test_cron_next_rare_dates_and_day_rules(db: psycopg.Connection) -> None:
    # Feb 29 runs every four years; day-of-month OR day-of-week when both are restricted.
    assert _sql_next(db, "0 0 29 2 *", "UTC", _at(2024, 3, 1)) == _at(2028, 2, 29)
    assert _sql_next(db, "0 12 13 * 5", "UTC", _at(2024, 9, 1)) == _at(2024, 9, 6, 12)
    assert _sql_next(db, "0 12 13 * *", "UTC", _at(2024, 9, 1)) == _at(2024, 9, 13, 12)
    assert _sql_next(db, "0 12 * * 0", "UTC", _at(2024, 9, 1, 12)) == _at(2024, 9, 8, 12)


def test_cron_field_expansion(db: psycopg.Connection) -> None:
    def field(text: str, lo: int, hi: int) -> object:
        return _one(db, "SELECT vowvault_cron_field(%s, %s, %s)", text, lo, hi)

    assert field("*", 0, 59) is None
    assert field("0-59", 0, 59) is None  # every value: unrestricted, like normalize_cron
    assert field("1-3,7", 0, 59) == [1, 2, 3, 7]
    assert field("*/15", 0, 59) == [0, 15, 30, 45]
    assert field("10-20/5", 0, 59) == [10, 15, 20]
    assert field("5/20", 0, 59) == [5, 25, 45]
    assert _one(db, "SELECT dows FROM vowvault_cron_parse('0 0 * * 5-7')") == [0, 5, 6]
    for bad in ("60", "5-1", "*/0", "MON", ""):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            field(bad, 0, 59)


def test_inactive_or_missing_policy_has_no_next_run(db: psycopg.Connection) -> None:
    org = _org(db)
    after = _at(2024, 6, 1)
    active = _policy(db, org, "0 3 * * *", "Europe/London")
    inactive = _policy(db, org, "0 3 * * *", "Europe/London", active=False)
    assert _utc(_one(db, "SELECT calculate_next_backup_time(%s, %s)", active, after)) == _at(
        2024, 6, 1, 2)
    assert _one(db, "SELECT calculate_next_backup_time(%s, %s)", inactive, after) is None
    assert _one(db, "SELECT calculate_next_backup_time(%s, %s)", uuid.uuid4(), after) is None
    assert _one(db, "SELECT backup_priority_at(%s)", uuid.uuid4()) is None
    # The defaults (now()) work.
    assert _one(db, "SELECT calculate_next_backup_time(%s)", active) is not None
    assert _one(db, "SELECT backup_priority_at(%s)", active) == "NORMAL"


def test_check_backup_compliance(db: psycopg.Connection) -> None:
    org = _org(db)
    as_of = _at(2024, 6, 15, 12)
    window_start = as_of - dt.timedelta(days=7)
    cron = "0 0,6,12,18 * * *"
    full = _policy(db, org, cron, "UTC", name="comp-full")
    half = _policy(db, org, cron, "America/New_York", name="comp-half")
    over = _policy(db, org, cron, "UTC", name="comp-over")
    _policy(db, org, "0 0 1 1 *", "UTC", name="comp-idle")  # nothing expected
    _policy(db, org, cron, "UTC", name="comp-inactive", active=False)

    def job(policy: uuid.UUID, status: str, completed_at: dt.datetime | None) -> None:
        db.execute("""INSERT INTO backup_jobs (organization_id, policy_id, job_name, backup_type,
                                               status, scheduled_at, completed_at)
                      VALUES (%s, %s, 'job', 'FULL', %s, %s, %s)""",
                   (org, policy, status, completed_at or as_of, completed_at))

    utc_fires = fires_between(cron, "UTC", window_start, as_of)
    ny_fires = fires_between(cron, "America/New_York", window_start, as_of)
    assert len(utc_fires) == len(ny_fires) == 28
    for t in utc_fires:
        job(full, "COMPLETED", t)
        job(over, "COMPLETED", t)
        job(over, "COMPLETED", t)  # retried runs: never above 100
    for t in ny_fires[::2]:
        job(half, "COMPLETED", t)
    for _ in ny_fires[1::2]:
        job(half, "FAILED", None)
    job(half, "COMPLETED", window_start)  # the window is (start, end]: not counted
    job(half, "COMPLETED", as_of + dt.timedelta(minutes=1))

    assert _one(db, "SELECT vowvault_expected_runs(%s, %s, %s)", half, window_start,
                as_of) == expected_runs([cron], "America/New_York", window_start, as_of) == 28
    rows = dict(db.execute("SELECT * FROM check_backup_compliance(7, %s)", (as_of,)).fetchall())
    assert rows == {"comp-full": 100, "comp-half": 50, "comp-over": 100, "comp-idle": 100}
    assert str(rows["comp-half"]) == "50.00" and str(rows["comp-idle"]) == "100.00"
    # One day back: the last four runs of 'half' are two completed, two failed.
    assert dict(db.execute("SELECT * FROM check_backup_compliance(1, %s)",
                           (as_of,)).fetchall())["comp-half"] == 50
    # Defaults: the week before now(), where these policies have no jobs.
    now_rows = dict(db.execute("SELECT * FROM check_backup_compliance()").fetchall())
    assert now_rows["comp-full"] == 0 and now_rows["comp-idle"] == 100


def test_down_file_drops_what_up_file_creates(pg_url: str) -> None:
    """Both files run through SQLAlchemy text() as the migration does, and undo each other."""
    folder = resources.files("vowvault.catalog.migrations") / "versions"
    up = (folder / "0001_a_scheduling.up.sql").read_text(encoding="utf-8")
    down = (folder / "0001_a_scheduling.down.sql").read_text(encoding="utf-8")
    listed = """SELECT count(*) FROM pg_proc WHERE proname ~ '^vowvault_cron_'
                OR proname IN ('calculate_next_backup_time', 'backup_priority_at',
                               'vowvault_expected_runs', 'check_backup_compliance')"""
    engine = make_engine(pg_url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text(listed)).scalar() == 9
            conn.execute(sa.text(down))
            assert conn.execute(sa.text(listed)).scalar() == 0
            conn.execute(sa.text(down))  # IF EXISTS: runs twice
            conn.execute(sa.text(up))
            assert conn.execute(sa.text(listed)).scalar() == 9
    finally:
        engine.dispose()
