"""The public Python API: interpolate between two pictures on any backend."""
from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np

from dainrt.errors import DainrtError


def times_for_factor(factor: int) -> list[float]:
    """The in-between times of a frame-rate multiplication: factor 4 -> [0.25, 0.5, 0.75]."""
    if factor < 2:
        raise DainrtError(f"--factor must be 2 or more, got {factor}")
    return [k / factor for k in range(1, factor)]


def check_times(times: Sequence[float]) -> list[float]:
    times = [float(t) for t in times]
    if not times:
        raise DainrtError("no time steps given")
    bad = [t for t in times if not 0.0 < t < 1.0]
    if bad:
        raise DainrtError(f"time steps must lie strictly between 0 and 1, got {bad}")
    return times


class Interpolator:
    """A loaded model on a backend, reusable across many calls (loading costs seconds).

    `weights` is a checkpoint path (or None: `--weights`/`DAINRT_WEIGHTS`/cache, see
    `dainrt.weights.resolve_weights`) or an already built `dainrt.model.DAIN`.
    """

    def __init__(self, weights=None, backend: str = "torch", device: str = "cpu", **backend_options):
        from dainrt.engine import Runner, create_backend
        from dainrt.model import DAIN

        model = weights if isinstance(weights, DAIN) else _load(weights)
        self.backend = create_backend(backend, model, device, **backend_options)
        self.runner = Runner(self.backend)

    def interpolate(self, frame0: np.ndarray, frame1: np.ndarray, times: Sequence[float]) -> list[np.ndarray]:
        """Frames at `times` between frame0 (t=0) and frame1 (t=1).

        Frames: HxWx3 RGB arrays, uint8, uint16 or float in [0,1], same size. Returns one float32
        HxWx3 array in [0,1] (clipped) per t.
        """
        return list(self.iter_interpolate(frame0, frame1, times))

    def iter_interpolate(self, frame0: np.ndarray, frame1: np.ndarray, times: Sequence[float]) -> Iterator[np.ndarray]:
        """`interpolate`, one frame at a time (the per-frame and per-pair work is done once)."""
        times = check_times(times)
        for name, f in (("frame0", frame0), ("frame1", frame1)):
            if np.ndim(f) != 3 or np.shape(f)[2] != 3:
                raise DainrtError(f"{name} must be an HxWx3 RGB array, got shape {np.shape(f)}")
        if np.shape(frame0) != np.shape(frame1):
            raise DainrtError(f"the two frames differ in size: {np.shape(frame0)} vs {np.shape(frame1)}")
        # Ids 0 and 1 are reused across calls, so forget the previous call's pictures first.
        self.runner.clear()
        for t in times:
            (out,) = self.runner.interpolate(0, frame0, 1, frame1, [t])
            yield out.clamp(0.0, 1.0).permute(1, 2, 0).float().cpu().numpy()


def _load(weights):
    from dainrt.checkpoint import load_model
    from dainrt.weights import resolve_weights

    return load_model(resolve_weights(weights), device="cpu")


def interpolate(
    frame0: np.ndarray,
    frame1: np.ndarray,
    times: Sequence[float] = (0.5,),
    weights: str | os.PathLike | None = None,
    backend: str = "torch",
    device: str = "cpu",
    **backend_options,
) -> list[np.ndarray]:
    """One-shot `Interpolator(weights, backend, device).interpolate(frame0, frame1, times)`."""
    return Interpolator(weights, backend, device, **backend_options).interpolate(frame0, frame1, times)
