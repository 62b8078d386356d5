"""Timing and peak memory: warm-up, then N timed runs; median and spread.

On a GPU, intervals are CUDA events recorded on the current stream (GPU time in stream order,
no host sync inside a run); on the CPU, `time.perf_counter`. Peak memory is
`torch.cuda.max_memory_allocated` on CUDA (torch's allocator only: memory ONNX Runtime or
TensorRT allocate themselves is not seen), and on the CPU the process's peak resident set
(`VmHWM`), reset before each measurement by writing "5" to `/proc/self/clear_refs` (Linux).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


class Stopwatch:
    """One interval on `device`: `with Stopwatch(dev) as sw: work()`, then `sw.ms`.

    On CUDA, `ms` waits for the end event (call it after the work is queued, as late as you can).
    """

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self._start = self._end = None

    def __enter__(self) -> "Stopwatch":
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self._end.record()
        else:
            self._end = time.perf_counter()

    @property
    def ms(self) -> float:
        if self.cuda:
            self._end.synchronize()
            return float(self._start.elapsed_time(self._end))
        return (self._end - self._start) * 1e3


@dataclass
class Stats:
    """Summary of timed samples in milliseconds: median, 10th and 90th percentile (linear)."""

    samples_ms: list[float]

    def _pct(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.samples_ms, dtype=np.float64), q))

    @property
    def median_ms(self) -> float:
        return self._pct(50)

    @property
    def p10_ms(self) -> float:
        return self._pct(10)

    @property
    def p90_ms(self) -> float:
        return self._pct(90)

    def scaled(self, divisor: float) -> "Stats":
        """Samples divided by `divisor` (e.g. a stream step's time per output frame)."""
        return Stats([s / divisor for s in self.samples_ms])


@dataclass
class Measurement:
    stats: Stats
    peak_mem_mb: float | None
    peak_mem_note: str = ""


def synchronize(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> str:
    """Start a new peak-memory window; returns "" or a note saying why the peak is not reset."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return ""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return ""
    except OSError as err:
        return f"peak RSS since process start ({_CLEAR_REFS} not writable: {err.strerror})"


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory since the last `reset_peak_memory`, in MiB (None where unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open(_STATUS) as f:
            m = re.search(r"^VmHWM:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
        if m:
            return int(m.group(1)) / 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: kB
    except (ImportError, OSError):
        return None


def measure(
    fn: Callable[[], object],
    runs: int,
    warmup: int,
    device: torch.device,
    on_run: Callable[[int, float], None] | None = None,
) -> Measurement:
    """Call `fn` `warmup` times untimed, then `runs` times timed (one Stopwatch each).

    Peak memory covers the timed runs only. `on_run(i, ms)` reports progress after each run.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for _ in range(max(0, warmup)):
        fn()
    synchronize(device)
    note = reset_peak_memory(device)
    samples = []
    for i in range(runs):
        with Stopwatch(device) as sw:
            fn()
        samples.append(sw.ms)
        if on_run is not None:
            on_run(i, samples[-1])
    synchronize(device)
    return Measurement(Stats(samples), peak_memory_mb(device), note)


@dataclass
class StageClock:
    """A backend wrapper that times every stage call while `enabled` (the Backend interface:
    `name`, `device`, `run(stage, inputs)`). Times are read by `take()` after the work."""

    backend: object
    enabled: bool = False
    _pending: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def device(self) -> torch.device:
        return self.backend.device

    def run(self, stage: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if not self.enabled:
            return self.backend.run(stage, inputs)
        with Stopwatch(self.device) as sw:
            out = self.backend.run(stage, inputs)
        self._pending.append((stage, sw))
        return out

    def take(self) -> dict[str, list[float]]:
        """Milliseconds per stage call since the last `take`, by stage name."""
        out: dict[str, list[float]] = {}
        for stage, sw in self._pending:
            out.setdefault(stage, []).append(sw.ms)
        self._pending.clear()
        return out
