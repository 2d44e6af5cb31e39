"""Named secrets resolve by scheme; a missing one says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from vowvault import secrets
from vowvault.errors import ConfigError


def test_env_file_and_prefect_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VENUE_PW", "s3cret")
    assert secrets.resolve("env:VENUE_PW") == "s3cret"
    (tmp_path / "pw").write_text("from-file\n")
    assert secrets.resolve(f"file:{tmp_path / 'pw'}") == "from-file"
    with pytest.raises(ConfigError, match="VENUE_PW2 is not set"):
        secrets.resolve("env:VENUE_PW2")
    monkeypatch.setitem(secrets._RESOLVERS, "prefect", lambda name: f"block:{name}")
    assert secrets.resolve("aws-backup") == "block:aws-backup"
    assert secrets.resolve("prefect:aws-backup") == "block:aws-backup"
    monkeypatch.delitem(secrets._RESOLVERS, "prefect")
    with pytest.raises(ConfigError, match="Prefect is not available"):
        secrets.resolve("aws-backup")
