"""The retention and lifecycle planners (pure): every backup kept or deleted for stated
reasons; tier moves by age, never earlier than a tier's minimum stay."""

from __future__ import annotations

import datetime as dt

from vowvault.domain import Tier
from vowvault.engine.lifecycle import StoredObject, plan_lifecycle
from vowvault.engine.retention import Candidate, Rules, plan_retention
from vowvault.storage.s3 import MIN_STORAGE_DAYS as S3_STAYS

NOW = dt.datetime(2026, 12, 31, 12, tzinfo=dt.UTC)


def daily(n: int, **kw: object) -> list[Candidate]:
    return [Candidate(id=f"b{i:03d}", completed_at=NOW - dt.timedelta(days=i), status="COMPLETED",
                      **kw) for i in range(n)]  # type: ignore[arg-type]


def kept(decisions) -> set[str]:  # type: ignore[no-untyped-def]
    return {d.id for d in decisions if d.keep}


def test_days_and_buckets() -> None:
    decisions = plan_retention(daily(100), Rules(days=10, keep_weekly=3, keep_monthly=2,
                                                 min_verified=0), NOW)
    ids = kept(decisions)
    assert {f"b{i:03d}" for i in range(10)} <= ids  # within 10 days
    reasons = {d.id: d.reasons for d in decisions}
    assert any("keep-monthly 2026-11" in r for r in reasons["b031"])  # newest of November
    assert len(ids) == 10 + 1 + 1  # 3 weeks (2 inside 10 days), 2 months (1 inside)
    assert all(r == ["no rule keeps it"] for i, r in reasons.items() if i not in ids)


def test_keep_last_min_verified_and_holds() -> None:
    backups = daily(50)
    backups[40] = Candidate("b040", backups[40].completed_at, "COMPLETED", legal_hold=True)
    backups[45] = Candidate("b045", backups[45].completed_at, "COMPLETED", in_use=True)
    unverified = [Candidate(b.id, b.completed_at, b.status, verified=False) for b in backups[:5]]
    decisions = plan_retention(unverified + backups[5:], Rules(days=1, keep_last=2,
                                                              min_verified=3), NOW)
    ids = kept(decisions)
    assert ids == {"b000", "b001", "b005", "b006", "b007", "b040", "b045"}


def test_policy_legal_hold_keeps_years() -> None:
    old = [Candidate("old", NOW - dt.timedelta(days=365 * 6), "COMPLETED"),
           Candidate("older", NOW - dt.timedelta(days=365 * 8), "COMPLETED")]
    assert kept(plan_retention(old, Rules(days=30, min_verified=0, hold_years=7), NOW)) == {
        "old"}


def test_dependencies_of_kept_backups_are_kept_transitively() -> None:
    chain = [Candidate("full", NOW - dt.timedelta(days=90), "COMPLETED"),
             Candidate("inc1", NOW - dt.timedelta(days=60), "COMPLETED",
                       depends_on=frozenset({"full"})),
             Candidate("inc2", NOW - dt.timedelta(days=1), "COMPLETED",
                       depends_on=frozenset({"inc1", "full"})),
             Candidate("stray", NOW - dt.timedelta(days=80), "COMPLETED")]
    decisions = {d.id: d for d in plan_retention(chain, Rules(days=7, min_verified=0), NOW)}
    assert {i for i, d in decisions.items() if d.keep} == {"full", "inc1", "inc2"}
    assert decisions["full"].reasons == ["needed by kept backup inc2 and 1 more"]
    assert decisions["inc1"].reasons == ["needed by kept backup inc2"]


def test_failed_runs_are_cleared_and_pending_deletions_continue() -> None:
    runs = [Candidate("failed-old", NOW - dt.timedelta(days=40), "FAILED"),
            Candidate("failed-new", NOW - dt.timedelta(days=2), "FAILED"),
            Candidate("going", NOW - dt.timedelta(days=2), "EXPIRED", pending_deletion=True)]
    decisions = {d.id: d for d in plan_retention(runs, Rules(days=30, min_verified=5), NOW)}
    assert not decisions["failed-old"].keep and not decisions["going"].keep
    assert decisions["going"].reasons == ["deletion already under way"]


def obj(tier: Tier, backup_days: int, in_tier_days: int, provider: str = "s3") -> StoredObject:
    stays = {"s3": S3_STAYS, "local": {}}[provider]
    return StoredObject("o", tier, NOW - dt.timedelta(days=backup_days),
                        NOW - dt.timedelta(days=in_tier_days), NOW - dt.timedelta(days=backup_days),
                        stays)


RULES = [{"after_days": 7, "tier": "WARM"}, {"after_days": 45, "tier": "COLD"},
         {"after_days": 365, "tier": "ARCHIVE"}]


def test_lifecycle_by_age_with_minimum_stays() -> None:
    (m,) = plan_lifecycle([obj(Tier.HOT, 3, 3)], RULES, NOW)
    assert not m.move
    (m,) = plan_lifecycle([obj(Tier.HOT, 50, 50)], RULES, NOW)
    assert m.move and m.to == Tier.COLD  # straight to the rule that applies now
    (m,) = plan_lifecycle([obj(Tier.WARM, 50, 10)], RULES, NOW)
    assert not m.move and "only 10 of its 30 minimum days" in m.reason
    (m,) = plan_lifecycle([obj(Tier.WARM, 50, 10, provider="local")], RULES, NOW)
    assert m.move  # no minimum on a local disk
    (m,) = plan_lifecycle([obj(Tier.ARCHIVE, 400, 30)], RULES, NOW)
    assert not m.move  # never warmer


def test_the_newest_restorable_backup_is_always_kept() -> None:
    """However short the rules, the newest COMPLETED backup stays (a corrupted newer one
    does not count)."""
    backups = [Candidate("corrupt", NOW - dt.timedelta(days=50), "CORRUPTED"),
               Candidate("good", NOW - dt.timedelta(days=60), "COMPLETED"),
               Candidate("older", NOW - dt.timedelta(days=70), "COMPLETED")]
    decisions = {d.id: d for d in plan_retention(backups, Rules(days=1, min_verified=0), NOW)}
    assert decisions["good"].keep and "the newest restorable backup" in decisions["good"].reasons
    assert not decisions["older"].keep and not decisions["corrupt"].keep


def test_min_verified_counts_only_recent_proofs() -> None:
    def aged(i: int, verified_days_ago: int) -> Candidate:
        return Candidate(f"b{i}", NOW - dt.timedelta(days=100 + i), "COMPLETED",
                         verified_at=NOW - dt.timedelta(days=verified_days_ago))

    # Newest first: b0 and b1 were last proven long ago; b2, b3 lately.
    backups = [aged(0, 90), aged(1, 80), aged(2, 5), aged(3, 6), aged(4, 7)]
    decisions = plan_retention(backups, Rules(days=1, min_verified=2,
                                              verify_max_age_days=30), NOW)
    assert kept(decisions) == {"b0", "b2", "b3"}  # b0: the newest restorable
