"""Run the real `vowvault` command as a user would, against a private VOWVAULT_HOME."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cliutil import VOWVAULT
from pitrcluster import cluster, pg_root  # noqa: F401 - fixtures of the PITR tests

Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOWVAULT_")}
    env.update(VOWVAULT_HOME=str(tmp_path / "home"), VOWVAULT_ACTOR="tester",
               COLUMNS="200", NO_COLOR="1")
    return env


@pytest.fixture
def cli(cli_env: dict[str, str]) -> Runner:
    def run(*args: str, check: bool | None = True, **env: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([VOWVAULT, *args], capture_output=True, text=True,
                              env={**cli_env, **env}, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"vowvault {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    return run
