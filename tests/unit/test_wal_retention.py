"""WAL retention follows the base backups (``retention.plan_wal_retention``, pure): an
archiver pass is kept exactly when it holds a segment some kept base backup's recovery may
replay, or is on hold; never when it only precedes every kept base backup."""

from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import given
from hypothesis import strategies as st

from vowvault.engine.retention import Rules, WalJob, plan_wal_retention

NOW = dt.datetime(2027, 6, 12, 12, 0, tzinfo=dt.UTC)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[WalJob], list[tuple[str, int]]]:
    cuts = sorted(set(draw(st.lists(st.integers(1, 200), max_size=12))))
    bounds = [0, *cuts, 201]
    jobs = [WalJob(f"job{i}", NOW - dt.timedelta(hours=len(bounds) - i),
                   tuple(range(a, b)), f"{a}..{b - 1}",
                   legal_hold=draw(st.booleans()) and draw(st.booleans()))
            for i, (a, b) in enumerate(itertools.pairwise(bounds))]
    if draw(st.booleans()):
        jobs.append(WalJob("history", NOW, (), "history 00000002.history"))
    bases = [(f"base{i}", stop) for i, stop in
             enumerate(draw(st.lists(st.integers(0, 220), max_size=4, unique=True)))]
    return jobs, bases


@given(histories())
def test_a_pass_is_kept_exactly_when_a_kept_base_backup_may_replay_it(
        history: tuple[list[WalJob], list[tuple[str, int]]]) -> None:
    jobs, bases = history
    decisions = {d.id: d for d in plan_wal_retention(jobs, bases, Rules(), NOW)}
    assert set(decisions) == {j.id for j in jobs}
    oldest = min((stop for _, stop in bases), default=None)
    for job in jobs:
        d = decisions[job.id]
        assert d.reasons, d
        if oldest is None:
            assert d.keep  # no base backup kept: nothing is deleted
        elif job.segments:
            needed = any(seg >= oldest for seg in job.segments)
            assert d.keep == (needed or job.legal_hold), (job, bases, d)
        assert d.wal == job.label


def test_history_files_stay_while_any_wal_does_and_a_policy_hold_keeps_all() -> None:
    jobs = [WalJob("old", NOW - dt.timedelta(days=30), (1, 2), "1..2"),
            WalJob("new", NOW, (3, 4), "3..4"), WalJob("hist", NOW, (), "history")]
    plan = {d.id: d.keep for d in plan_wal_retention(jobs, [("b", 3)], Rules(), NOW)}
    assert plan == {"old": False, "new": True, "hist": True}
    held = plan_wal_retention(jobs, [("b", 3)], Rules(hold_years=7), NOW)
    assert all(d.keep for d in held)
