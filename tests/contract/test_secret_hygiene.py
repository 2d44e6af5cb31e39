"""Secrets planted in every place vowvault takes one from (database password, storage
credentials, key-encryption keys) must never show up in logs, the catalog, Prefect
artifacts or run logs, or object names: through a backup, a restore, a key rotation and a
failure."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
import textwrap
from pathlib import Path

import boto3
import psycopg
import pytest
from cloudemu import emulator, environment

KEK_V1 = b"KEK-one-VOWVAULT-planted-secret!"
KEK_V2 = b"KEK-two-VOWVAULT-planted-secret!"
S3_KEY_ID, S3_SECRET = "AKIAPLANTEDKEYID0001", "planted/S3/secret/access/key/value"


async def everything_prefect_kept() -> str:
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    async with get_client() as client:
        artifacts = await client.read_artifacts()
        logs = await client.read_logs()
        runs = await client.read_flow_runs()
        tasks = await client.read_task_runs()
    parts = [json.dumps(a.data, default=str) for a in artifacts]
    parts += [log.message for log in logs]
    parts += [json.dumps(r.parameters, default=str) + str(r.state.message if r.state else "")
              for r in runs]
    parts += [str(t.state.message if t.state else "") for t in tasks]
    return "\n".join(parts)


def test_no_secret_is_ever_kept_or_said(prefect_api, vv_home: Path, tmp_path: Path,
                                        password_cluster, emulators, tmp_path_factory,
                                        caplog: pytest.LogCaptureFixture,
                                        capfd: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.backup import backup
    from tasks.common import context
    from vowvault.catalog.db import Catalog
    from vowvault.engine import keyring
    from vowvault.engine.restore import restore_backup
    from vowvault.policies.apply import apply_policy_file
    from vowvault.policies.loader import parse_policy_text
    from vowvault.settings import load_settings

    db_password = str(password_cluster["password"])
    url = str(password_cluster["url"])
    with psycopg.connect(url, password=db_password, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS hygiene")
        conn.execute("CREATE DATABASE hygiene")
    with psycopg.connect(url.rsplit("/", 1)[0] + "/hygiene", password=db_password,
                         autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (name text); INSERT INTO guests VALUES ('Ada')")
    dsn = url.rsplit("/", 1)[0] + "/hygiene"
    emu = emulator("s3", emulators, tmp_path_factory)
    with environment(emu.env()):
        target = emu.new_target()
    env = {k: v for k, v in emu.env().items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("VENUE_DB_PASSWORD", db_password)
    monkeypatch.setenv("VV_S3", json.dumps({"access_key_id": S3_KEY_ID,
                                            "secret_access_key": S3_SECRET}))
    monkeypatch.setenv("VOWVAULT_KEK_GRAND_HALL", base64.b64encode(KEK_V1).decode())
    monkeypatch.setenv("VOWVAULT_KEK_GRAND_HALL_V2", base64.b64encode(KEK_V2).decode())
    text = textwrap.dedent(f"""\
        version: 1
        organizations: [{{slug: grand-hall, name: The Grand Hall}}]
        policies:
          - name: venue-db
            organization: grand-hall
            source: {{kind: postgres, dsn: '{dsn}', password_secret: 'env:VENUE_DB_PASSWORD'}}
            schedule: {{cron: "0 2 * * *"}}
            peak_season: {{multiplier: 1}}
            encryption: {{key_provider: env}}
            storage: [{{url: "{target}", credentials_secret: "env:VV_S3"}}]
        """)
    catalog = Catalog.open(load_settings())
    apply_policy_file(catalog, parse_policy_text(text, "t.yaml", {}), actor="tester")
    catalog.dispose()
    caplog.set_level(logging.DEBUG, logger="vowvault")
    caplog.set_level(logging.DEBUG, logger="prefect")
    with environment(env):
        ok = backup(policy="venue-db")  # a backup, through the flow
        restore_backup(context(), ok["job_id"], to_database=url.rsplit("/", 1)[0] +
                       "/hygiene_restored", password=db_password)  # a restore
        keyring.rotate(context(), "grand-hall")  # a rotation
        monkeypatch.setenv("VENUE_DB_PASSWORD", db_password + "-wrong")
        failed = backup(policy="venue-db", return_state=True)  # a failure
        assert failed.is_failed()
        monkeypatch.setenv("VENUE_DB_PASSWORD", db_password)
        s3 = boto3.client("s3", aws_access_key_id="x", aws_secret_access_key="y")
        bucket = target.removeprefix("s3://").partition("/")[0]
        names = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    with psycopg.connect(url, password=db_password, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS hygiene_restored WITH (FORCE)")
        conn.execute("DROP DATABASE IF EXISTS hygiene WITH (FORCE)")
    out, err = capfd.readouterr()
    catalog_db = (vv_home / "catalog.db").read_bytes()
    with sqlite3.connect(vv_home / "catalog.db") as conn:
        catalog_text = json.dumps(
            [conn.execute(f"SELECT * FROM {t}").fetchall() for t in
             ("backup_jobs", "backup_storage", "backup_policies", "recovery_jobs",
              "encryption_keys", "audit_log", "organizations")], default=str)
    kept = asyncio.run(everything_prefect_kept())
    # key, data, manifest, the repository marker and the audit head
    assert "venue-db" in kept and len(names) == 5
    places = {"logs": caplog.text, "stdout/stderr": out + err, "catalog": catalog_text,
              "prefect": kept, "object names": "\n".join(names)}
    secrets = [db_password, S3_SECRET, S3_KEY_ID, KEK_V1.decode(), KEK_V2.decode(),
               base64.b64encode(KEK_V1).decode(), base64.b64encode(KEK_V2).decode(),
               KEK_V1.hex(), KEK_V2.hex()]
    for secret in secrets:
        for where, text_ in places.items():
            assert secret not in text_, f"a secret appears in {where}"
        assert secret.encode() not in catalog_db, "a secret appears in the catalog file"
    assert KEK_V1 not in catalog_db and KEK_V2 not in catalog_db
