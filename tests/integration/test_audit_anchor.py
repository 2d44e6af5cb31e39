"""An audit trail a catalog superuser cannot quietly rewrite (issue 14, finding 5).

The attacker is a superuser of the PostgreSQL catalog who can read neither the audit key
nor write the storage targets: it disables the append-only trigger and deletes the newest
rows, deletes every row, or edits a row and recomputes every later hash (it has no key, so
with plain SHA-256, or with a key of its own). Each is reported, by the chain's keyed
hashes, by the head anchored on the storage targets, or by the head the operator kept."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psycopg
import pytest

from vowvault.catalog import audit
from vowvault.engine import auditkey
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.restore import restore_backup
from vowvault.repository.anchor import NAME, read_anchor
from vowvault.settings import Settings


@pytest.fixture
def logged(pg_url: str, tmp_path: Path, policy_on) -> tuple[Context, str]:
    """A PostgreSQL catalog with a few audited backups, each anchoring the head."""
    ctx = Context.from_settings(Settings(home=tmp_path / "home", database_url=pg_url,
                                         actor="worker"), heartbeat_seconds=0.5)
    src = tmp_path / "src"
    src.mkdir()
    (src / "guests.csv").write_text("Ada,Grace\n")
    name = policy_on(ctx, "venue", f"{{kind: directory, path: {src}}}")
    for _ in range(3):
        run_backup(ctx, name)
    yield ctx, pg_url
    ctx.close()


def _superuser(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
    return conn


def test_an_intact_log_verifies_and_the_head_is_on_every_target(logged, tmp_path) -> None:
    ctx, url = logged
    check = auditkey.verify(ctx)
    assert check.problems == [] and check.failures == [] and check.rows >= 6
    anchor = read_anchor(ctx.backend(f"file://{tmp_path / 'storage'}", org="lumiere"))
    assert anchor is not None and anchor.row_hash == check.head
    assert (tmp_path / "storage" / NAME).exists()
    # The key is not in the catalog: no row, no column holds it.
    key = ctx.catalog.audit_key
    with psycopg.connect(url) as conn:
        dump = json.dumps([list(map(str, r)) for r in conn.execute(
            "SELECT * FROM audit_log").fetchall()])
    assert key.hex() not in dump


def test_deleting_the_newest_rows_is_caught_by_the_anchor(logged) -> None:
    ctx, url = logged
    with _superuser(url) as su:
        su.execute("DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log "
                   "ORDER BY id DESC LIMIT 2)")
    check = auditkey.verify(ctx)
    assert check.problems == []  # what is left is a valid chain ...
    assert any("not in the catalog's chain" in f for f in check.failures)  # ... but short


def test_rows_after_the_last_anchor_are_caught_by_the_head_kept(logged, tmp_path) -> None:
    ctx, url = logged
    restore_backup(ctx, _newest_backup(url), to_dir=tmp_path / "out")  # rows, no anchor
    kept = auditkey.verify(ctx).head
    with _superuser(url) as su:
        su.execute("DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)")
    assert auditkey.verify(ctx).failures == []  # the anchor predates the deleted row
    check = auditkey.verify(ctx, expect_head=kept)
    assert any("expected head" in f for f in check.failures)


def test_deleting_every_row_is_caught(logged) -> None:
    ctx, url = logged
    kept = auditkey.verify(ctx).head
    with _superuser(url) as su:
        su.execute("DELETE FROM audit_log")
    check = auditkey.verify(ctx, expect_head=kept)
    assert check.rows == 0
    assert any("not in the catalog's chain" in f for f in check.failures)
    assert any("expected head" in f for f in check.failures)


@pytest.mark.parametrize("forger_key", [None, b"k" * 32])
def test_editing_a_row_and_recomputing_every_later_hash_is_caught(logged, forger_key) -> None:
    """The attacker rewrites a row's summary and re-chains from there to the end, with
    plain SHA-256 or with a key of its own; then, more thorough, the whole log from the
    first row."""
    ctx, url = logged
    kept = auditkey.verify(ctx).head
    for start in ("edited", "first"):
        with _superuser(url) as su:
            rows = su.execute("SELECT id, occurred_at, actor, actor_role, action, "
                              "target_type, target_id, organization_id, summary, before, "
                              "after, prev_hash FROM audit_log ORDER BY id").fetchall()
            edit = rows[len(rows) // 2][0]
            prev = None
            for r in rows:
                (rid, at, actor, role, action, ttype, tid, org, summary, before, after,
                 prev_hash) = r
                if rid == edit:
                    summary = "nothing happened"
                if start == "first" or rid >= edit:
                    prev = prev_hash if prev is None else prev
                    digest = audit.row_digest(prev, occurred_at=at, actor=actor,
                                              actor_role=role, action=action,
                                              target_type=ttype, target_id=tid,
                                              organization_id=org, summary=summary,
                                              before=before, after=after, key=forger_key)
                    su.execute("UPDATE audit_log SET summary = %s, prev_hash = %s, "
                               "row_hash = %s WHERE id = %s", (summary, prev, digest, rid))
                    prev = digest
                else:
                    prev = None
        check = auditkey.verify(ctx, expect_head=kept)
        assert check.problems or check.failures, start
        if start == "first":  # a whole consistent forgery: the anchor and the head say so
            assert any("not in the catalog's chain" in f for f in check.failures)
            assert any("expected head" in f for f in check.failures)


def test_a_forged_anchor_without_the_key_is_ignored(logged, tmp_path) -> None:
    """Someone who can write a bucket but has no key cannot make a shortened chain pass
    (nor make an intact one fail) with an anchor of their own."""
    ctx, _ = logged
    path = tmp_path / "storage" / NAME
    doc = json.loads(path.read_bytes())
    doc.update(row_id=1, row_hash="0" * 64,
               mac=hashlib.sha256(b"guess").hexdigest())
    path.write_text(json.dumps(doc))
    check = auditkey.verify(ctx)
    assert check.failures == [] and any("not sealed" in a for a in check.anchors)


def _newest_backup(url: str) -> str:
    with psycopg.connect(url) as conn:
        return str(conn.execute("SELECT id FROM backup_jobs WHERE status = 'COMPLETED' "
                                "ORDER BY created_at DESC LIMIT 1").fetchone()[0])
