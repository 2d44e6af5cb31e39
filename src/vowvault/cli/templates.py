"""`vowvault policies init`: a commented policy file for a vendor type, ready to apply."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from vowvault.cli.lazy import Lazy
from vowvault.errors import ConfigError
from vowvault.policies.vendors import DEFAULT_ORG, VENDORS
from vowvault.settings import default_home

if TYPE_CHECKING:
    from vowvault.policies.templates import TemplateSource

templates = Lazy("vowvault.policies.templates")

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def register(policies_app: typer.Typer, out: Console | None = None,
             err: Console | None = None) -> None:
    """Add ``init`` to ``vowvault policies`` (the CLI's consoles when given)."""
    global _out, _err
    _out, _err = out or _out, err or _err
    policies_app.command("init")(policies_init)


def policies_init(
    vendor: Annotated[str, typer.Option(
        "--vendor", show_default=False,
        help="Your trade: " + ", ".join(VENDORS) + ".")],
    org: Annotated[str | None, typer.Option(
        "--org", show_default=False,
        help="Organization slug: lower-case letters, digits, dashes (default my-studio, "
             "my-venue, ... by vendor).")] = None,
    output: Annotated[str, typer.Option(
        "--output", "-o", help="File to write, or - for standard output.")] = "policies.yaml",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")]
    = False,
) -> None:
    """Write a commented policy file with a sound strategy for your trade.

    What to back up, how often, how many copies, storage tiers, retention and wedding-day
    handling, and why. It validates and runs as written on the embedded default
    (everything under VOWVAULT_HOME); the source directories it names are created there,
    empty. Each source names the environment variable that points it at your real data.

    Example: `vowvault policies init --vendor photographer --org lumiere-photo`
    """
    vendor = templates.check_vendor(vendor.strip().lower())
    to_stdout = output == "-"
    path = Path(output)
    shown = "policies.yaml" if to_stdout else output
    text = templates.render(vendor, org, file=shlex.quote(shown))
    found = templates.sources(text, name=shown)  # validates it, with this environment
    if to_stdout:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        _write(path, text, force)
    say = _err if to_stdout else _out
    policies = [s.policy for s in found]
    org_slug = org or DEFAULT_ORG[vendor]
    if not to_stdout:
        say.print(f"wrote {output}: the {vendor} template for organization {org_slug} "
                  f"({len(policies)} policies: {', '.join(policies)})", markup=False)
    home = default_home()
    for source in found:
        say.print(_prepare(source, home), markup=False)
    quoted = shlex.quote(shown)
    say.print("next:", markup=False)
    for line in (f"vowvault policies validate {quoted}", f"vowvault policies apply {quoted}",
                 *(f"vowvault backup run {p} --direct" for p in policies),
                 "vowvault deploy && vowvault serve    # then on schedule"):
        say.print(f"  {line}", markup=False)


def _write(path: Path, text: str, force: bool) -> None:
    """``text`` into ``path``: never over an existing file without ``force``, and with it
    through a temporary file renamed over the old one (never half written)."""
    try:
        if not force:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            return
        if path.is_dir():
            raise ConfigError(f"{path} is a directory: give a file with --output")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except FileExistsError:
        raise ConfigError(f"{path} exists: pass --force to overwrite it, or choose another "
                          f"file with --output") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def _prepare(source: TemplateSource, home: Path) -> str:
    """Create a missing source directory under VOWVAULT_HOME (a default of the template);
    anywhere else a missing directory is the user's to create (a NAS not mounted yet must
    not become an empty tree that backs up as nothing). What was done, in one line."""
    override = f"set {source.variable} to " if source.variable else "edit the file to name "
    if source.kind != "directory" or source.path is None:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(source.dsn or "")
        where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}"
        return (f"{source.policy}: backs up database {info.get('dbname')} on {where}, which "
                f"must exist (createdb -h {info.get('host', 'localhost')} -U "
                f"{info.get('user', 'postgres')} {info.get('dbname')}), or {override}yours")
    if source.path.is_dir():
        return f"{source.policy}: backs up {source.path} (exists)"
    if source.path.exists() or source.path.is_symlink():
        return (f"{source.policy}: {source.path} is not a directory: {override}the "
                f"directory to back up")
    if source.path.is_relative_to(home):
        try:
            source.path.mkdir(parents=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {source.path}: {exc.strerror}") from None
        return (f"{source.policy}: created {source.path} (empty): put the files to back up "
                f"there, or {override}where they are")
    return (f"{source.policy}: {source.path} does not exist: create it, or {override}where "
            f"the files are")
