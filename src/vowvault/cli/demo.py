"""`vowvault demo`: the main job on the embedded default, start to finish."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from vowvault.catalog.db import Catalog
from vowvault.policies.apply import apply_policy_file
from vowvault.policies.loader import load_policy_file
from vowvault.settings import load_settings


def run_demo(policy_file: Path, console: Console) -> None:
    settings = load_settings()
    home = settings.home
    # The example policies read their paths from the environment; point them into
    # VOWVAULT_HOME unless the user chose otherwise.
    defaults = {
        "VOWVAULT_BACKUP_ROOT": home / "storage",
        "LUMIERE_PHOTOS": home / "demo" / "lumiere-photos",
        "PLATFORM_CONFIG": home / "demo" / "platform-config",
    }
    for name, path in defaults.items():
        os.environ.setdefault(name, str(path))
    console.print(f"[bold]vowvault demo[/bold] in {home} (catalog: {settings.database_url})")
    parsed = load_policy_file(policy_file)
    console.print(f"validated {policy_file}: {len(parsed.policies)} policies")
    catalog = Catalog.open(settings)
    changes = apply_policy_file(catalog, parsed, actor=settings.actor)
    catalog.dispose()
    for change in changes:
        console.print("  " + change.describe())
