"""Engine-level fixtures: a private VOWVAULT_HOME, policies applied through the real policy
file path, and helpers to build trees and databases."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vowvault.engine.context import Context
from vowvault.policies.apply import apply_policy_file
from vowvault.policies.loader import parse_policy_text
from vowvault.settings import Settings


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def ctx(home: Path) -> Iterator[Context]:
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'catalog.db'}",
                        actor="tester")
    context = Context.from_settings(settings, heartbeat_seconds=0.5)
    yield context
    context.close()


PolicyMaker = Callable[..., str]


@pytest.fixture
def policy(ctx: Context, tmp_path: Path) -> PolicyMaker:
    """policy(name, source_yaml, backup_type=..., targets=[...]) -> name, applied."""

    def make(name: str, source: str, *, backup_type: str = "full",
             targets: list[str] | None = None, extra: str = "",
             org: str = "lumiere") -> str:
        urls = targets or [f"file://{tmp_path / 'storage'}"]
        storage = "\n".join(f"      - {{url: \"{u}\", tier: HOT}}" for u in urls)
        text = textwrap.dedent(f"""\
            version: 1
            organizations:
              - {{slug: {org}, name: {org}, vendor_type: photographer}}
            policies:
              - name: {name}
                organization: {org}
                source: {source}
                backup_type: {backup_type}
                schedule: {{cron: "0 2 * * *", timezone: UTC}}
                peak_season: {{multiplier: 1}}
            """) + "    storage:\n" + storage + "\n" + textwrap.indent(extra, "    ")
        apply_policy_file(ctx.catalog, parse_policy_text(text, "test.yaml", {}), actor="tester")
        return name

    return make
