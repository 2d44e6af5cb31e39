"""Tenants cannot steer the service through their own rows (issue 14, finding 3).

On the real PostgreSQL catalog, a tenant login (``vowvault_tenant``, claims for its own
organization, as the gateway would set them) rewrites what row-level security lets it
write: its policy's source, DSN, password reference and storage targets; a forged
``backup_storage`` row with a job IN_PROGRESS and an old heartbeat; webhook endpoints to
internal addresses and secrets of its choosing. The worker (the service, with the
operator's service configuration) runs its routine work and refuses each, and the audit
log says so. Another organization's files, the worker's own files, internal addresses and
the worker's environment stay out of reach."""

from __future__ import annotations

import json
import os
import textwrap
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from vowvault.catalog.models import AuditEntry, BackupJob, WebhookDelivery
from vowvault.domain import BackupStatus, DeliveryStatus
from vowvault.engine import webhooks
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.reaper import reap
from vowvault.engine.retention import sweep_orphans
from vowvault.errors import BoundaryError
from vowvault.policies.apply import apply_policy_file
from vowvault.policies.loader import parse_policy_text
from vowvault.settings import Settings


class Listener:
    """An internal HTTP service the attacker would like the worker to POST to."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                listener.hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def world(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[dict[str, object]]:
    """Two organizations on the PostgreSQL catalog, their directories and storage, the
    operator's service configuration, and a tenant login for lumiere."""
    dirs = {slug: tmp_path / "srv" / slug for slug in ("lumiere", "bloom")}
    for slug, d in dirs.items():
        d.mkdir(parents=True)
        (d / "photo.jpg").write_bytes(f"{slug} photo".encode())
    (dirs["bloom"] / "secret-guest-list.csv").write_text("bloom's couples\n")
    storage = tmp_path / "storage"
    victim = tmp_path / "worker-files"
    victim.mkdir()
    (victim / "precious.jpg").write_bytes(b"the worker's own file")
    service = tmp_path / "service.yaml"
    service.write_text(textwrap.dedent(f"""\
        version: 1
        tenant_gateway_roles: [vowvault_gateway]
        organizations:
          lumiere:
            directories: [{dirs['lumiere']}]
            database_hosts: []
            storage: ["file://{storage}/lumiere"]
            secrets: ["env:LUMIERE_*"]
          bloom:
            directories: [{dirs['bloom']}]
            storage: ["file://{storage}/bloom"]
            secrets: ["env:BLOOM_*"]
        """))
    monkeypatch.setenv("VOWVAULT_SERVICE_CONFIG", str(service))
    monkeypatch.setenv("LUMIERE_HOOK", "whsec_" + "QUJDREVGR0hJSktMTU5PUA==")
    monkeypatch.setenv("WORKER_CLOUD_KEY", "not for tenants")
    home = tmp_path / "home"
    ctx = Context.from_settings(Settings(home=home, database_url=pg_url, actor="worker"),
                                heartbeat_seconds=0.5)
    policies = "\n".join(textwrap.dedent(f"""\
          - name: {slug}-photos
            organization: {slug}
            source: {{kind: directory, path: {dirs[slug]}}}
            schedule: {{cron: "0 2 * * *"}}
            peak_season: {{multiplier: 1}}
            storage: [{{url: "file://{storage}/{slug}"}}]
        """) for slug in dirs)
    apply_policy_file(ctx.catalog, parse_policy_text(
        "version: 1\norganizations: [{slug: lumiere, name: Lumiere}, {slug: bloom, "
        "name: Bloom}]\npolicies:\n" + textwrap.indent(policies, ""), "p.yaml", {}),
        actor="operator")
    for slug in dirs:
        assert run_backup(ctx, f"{slug}-photos").status == "COMPLETED"
    role = f"vv_gw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN IN ROLE vowvault_tenant")
        org = admin.execute("SELECT id FROM organizations WHERE slug = 'lumiere'"
                            ).fetchone()[0]
        tenant = psycopg.connect(pg_url.replace("postgres@", f"{role}@"), autocommit=True)
        tenant.execute("SELECT set_config('request.jwt.claims', %s, false)",
                       (json.dumps({"organization_id": str(org), "role": "admin"}),))
        listener = Listener()
        try:
            yield {"ctx": ctx, "tenant": tenant, "org": org, "dirs": dirs,
                   "storage": storage, "victim": victim, "listener": listener}
        finally:
            listener.server.shutdown()
            tenant.close()
            ctx.close()
            admin.execute(f"REASSIGN OWNED BY {role} TO postgres")
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def _audited(ctx: Context, action: str) -> list[str]:
    with ctx.catalog.read() as s:
        return [a.summary or "" for a in s.execute(
            sa.select(AuditEntry).where(AuditEntry.action == action)).scalars()]


def _set_source(world: dict, source: dict, kind: str = "DIRECTORY") -> None:
    world["tenant"].execute(
        "UPDATE backup_policies SET source_config = %s, source_kind = %s "
        "WHERE name = 'lumiere-photos'", (json.dumps(source), kind))


def _attempt(world: dict) -> str:
    ctx: Context = world["ctx"]
    with pytest.raises(BoundaryError) as refused:
        run_backup(ctx, "lumiere-photos")
    with ctx.catalog.read() as s:
        last = s.execute(sa.select(BackupJob).order_by(BackupJob.created_at.desc())
                         ).scalars().first()
        assert last.status == BackupStatus.FAILED and last.completed_at is not None
    return str(refused.value)


ATTACKS = {
    "another tenant's directory": lambda w: ({"kind": "directory",
                                               "path": str(w["dirs"]["bloom"])}, "DIRECTORY"),
    "a parent of its own directory": lambda w: ({"kind": "directory",
                                                  "path": str(w["dirs"]["lumiere"].parent)},
                                                 "DIRECTORY"),
    "a dot-dot path": lambda w: ({"kind": "directory",
                                  "path": f"{w['dirs']['lumiere']}/../bloom"}, "DIRECTORY"),
    "a database host of the service": lambda w: ({"kind": "postgres",
                                                   "dsn": "host=127.0.0.1 dbname=postgres"},
                                                  "POSTGRES_LOGICAL"),
    "a DSN reading the worker's files": lambda w: (
        {"kind": "postgres", "dsn": "host=db dbname=x passfile=/root/.pgpass"},
        "POSTGRES_LOGICAL"),
    "the local socket": lambda w: ({"kind": "postgres", "dsn": "dbname=postgres"},
                                   "POSTGRES_LOGICAL"),
    "the worker's environment as a password": lambda w: (
        {"kind": "postgres", "dsn": "host=db dbname=x", "password_env": "WORKER_CLOUD_KEY"},
        "POSTGRES_LOGICAL"),
    "a file as a password secret": lambda w: (
        {"kind": "postgres", "dsn": "host=db dbname=x", "password_secret": "file:/etc/shadow"},
        "POSTGRES_LOGICAL"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_tenant_rewriting_its_source_is_refused_and_audited(world, attack: str) -> None:
    source, kind = ATTACKS[attack](world)
    _set_source(world, source, kind)
    message = _attempt(world)
    assert "not allowed" in message
    assert any("not allowed" in s for s in _audited(world["ctx"], "backup.refused"))


def test_a_symlink_in_its_own_tree_does_not_lead_elsewhere(world) -> None:
    link = world["dirs"]["lumiere"] / "shared"
    link.symlink_to(world["dirs"]["bloom"])
    _set_source(world, {"kind": "directory", "path": str(link)})
    assert "really" in _attempt(world)


@pytest.mark.parametrize("target", [
    {"url": "file://{storage}/bloom"}, {"url": "file://{victim}"},
    {"url": "file://{storage}/lumiere/../bloom"},
    {"url": "file://{storage}/lumiere", "credentials_secret": "env:WORKER_CLOUD_KEY"}])
def test_a_tenant_rewriting_its_storage_is_refused(world, target: dict) -> None:
    target = {k: v.format(**world) for k, v in target.items()}
    world["tenant"].execute("UPDATE backup_policies SET storage_targets = %s "
                            "WHERE name = 'lumiere-photos'", (json.dumps([target]),))
    assert "not allowed" in _attempt(world)
    assert (world["victim"] / "precious.jpg").exists()


def test_a_forged_storage_row_never_makes_the_reaper_delete_elsewhere(world) -> None:
    """A job of its own IN_PROGRESS with an old heartbeat, and rows naming the worker's
    file, another organization's objects, and a path climbing out of its prefix."""
    ctx: Context = world["ctx"]
    t = world["tenant"]
    bloom_objects = sorted(p for p in (world["storage"] / "bloom").rglob("*") if p.is_file())
    assert bloom_objects
    bloom_name = str(bloom_objects[-1].relative_to(world["storage"] / "bloom"))
    policy = t.execute("SELECT id FROM backup_policies WHERE name = 'lumiere-photos'"
                       ).fetchone()[0]
    job = t.execute(
        "INSERT INTO backup_jobs (organization_id, policy_id, job_name, backup_type, "
        "scheduled_at, status, heartbeat_at, created_at) VALUES (%s, %s, 'forged', 'FULL', "
        "now(), 'IN_PROGRESS', now() - interval '2 hours', now() - interval '2 hours') "
        "RETURNING id", (world["org"], policy)).fetchone()[0]
    forged = [(f"file://{world['victim']}", "precious.jpg"),
              (f"file://{world['storage']}/bloom", bloom_name),
              (f"file://{world['storage']}/lumiere", f"../bloom/{bloom_name}"),
              (f"file://{world['storage']}/lumiere", f"{world['org']}/{policy}/x/../../../y")]
    for url, path in forged:
        t.execute("INSERT INTO backup_storage (organization_id, backup_job_id, "
                  "storage_provider, storage_url, copy_role, object_kind, file_path, "
                  "file_size_bytes, status) VALUES (%s, %s, 'local', %s, 'PRIMARY', 'DATA', "
                  "%s, 1, 'STORED')", (world["org"], job, url, path))
    assert str(job) in reap(ctx)  # it is reaped (it is dead) ...
    assert (world["victim"] / "precious.jpg").read_bytes() == b"the worker's own file"
    assert all(p.exists() for p in bloom_objects)  # ... and nothing of anyone else goes
    refusals = _audited(ctx, "storage.refused")
    assert any("not organization lumiere's storage" in r for r in refusals)
    assert any("outside its prefix" in r for r in refusals)
    # The orphan sweep, pointed at the worker's files by the tenant, removes nothing there.
    t.execute("UPDATE backup_policies SET storage_targets = %s WHERE name = 'lumiere-photos'",
              (json.dumps([{"url": f"file://{world['victim']}"}]),))
    sweep_orphans(ctx, remove=True)
    assert (world["victim"] / "precious.jpg").exists()
    assert all(p.exists() for p in bloom_objects)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/internal", "http://localhost:{port}/internal",
    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.7/admin",
    "http://[::1]:{port}/internal", "http://[::ffff:127.0.0.1]:{port}/x",
    "file:///etc/passwd", "http://0.0.0.0:{port}/x"])
def test_webhooks_to_internal_addresses_are_refused(world, url: str) -> None:
    ctx: Context = world["ctx"]
    listener: Listener = world["listener"]
    world["tenant"].execute(
        "INSERT INTO webhook_endpoints (organization_id, url, secret_ref, events) "
        "VALUES (%s, %s, 'env:LUMIERE_HOOK', '[]')",
        (world["org"], url.format(port=listener.port)))
    [delivery] = webhooks.emit(ctx, world["org"], "backup_completed", {"x": 1})
    with ctx.catalog.read() as s:
        d = s.get(WebhookDelivery, uuid.UUID(delivery))
        assert d.status == DeliveryStatus.GAVE_UP, d.error_message
    assert listener.hits == []
    assert _audited(ctx, "webhook.refused")


@pytest.mark.parametrize("secret", ["env:WORKER_CLOUD_KEY", "file:/etc/hostname",
                                    "prefect:bloom-webhook", "bloom-webhook"])
def test_webhook_secrets_of_the_tenants_choosing_are_not_resolved(world, secret: str) -> None:
    ctx: Context = world["ctx"]
    world["tenant"].execute(
        "INSERT INTO webhook_endpoints (organization_id, url, secret_ref, events) "
        "VALUES (%s, 'https://hooks.example.com/x', %s, '[]')", (world["org"], secret))
    [delivery] = webhooks.emit(ctx, world["org"], "backup_completed", {"x": 1})
    with ctx.catalog.read() as s:
        d = s.get(WebhookDelivery, uuid.UUID(delivery))
        assert d.status == DeliveryStatus.GAVE_UP and "not allowed" in d.error_message


def test_the_operators_own_rules_still_let_the_tenants_backups_run(world) -> None:
    ctx: Context = world["ctx"]
    (world["dirs"]["lumiere"] / "album").mkdir()
    _set_source(world, {"kind": "directory", "path": str(world["dirs"]["lumiere"] / "album")})
    assert run_backup(ctx, "lumiere-photos").status == "COMPLETED"
    assert os.environ["WORKER_CLOUD_KEY"] == "not for tenants"
