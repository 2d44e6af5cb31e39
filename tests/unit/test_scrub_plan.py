"""The scrub planner (pure): every copy read back within its cycle, the work spread over the
days, archived data left out unless asked, and said so."""

from __future__ import annotations

import datetime as dt
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from vowvault.domain import Tier
from vowvault.engine.scrub import StoredCopy, plan_scrub

NOW = dt.datetime(2026, 6, 1, 4, tzinfo=dt.UTC)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cycle=st.integers(1, 20), count=st.integers(1, 60))
def test_every_copy_is_read_back_within_its_cycle(seed: int, cycle: int, count: int) -> None:
    rng = random.Random(seed)
    copies = {f"b{i}": StoredCopy(f"b{i}", "file:///t", rng.randint(1, 1000), None)
              for i in range(count)}
    total = sum(c.size for c in copies.values())
    daily = []
    for day in range(cycle * 4):
        now = NOW + dt.timedelta(days=day)
        if rng.random() < 0.3:  # new backups arrive, freshly verified
            key = f"n{day}"
            copies[key] = StoredCopy(key, "file:///t", rng.randint(1, 1000), now)
            total += copies[key].size
        plan = plan_scrub("p", list(copies.values()), cycle_days=cycle, now=now)
        for c in plan.todo:
            copies[c.backup_id] = StoredCopy(c.backup_id, c.url, c.size, now)
        daily.append(sum(c.size for c in plan.todo))
        for c in copies.values():  # the promise: nothing goes unread longer than the cycle
            assert c.checked_at is not None and now - c.checked_at < dt.timedelta(days=cycle)
    # Past the first cycle the daily work stays near the day's share (largest copy slack).
    steady = daily[cycle:]
    assert max(steady) <= 3 * (total / cycle) + 2000


def test_archived_copies_are_left_out_and_reported_unless_asked() -> None:
    old = NOW - dt.timedelta(days=90)
    copies = [StoredCopy("a", "s3://b", 100, old, Tier.ARCHIVE),
              StoredCopy("d", "s3://b", 50, old, Tier.DEEP_ARCHIVE),
              StoredCopy("h", "s3://b", 10, old, Tier.HOT)]
    plan = plan_scrub("p", copies, cycle_days=30, now=NOW)
    assert [c.backup_id for c in plan.todo] == ["h"]
    assert plan.not_covered == {"ARCHIVE": 100, "DEEP_ARCHIVE": 50}
    assert plan.coverage(NOW, {("h", "s3://b")})["coverage_percent"] == round(100 * 10 / 160, 1)
    asked = plan_scrub("p", copies, cycle_days=30, now=NOW, include_archived=True)
    assert {c.backup_id for c in asked.todo} == {"a", "d", "h"} and not asked.not_covered


def test_nothing_read_back_today_is_read_again() -> None:
    copies = [StoredCopy(f"b{i}", "file:///t", 100, NOW - dt.timedelta(hours=i))
              for i in range(5)]
    assert plan_scrub("p", copies, cycle_days=7, now=NOW).todo == []
