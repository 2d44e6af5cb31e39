"""How ``--help`` looks: flags without ``<bool>``, values as ``TEXT``/``PATH``/``SECONDS``
and arguments in capitals (``BACKUP``), as restic, pgBackRest and kubectl print them.

Typer 0.2x prints every parameter's Python type (``<bool>``, ``<str>``, ``{backup}``); these
three small overrides restore the usual shape. A test checks the rendered help, so a Typer
release that moves these hooks fails loudly instead of bringing the noise back.
"""

from __future__ import annotations

from typing import Any

import typer.core

_NAMES = {"str": "TEXT", "int": "N", "float": "N", "path": "PATH", "Path": "PATH",
          "datetime": "TIME"}


def _option_type(self: Any, ctx: Any) -> str | None:
    if self.metavar is not None:
        return str(self.metavar)
    if getattr(self, "is_flag", False) or getattr(self, "count", False):
        return None
    label = _ORIGINAL_OPTION_TYPE(self, ctx) or ""
    label = label.strip("<>")
    if label.startswith("list[") and label.endswith("]"):  # a repeatable option
        inner = label[5:-1]
        return _NAMES.get(inner, inner.upper())
    if "|" in label:  # a choice: list the values
        return label
    return _NAMES.get(label, label.upper())


def _argument_type(self: Any, ctx: Any) -> str | None:
    return None


def _argument_usage(self: Any) -> str:
    name = str(self.metavar or self.name).upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


def _argument_name(self: Any) -> str:
    return str(self.metavar or self.name).upper()


_ORIGINAL_OPTION_TYPE = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
typer.core.TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign]
if hasattr(typer.core.TyperArgument, "_usage_display_name"):
    typer.core.TyperArgument._usage_display_name = _argument_usage  # type: ignore[attr-defined]
typer.core.TyperArgument.display_name_raw = property(_argument_name)  # type: ignore[assignment]

# The panels `vowvault --help` groups its commands in.
EVERYDAY = "Everyday"
MAINTENANCE = "Maintenance (each also runs as a Prefect flow)"
TRUST = "Tenants, keys and trust"
SETUP = "Set-up and orchestration"
