"""`vowvault demo`: the main job on the embedded default, start to finish.

SQLite catalog, local storage and keys under VOWVAULT_HOME, an ephemeral Prefect server:
a photographer's sample photo store (and, when PostgreSQL answers on 127.0.0.1, a venue's
bookings database) is backed up by the Prefect flow, verified, restored and compared.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
from pathlib import Path

from rich.console import Console

from vowvault.engine.context import Context
from vowvault.policies.apply import apply_policy_file
from vowvault.policies.loader import load_policy_file
from vowvault.settings import load_settings

GUESTS = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia",
          "Tim", "Margaret", "Niklaus", "Leslie", "Shafi", "John", "Katherine"]


def run_demo(policy_file: Path, console: Console) -> None:
    t0 = time.perf_counter()
    settings = load_settings()
    home = settings.home
    defaults = {
        "VOWVAULT_BACKUP_ROOT": home / "storage",
        "LUMIERE_PHOTOS": home / "demo" / "lumiere-photos",
        "PLATFORM_CONFIG": home / "demo" / "platform-config",
    }
    for name, path in defaults.items():
        os.environ.setdefault(name, str(path))
    photos = Path(os.environ["LUMIERE_PHOTOS"])
    console.print(f"[bold]vowvault demo[/bold]: state in {home}")
    made = make_sample_tree(photos)
    make_config_tree(Path(os.environ["PLATFORM_CONFIG"]))
    console.print(f"1. sample photo store {photos}: {made[0]} files, {made[1] / 1e6:.1f} MB "
                  f"(JPEG-like photos and JSON guest lists)")

    parsed = load_policy_file(policy_file)
    ctx = Context.from_settings(settings)  # the catalog with its audit key
    changes = apply_policy_file(ctx.catalog, parsed, actor=settings.actor)
    ctx.close()
    changed = sum(c.action != "unchanged" for c in changes)
    console.print(f"2. applied {policy_file}: {len(parsed.policies)} policies, {changed} "
                  f"changes (catalog {settings.database_url})")

    import flows  # noqa: F401 - Prefect's offline defaults, before Prefect loads
    from flows.backup import backup
    from vowvault.cli.prefect_server import prefect_api

    console.print("3. running the Prefect backup flow for lumiere-photos "
                  "(a temporary Prefect server starts first: ~10 s)")
    with prefect_api():
        result = backup(policy="lumiere-photos")
    console.print(f"   backup {result['job_id']}: {result['status']} ({result['backup_type']}, "
                  f"{result['files']} files, {result['source_bytes'] / 1e6:.1f} MB read, "
                  f"{result['stored_bytes'] / 1e6:.1f} MB stored), verified on "
                  f"{', '.join(result['targets'])}")

    from vowvault.engine.restore import restore_backup
    from vowvault.engine.verify import verify_backup

    ctx = Context.from_settings()
    try:
        report = verify_backup(ctx, result["job_id"])
        console.print(f"4. re-verified from storage: intact on {len(report.copies)} copy")
        with tempfile.TemporaryDirectory(prefix="vowvault-demo-") as tmp:
            target = Path(tmp) / "restored"
            restored = restore_backup(ctx, result["job_id"], to_dir=target)
            same = tree_digest(photos) == tree_digest(target)
            console.print(f"5. restored into {target}: {restored.bytes_restored / 1e6:.1f} MB in "
                          f"{restored.duration_seconds:.2f} s; identical to the source: "
                          f"{'yes' if same else 'NO'}")
            if not same:
                raise SystemExit("demo: the restored tree differs from the source")
        db_line = demo_database(ctx, backup, console)
    finally:
        ctx.close()
    console.print(f"6. {db_line}")
    console.print(f"\ndone in {time.perf_counter() - t0:.0f} s. Next: `vowvault backup list`, "
                  f"`vowvault backup show {result['job_id'][:8]}`, `vowvault audit verify`, "
                  f"`vowvault policies list`; to watch runs in the Prefect UI run "
                  f"`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api "
                  f"(see docs/OPERATIONS.md).")
    console.print(f"\nThe keys that open these backups live in {home / 'keys'} (one file per "
                  f"organization and version; the audit key in {home / 'audit.key'}). Without "
                  f"them nothing restores: escrow them with `vowvault keys export ORG --out "
                  f"FILE` and keep that file apart from the backups (docs/SECURITY.md).")


def make_sample_tree(root: Path, photos: int = 24, seed: int = 7) -> tuple[int, int]:
    """Photo-like files (incompressible, like JPEGs) and JSON guest lists; created once."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    if not root.exists():
        for w in range(3):
            wedding = root / f"wedding-2027-06-{12 + w:02d}"
            (wedding / "raw").mkdir(parents=True)
            for i in range(photos // 3):
                size = rng.randint(200_000, 900_000)
                data = b"\xff\xd8\xff\xe0" + rng.randbytes(size)
                (wedding / "raw" / f"IMG_{w}{i:03d}.jpg").write_bytes(data)
            guests = [{"name": rng.choice(GUESTS), "table": rng.randint(1, 20),
                       "meal": rng.choice(["fish", "veg", "beef"])} for _ in range(150)]
            (wedding / "guest-list.json").write_text(json.dumps(guests, indent=1))
            (wedding / "latest").symlink_to("raw")
        (root / "README.txt").write_text("Client galleries, originals. Do not lose.\n")
        (root / "empty.txt").touch()
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)


def make_config_tree(root: Path) -> None:
    if not root.exists():
        root.mkdir(parents=True)
        (root / "app.yaml").write_text("replicas: 3\nfeature_flags: {seating_plans: true}\n")


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        digest.update(f"{rel}|{st.st_mode:o}|{st.st_mtime_ns}".encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def demo_database(ctx: object, backup: object, console: Console) -> str:
    """Back up and restore a venue's small bookings database if PostgreSQL answers."""
    dsn = os.environ.get("GRAND_HALL_DSN", "postgresql://postgres@127.0.0.1:5432/grand_hall")
    try:
        import psycopg
        from psycopg import sql
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        dbname = str(conninfo_to_dict(dsn).get("dbname"))
        admin = make_conninfo(dsn, dbname="postgres")
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (dbname,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        with psycopg.connect(dsn, autocommit=True) as conn:
            empty = conn.execute("SELECT to_regclass('public.bookings') IS NULL").fetchone()[0]
        if empty:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE bookings (id serial PRIMARY KEY, couple text, wedding_date "
                    "date, guests int, deposit numeric(10,2), booked_at timestamptz "
                    "DEFAULT now());"
                    "CREATE TABLE guests (booking_id int REFERENCES bookings, name text, "
                    "meal text, seat int);"
                    "INSERT INTO bookings (couple, wedding_date, guests, deposit) "
                    "SELECT 'couple ' || g, date '2027-05-01' + g, 80 + g, 500 + g "
                    "FROM generate_series(1, 200) g;"
                    "INSERT INTO guests SELECT 1 + g / 100, 'guest ' || g, "
                    "(ARRAY['fish','veg','beef'])[1 + g % 3], g % 12 FROM generate_series(0, "
                    "19999) g;")
    except Exception as exc:  # no server here: the demo is complete without it
        return f"PostgreSQL not reachable ({str(exc).splitlines()[0]}): database part skipped"
    from vowvault.engine.restore import restore_backup

    console.print("6. PostgreSQL answers: backing up the venue database grand-hall-db")
    result = backup(policy="grand-hall-db")  # type: ignore[operator]
    scratch = f"{dbname}_demo_restore"
    target = make_conninfo(dsn, dbname=scratch)
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(drop)
    try:
        restored = restore_backup(ctx, result["job_id"], to_database=target)  # type: ignore[arg-type]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(drop)
    v = restored.validation
    return (f"database backup {result['job_id'][:8]} ({result['tables']} tables) restored into "
            f"a scratch database and validated: {v.get('tables')} tables, {v.get('rows')} rows, "
            f"row counts and checksums equal")
