"""docs/PRODUCTION.md, run as written (issue 16, item 6).

Every ```bash block of the guide runs here, in the guide's order, on the machines its first
line names (``# on <place>: ...``): each machine is a HOME of its own, each block a bash
with the environment the machine's earlier blocks exported, answering its ``read`` prompts
from stdin. Only the settings block is replaced, by values for this run (unique database,
role and bucket names, free ports); the test adds what a test needs and the guide does not
say: the S3 endpoint (moto, with IAM enforced once the guide's policy exists) and a 1 s
worker poll.

Machines: the database server (the local PostgreSQL), the Prefect server (a real `prefect
server start` on its own PostgreSQL database), an AWS administrator, the operator, two
workers sharing nothing but the catalog, the Prefect API, S3 and the key provider (Prefect
Secret blocks), and a machine that has done only the set-up steps, which restores.
The first backup goes to whichever worker takes it; that worker is then stopped, and the
second (incremental) backup must go to the other.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from botocore.exceptions import ClientError
from contract.emu_s3 import start as start_moto
from prefectproc import free_port, stop, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "PRODUCTION.md"
PLACE = re.compile(r"^# on ([^:]+): ")
READ = re.compile(r"\bread -rsp \"[^\"]*\" (\w+)")

WHERE = {
    "every machine": ["database", "prefect", "aws-admin", "operator", "worker-a", "worker-b",
                      "fresh"],
    "every machine with the checkout": ["prefect", "operator", "worker-a", "worker-b",
                                        "fresh"],
    "the database server": ["database"],
    "the Prefect server": ["prefect"],
    "an AWS administrator's machine": ["aws-admin"],
    "every vowvault machine": ["operator", "worker-a", "worker-b", "fresh"],
    "the operator's machine": ["operator"],
    "each worker": ["worker-a", "worker-b"],
    "any vowvault machine": ["fresh"],
}
LONG_RUNNING = ("prefect server start", "prefect worker start")


@dataclass
class Block:
    line: int
    place: str
    text: str

    @property
    def long_running(self) -> bool:
        last = [x for x in self.text.splitlines() if x.strip()][-1]
        return last.startswith(LONG_RUNNING)

    def __str__(self) -> str:
        return f"docs/PRODUCTION.md:{self.line} ({self.place})"


def guide_blocks() -> list[Block]:
    blocks: list[Block] = []
    body: list[str] | None = None
    start = 0
    for number, line in enumerate(GUIDE.read_text().splitlines(), 1):
        if body is None and line == "```bash":
            body, start = [], number
        elif body is not None and line == "```":
            found = PLACE.match(body[0]) if body else None
            assert found and found.group(1) in WHERE, \
                f"docs/PRODUCTION.md:{start}: a bash block starts with '# on <place>: ', " \
                f"one of {sorted(WHERE)}"
            blocks.append(Block(start, found.group(1), "\n".join(body) + "\n"))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def exported_names(block: Block) -> list[str]:
    names = []
    for line in block.text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            names += [w.partition("=")[0] for w in words[1:]]
    return names


class Machine:
    """A HOME of its own; a block runs in bash with the environment and working directory
    the machine's earlier blocks left, as in one long shell session."""

    def __init__(self, name: str, root: Path, env: dict[str, str],
                 answers: dict[str, str]) -> None:
        self.name, self.home, self.answers = name, root / name, answers
        self.home.mkdir(parents=True)
        self.env = {**env, "HOME": str(self.home)}
        self.cwd = str(self.home)
        self.outputs: list[str] = []

    def _script(self, block: Block, capture: bool) -> tuple[Path, str]:
        script = self.home / f".block-{block.line}.sh"
        text = block.text
        if capture:
            text += f"env -0 > {shlex.quote(str(self.home / '.env-after'))}\n"
        script.write_text(text)
        stdin = "".join(self.answers[name] + "\n" for name in READ.findall(block.text))
        return script, stdin

    def run(self, block: Block, check: bool = True, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
        script, stdin = self._script(block, capture=True)
        began = time.monotonic()
        proc = subprocess.run(["bash", "-euo", "pipefail", str(script)], input=stdin,
                              capture_output=True, text=True, env=self.env, cwd=self.cwd,
                              timeout=timeout)
        self.outputs.append(f"--- {block} on {self.name}: exit {proc.returncode} in "
                            f"{time.monotonic() - began:.1f} s\n"
                            f"{proc.stdout}{proc.stderr}")
        if check:
            assert proc.returncode == 0, self.outputs[-1]
        if proc.returncode == 0:
            pairs = (self.home / ".env-after").read_bytes().decode().split("\0")
            self.env = dict(p.split("=", 1) for p in pairs if "=" in p)
            self.cwd = self.env.get("PWD", self.cwd)
        return proc

    def start(self, block: Block) -> subprocess.Popen[bytes]:
        script, stdin = self._script(block, capture=False)
        proc = subprocess.Popen(["bash", "-euo", "pipefail", str(script)], env=self.env,
                                cwd=self.cwd, stdin=subprocess.PIPE,
                                stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        assert proc.stdin is not None
        proc.stdin.write(stdin.encode())
        proc.stdin.close()
        return proc

    @property
    def log(self) -> Path:
        return self.home / "long-running.log"


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


async def _prefect(url: str, auth: str, what: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: auth}):
        async with get_client() as client:
            if what == "workers":
                return [w.name for w in await client.read_workers_for_work_pool("vowvault")]
            return [b.name for b in await client.read_block_documents()]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_production_guide_runs_as_written(tmp_path: Path,
                                             pg_admin: psycopg.Connection) -> None:
    blocks = guide_blocks()
    sfx = uuid.uuid4().hex[:10]
    photos = tmp_path / "photos"
    (photos / "2027-06-12" / "ceremony").mkdir(parents=True)
    (photos / "2027-06-12" / "ceremony" / "IMG_0001.CR3").write_bytes(os.urandom(700_000))
    (photos / "2027-06-12" / "guests.json").write_text('{"guest": "Ada"}\n' * 2000)
    (photos / "contract.pdf").write_bytes(os.urandom(3000))
    prefect_port = free_port()
    settings = {
        "DB_HOST": pg_admin.info.host, "DB_PORT": str(pg_admin.info.port),
        "CATALOG_DB": f"vvprod_{sfx}", "CATALOG_OWNER": f"vvprod_owner_{sfx}",
        "CATALOG_USER": f"vvprod_worker_{sfx}", "GATEWAY_ROLE": f"vvprod_gateway_{sfx}",
        "PREFECT_DB": f"vvprod_prefect_{sfx}", "PREFECT_DB_USER": f"vvprod_prefect_{sfx}",
        "PREFECT_HOST": "127.0.0.1", "PREFECT_PORT": str(prefect_port),
        "WORK_POOL": "vowvault", "BUCKET": f"vvprod-{sfx}", "AWS_DEFAULT_REGION": "eu-west-2",
        "CHECKOUT": str(ROOT), "LUMIERE_PHOTOS": str(photos)}
    answers = {"owner_pw": secrets.token_hex(16), "worker_pw": secrets.token_hex(16),
               "prefect_pw": secrets.token_hex(16),
               "PREFECT_API_AUTH_STRING": f"vowvault:{secrets.token_hex(16)}"}
    api = f"http://127.0.0.1:{prefect_port}/api"

    moto = start_moto(tmp_path)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "VOWVAULT_", "AWS_", "PG", "VIRTUAL_ENV"))}
    base.update(AWS_ENDPOINT_URL=moto.url, COLUMNS="200", NO_COLOR="1", PYTHONUNBUFFERED="1")
    machines = {name: Machine(name, tmp_path / "machines", base, answers)
                for name in WHERE["every machine"]}
    machines["aws-admin"].env.update(AWS_ACCESS_KEY_ID="admin", AWS_SECRET_ACCESS_KEY="admin")
    for name in WHERE["each worker"]:
        machines[name].env["PREFECT_WORKER_QUERY_SECONDS"] = "1"
    running: dict[str, subprocess.Popen[bytes]] = {}

    def on(block: Block, check: bool = True) -> list[subprocess.CompletedProcess[str]]:
        if block.place not in ("every machine", "every machine with the checkout",
                               "the database server", "the Prefect server",
                               "an AWS administrator's machine", "every vowvault machine"):
            server = machines["prefect"]
            wait_healthy(api, running["prefect"], server.log.read_text)
        done = []
        for name in WHERE[block.place]:
            if block.long_running:
                running[name] = machines[name].start(block)
            else:
                done.append(machines[name].run(block, check=check))
        ran.add(block.line)
        return done

    def logs() -> str:
        return "\n".join(out for m in machines.values() for out in m.outputs)[-6000:]

    ran: set[int] = set()
    skipped: set[int] = set()
    try:
        settings_block, *rest = blocks
        assert sorted(exported_names(settings_block)) == sorted(settings), \
            "the guide's settings are not the ones this test sets"
        settings_block.text = "".join(f"export {k}={shlex.quote(v)}\n"
                                      for k, v in settings.items())
        on(settings_block)
        run_block = next(b for b in rest if "--via-deployment" in b.text)
        for block in rest:
            if block.place == "any vowvault machine":
                machines["fresh"].env["BACKUP_ID"] = machines["operator"].env["BACKUP_ID"]
            if "vowvault doctor" in block.text:
                check_doctor(on(block, check=False)[0], settings)
                continue
            if block.place == "an AWS administrator's machine":
                key_id, key_secret = aws_admin(block, on, skipped, moto, settings)
                answers.update(key_id=key_id, key_secret=key_secret)
                # From here on moto checks every request against IAM, as S3 does.
                urllib.request.urlopen(urllib.request.Request(  # noqa: S310
                    f"{moto.url}/moto-api/reset-auth", data=b"0", method="POST",
                    headers={"Content-Type": "text/plain"})).close()
                with pytest.raises(ClientError, match="InvalidAccessKeyId"):
                    moto.client().list_objects_v2(Bucket=settings["BUCKET"])
                continue
            on(block)
            if block is run_block:
                first = machines["operator"].env["BACKUP_ID"]
                assert len(asyncio.run(_prefect(api, answers["PREFECT_API_AUTH_STRING"],
                                                   "workers"))) == 2, logs()
                took = worker_of(first, settings, pg_admin, machines)
                stop(running.pop(took))
                (photos / "2027-06-12" / "first-dance.jpg").write_bytes(os.urandom(200_000))
                (photos / "contract.pdf").write_bytes(os.urandom(3500))
                on(block)
                second = machines["operator"].env["BACKUP_ID"]
                assert second != first
                other = worker_of(second, settings, pg_admin, machines)
                assert other != took and other in WHERE["each worker"]
        assert ran == {b.line for b in blocks} - skipped, "blocks of the guide that did not run"

        restored = machines["fresh"].home / "restored" / "lumiere-photos"
        assert tree(restored) == tree(photos)
        check_catalog_and_storage([first, second], settings, pg_admin, key_id, key_secret,
                                  moto.url)
        kek_blocks = [n for n in asyncio.run(_prefect(api, answers["PREFECT_API_AUTH_STRING"],
                                                      "blocks"))
                      if n.startswith("vowvault-kek-")]
        assert len(kek_blocks) == 1, kek_blocks
        for m in machines.values():  # no key of any kind left on a machine
            state = m.home / ".vowvault"
            assert not (state / "keys").exists() and not (state / "audit.key").exists(), m.name
        request = urllib.request.Request(f"http://127.0.0.1:{prefect_port}/",
                                         headers={"Accept": "text/html"})
        with urllib.request.urlopen(request, timeout=10) as page:  # noqa: S310 - the UI
            assert page.status == 200 and b"<html" in page.read().lower()
    except BaseException:
        for name, m in machines.items():
            if m.log.exists():
                print(f"--- {name} long-running log:\n{m.log.read_text()[-4000:]}")
        print(logs())
        raise
    finally:
        for name in [n for n in running if n != "prefect"] + ["prefect"]:
            if name in running:
                stop(running.pop(name))
        moto.stop()
        for db in (settings["CATALOG_DB"], settings["PREFECT_DB"]):
            pg_admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        for role in ("CATALOG_OWNER", "CATALOG_USER", "PREFECT_DB_USER", "GATEWAY_ROLE"):
            pg_admin.execute(f'DROP ROLE IF EXISTS "{settings[role]}"')
        shutil.rmtree(tmp_path / "machines", ignore_errors=True)


def catalog(settings: dict[str, str], pg_admin: psycopg.Connection) -> psycopg.Connection:
    """The catalog as the superuser (row-level security does not hide rows from it)."""
    info = pg_admin.info
    return psycopg.connect(host=info.host, port=info.port, user=info.user,
                           dbname=settings["CATALOG_DB"], autocommit=True)


def worker_of(backup_id: str, settings: dict[str, str], pg_admin: psycopg.Connection,
              machines: dict[str, Machine]) -> str:
    with catalog(settings, pg_admin) as db:
        (flow_run,) = db.execute("SELECT flow_run_id FROM backup_jobs WHERE id = %s",
                                 (backup_id,)).fetchone()
    # Both may claim it; the one that runs it logs the run's own lines ("View at ...").
    took = [n for n in WHERE["each worker"]
            if f"/runs/flow-run/{flow_run}" in machines[n].log.read_text()]
    assert len(took) == 1, f"flow run {flow_run} in the logs of {took}"
    return took[0]


def check_doctor(proc: subprocess.CompletedProcess[str], settings: dict[str, str]) -> None:
    """The guide's rule is every line ok. The PostgreSQL server here is shared: a login that
    another test gives vowvault_tenant for a moment fails doctor too, so only failures
    naming one of this run's roles count."""
    out = proc.stdout
    assert "ok   service rules: policies held to" in out, out + proc.stderr
    assert "ok   audit key: shared secret prefect:vowvault-audit-key" in out, out
    ours = [settings[k] for k in ("CATALOG_OWNER", "CATALOG_USER", "PREFECT_DB_USER")]
    for line in out.splitlines():
        if line.startswith("FAIL"):
            assert "holds vowvault_tenant" in line and not any(r in line for r in ours), out
    assert proc.returncode == 0 or "FAIL" in out, out + proc.stderr


def check_catalog_and_storage(ids: list[str], settings: dict[str, str],
                              pg_admin: psycopg.Connection, key_id: str, key_secret: str,
                              endpoint: str) -> None:
    """Only the two backups the test made: a scheduled run may come due meanwhile (the
    example policy runs at 01:00 London time, more often in peak season), and be the
    second one's parent."""
    wanted = [uuid.UUID(i) for i in ids]
    with catalog(settings, pg_admin) as db:
        jobs = db.execute("SELECT id, status, verification_status, backup_type, "
                          "parent_job_id FROM backup_jobs WHERE id = ANY(%s) "
                          "ORDER BY created_at", (wanted,)).fetchall()
        copies = db.execute("SELECT backup_job_id, storage_url, file_path, status, health "
                            "FROM backup_storage WHERE backup_job_id = ANY(%s)",
                            (wanted,)).fetchall()
        keys = db.execute("SELECT provider FROM encryption_keys").fetchall()
    assert [j[1:4] for j in jobs] == [("COMPLETED", "VERIFIED", "FULL"),
                                      ("COMPLETED", "VERIFIED", "INCREMENTAL")], jobs
    assert [j[0] for j in jobs] == wanted and jobs[1][4] is not None  # it references data
    assert keys == [("prefect-secret",)]
    target = f"s3://{settings['BUCKET']}/lumiere-photo"
    assert {c[0] for c in copies} == set(wanted)
    assert {(c[1], c[3], c[4]) for c in copies} == {(target, "VERIFIED", "INTACT")}, copies
    s3 = boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=key_secret,
                               region_name=settings["AWS_DEFAULT_REGION"]).client(
        "s3", endpoint_url=endpoint)
    try:
        stored = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=settings["BUCKET"]) for o in page.get("Contents", ())}
        with pytest.raises(ClientError, match="AccessDenied"):  # the policy is all it has
            s3.get_bucket_acl(Bucket=settings["BUCKET"])
    finally:
        s3.close()
    assert {f"lumiere-photo/{c[2]}" for c in copies} <= stored, (copies, stored)


def aws_admin(block: Block, on: Any, skipped: set[int], moto: Any,
              settings: dict[str, str]) -> tuple[str, str]:
    """The guide's AWS block with the aws command; where it is not installed, the same
    calls through boto3, with the guide's policy document (the block is then not run)."""
    if shutil.which("aws"):
        return tuple(on(block)[0].stdout.split()[-2:])  # type: ignore[return-value]
    skipped.add(block.line)
    policy = block.text.split("<<EOF\n", 1)[1].split("\nEOF\n", 1)[0]
    policy = policy.replace("$BUCKET", settings["BUCKET"])
    bucket, region = settings["BUCKET"], settings["AWS_DEFAULT_REGION"]
    s3 = moto.client()
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    iam = boto3.session.Session(aws_access_key_id="admin", aws_secret_access_key="admin",
                                region_name=region).client("iam", endpoint_url=moto.url)
    arn = iam.create_policy(PolicyName="vowvault-s3", PolicyDocument=policy)["Policy"]["Arn"]
    iam.create_user(UserName="vowvault")
    iam.attach_user_policy(UserName="vowvault", PolicyArn=arn)
    key = iam.create_access_key(UserName="vowvault")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]
