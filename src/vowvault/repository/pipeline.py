"""The stages that write one backup: snapshot → compress → encrypt → upload.

They run at the same time, connected by bounded channels of frames (``channels``), so a
backup moves at the speed of its slowest stage and holds at most ``memory_bound`` bytes of
data whatever its size. ``run`` runs them in threads; an orchestrator may run each stage
as a task of its own (``run_stage``), with the same code. Any stage failing stops the
others (one ``Abort``).

The pipeline writes, in this order: the key object, the source's streams (``data``, then
e.g. ``index``) to every copy at once, and the manifest last, which it builds from what the
streams turned out to hold (``describe``). It knows the codec, the copies and the source's
streams; it never sees the catalog.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from vowvault.codec.frames import DEFAULT_FRAME_SIZE, ObjectSealer
from vowvault.repository import allocator
from vowvault.repository.channels import Abort, Aborted, Channel, Item, StageClock, run_threads
from vowvault.repository.copies import Copy
from vowvault.repository.layout import KEY, MANIFEST, BackupLocation
from vowvault.repository.manifest import Manifest, ObjectEntry
from vowvault.repository.writer import CopyOutcome, CopyWriter, FanOut

STAGES = ("snapshot", "compress", "encrypt", "upload")


class Streams(Protocol):
    """What the pipeline reads: a source's streams, each an object kind and its bytes."""

    def streams(self) -> Iterator[tuple[str, Iterable[bytes]]]: ...


@dataclass(frozen=True)
class WriteSpec:
    location: BackupLocation
    dek: bytes
    key_object: bytes
    frame_size: int = DEFAULT_FRAME_SIZE
    workers: int = 2
    """Compression threads."""
    queue_depth: int = 4
    """Frames waiting between two stages."""
    round_trip: bool = False
    """Decompress every compressed frame once and compare it with its plaintext (for
    sources whose read-back does not decode: ``SourceDriver.proved_in_stream``)."""

    def memory_bound(self) -> int:
        return memory_bound(self.frame_size, self.workers, self.queue_depth)


def memory_bound(frame_size: int, workers: int, queue_depth: int) -> int:
    """Bytes of backup data in flight at most (excluding the interpreter): frames in the
    three channels, in the compressor pool, and per-copy upload queues."""
    return (3 * queue_depth + 2 * workers + 2 + 2 * queue_depth) * frame_size


@dataclass
class WriteResult:
    manifest: Manifest
    manifest_sha256: str
    objects: dict[str, ObjectEntry]
    copies: list[CopyOutcome]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def live(self) -> list[Copy]:
        return [o.copy for o in self.copies if o.failed is None]


class BackupPipeline:
    """The state of one backup being written, shared by its stages."""

    def __init__(self, spec: WriteSpec, source: Streams, copies: list[Copy],
                 describe: Callable[[dict[str, ObjectEntry]], Manifest]) -> None:
        allocator.tune()
        self.spec = spec
        self.source = source
        self.describe = describe
        self.abort = Abort()
        depth = spec.queue_depth
        self.ch_frames = Channel(self.abort, depth)
        self.ch_compressed = Channel(self.abort, depth)
        self.ch_sealed = Channel(self.abort, depth)
        self.writer = CopyWriter(spec.location, copies, self.abort, depth)
        self.sealers: dict[str, ObjectSealer] = {}
        self.clocks = {s: StageClock() for s in STAGES}
        self._running: set[str] = set()
        self._idle = threading.Condition()
        self.compress_cpu = 0.0
        self.result: WriteResult | None = None

    def run(self) -> WriteResult:
        """Every stage in a thread of its own; the root cause is raised if one fails."""
        run_threads({name: (lambda name=name: self.run_stage(name)) for name in STAGES},
                    self.abort)
        assert self.result is not None
        return self.result

    def run_stage(self, stage: str) -> bool:
        """Run one stage to its end; False when it stopped because another failed (the
        stage that failed raises, and stops the others)."""
        fn = {"snapshot": self._snapshot, "compress": self._compress,
              "encrypt": self._encrypt, "upload": self._upload}[stage]
        with self._idle:
            self._running.add(stage)
        try:
            fn()
        except Aborted:
            return False
        except BaseException as exc:
            self.abort.fail(exc)
            raise
        finally:
            with self._idle:
                self._running.discard(stage)
                self._idle.notify_all()
        return True

    def stop(self, error: BaseException, timeout: float = 60.0) -> bool:
        """Abort the stages and wait until none runs any more (True), however they were
        started (threads, or an orchestrator's tasks)."""
        self.abort.fail(error)
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout)

    def _sealer(self, kind: str) -> ObjectSealer:
        found = self.sealers.get(kind)
        if found is None:
            found = self.sealers[kind] = ObjectSealer(self.spec.dek,
                                                      self.spec.location.backup_id, kind,
                                                      self.spec.frame_size,
                                                      round_trip=self.spec.round_trip)
        return found

    def _snapshot(self) -> None:
        clock = self.clocks["snapshot"]
        with contextlib.closing(iter(self.source.streams())) as streams:
            self._frames(streams, clock)
        self.ch_frames.close()

    def _frames(self, streams: Iterator[tuple[str, Iterable[bytes]]], clock: StageClock) -> None:
        for kind, chunks in streams:
            frames = self._sealer(kind).cut(chunks)
            while True:
                with clock:
                    nxt = next(frames, None)
                if nxt is None:
                    break
                index, frame, final = nxt
                self.ch_frames.put(Item(kind, index, frame, final))

    def _compress(self) -> None:
        workers = self.spec.workers

        def work(kind: str, data: bytes) -> tuple[bytes, float]:
            t0 = time.perf_counter()
            out = self.sealers[kind].compress(data)
            return out, time.perf_counter() - t0

        pending: deque[Any] = deque()
        with ThreadPoolExecutor(workers, thread_name_prefix="vowvault-zstd") as pool:
            for item in self.ch_frames:
                pending.append((item, pool.submit(work, item.obj, item.data)))
                while len(pending) > workers:
                    self._emit(*pending.popleft())
            while pending:
                self._emit(*pending.popleft())
        self.ch_compressed.close()

    def _emit(self, item: Item, future: Any) -> None:
        data, seconds = future.result()
        self.compress_cpu += seconds
        self.ch_compressed.put(Item(item.obj, item.index, data, item.final))

    def _encrypt(self) -> None:
        clock = self.clocks["encrypt"]
        for item in self.ch_compressed:
            with clock:
                record = self.sealers[item.obj].seal(item.index, item.data, item.final)
            self.ch_sealed.put(Item(item.obj, item.index, record, item.final))
        self.ch_sealed.close()

    def _upload(self) -> None:
        clock = self.clocks["upload"]
        with clock:
            self.writer.save(KEY, self.spec.key_object)
        fans: dict[str, FanOut] = {}
        for item in self.ch_sealed:
            with clock:
                if item.index == 0:
                    fans[item.obj] = self.writer.begin(item.obj)
                fans[item.obj].put(item.data)
                if item.final:
                    fans.pop(item.obj).finish()
        with clock:
            objects = {k: ObjectEntry.of(s.stats, self.spec.frame_size)
                       for k, s in self.sealers.items()}
            manifest = self.describe(objects)
            raw = manifest.to_bytes()
            sealer = ObjectSealer(self.spec.dek, self.spec.location.backup_id, MANIFEST,
                                  self.spec.frame_size)
            self.writer.save(MANIFEST, b"".join(sealer.records([raw])))
        self.result = WriteResult(manifest, hashlib.sha256(raw).hexdigest(), objects,
                                  self.writer.outcomes, self.stage_seconds(),
                                  self.writer.warnings)

    def stage_seconds(self) -> dict[str, float]:
        return {"snapshot": round(self.clocks["snapshot"].busy, 3),
                "compress": round(self.compress_cpu, 3),
                "encrypt": round(self.clocks["encrypt"].busy, 3),
                "upload": round(self.clocks["upload"].busy, 3)}

