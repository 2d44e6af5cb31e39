"""Cost of a key rotation: re-wrap N data keys (catalog rows and key objects) without
rewriting any backup data.

    .venv/bin/python benchmarks/key_rotation.py [--backups 200] [--provider local]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import textwrap
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backups", type=int, default=200)
    parser.add_argument("--provider", default="local")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vv-rotation-"))
    os.environ["VOWVAULT_HOME"] = str(work / "home")
    try:
        from vowvault.engine import keyring
        from vowvault.engine.backup import run_backup
        from vowvault.engine.context import Context
        from vowvault.policies.apply import apply_policy_file
        from vowvault.policies.loader import parse_policy_text

        src = work / "src"
        src.mkdir()
        (src / "guests.json").write_text('{"name": "Ada"}\n' * 100)
        ctx = Context.from_settings()
        text = textwrap.dedent(f"""\
            version: 1
            organizations: [{{slug: lumiere, name: Lumiere}}]
            policies:
              - name: photos
                organization: lumiere
                source: {{kind: directory, path: {src}}}
                schedule: {{cron: "0 2 * * *"}}
                peak_season: {{multiplier: 1}}
                encryption: {{key_provider: {args.provider}}}
                storage: [{{url: "file://{work}/storage"}}]
            """)
        apply_policy_file(ctx.catalog, parse_policy_text(text, "b.yaml", {}), actor="bench")
        t0 = time.perf_counter()
        for _ in range(args.backups):
            run_backup(ctx, "photos")
        made = time.perf_counter() - t0
        data = {p: p.stat().st_mtime_ns for p in (work / "storage").rglob("data")}
        t0 = time.perf_counter()
        result = keyring.rotate(ctx, "lumiere")
        took = time.perf_counter() - t0
        untouched = data == {p: p.stat().st_mtime_ns for p in (work / "storage").rglob("data")}
        print(f"{args.backups} backups made in {made:.1f} s")
        print(f"rotation to v{result['version']}: {result['rewrapped']} data keys re-wrapped in "
              f"{took:.2f} s = {took / max(1, result['rewrapped']) * 1000:.1f} ms per backup "
              f"(catalog row + key object on local storage, provider {args.provider}); "
              f"data objects rewritten: {'none' if untouched else 'SOME'}")
        ctx.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
