"""Backups running in this process, by job id.

The stages of one backup may run as separate orchestrator tasks; they find their shared
state here. The reaper leaves these jobs alone: their process is alive by definition.
"""

from __future__ import annotations

import threading
from typing import Any

from vowvault.errors import NotFound

_RUNS: dict[str, Any] = {}
_LOCK = threading.Lock()


def register(job_id: str, run: Any) -> None:
    with _LOCK:
        _RUNS[job_id] = run


def get(job_id: str) -> Any:
    with _LOCK:
        try:
            return _RUNS[job_id]
        except KeyError:
            raise NotFound(f"backup {job_id} is not running in this process") from None


def forget(job_id: str) -> None:
    with _LOCK:
        _RUNS.pop(job_id, None)


def running() -> set[str]:
    with _LOCK:
        return set(_RUNS)
