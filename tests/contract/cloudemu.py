"""Starting storage emulators once per session, and pointing SDKs at them."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

_EMULATORS: dict[str, Any] = {}


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_EMULATORS: dict[str, Any] = {}


def emulator(name: str, emulators: dict[str, Any],
             tmp_path_factory: pytest.TempPathFactory) -> Any:
    if name not in emulators:
        module = importlib.import_module(f"emu_{name}")
        emulators[name] = module.start(tmp_path_factory.mktemp(f"emu-{name}"))
    return emulators[name]


