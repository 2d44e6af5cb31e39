"""Faults between vowvault and a cloud: injected by a proxy in front of each emulator.
Transient ones are ridden out by the one retry layer; permanent ones fail at once and
clearly; an interrupted upload leaves no object."""

from __future__ import annotations

import os

import pytest
from faultproxy import Delay, Reset, ResetMidResponse, Rule, Status

from vowvault.errors import ObjectNotFound, StorageError, TransientStorageError

MiB = 1024 * 1024


def test_transient_upload_faults_are_retried(proxied, prefix: str) -> None:
    store, proxy = proxied
    data = os.urandom(20 * MiB + 123)  # several parts
    proxy.add(Rule(Status(503), method="PUT", times=2))
    proxy.add(Rule(Status(500), method="POST", times=1))
    proxy.add(Rule(Reset(), method="PUT", skip=1, times=1))
    store.save(prefix + "film", [data[i:i + MiB] for i in range(0, len(data), MiB)])
    assert proxy.faults(), "no fault was injected: the rules matched nothing"
    proxy.clear()
    assert store.load(prefix + "film") == data


def test_lost_answers_to_uploads_neither_duplicate_nor_skip_bytes(proxied, prefix: str) -> None:
    """The service stored a part (or the commit) but its answer was lost: the retry must
    leave the object exactly as if the first try had been answered."""
    store, proxy = proxied
    data = os.urandom(20 * MiB + 5)
    proxy.add(Rule(ResetMidResponse(after=5), method="PUT", skip=1, times=1))
    proxy.add(Rule(ResetMidResponse(after=5), method="POST", skip=1, times=1))
    store.save(prefix + "film", [data[i:i + MiB] for i in range(0, len(data), MiB)])
    proxy.clear()
    assert store.load(prefix + "film") == data


def test_transient_download_faults_are_retried(proxied, prefix: str) -> None:
    store, proxy = proxied
    data = os.urandom(12 * MiB)
    store.save(prefix + "film", [data])
    proxy.add(Rule(ResetMidResponse(after=4096), method="GET", times=2))
    proxy.add(Rule(Status(503), method="GET", skip=3, times=1))
    proxy.add(Rule(Delay(0.2), method="GET", times=1))
    assert b"".join(store.open(prefix + "film")) == data
    assert len(proxy.faults()) >= 3


def test_retries_are_bounded_and_say_so(proxied, prefix: str) -> None:
    store, proxy = proxied
    store.save(prefix + "x", [b"x"])
    proxy.add(Rule(Status(503), method="GET", times=-1))
    with pytest.raises(TransientStorageError, match="gave up after 5 attempts"):
        store.load(prefix + "x")
    gets = [e for e in proxy.log if e[0] == "GET"]
    # One retry layer: 5 attempts in all, not 5 times the SDK's own retries.
    assert len(gets) == 5


def test_permanent_failures_are_not_retried(proxied, prefix: str) -> None:
    store, proxy = proxied
    proxy.add(Rule(Status(403, b"<Error><Code>AccessDenied</Code></Error>"), times=-1))
    with pytest.raises(StorageError) as info:
        store.save(prefix + "denied", [b"x"])
    assert not isinstance(info.value, TransientStorageError)
    assert len(proxy.log) <= 2


def test_interrupted_upload_leaves_nothing(proxied, prefix: str) -> None:
    store, proxy = proxied
    proxy.add(Rule(Status(503), method="PUT", skip=1, times=-1))
    data = os.urandom(20 * MiB)
    with pytest.raises(TransientStorageError):
        store.save(prefix + "half", [data[i:i + MiB] for i in range(0, len(data), MiB)])
    proxy.clear()
    with pytest.raises(ObjectNotFound):
        store.stat(prefix + "half")
    assert [o.name for o in store.list(prefix)] == []
