"""Rendered ``--help`` pages, kept so that the same request is answered again without Typer.

Building the command tree and rendering it with Rich costs about 0.3 s of imports and work;
a page read back costs a few milliseconds. A page is kept under
``$XDG_CACHE_HOME/vowvault/help`` (``~/.cache`` by default) and found by a key made of
everything its text depends on: the words asked about, vowvault's version, the size and
modification time of every module of vowvault and of the Typer, Click and Rich packages,
the terminal's width and whether it is one, and the environment variables that change how
Rich and Typer render (``NO_COLOR``, ``FORCE_COLOR``, ``TERM``, ``COLUMNS``, ``TYPER_*``...).
Anything else changes nothing in a help page: no option's default is read from the
environment or the catalog. Standard library only: this runs before anything is imported.
A cache that cannot be read or written is skipped silently; the page is rendered as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_WORD = re.compile(r"[a-z][a-z0-9_-]*\Z")
_RENDERING_ENV = ("NO_COLOR", "FORCE_COLOR", "TERM", "COLORTERM", "COLUMNS", "LINES",
                  "TTY_COMPATIBLE", "TTY_INTERACTIVE", "JUPYTER_COLUMNS", "JUPYTER_LINES")
PACKAGE = Path(__file__).resolve().parent.parent


def is_help_request(args: list[str]) -> bool:
    """``[word ...] --help``: command words only, then ``--help`` (nothing to run)."""
    return bool(args) and args[-1] == "--help" and all(_WORD.match(a) for a in args[:-1])


def key(args: list[str], root: Path = PACKAGE) -> str:
    from vowvault import __version__

    parts = [__version__, *args]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                st = os.stat(os.path.join(dirpath, name))
                parts.append(f"{os.path.relpath(os.path.join(dirpath, name), root)}:"
                             f"{st.st_size}:{st.st_mtime_ns}")
    for package in ("typer", "click", "rich"):
        spec = importlib.util.find_spec(package)
        origin = spec.origin if spec is not None else None
        if origin:
            st = os.stat(origin)
            parts.append(f"{package}:{origin}:{st.st_size}:{st.st_mtime_ns}")
    parts.append(f"columns:{shutil.get_terminal_size().columns}")
    parts.append(f"tty:{_isatty(sys.stdout)}")
    for name in sorted(os.environ):
        if name in _RENDERING_ENV or name.startswith(("TYPER_", "_TYPER_")):
            parts.append(f"{name}={os.environ[name]}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]


def directory() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vowvault" / "help"


def load(page: str) -> str | None:
    try:
        return (directory() / f"{page}.txt").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def store(page: str, text: str) -> None:
    folder = directory()
    tmp = folder / f".{page}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / f"{page}.txt")
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


class _Tee:
    """sys.stdout, what is written to it also kept in memory (Rich and Click look sys.stdout
    up as they print). Anything written past it, to its binary buffer, spoils the copy."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.parts: list[str] = []
        self.spoiled = False

    def write(self, text: str) -> int:
        written = self._real.write(text)  # raises for bytes (Click probes with b"")
        self.parts.append(text)
        return written

    @property
    def buffer(self) -> Any:
        self.spoiled = True
        return self._real.buffer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@contextlib.contextmanager
def recording(page: str) -> Iterator[None]:
    """Keep what is printed to stdout as the page, if the command exits successfully."""
    real = sys.stdout
    tee = _Tee(real)
    sys.stdout = tee
    try:
        yield
    except SystemExit as exc:
        if exc.code in (0, None) and tee.parts and not tee.spoiled:
            sys.stdout = real
            store(page, "".join(tee.parts))
        raise
    finally:
        sys.stdout = real


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
