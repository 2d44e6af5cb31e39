"""Prefect flows: they order tasks and set retries; the work is in ``vowvault``.

Importing this package sets the offline-friendly Prefect defaults (no telemetry, a patient
ephemeral server, PREFECT_HOME inside VOWVAULT_HOME, vowvault's own log lines in the UI)
unless the environment already chose otherwise.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path


def offline_defaults() -> None:
    """Set the defaults this package sets on import (deployments/launcher.py sets them
    again in a run it forks, whose environment is the worker's)."""
    home = Path(os.environ.get("VOWVAULT_HOME") or Path.home() / ".vowvault").expanduser()
    for name, value in {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "vowvault",
        # vowvault logs outside flow runs too (CLI restores): those stay on the console.
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        "PREFECT_HOME": str(home / "prefect"),
    }.items():
        os.environ.setdefault(name, value)


offline_defaults()

# Prefect gives the "vowvault" logger its handlers (console and the UI); the level is ours.
logging.getLogger("vowvault").setLevel(os.environ.get("VOWVAULT_LOG_LEVEL", "INFO"))

from blocks import register as _register_secrets  # noqa: E402 - after the defaults

_register_secrets()
