"""A lost catalog rebuilt from storage (issue 15, finding 2): two organizations, five
policies (full, incremental and differential chains) on one target; the catalog deleted;
`vowvault catalog rebuild --from URL` recreates it from the key objects and manifests; every
backup restores byte-identical from the rebuilt catalog; `policies apply` keeps the rebuilt
policies' ids, and nothing on the target is an orphan. Through the real CLI."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from trees import tree_state


def _policy_file(path: Path, srcs: dict[str, Path], storage: Path) -> Path:
    kinds = {"lumiere-photos": ("lumiere", "incremental"), "lumiere-raw": ("lumiere", "full"),
             "lumiere-config": ("lumiere", "differential"), "bloom-shop": ("bloom", "full"),
             "bloom-orders": ("bloom", "incremental")}
    policies = "".join(f"""
  - name: {name}
    organization: {org}
    backup_type: {kind}
    source: {{kind: directory, path: {srcs[name]}}}
    schedule: {{cron: "0 2 * * *"}}
    peak_season: {{multiplier: 1}}
    retention: {{days: 365}}
    storage: [{{url: "file://{storage}"}}]
""" for name, (org, kind) in kinds.items())
    path.write_text("version: 1\norganizations:\n  - {slug: lumiere, name: Lumière Photo}\n"
                    "  - {slug: bloom, name: Bloom Florists}\npolicies:" + policies)
    return path


def _ids(db: Path, table: str) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        col = "slug" if table == "organizations" else "name"
        return dict(conn.execute(f"SELECT {col}, id FROM {table}").fetchall())


def test_a_catalog_rebuilt_from_storage_restores_every_backup(cli, cli_env,
                                                              tmp_path: Path) -> None:
    names = ["lumiere-photos", "lumiere-raw", "lumiere-config", "bloom-shop", "bloom-orders"]
    srcs = {n: tmp_path / "src" / n for n in names}
    for n, d in srcs.items():
        d.mkdir(parents=True)
        (d / "first.txt").write_text(f"{n} first\n")
    storage = tmp_path / "storage"
    policy = _policy_file(tmp_path / "p.yaml", srcs, storage)
    cli("policies", "apply", str(policy))
    made: dict[str, dict] = {}
    for round_ in range(3):
        for n in names:
            if round_ and n not in ("lumiere-photos", "lumiere-config", "bloom-orders"):
                continue
            (srcs[n] / f"round-{round_}.jpg").write_bytes(f"{n} {round_}".encode() * 500)
            job = cli("backup", "run", n, "--direct").stdout.split()[1]
            made[job] = tree_state(srcs[n])
    assert len(made) == 11
    db = Path(cli_env["VOWVAULT_HOME"]) / "catalog.db"
    before = {t: _ids(db, t) for t in ("organizations", "backup_policies")}
    for f in db.parent.glob("catalog.db*"):
        f.unlink()  # the catalog is lost; the key store and the target are not
    assert cli("backup", "list", check=False).returncode == 4
    out = cli("--new-catalog", "catalog", "rebuild", "--from", f"file://{storage}").stdout
    print(out)
    assert "2 organizations (bloom, lumiere)" in out or "2 organizations (lumiere, bloom)" in out
    assert "5 policies" in out and "11 backups" in out
    assert {t: _ids(db, t) for t in before} == before  # same ids, slugs and names
    for job, state in made.items():
        restored = tmp_path / "restored" / job
        cli("backup", "restore", job, "--to-dir", str(restored))
        assert tree_state(restored) == state, job
    cli("policies", "apply", str(policy))
    assert _ids(db, "backup_policies") == before["backup_policies"]
    assert cli("orphans").stdout.strip() == "0 orphaned objects"
    cli("backup", "verify", next(iter(made)))
