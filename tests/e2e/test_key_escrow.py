"""Losing the key file is not the end (issue 15, finding 3): an organization's KEK versions
exported to a passphrase-sealed escrow bundle, the key files deleted (restores then fail),
the bundle imported again, and every backup restores byte-identical. Through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from cliutil import write_policy


def test_escrow_round_trip(cli, cli_env, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "guests.csv").write_text("Ada,Grace\n")
    cli("policies", "apply", str(write_policy(tmp_path / "p.yaml",
                                              f"{{kind: directory, path: {src}}}",
                                              tmp_path / "storage")))
    first = cli("backup", "run", "photos", "--direct").stdout.split()[1]
    cli("keys", "rotate", "lumiere")
    (src / "guests.csv").write_text("Ada,Grace,Hedy\n")
    second = cli("backup", "run", "photos", "--direct").stdout.split()[1]
    env = {"ESCROW_PASS": "correct horse battery staple"}
    bundle = tmp_path / "lumiere.escrow"
    out = cli("keys", "export", "lumiere", "--out", str(bundle), "--passphrase-env",
              "ESCROW_PASS", **env).stdout
    assert "key versions [1, 2]" in out and oct(bundle.stat().st_mode)[-3:] == "600"
    text = bundle.read_text()
    assert json.loads(text)["kdf"]["name"] == "scrypt"
    keys = Path(cli_env["VOWVAULT_HOME"]) / "keys"
    for f in keys.rglob("kek-v*.key"):
        assert f.read_bytes().hex() not in text  # sealed, not copied
        f.unlink()
    lost = cli("backup", "restore", first, "--to-dir", str(tmp_path / "lost"), check=False)
    assert lost.returncode != 0 and "key file" in lost.stderr
    wrong = cli("keys", "import", str(bundle), "--passphrase-env", "ESCROW_PASS",
                check=False, ESCROW_PASS="not the passphrase at all")
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1
    assert "does not open with this passphrase" in wrong.stderr
    tampered = tmp_path / "tampered.escrow"
    doc = json.loads(text)
    doc["organization"] = "bloom"
    tampered.write_text(json.dumps(doc))
    assert cli("keys", "import", str(tampered), "--passphrase-env", "ESCROW_PASS",
               check=False, **env).returncode == 2
    done = cli("keys", "import", str(bundle), "--passphrase-env", "ESCROW_PASS", **env)
    assert "key versions [1, 2] imported" in done.stdout
    again = cli("keys", "import", str(bundle), "--passphrase-env", "ESCROW_PASS", **env)
    assert "already here" in again.stdout
    for job, want in ((first, "Ada,Grace\n"), (second, "Ada,Grace,Hedy\n")):
        cli("backup", "restore", job, "--to-dir", str(tmp_path / job))
        assert (tmp_path / job / "guests.csv").read_text() == want
    actions = cli("audit", "list", "--limit", "50").stdout
    assert "keys.export" in actions and "keys.import" in actions
