"""What the flow tests share: a real `prefect server start` per test module."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from prefectproc import free_port, start_server, stop


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `prefect server start` of this module's own on loopback; its API URL."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = start_server(home, port, env)
    yield f"http://127.0.0.1:{port}/api"
    stop(proc)
