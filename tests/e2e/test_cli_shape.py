"""One CLI shape: every command in docs/CLI.md with help and an example that parses, help
without type noise, the old spellings still working (with a note), `--json` on every list
and show, the effective priority with its reason at any date, and a restore that says which
erasures it applied."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import typer.main
from cliutil import write_policy
from typer.testing import CliRunner

from vowvault.cli.main import app

ROOT = Path(__file__).resolve().parents[2]


def commands() -> list[tuple[str, object]]:
    def walk(c: object, path: list[str]):
        subs = getattr(c, "commands", None)
        if subs is None:
            yield " ".join(path), c
            return
        for name, sub in subs.items():
            if not sub.hidden:
                yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def test_docs_cli_lists_the_whole_tree() -> None:
    page = (ROOT / "docs" / "CLI.md").read_text().split("## Old spellings")[0]
    listed = set(re.findall(r"^\| `vowvault ([a-z -]+)` \|", page, re.M))
    found = {path for path, _ in commands()}
    assert found == listed, (sorted(found - listed), sorted(listed - found))


@pytest.mark.parametrize("path, command", commands(), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_every_command_has_help_and_an_example_that_parses(path: str, command) -> None:
    text = command.help or ""
    assert text.strip(), f"{path} has no help"
    match = re.search(r"Example: `([^`]+)`", text)
    assert match, f"{path} has no example"
    words = [w for w in shlex.split(match.group(1)) if "=" not in w.split("/")[0]]
    assert words[:1 + len(path.split())] == ["vowvault", *path.split()], match.group(1)
    args = [w for w in words[1 + len(path.split()):] if w != "|"][:_pipe(words, path)]
    command.make_context(path, args)  # raises if an option or argument is wrong


def _pipe(words: list[str], path: str) -> int:
    rest = words[1 + len(path.split()):]
    return rest.index("|") if "|" in rest else len(rest)


def test_help_shows_no_type_noise_and_no_broken_sentences() -> None:
    runner = CliRunner()
    for path, _ in [("", None), *commands()]:
        result = runner.invoke(app, [*path.split(), "--help"], env={"COLUMNS": "100"})
        assert result.exit_code == 0, (path, result.output)
        out = result.output
        assert not re.search(r"<(bool|str|int|float|path)>|LIST\[", out), (path, out)
        usage = next(ln for ln in out.splitlines() if "Usage:" in ln)
        assert "{" not in usage, usage


@pytest.fixture
def backed_up(cli, tmp_path: Path) -> dict[str, str]:
    src = tmp_path / "src"
    (src / "wedding-a" / "raw").mkdir(parents=True)
    (src / "wedding-a" / "raw" / "IMG_1.jpg").write_bytes(os.urandom(50_000))
    (src / "wedding-a" / "guests.json").write_text("[]")
    (src / "wedding-b").mkdir()
    (src / "wedding-b" / "IMG_2.jpg").write_bytes(os.urandom(50_000))
    policy = write_policy(tmp_path / "p.yaml", f"{{kind: directory, path: {src}}}",
                          tmp_path / "storage")
    policy.write_text(policy.read_text().replace(
        "    peak_season:", "    wedding_day_priority: true\n    priority: high\n"
                           "    peak_season:"))
    cli("policies", "apply", str(policy))
    backup_id = cli("backup", "run", "photos", "--direct").stdout.split()[1]
    return {"id": backup_id, "src": str(src), "tmp": str(tmp_path)}


def test_old_spellings_work_and_say_what_they_are_now(cli, backed_up) -> None:
    for old, new in ((("backups", "list"), "vowvault backup list"),
                     (("verify", backed_up["id"]), "vowvault backup verify"),
                     (("db", "current"), "vowvault catalog current")):
        proc = cli(*old)
        notes = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(notes) == 1 and f"is now `{new}`" in notes[0], proc.stderr
    proc = cli("backup", "list")
    assert proc.stderr == "" and backed_up["id"] in proc.stdout


def test_every_list_and_show_speaks_json(cli, backed_up) -> None:
    bid = backed_up["id"]
    cli("gdpr", "request", "lumiere", "couple-b", "--path", "wedding-b")
    for args in (("backup", "list"), ("backup", "show", bid), ("policies", "list"),
                 ("policies", "show", "photos"), ("orgs", "list"), ("audit", "list"),
                 ("keys", "list"), ("targets", "list"), ("webhooks", "log"),
                 ("gdpr", "status", "couple-b")):
        value = json.loads(cli(*args, "--json").stdout)
        assert value is not None, args
    shown = json.loads(cli("backup", "show", bid, "--json").stdout)
    assert shown["backup"]["id"] == bid and shown["objects"]
    assert "wrapped_dek" not in shown["backup"] and "owner_token" not in shown["backup"]
    (listed,) = json.loads(cli("backup", "list", "--json").stdout)
    assert listed["id"] == bid and listed["status"] == "COMPLETED"


def test_effective_priority_with_its_reason_at_any_date(cli, backed_up) -> None:
    saturday = json.loads(cli("policies", "list", "--at", "2027-06-12", "--json").stdout)[0]
    assert saturday["priority"] == "CRITICAL" and saturday["base_priority"] == "HIGH"
    assert "wedding day (Saturday): raised from HIGH" in saturday["priority_reason"]
    monday = json.loads(cli("policies", "show", "photos", "--at", "2027-06-14",
                            "--json").stdout)
    assert monday["effective_priority"] == "HIGH"
    assert "no wedding; base priority" in monday["priority_reason"]
    table = cli("policies", "show", "photos", "--at", "2027-06-12").stdout
    assert "CRITICAL (next run on 2027-06-12: wedding day (Saturday)" in table


def test_a_restore_says_which_erasures_it_applied(cli, backed_up) -> None:
    cli("gdpr", "request", "lumiere", "couple-a", "--path", "wedding-a")
    out = Path(backed_up["tmp"]) / "restored"
    proc = cli("backup", "restore", backed_up["id"], "--to-dir", str(out))
    (line,) = [ln for ln in proc.stdout.splitlines() if "erasure" in ln]
    # wedding-a/guests.json and wedding-a/raw/IMG_1.jpg; wedding-a and wedding-a/raw
    assert "(couple-a) applied: 2 files and 2 folders withheld" in line, proc.stdout
    assert sorted(os.listdir(out)) == ["wedding-b"]
