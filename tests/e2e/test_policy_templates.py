"""`vowvault policies init --vendor V`: each template validates, applies and backs up as
written on the embedded default (a fresh VOWVAULT_HOME, no other variables), and init
refuses what it must, in one line.

`init` is tested in process (a Typer app with only it) until it is wired into the real
CLI; the tests of the real command skip until `vowvault policies --help` lists it.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import typer
import yaml
from cliutil import VOWVAULT
from typer.testing import CliRunner, Result

from vowvault.cli.templates import register
from vowvault.errors import ConfigError
from vowvault.policies import templates
from vowvault.policies.spec import DirectorySource, PostgresSource

VARIABLES = sorted({name for vendor in templates.VENDORS for name in re.findall(
    r"\$\{([A-Za-z_][A-Za-z0-9_]*)", templates.template_text(vendor))} - {"VOWVAULT_HOME"})
"""Every variable a template reads: unset in these tests, so the defaults are what runs."""


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _group() -> None:
        """A group, so that `init` is a subcommand as under `vowvault policies`."""

    register(app)
    return app


def init(home: Path, *args: str, **env: str) -> Result:
    """`policies init ARGS` in process, with VOWVAULT_HOME=home and the template
    variables unset (but for ``env``)."""
    environ: dict[str, str | None] = {name: None for name in VARIABLES}
    environ.update(VOWVAULT_HOME=str(home), **env)
    return CliRunner().invoke(_app(), ["init", *args], env=environ)


def refused(result: Result) -> str:
    """The one-line message of a refusal that the CLI shows with exit code 2."""
    assert isinstance(result.exception, ConfigError), result.output
    assert result.exception.exit_code == 2
    message = str(result.exception)
    assert "\n" not in message
    return message


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    """The real CLI's environment (a private VOWVAULT_HOME) without template variables."""
    for name in VARIABLES:
        cli_env.pop(name, None)
    return cli_env


@functools.cache
def wired() -> bool:
    """Whether the real CLI has `policies init` (cli/main.py calls `register`)."""
    help_text = subprocess.run([VOWVAULT, "policies", "--help"], capture_output=True,
                               text=True, env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
                               timeout=120).stdout
    return re.search(r"\binit\b", help_text) is not None


real_cli = pytest.mark.skipif("not wired()", reason="`policies init` is not wired into "
                                                   "cli/main.py yet")


@pytest.mark.parametrize("vendor", templates.VENDORS)
def test_each_template_is_complete_and_commented(vendor: str, tmp_path: Path, cli) -> None:
    text = templates.render(vendor, "lumiere", file="lumiere.yaml")
    assert not re.findall(r"(?<!\$)\{(?:org|name|file)\}", text), "a placeholder is left"
    parsed = templates.parse(text, env={"VOWVAULT_HOME": str(tmp_path)})
    [org] = parsed.organizations
    assert (org.slug, org.name, org.vendor_type.value) == ("lumiere", "Lumiere", vendor.upper())
    assert parsed.policies
    lines = text.splitlines()
    for p in parsed.policies:
        assert p.organization == "lumiere" and p.vendor_type == org.vendor_type
        assert p.name.startswith("lumiere-")
        assert p.encryption.enabled
        where = p.source.path if isinstance(p.source, DirectorySource) else p.source.dsn
        assert str(tmp_path) in where or "127.0.0.1" in where, where
        assert all(str(tmp_path) in t.url for t in p.storage)
        # Every policy says why, in a comment just above it.
        at = lines.index(f"  - name: {p.name}")
        assert lines[at - 1].lstrip().startswith("#"), p.name
    assert {type(p.source) for p in parsed.policies} <= {DirectorySource, PostgresSource}
    assert "lumiere.yaml" in text and "vowvault policies apply lumiere.yaml" in text
    # The commented examples (a webhook, a wedding), uncommented, are valid.
    examples = re.sub(r"weddings: \[\]\n  # - ", "weddings:\n  - ", text)
    examples = re.sub(r"^    # (webhooks:|  - url:|    secret:|    events:)", r"    \1", examples,
                      flags=re.MULTILINE)
    full = templates.parse(examples, env={"VOWVAULT_HOME": str(tmp_path)})
    assert full.weddings[0].organization == "lumiere"
    assert full.organizations[0].webhooks[0].secret == "env:VOWVAULT_WEBHOOK_SECRET"
    # And the real validator agrees, with nothing but VOWVAULT_HOME set.
    path = tmp_path / "lumiere.yaml"
    path.write_text(text)
    assert ": valid" in cli("policies", "validate", str(path)).stdout


@pytest.mark.parametrize("slug", ["no", "yes", "null", "123", "1e3", "0x1f", "true-love"])
def test_slugs_that_yaml_would_read_as_something_else_stay_strings(slug: str,
                                                                   tmp_path: Path) -> None:
    parsed = templates.parse(templates.render("florist", slug),
                             env={"VOWVAULT_HOME": str(tmp_path)})
    assert parsed.organizations[0].slug == slug
    assert all(p.organization == slug for p in parsed.policies)


@pytest.mark.slow
@pytest.mark.parametrize("vendor", templates.VENDORS)
def test_init_apply_and_back_up_every_policy_on_the_embedded_default(
        vendor: str, tmp_path: Path, env: dict[str, str], cli,
        pg_database: Callable[[], str]) -> None:
    home = Path(env["VOWVAULT_HOME"])
    # Databases exist only where the user says so: one throw-away database per variable.
    databases: dict[str, str] = {}
    for source in templates.sources(templates.render(vendor),
                                    env={"VOWVAULT_HOME": str(home)}):
        if source.kind == "postgres" and source.variable not in databases:
            databases[source.variable] = url = pg_database()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE TABLE bookings (id int PRIMARY KEY, couple text)")
                conn.execute("INSERT INTO bookings VALUES (1, 'Ada & Alan'), (2, 'Grace & Ken')")
    env.update(databases)
    out = tmp_path / "policies.yaml"

    result = init(home, "--vendor", vendor, "--output", str(out), **databases)
    assert result.exit_code == 0, result.output
    found = templates.sources(out.read_text(), env={**databases, "VOWVAULT_HOME": str(home)})
    dirs = [s for s in found if s.kind == "directory"]
    dbs = [s for s in found if s.kind == "postgres"]
    assert dirs, "every template has a tree to back up"
    for s in dirs:
        assert s.path.is_dir() and not any(s.path.iterdir())
        assert s.path.is_relative_to(home / "data" / templates.DEFAULT_ORG[vendor])
        assert f"{s.policy}: created {s.path} (empty)" in result.stdout
        assert f"set {s.variable} to where they are" in result.stdout
    for s in dbs:
        assert f"{s.policy}: backs up database" in result.stdout
    assert f"vowvault policies apply {out}" in result.stdout

    cli("policies", "validate", str(out))
    applied = cli("policies", "apply", str(out)).stdout
    assert f"{len(found) + 1} changed" in applied
    listed = cli("policies", "list").stdout
    assert all(s.policy in listed for s in found)

    parsed = templates.parse(out.read_text(), env={**databases, "VOWVAULT_HOME": str(home)})
    copies = {p.name: len(p.storage) for p in parsed.policies}
    for s in dirs:  # right away, empty
        assert "COMPLETED" in cli("backup", "run", s.policy, "--direct").stdout
    for s in dirs:
        (s.path / "2027").mkdir()
        (s.path / "2027" / "june.txt").write_text(f"{s.policy}\n" * 1000)
        (s.path / "notes.txt").write_text("what matters\n")
        (s.path / "scratch.tmp").write_text("excluded\n")
        run = cli("backup", "run", s.policy, "--direct").stdout
        assert "COMPLETED" in run and "2 files" in run, run
        assert run.count("file://") == copies[s.policy], run
    for s in dbs:
        run = cli("backup", "run", s.policy, "--direct").stdout
        assert "COMPLETED" in run and "1 tables" in run, run
        assert run.count("file://") == copies[s.policy], run


@pytest.mark.parametrize("slug", ["My Studio", "-studio", "studio_1", "stüdio", "a" * 64, "",
                                  "studio/../x"])
def test_init_refuses_an_invalid_organization_slug(slug: str, tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    message = refused(init(tmp_path / "home", "--vendor", "photographer", "--org", slug,
                           "--output", str(out)))
    assert f"organization slug {slug!r}" in message and "lower-case letters" in message
    assert not out.exists() and not (tmp_path / "home").exists()


def test_init_refuses_a_slug_too_long_for_the_policy_names(tmp_path: Path) -> None:
    longest = templates.max_org_length("venue")
    assert 40 < longest < 63
    out = tmp_path / "p.yaml"
    message = refused(init(tmp_path, "--vendor", "venue", "--org", "v" * (longest + 1),
                           "--output", str(out)))
    assert f"at most {longest} characters" in message and not out.exists()
    assert init(tmp_path, "--vendor", "venue", "--org", "v" * longest, "--output",
                str(out)).exit_code == 0
    templates.parse(out.read_text(), env={"VOWVAULT_HOME": str(tmp_path)})


def test_init_refuses_an_unknown_vendor_listing_the_valid_ones(tmp_path: Path) -> None:
    message = refused(init(tmp_path, "--vendor", "caterer", "--output",
                           str(tmp_path / "p.yaml")))
    assert "'caterer'" in message
    assert "photographer, venue, florist, planner, platform" in message
    assert init(tmp_path, "--vendor", "Photographer", "--output",
                str(tmp_path / "p.yaml")).exit_code == 0


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    out = tmp_path / "policies.yaml"
    out.write_text("# my own policies\n")
    message = refused(init(tmp_path, "--vendor", "florist", "--output", str(out)))
    assert message == (f"{out} exists: pass --force to overwrite it, or choose another file "
                       f"with --output")
    assert out.read_text() == "# my own policies\n"
    result = init(tmp_path, "--vendor", "florist", "--output", str(out), "--force")
    assert result.exit_code == 0, result.output
    assert "vendor_type: florist" in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "policies.yaml"]
    refused(init(tmp_path, "--vendor", "florist", "--output", str(tmp_path)))
    message = refused(init(tmp_path, "--vendor", "florist", "--output", str(tmp_path),
                           "--force"))
    assert "is a directory" in message


def test_init_writes_policies_yaml_here_by_default_and_to_stdout_with_dash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = init(tmp_path / "home", "--vendor", "planner", "--org", "bloom-and-vow")
    assert result.exit_code == 0, result.output
    assert "wrote policies.yaml: the planner template for organization bloom-and-vow" \
        in result.stdout
    assert "vowvault backup run bloom-and-vow-documents --direct" in result.stdout
    written = (tmp_path / "policies.yaml").read_text()

    piped = init(tmp_path / "home", "--vendor", "planner", "--org", "bloom-and-vow",
                 "--output", "-")
    assert piped.exit_code == 0, piped.output
    assert piped.stdout == written  # nothing but the file on stdout
    assert "next:" in piped.stderr
    assert "bloom-and-vow-documents: backs up" in piped.stderr  # created the first time
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "policies.yaml"]


def test_init_creates_only_defaults_under_vowvault_home(tmp_path: Path) -> None:
    """A directory a variable names elsewhere is never created: an unmounted NAS must not
    become an empty tree that backs up as nothing."""
    elsewhere = tmp_path / "nas" / "photos"
    result = init(tmp_path / "home", "--vendor", "photographer", "--output",
                  str(tmp_path / "p.yaml"), PHOTO_ORIGINALS=str(elsewhere))
    assert result.exit_code == 0, result.output
    assert not elsewhere.exists()
    assert f"{elsewhere} does not exist: create it, or set PHOTO_ORIGINALS" in result.stdout
    assert (tmp_path / "home" / "data" / "my-studio" / "edits").is_dir()
    # The file keeps the variable, not the value: it moves with the environment.
    assert "${PHOTO_ORIGINALS:-${VOWVAULT_HOME}/data/my-studio/originals}" in \
        (tmp_path / "p.yaml").read_text()


def test_init_refuses_a_variable_that_breaks_the_file_and_writes_nothing(
        tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    message = refused(init(tmp_path, "--vendor", "photographer", "--output", str(out),
                           PHOTO_ORIGINALS="photos"))
    assert "policy 'my-studio-originals': field source.path: must be an absolute path" \
        in message
    assert not out.exists()


@real_cli
@pytest.mark.parametrize("vendor", templates.VENDORS)
def test_the_real_cli_writes_a_file_that_validates(vendor: str, tmp_path: Path, env, cli
                                                   ) -> None:
    out = tmp_path / f"{vendor}.yaml"
    written = cli("policies", "init", "--vendor", vendor, "--org", "lumiere", "--output",
                  str(out))
    assert f"wrote {out}: the {vendor} template" in written.stdout
    assert ": valid" in cli("policies", "validate", str(out)).stdout


@real_cli
def test_the_real_cli_refuses_in_one_line_with_exit_2(tmp_path: Path, env, cli) -> None:
    out = tmp_path / "policies.yaml"
    for args, expected in [
        (["--vendor", "caterer"], "choose one of photographer, venue, florist, planner"),
        (["--vendor", "venue", "--org", "Grand Hall"], "organization slug 'Grand Hall'"),
    ]:
        proc = cli("policies", "init", *args, "--output", str(out), check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("vowvault: error: ")
        assert expected in proc.stderr and not out.exists()
    cli("policies", "init", "--vendor", "venue", "--output", str(out))
    proc = cli("policies", "init", "--vendor", "venue", "--output", str(out), check=False)
    assert (proc.returncode, proc.stderr) == (
        2, f"vowvault: error: {out} exists: pass --force to overwrite it, or choose another "
           f"file with --output\n")
    assert "--vendor" in cli("policies", "init", "--help").stdout


def test_every_template_is_package_data() -> None:
    """The templates ship in the wheel: hatchling packages every file under src/vowvault
    that git does not ignore (pyproject's [tool.hatch.build.targets.wheel])."""
    root = Path(templates.__file__).parent
    for vendor in templates.VENDORS:
        assert (root / f"{vendor}.yaml").read_text() == templates.template_text(vendor)
        assert yaml.safe_load(templates.render(vendor))["version"] == 1
    ignored = subprocess.run(["git", "check-ignore", *(f"{v}.yaml" for v in templates.VENDORS)],
                             cwd=root, capture_output=True, text=True)
    assert ignored.stdout == ""
