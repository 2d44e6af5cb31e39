"""Backends under test. Each is a real store: the local disk here; the cloud emulators
join through the same fixture (one parameter per backend)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from vowvault.storage import StorageBackend, open_backend

BACKENDS = ["local"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageBackend]:
    if request.param == "local":
        store = open_backend(f"file://{tmp_path / 'store'}")
    else:  # pragma: no cover - added with the cloud backends
        raise AssertionError(request.param)
    yield store
    store.close()


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}/"
