"""The audit log's hash chain names an edited, deleted or reordered row, on both catalogs."""

from __future__ import annotations

import sqlalchemy as sa

from vowvault.catalog import audit
from vowvault.catalog.db import Catalog


def fill(catalog: Catalog, n: int = 5) -> None:
    for i in range(n):
        with catalog.session() as s:
            audit.record(s, actor="alice", action="policy.update", target_type="policy",
                         target_id=f"p{i}", summary=f"change {i}", before={"n": i},
                         after={"n": i + 1, "when": "2026-06-20"})


def problems(catalog: Catalog) -> list[tuple[int, str]]:
    with catalog.session() as s:
        return [(p.row_id, p.problem) for p in audit.verify_chain(audit.all_rows(s))]


def tamper(catalog: Catalog, sql: str) -> None:
    """What an attacker with direct database access does (the PostgreSQL trigger that
    forbids UPDATE/DELETE is disabled first, as a superuser could)."""
    pg = catalog.engine.dialect.name == "postgresql"
    with catalog.engine.begin() as conn:
        if pg:
            conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        conn.execute(sa.text(sql))
        if pg:
            conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER USER"))


def test_intact_chain(catalog: Catalog) -> None:
    fill(catalog)
    assert problems(catalog) == []


def test_edited_row_is_named(catalog: Catalog) -> None:
    fill(catalog)
    tamper(catalog, "UPDATE audit_log SET summary = 'nothing to see' WHERE id = 3")
    assert [p[0] for p in problems(catalog)] == [3]
    assert "does not match its hash: it was edited" in problems(catalog)[0][1]


def test_deleted_row_breaks_the_chain_at_the_next(catalog: Catalog) -> None:
    fill(catalog)
    tamper(catalog, "DELETE FROM audit_log WHERE id = 2")
    found = problems(catalog)
    assert [row for row, _ in found] == [3] and "deleted" in found[0][1]


def test_reordered_rows_are_detected(catalog: Catalog) -> None:
    fill(catalog)
    # Swap the content of rows 2 and 4 (ids stay, order of events changes).
    tamper(catalog, "UPDATE audit_log SET id = -2 WHERE id = 2")
    tamper(catalog, "UPDATE audit_log SET id = 2 WHERE id = 4")
    tamper(catalog, "UPDATE audit_log SET id = 4 WHERE id = -2")
    rows = {row for row, _ in problems(catalog)}
    assert {2, 3, 4} <= rows


def test_concurrent_appends_keep_one_chain(catalog: Catalog) -> None:
    import threading

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            fill(catalog, 10)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with catalog.session() as s:
        rows = audit.all_rows(s)
    assert len(rows) == 40 and audit.verify_chain(rows) == []
