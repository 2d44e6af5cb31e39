"""Backends under test, each a real store: the local disk, and the cloud emulators started
once per session (S3: moto server; GCS: an emulator from PyPI; Azure: Azurite from npm), on
free loopback ports, stopped afterwards.

Each emulator module (``emu_s3``, ``emu_gcs``, ``emu_azure``) has ``start(workdir) ->
Emulator`` where the Emulator has ``host``, ``port`` (where it listens), ``env(endpoint)``
(the standard environment variables that point the SDK at ``endpoint``, default itself),
``new_target()`` (an empty bucket or container, as a storage URL) and ``stop()``. Emulator
gaps are handled in those modules, never by weakening the contract.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudemu import _EMULATORS, emulator, environment
from faultproxy import FaultProxy

from vowvault.storage import StorageBackend, open_backend
from vowvault.storage.wrap import RetryPolicy

BACKENDS = ["local", "s3", "gcs", "azure"]
CLOUDS = ["s3", "gcs", "azure"]
FAST = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05)


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    yield _EMULATORS
    for emu in _EMULATORS.values():
        emu.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, emulators: dict[str, Any],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageBackend]:
    if request.param == "local":
        store = open_backend(f"file://{tmp_path / 'store'}", retries=FAST)
        yield store
        store.close()
        return
    emu = emulator(request.param, emulators, tmp_path_factory)
    with environment(emu.env()):
        store = open_backend(emu.new_target(), retries=FAST)
        yield store
        store.close()


@pytest.fixture(params=CLOUDS)
def proxied(request: pytest.FixtureRequest, emulators: dict[str, Any],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StorageBackend,
                                                                       FaultProxy]]:
    """A cloud backend whose SDK talks to the emulator through the fault proxy."""
    emu = emulator(request.param, emulators, tmp_path_factory)
    proxy = FaultProxy(emu.host, emu.port).start()
    try:
        with environment(emu.env()):
            target = emu.new_target()
        with environment(emu.env(proxy.url)):
            store = open_backend(target, retries=FAST)
            yield store, proxy
            store.close()
    finally:
        proxy.stop()


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}/"
