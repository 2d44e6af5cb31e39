"""Old backups stay readable (issue 15, point 4): every fixture under tests/fixtures/formats
(what some version of vowvault wrote; made by its make.py and never regenerated) restores
with the current code, byte for byte, without a catalog: its key object opened with the
fixture's KEK, its manifest checked against the SHA-256 the catalog had recorded."""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from vowvault.keys import KeyContext, unwrap_with
from vowvault.repository import BackupLocation, Copy
from vowvault.repository.keyobject import KeyObject
from vowvault.repository.layout import KEY
from vowvault.repository.reader import BackupReader
from vowvault.sources.base import RestoreTarget
from vowvault.sources.directory import DirectoryDriver
from vowvault.storage import open_backend

FIXTURES = Path(__file__).parents[1] / "fixtures" / "formats"
sys.path.insert(0, str(FIXTURES))
from make import state  # noqa: E402


def open_fixture(name: str, tmp_path: Path) -> tuple[dict, Copy, BackupLocation, bytes]:
    """A copy of fixture ``name``'s storage (read from the copy: the fixture stays
    untouched), its location and its data key."""
    fixture = json.loads((FIXTURES / name / "fixture.json").read_text())
    storage = tmp_path / "storage"
    shutil.copytree(FIXTURES / name / "storage", storage)
    backend = open_backend(f"file://{storage}")
    location = BackupLocation(uuid.UUID(fixture["organization_id"]),
                              uuid.UUID(fixture["policy_id"]), uuid.UUID(fixture["backup_id"]))
    key = KeyObject.from_bytes(backend.load(location.name(KEY)), location.backup_id)
    dek = unwrap_with(bytes.fromhex(fixture["kek_hex"]), key.wrapped_dek,
                      KeyContext(location.organization_id, "lumiere", location.backup_id,
                                 fixture["kek_version"]))
    return fixture, Copy(f"file://{storage}", backend), location, dek


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_every_format_fixture_restores(name: str, tmp_path: Path) -> None:
    fixture, copy, location, dek = open_fixture(name, tmp_path)
    reader = BackupReader(location, dek, [copy],
                          expected_manifest_sha=fixture["manifest_sha256"])
    out = tmp_path / "out"
    outcome = DirectoryDriver().restore(reader, {}, RestoreTarget(directory=out), [])
    assert outcome.validation["files"] == fixture["files"]
    # Files' content digests: SHA-256 until 2026-12-03, BLAKE3 since
    assert outcome.validation["checksum_per_file"] == (
        "BLAKE3" if "content-blake3" in name else "SHA-256")
    assert state(out) == fixture["state"]
    # v1-…: manifests of format 1 (SHA-256 object digests); v2-…: format 2 (BLAKE3).
    manifest = reader.manifest
    assert manifest.format == int(name[1])
    assert {e.algorithm for e in manifest.objects.values()} == {
        "sha256" if manifest.format == 1 else "blake3"}
