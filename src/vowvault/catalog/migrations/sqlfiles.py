"""PostgreSQL-only parts of a migration, kept as plain .sql files beside it.

``versions/<rev>_<part>.up.sql`` run in name order on upgrade, ``.down.sql`` in reverse
order on downgrade; on SQLite they are skipped (it has no RLS, roles or PL/pgSQL).
"""

from __future__ import annotations

from importlib import resources

from alembic import op


def run_sql_files(revision: str, direction: str) -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    suffix = ".up.sql" if direction == "upgrade" else ".down.sql"
    folder = resources.files("vowvault.catalog.migrations") / "versions"
    files = sorted((f for f in folder.iterdir()
                    if f.name.startswith(revision + "_") and f.name.endswith(suffix)),
                   key=lambda f: f.name, reverse=direction != "upgrade")
    for f in files:
        op.execute(f.read_text(encoding="utf-8"))
