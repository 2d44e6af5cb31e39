"""The trust boundary through the real CLI: `vowvault doctor` names every login role that
holds the tenant role, directly or through a group, and fails unless it is the configured
gateway (issue 14, finding 4); `policies apply` refuses a policy that points where the
service rules do not allow, in one line; `audit verify` catches deleted newest rows with
the anchor on storage and with `--expect-head` (finding 5)."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from cliutil import write_policy


@pytest.fixture
def roles(pg_url: str):
    suffix = uuid.uuid4().hex[:8]
    names = {"gateway": f"vv_gateway_{suffix}", "rogue": f"vv_rogue_{suffix}",
             "group": f"vv_group_{suffix}"}
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {names['gateway']} LOGIN IN ROLE vowvault_tenant")
        admin.execute(f"CREATE ROLE {names['group']} NOLOGIN IN ROLE vowvault_tenant")
        admin.execute(f"CREATE ROLE {names['rogue']} LOGIN IN ROLE {names['group']}")
        try:
            yield names, admin
        finally:
            for role in (names["rogue"], names["group"], names["gateway"]):
                admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_doctor_names_tenant_role_holders_that_are_not_the_gateway(
        cli, pg_url: str, roles, tmp_path: Path) -> None:
    names, admin = roles
    env = {"VOWVAULT_DATABASE_URL": pg_url}
    bare = cli("doctor", check=False, **env)  # no service configuration at all
    assert bare.returncode == 1
    assert "without service rules" in bare.stdout
    assert f"{names['rogue']} holds vowvault_tenant" in bare.stdout
    service = tmp_path / "service.yaml"
    service.write_text(f"tenant_gateway_roles: [{names['gateway']}]\norganizations: {{}}\n")
    env["VOWVAULT_SERVICE_CONFIG"] = str(service)
    found = cli("doctor", check=False, **env)
    assert found.returncode == 1, found.stdout
    fails = [line for line in found.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1 and names["rogue"] in fails[0]  # reached through the group
    assert f"ok   tenant role: {names['gateway']} holds vowvault_tenant" in found.stdout
    admin.execute(f"REVOKE {names['group']} FROM {names['rogue']}")
    clean = cli("doctor", check=False, **env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert names["rogue"] not in clean.stdout


def test_policies_apply_refuses_what_the_service_rules_do_not_allow(
        cli, tmp_path: Path) -> None:
    allowed, other = tmp_path / "lumiere", tmp_path / "bloom"
    allowed.mkdir()
    other.mkdir()
    service = tmp_path / "service.yaml"
    service.write_text(f"organizations:\n  lumiere:\n    directories: [{allowed}]\n"
                       f"    storage: [\"file://{tmp_path / 'storage'}\"]\n")
    env = {"VOWVAULT_SERVICE_CONFIG": str(service)}
    bad = write_policy(tmp_path / "bad.yaml", f"{{kind: directory, path: {other}}}",
                       str(tmp_path / "storage"))
    proc = cli("policies", "apply", str(bad), check=False, **env)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "policy 'photos'" in proc.stderr and "not allowed for organization" in proc.stderr
    assert "no policies" in cli("policies", "list", **env).stdout.lower() or \
        "photos" not in cli("policies", "list", **env).stdout
    good = write_policy(tmp_path / "good.yaml", f"{{kind: directory, path: {allowed}}}",
                        str(tmp_path / "storage"))
    cli("policies", "apply", str(good), **env)
    cli("backup", "run", "photos", "--direct", **env)


def test_audit_verify_catches_deleted_newest_rows(cli, cli_env, tmp_path: Path) -> None:
    import sqlite3

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    policy = write_policy(tmp_path / "p.yaml", f"{{kind: directory, path: {src}}}",
                          str(tmp_path / "storage"))
    cli("policies", "apply", str(policy))
    cli("backup", "run", "photos", "--direct")
    intact = cli("audit", "verify")
    assert "anchor on file://" in intact.stdout
    head = intact.stdout.split("head ")[1].split()[0]
    db = Path(cli_env["VOWVAULT_HOME"]) / "catalog.db"
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)")
    cut = cli("audit", "verify", check=False)
    assert cut.returncode == 3 and "rows were deleted or rewritten" in cut.stderr
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_log")
    empty = cli("audit", "verify", "--expect-head", head, check=False)
    assert empty.returncode == 3
    assert "expected head" in empty.stderr and "not in the catalog's chain" in empty.stderr
