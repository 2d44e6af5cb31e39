"""S3 for the contract suite: moto's server (``python -m moto.server``) in its own process,
on a port the kernel picks on loopback, so that it works beside the tests rather than
competing with them for one interpreter's lock.

Every target is a new bucket with Object Lock enabled (hence versioned), so legal holds
are enforced as on S3. Gaps of moto met by the suite, and why they need nothing here:

- A restore completes at once (S3 takes minutes to hours): the contract polls ``stat``.
- ``list_objects_v2`` ignores ``OptionalObjectAttributes=["RestoreStatus"]``, so a listing
  shows a restored GLACIER object as still archived; ``stat`` (HeadObject) is accurate.
- ``CopySourceIfMatch`` is not checked; S3 checks it (the backend relies on it to notice an
  object replaced during a tier change).
- A copy carrying Object Lock headers is refused for lack of a checksum header; the
  backend sets a legal hold or retention after the copy instead, which S3 accepts too.
- PutObjectLegalHold on a missing key, and CompleteMultipartUpload of an aborted upload,
  crash moto (HTTP 500, hence "transient") where S3 answers NoSuchKey / NoSuchUpload; the
  backend maps those S3 answers (ObjectNotFound; a commit whose upload vanished fails).
  Neither case is in the contract.
- Bad checksums are not rejected and lifecycle rules never run; nothing here needs them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.config import Config

REGION = "us-east-1"
ACCESS_KEY = "vowvault-test"
SECRET_KEY = "vowvault-test-secret"


@dataclass
class S3Emulator:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    _admin: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """What points boto3's standard chain at ``endpoint`` (default: the emulator)."""
        url = endpoint or self.url
        return {"AWS_ENDPOINT_URL_S3": url, "AWS_ENDPOINT_URL": url,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}

    def client(self) -> Any:
        if self._admin is None:
            self._admin = boto3.session.Session(
                aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                region_name=REGION).client(
                "s3", endpoint_url=self.url,
                config=Config(s3={"addressing_style": "path"},
                              retries={"total_max_attempts": 3}))
        return self._admin

    def new_target(self) -> str:
        bucket = f"vv-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        return f"s3://{bucket}/backups"

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


def start(workdir: Path) -> S3Emulator:
    log_path = workdir / "moto.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
        env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "TMPDIR": str(workdir),
             "HOME": str(workdir)})
    deadline = time.monotonic() + 120
    while True:
        found = re.search(rb"Running on http://127\.0\.0\.1:(\d+)", log_path.read_bytes())
        if found:
            emulator = S3Emulator("127.0.0.1", int(found.group(1)), process, log)
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.close()
            raise RuntimeError("moto server did not start:\n"
                               + log_path.read_text(errors="replace")[-2000:])
        time.sleep(0.05)
    try:
        emulator.client().list_buckets()
    except Exception:
        emulator.stop()
        raise
    return emulator
