"""A real Prefect API for flow tests: Prefect's own test harness (a temporary server with
its own database), started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    os.environ.setdefault("VOWVAULT_HOME", str(tmp_path_factory.mktemp("vvhome")))
    import flows  # noqa: F401 - offline defaults first

    # isort: split
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def vv_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own catalog, keys and storage (tasks build their context lazily)."""
    import tasks.common

    home = tmp_path / "home"
    monkeypatch.setenv("VOWVAULT_HOME", str(home))
    monkeypatch.delenv("VOWVAULT_DATABASE_URL", raising=False)
    monkeypatch.setattr(tasks.common, "_ctx", None)
    yield home
    if tasks.common._ctx is not None:
        tasks.common._ctx.close()
