"""The storage contract, written once, run against every backend (see conftest.BACKENDS).
Each test states a guarantee of ``StorageBackend``'s docstring."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from vowvault.domain import Tier
from vowvault.errors import ObjectNotFound
from vowvault.storage import StorageBackend


def chunks(total: int, size: int = 1 << 20, seed: int = 0) -> Iterator[bytes]:
    block = os.urandom(min(size, total) or 1)
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield block[:n]
        sent += n


def test_save_then_load_whole_and_ranges(backend: StorageBackend, prefix: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    info = backend.save(prefix + "obj", [data[i:i + 65536] for i in range(0, len(data), 65536)])
    assert info.size == len(data)
    assert backend.load(prefix + "obj") == data
    assert backend.load(prefix + "obj", 1000, 5000) == data[1000:6000]
    assert backend.load(prefix + "obj", len(data) - 10, 100) == data[-10:]
    assert backend.load(prefix + "obj", len(data) + 5, 10) == b""
    assert b"".join(backend.open(prefix + "obj", chunk_size=100_000)) == data


def test_empty_object(backend: StorageBackend, prefix: str) -> None:
    backend.save(prefix + "empty", [])
    assert backend.load(prefix + "empty") == b""
    assert backend.stat(prefix + "empty").size == 0


def test_streamed_save_of_a_large_object(backend: StorageBackend, prefix: str) -> None:
    size = 40 * 1024 * 1024
    info = backend.save(prefix + "big", chunks(size))
    assert info.size == size == backend.stat(prefix + "big").size


def test_interrupted_save_leaves_nothing_under_the_name(backend: StorageBackend,
                                                        prefix: str) -> None:
    def failing() -> Iterator[bytes]:
        # More than a part, so that a part (block, chunk) is already stored when it fails.
        yield b"x" * (backend.properties().part_size + 1)
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        backend.save(prefix + "partial", failing())
    with pytest.raises(ObjectNotFound):
        backend.stat(prefix + "partial")
    assert [o.name for o in backend.list(prefix)] == []


def test_interrupted_save_keeps_the_previous_object(backend: StorageBackend,
                                                   prefix: str) -> None:
    backend.save(prefix + "obj", [b"old"])

    def failing() -> Iterator[bytes]:
        yield b"n" * (backend.properties().part_size + 1)
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        backend.save(prefix + "obj", failing())
    assert backend.load(prefix + "obj") == b"old"


def test_overwrite_replaces(backend: StorageBackend, prefix: str) -> None:
    backend.save(prefix + "obj", [b"first"])
    backend.save(prefix + "obj", [b"second"])
    assert backend.load(prefix + "obj") == b"second"


def test_missing_objects(backend: StorageBackend, prefix: str) -> None:
    with pytest.raises(ObjectNotFound):
        backend.load(prefix + "nope")
    with pytest.raises(ObjectNotFound):
        backend.stat(prefix + "nope")
    with pytest.raises(ObjectNotFound):
        list(backend.open(prefix + "nope"))


def test_list_is_ordered_and_filtered_by_prefix(backend: StorageBackend, prefix: str) -> None:
    for name in ("b/2", "a/1", "a/10", "c"):
        backend.save(prefix + name, [name.encode()])
    backend.save("other/x", [b"x"])
    listed = [(o.name, o.size) for o in backend.list(prefix)]
    assert listed == [(prefix + "a/1", 3), (prefix + "a/10", 4), (prefix + "b/2", 3),
                      (prefix + "c", 1)]
    assert [o.name for o in backend.list(prefix + "a/")] == [prefix + "a/1", prefix + "a/10"]
    # A prefix is a string, not a directory: it may end inside a name.
    assert [o.name for o in backend.list(prefix + "a/1")] == [prefix + "a/1", prefix + "a/10"]
    assert [o.name for o in backend.list(prefix + "b")] == [prefix + "b/2"]
    assert list(backend.list(prefix + "zz/")) == []


def test_delete_is_idempotent_and_batched(backend: StorageBackend, prefix: str) -> None:
    names = [f"{prefix}d/{i}" for i in range(5)]
    for n in names:
        backend.save(n, [b"x"])
    backend.delete([*names[:3], prefix + "never-existed"])
    assert [o.name for o in backend.list(prefix)] == names[3:]
    backend.delete(names)
    backend.delete(names)
    assert list(backend.list(prefix)) == []


def test_tiers_are_set_and_read(backend: StorageBackend, prefix: str) -> None:
    backend.save(prefix + "warm", [b"w"], tier=Tier.WARM)
    assert backend.stat(prefix + "warm").tier == Tier.WARM
    backend.set_tier(prefix + "warm", Tier.COLD)
    assert backend.stat(prefix + "warm").tier == Tier.COLD
    backend.set_tier(prefix + "warm", Tier.COLD)  # idempotent
    assert backend.load(prefix + "warm") == b"w"
    with pytest.raises(ObjectNotFound):
        backend.set_tier(prefix + "nope", Tier.COLD)
    props = backend.properties()
    assert props.provider in ("local", "s3", "gcs", "azure")


def test_names_cannot_escape_the_target(backend: StorageBackend) -> None:
    from vowvault.errors import StorageError

    for bad in ("../escape", "/abs", "a/../../b"):
        with pytest.raises(StorageError):
            backend.save(bad, [b"x"])


def test_archived_objects_are_restored_before_reading(backend: StorageBackend,
                                                      prefix: str) -> None:
    from vowvault.errors import ArchivedObjectError

    backend.save(prefix + "old", [b"photos from 2019"], tier=Tier.HOT)
    backend.set_tier(prefix + "old", Tier.ARCHIVE)
    info = backend.stat(prefix + "old")
    assert info.tier == Tier.ARCHIVE
    if not backend.properties().archive_needs_restore:
        assert backend.load(prefix + "old") == b"photos from 2019"
        return
    assert info.archived
    with pytest.raises(ArchivedObjectError, match="restore"):
        backend.load(prefix + "old")
    backend.start_restore(prefix + "old", days=1)
    backend.start_restore(prefix + "old", days=1)  # asking twice is fine
    import time

    deadline = time.monotonic() + 30
    while backend.stat(prefix + "old").restore_state != "restored":
        assert time.monotonic() < deadline, "restore never completed"
        time.sleep(0.2)
    assert backend.load(prefix + "old") == b"photos from 2019"


def test_legal_hold_where_the_service_has_it(backend: StorageBackend, prefix: str) -> None:
    backend.save(prefix + "evidence", [b"contract"])
    if not backend.properties().legal_hold:
        with pytest.raises(NotImplementedError):
            backend.set_legal_hold(prefix + "evidence", True)
        return
    from vowvault.errors import StorageError

    backend.set_legal_hold(prefix + "evidence", True)
    with pytest.raises(StorageError):
        backend.delete([prefix + "evidence"])
    assert backend.load(prefix + "evidence") == b"contract"
    backend.set_legal_hold(prefix + "evidence", False)
    backend.delete([prefix + "evidence"])
    assert list(backend.list(prefix)) == []
