"""The smallest useful policy file, for tests that need one policy and nothing special:
organization ``lumiere``, policy ``photos`` backing up a directory daily at 02:00."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vowvault.catalog.db import Catalog
from vowvault.policies.apply import apply_policy_file
from vowvault.policies.loader import parse_policy_text


def apply_photos_policy(catalog: Catalog, src: Path, storage: str | Sequence[str], *,
                        extra: Sequence[str] = (), preamble: str = "") -> None:
    """Apply it to ``catalog``; ``storage`` is one URL or several (the first is primary),
    ``extra`` adds policy lines (``"max_retries: 2"``), ``preamble`` top-level YAML
    (a ``weddings:`` list)."""
    urls = [storage] if isinstance(storage, str) else list(storage)
    lines = ["version: 1", "organizations: [{slug: lumiere, name: Lumiere}]", preamble,
             "policies:", "  - name: photos", "    organization: lumiere",
             f"    source: {{kind: directory, path: {src}}}",
             '    schedule: {cron: "0 2 * * *"}', "    peak_season: {multiplier: 1}",
             *(f"    {line}" for line in extra),
             "    storage: [" + ", ".join(f'{{url: "{u}"}}' for u in urls) + "]"]
    apply_policy_file(catalog, parse_policy_text("\n".join(lines) + "\n", "p.yaml", {}),
                      actor="tester")
