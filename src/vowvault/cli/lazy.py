"""Names the commands use, imported the first time a command uses them.

Building the command line (Typer, Rich) takes about 0.15 s; the catalog (SQLAlchemy and its
models), the policy loader (pydantic) and the engine take about a second more. `--version`,
`--help` and a usage error need none of them, so the command modules name them through
``Lazy`` and each command imports only what it calls.
"""

from __future__ import annotations

import importlib
from typing import Any


class Lazy:
    """A module, or one attribute of it, imported on first use (attribute or call)."""

    __slots__ = ("_attr", "_module", "_target")

    def __init__(self, module: str, attr: str | None = None) -> None:
        self._module = module
        self._attr = attr
        self._target: Any = None

    def _resolve(self) -> Any:
        if self._target is None:
            target = importlib.import_module(self._module)
            self._target = getattr(target, self._attr) if self._attr else target
        return self._target

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resolve(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<lazy {self._module}{'.' + self._attr if self._attr else ''}>"
