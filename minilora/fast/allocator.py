"""The allocator setting of the fast path: glibc's malloc keeps freed memory for reuse.

A training step allocates and frees the same activations every step. By default glibc returns
large blocks to the kernel (``munmap``, heap trimming), so the next step page-faults and zeroes
that memory all over again; and it gives each further thread a heap of its own, which it unmaps
whenever all of it is free, so a worker thread page-faults in its blocks every step.
:func:`keep_freed_memory` asks for one heap that is never trimmed. It changes the whole
process's allocator and cannot be taken back, which is why only :func:`minilora.fast.enable`
applies it, never an import (docs/fast.md has the measurements).
"""
from __future__ import annotations

import ctypes
import os

ENV = "MINILORA_KEEP_FREED_MEMORY"  # "0": leave malloc as it is, even with the fast path on
applied = False  # whether keep_freed_memory() has changed this process's allocator


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks for reuse (PyTorch users get the same from
    jemalloc/tcmalloc). Returns whether it applied: only on glibc, once per process, and not
    with ``MINILORA_KEEP_FREED_MEMORY=0``."""
    global applied
    if applied or os.environ.get(ENV, "1") == "0":
        return applied
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return False
    except (AttributeError, ValueError, OSError):  # not a glibc system (Windows, macOS, musl)
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # from <malloc.h>
    mmap_ok = libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)  # blocks < 32 MiB come from the heap
    trim_ok = libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # and the heap is never trimmed
    arena_ok = libc.mallopt(M_ARENA_MAX, 1)  # one heap for every thread
    applied = bool(mmap_ok and trim_ok and arena_ok)
    return applied
