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
import shutil
import time
from pathlib import Path

from rich.console import Console

from vowvault.engine.context import Context
from vowvault.errors import ConfigError
from vowvault.policies.apply import apply_policy_file
from vowvault.policies.loader import load_policy_file
from vowvault.settings import load_settings

GUESTS = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia",
          "Tim", "Margaret", "Niklaus", "Leslie", "Shafi", "John", "Katherine"]


MIB = 1024 * 1024


def run_demo(policy_file: Path, console: Console) -> None:
    t0 = time.perf_counter()
    if not policy_file.is_file():  # before anything is created
        raise ConfigError(f"{policy_file}: no such file; run `vowvault demo` in the vowvault "
                          f"checkout, or give --policies FILE")
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
    console.print(f"[bold]vowvault demo[/bold]: the main job on the embedded default, state "
                  f"in {home} (catalog.db, keys/, storage/, demo/; `rm -rf {home}` removes it)")
    made = make_sample_tree(photos)
    make_config_tree(Path(os.environ["PLATFORM_CONFIG"]))
    console.print(f"1. sample photo store {photos}: {made[0]} files, {made[1] / MIB:.1f} MiB "
                  f"(JPEG-like photos and JSON guest lists)")

    parsed = load_policy_file(policy_file)
    ctx = Context.from_settings(settings)  # the catalog with its audit key
    changes = apply_policy_file(ctx.catalog, parsed, actor=settings.actor)
    ctx.close()
    changed = sum(c.action != "unchanged" for c in changes)
    console.print(f"2. applied {policy_file}: {len(parsed.policies)} policies, {changed} "
                  f"changes (catalog {settings.database_url})")

    import flows  # noqa: F401 - Prefect's offline defaults, before Prefect loads
    from vowvault.cli.backups import ProgressBar
    from vowvault.cli.prefect_server import prefect_api, run_logs_off_console

    def run(policy: str) -> dict[str, object]:
        from flows.backup import backup
        from tasks.common import local_progress

        with ProgressBar(console.is_terminal) as bar, local_progress(bar):
            return backup(policy=policy)  # type: ignore[no-any-return]

    console.print("3. backing up lumiere-photos through the Prefect backup flow (a temporary "
                  "Prefect server starts first: ~10 s)")
    with prefect_api():
        # Prefect is imported only now, with PREFECT_API_URL set (imported earlier, it would
        # start a temporary server of its own); its run logs go to the run, not here.
        run_logs_off_console()
        result = run("lumiere-photos")
        console.print(f"   {_summary(result)}")

        from vowvault.engine.restore import restore_backup
        from vowvault.engine.verify import verify_backup

        ctx = Context.from_settings()
        try:
            report = verify_backup(ctx, str(result["job_id"]))
            intact = sum(c.ok for c in report.copies)
            console.print(f"4. re-verified from storage: intact on {intact} of "
                          f"{len(report.copies)} {_plural(len(report.copies), 'copy')}")
            target = home / "demo" / "restored"
            if target.exists():  # the demo's own earlier restore
                shutil.rmtree(target)
            restored = restore_backup(ctx, str(result["job_id"]), to_dir=target)
            same = tree_digest(photos) == tree_digest(target)
            console.print(f"5. restored into {target}: {restored.bytes_restored / MIB:.1f} MiB "
                          f"in {restored.duration_seconds:.2f} s; identical to the source: "
                          f"{'yes' if same else 'NO'}")
            if not same:
                raise SystemExit("demo: the restored tree differs from the source")
            db_result = demo_database(ctx, run, console)
        finally:
            ctx.close()
    ui = "http://127.0.0.1:4200"
    console.print(f"\n[bold]done in {time.perf_counter() - t0:.0f} s.[/bold] Where to look next:")
    for command, why in (
            ("vowvault backup list", "what was recorded"),
            (f"vowvault backup show {str(result['job_id'])[:8]}",
             "one backup, every stored object"),
            ("vowvault policies list", "next runs, and their wedding-day priority"),
            ("vowvault serve", f"run every schedule here, with the Prefect UI at {ui}"),
            ("docs/OPERATOR-GUIDE.md", "deployments, priorities, the UI, maintenance flows"),
            ("docs/PRODUCTION.md", "a PostgreSQL catalog, S3, workers on other machines")):
        console.print(f"  {command:<34} {why}", markup=False)
    if db_result:
        console.print(f"  {'dropdb -h 127.0.0.1 -U postgres ' + db_result:<34} removes the "
                      f"venue's sample database (kept for the tour)", markup=False)
    console.print(f"\nThe keys that open these backups live in {home / 'keys'} (one file per "
                  f"organization and version; the audit key in {home / 'audit.key'}). Without "
                  f"them nothing restores: escrow them with `vowvault keys export ORG --out "
                  f"FILE` and keep that file apart from the backups (docs/SECURITY.md).")


def _iec(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _plural(n: int, word: str) -> str:
    return word if n == 1 else ("copies" if word == "copy" else word + "s")


def _summary(r: dict[str, object]) -> str:
    what = f"{r['files']} files" if r.get("files") is not None else f"{r.get('tables')} tables"
    targets = list(r["targets"])  # type: ignore[call-overload]
    return (f"backup {str(r['job_id'])[:8]}: {r['status']} ({str(r['backup_type']).lower()}, "
            f"{what}, {_iec(int(r['source_bytes']))} read, "  # type: ignore[call-overload]
            f"{_iec(int(r['stored_bytes']))} stored, "  # type: ignore[call-overload]
            f"{float(r['duration_seconds']):.1f} s), verified on {len(targets)} "  # type: ignore[arg-type]
            f"{_plural(len(targets), 'copy')}: {', '.join(targets)}")


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


def demo_database(ctx: object, run: object, console: Console) -> str | None:
    """Back up and restore a venue's small bookings database if PostgreSQL answers; the
    database's name if the demo made it or found it, None if PostgreSQL is not there."""
    dsn = os.environ.get("GRAND_HALL_DSN", "postgresql://postgres@127.0.0.1:5432/grand_hall")
    try:
        import psycopg
        from psycopg import sql
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        info = conninfo_to_dict(dsn)
        dbname = str(info.get("dbname"))
        where = f"{info.get('host', 'local')}:{info.get('port', 5432)}"
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
        console.print(f"6. PostgreSQL not reachable ({str(exc).splitlines()[0]}): the venue "
                      f"database part is skipped", markup=False)
        return None
    from vowvault.engine.restore import restore_backup

    made = "created it with" if not exists else "it holds" if not empty else "filled it with"
    console.print(f"6. PostgreSQL answers on {where}: the venue database {dbname} ({made} "
                  f"200 sample bookings and 20,000 guests); backing up grand-hall-db")
    result = run("grand-hall-db")  # type: ignore[operator]
    console.print(f"   {_summary(result)}")
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
    console.print(f"7. restored into a scratch database {scratch}, validated ({v.get('tables')} "
                  f"tables, {v.get('rows'):,} rows: row counts and checksums equal), and "
                  f"dropped it again", markup=False)
    return dbname
