"""Process-level tuning, applied by entry points (the CLI, the flows), never on import."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3


def tune_allocator(threshold: int = 128 * 1024) -> bool:
    """Make glibc serve every allocation above ``threshold`` with its own mapping.

    Backups move 1 MiB frames between threads; glibc's default raises its mmap threshold
    after the first frees, so freed frames then stay cached in per-thread arenas and peak
    RSS grows well past the data actually in flight (measured: 120 MiB instead of 89 MiB
    for a 286 MiB backup). A fixed threshold returns each frame to the kernel when freed.
    Returns False where this does not apply (not Linux/glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
