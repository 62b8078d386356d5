"""How a CPU process gets memory for the model's tensors and gives it back (glibc malloc).

Two settings, both glibc's (elsewhere, macOS or musl, both do nothing):

* `reuse_freed_memory()`, set when a CPU backend is created (`engine.create_backend`): tensors of
  any size come from the heap, and freed space is reused by the next tensor. Left alone, glibc
  serves every block above its mmap threshold (at most 32 MiB) with a fresh `mmap`: the kernel
  zero-fills each 4 KiB page on first touch and unmaps it on free, so every large activation of
  every stage call is paid for again in page faults. At 720p nearly all of them are that large:
  a `dainrt run` of 6 output frames took 44.6 M page faults and 103 s of system time out of
  331 CPU-seconds (31 %); with this setting the faults all but vanish (640x384, one thread, all
  four stages twice: 3,285,015 -> 48,003 page faults, 7.5 -> 0.1 s of system time, user time
  unchanged; docs/architecture.md §4). The price is peak memory: space freed by one stage is
  kept for the next, and not every hole fits the next tensor. `dainrt run` at 720p (Big Buck
  Bunny, 6 new frames, bundled model, 2 torch threads, another benchmark on the machine): peak
  RSS 5.6 GB against 4.2 GB with glibc's defaults, but 3.1 M page faults and 7.4 s of system
  time against 30.0 M and 67.5 s (203 s wall against 233 s).
* `HeapTrimmer`: memory kept for reuse is not returned by itself, and a long run's heap
  fragments, so the run loop calls the trimmer after each output frame, and every `every`
  seconds it gives the free pages back (`malloc_trim`). Each trim costs the next frame a round
  of page faults, hence the long default interval; resident memory stays flat because the
  reused heap no longer grows (`benchmarks/run_overlap.py` measures it).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time

M_TRIM_THRESHOLD = -1          # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
REUSE_BYTES = 1 << 30          # blocks up to 1 GiB from the heap; keep up to 1 GiB free at its top
GLIBC_MAX_MMAP_THRESHOLD = 32 << 20   # older glibc refuses more than this


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@functools.cache
def reuse_freed_memory() -> int:
    """Serve tensors from the heap and reuse freed space (process-wide, idempotent). Returns the
    mmap threshold set in bytes, 0 where this is not glibc."""
    libc = _libc()
    if libc is None:
        return 0
    for threshold in (REUSE_BYTES, GLIBC_MAX_MMAP_THRESHOLD):
        if libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1:
            libc.mallopt(M_TRIM_THRESHOLD, 2 * threshold)
            return threshold
    return 0


class HeapTrimmer:
    """Call it after each unit of work: at most every `every` seconds it returns the heap's free
    pages to the system (a trim walks the free lists: milliseconds)."""

    def __init__(self, every: float = 30.0):
        libc = _libc()
        self._trim = libc.malloc_trim if libc is not None else None
        self.every = every
        self._last = time.monotonic()

    def __call__(self) -> None:
        if self._trim is None:
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._trim(0)
            self._last = now
