"""The real `vowvault` command of this environment, and a minimal policy file."""

import sys
import textwrap
from pathlib import Path

VOWVAULT = str(Path(sys.executable).with_name("vowvault"))


def write_policy(path: Path, source: str, storage: str) -> Path:
    path.write_text(textwrap.dedent(f"""\
        version: 1
        organizations:
          - {{slug: lumiere, name: Lumiere, vendor_type: photographer}}
        policies:
          - name: photos
            organization: lumiere
            source: {source}
            schedule: {{cron: "0 2 * * *", timezone: UTC}}
            peak_season: {{multiplier: 1}}
            storage:
              - {{url: "file://{storage}", tier: HOT}}
        """))
    return path
