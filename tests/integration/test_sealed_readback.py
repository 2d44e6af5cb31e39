"""The read-back after a write of a source that proves its plaintext as it streams (a base
backup): every stored record is authenticated without being decoded again, and anything
but the bytes sealed is caught: a flipped bit anywhere, a cut, bytes appended, an object
swapped for another backup's. The plaintext's side is the round trip before sealing
(tests/unit/test_codec.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_format_fixtures import FIXTURES, open_fixture

from vowvault.domain import CopyHealth
from vowvault.repository import BackupLocation, Copy
from vowvault.repository.layout import DATA, INDEX
from vowvault.repository.verify import verify_copy

FIXTURE = FIXTURES / "v2-tree-blake3-2026-12"
OTHER = FIXTURES / "v1-tree-2026-12"


def opened(tmp_path: Path) -> tuple[Copy, BackupLocation, bytes, Path, str]:
    fixture, copy, location, dek = open_fixture(FIXTURE.name, tmp_path)
    return copy, location, dek, tmp_path / "storage", fixture["manifest_sha256"]


def readback(copy: Copy, location: BackupLocation, dek: bytes, sha: str) -> CopyHealth:
    return verify_copy(copy, location, dek, expected_manifest_sha=sha,
                       key_opens=lambda key: True, decode=False).health


def object_path(storage: Path, location: BackupLocation, kind: str) -> Path:
    return storage / location.name(kind)


def test_an_intact_copy_reads_back_intact(tmp_path: Path) -> None:
    copy, location, dek, _, sha = opened(tmp_path)
    assert readback(copy, location, dek, sha) == CopyHealth.INTACT


@pytest.mark.parametrize("kind", [DATA, INDEX])
def test_every_flipped_byte_of_a_stored_object_is_caught(tmp_path: Path, kind: str) -> None:
    copy, location, dek, storage, sha = opened(tmp_path)
    path = object_path(storage, location, kind)
    original = path.read_bytes()
    for at in range(0, len(original), max(1, len(original) // 97)):
        damaged = bytearray(original)
        damaged[at] ^= 0x20
        path.write_bytes(damaged)
        assert readback(copy, location, dek, sha) == CopyHealth.DAMAGED, at
    path.write_bytes(original)
    assert readback(copy, location, dek, sha) == CopyHealth.INTACT


def test_a_cut_an_append_and_a_swapped_object_are_caught(tmp_path: Path) -> None:
    copy, location, dek, storage, sha = opened(tmp_path)
    path = object_path(storage, location, DATA)
    original = path.read_bytes()
    for changed in (original[:-1], original[:len(original) // 2], original + b"\0",
                    original + original[32:]):
        path.write_bytes(changed)
        assert readback(copy, location, dek, sha) == CopyHealth.DAMAGED
    other = json.loads((OTHER / "fixture.json").read_text())
    other_data = next((OTHER / "storage").rglob(f"{other['backup_id']}/data"))
    shutil.copyfile(other_data, path)
    assert readback(copy, location, dek, sha) == CopyHealth.DAMAGED
    path.unlink()
    assert readback(copy, location, dek, sha) == CopyHealth.MISSING
