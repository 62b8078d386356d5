"""HeapTrimmer gives freed heap memory back to the system (glibc), so a long run stays flat."""
from __future__ import annotations

import subprocess
import sys

import pytest

_SCRIPT = r"""
import torch
from dainrt.runtime.allocator import HeapTrimmer

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS:"))

a = torch.ones(1 << 20); del a          # freeing an mmapped 4 MiB block raises glibc's threshold
blocks = [torch.ones(1 << 20) for _ in range(100)]    # 100 x 4 MiB: now from the heap
keep = blocks[-1]                       # the top of the heap stays in use: no automatic trim
del blocks
freed = rss()
HeapTrimmer(every=0.0)()
print(freed, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")
def test_trim_returns_freed_heap_memory():
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True).stdout
    freed, trimmed = (int(x) for x in out.split())
    assert freed - trimmed > 300, (freed, trimmed)      # most of the ~396 MiB freed goes back

