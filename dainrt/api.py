"""The public Python API: interpolate between two pictures on any backend."""
from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np

from dainrt.base.errors import DainrtError
from dainrt.base.times import check_times, times_for_factor

__all__ = ["Interpolator", "check_times", "interpolate", "times_for_factor"]


class Interpolator:
    """A loaded model on a backend, reusable across many calls (loading costs seconds).

    `weights` is a checkpoint path (or None: `DAINRT_WEIGHTS`, the cache, the bundled model; see
    `dainrt.model.weights.resolve_weights`) or an already built `dainrt.model.DAIN`.
    `backend`, `precision`, `kernels`, `compile` and `calibration` (a `dainrt calibrate` folder)
    choose how it runs (`dainrt.engine.choice`: None picks the fastest path of `device`); further
    `backend_options` go to the backend.
    `tile` ("auto", "off" or "WxH"; None: auto, silent while whole frames fit) and `tile_overlap`
    (pixels; None: from each pair's motion) cut large frames into tiles (`dainrt.engine.tiling`).
    """

    def __init__(self, weights=None, backend: str | None = None, device: str = "cpu", precision: str | None = None,
                 kernels: str | None = None, compile: bool = False, calibration=None, tile: str | None = None,
                 tile_overlap: int | None = None, **backend_options):
        from dainrt.engine import create_backend
        from dainrt.engine.backend import resolve_device
        from dainrt.engine.choice import choose_engine
        from dainrt.engine.tiling import make_runner, parse_tile
        from dainrt.model import DAIN

        self.choice = choose_engine(resolve_device(device), backend, precision, kernels, compile, calibration)
        tiles = parse_tile(tile, tile_overlap)
        model = weights if isinstance(weights, DAIN) else _load(weights)
        self.backend = create_backend(self.choice.backend, model, device, **self.choice.options, **backend_options)
        self.runner = make_runner(self.backend, tiles, model.config, self.choice.options)

    def close(self) -> None:
        """Release the backend (its sessions, engines and device memory); the object is done."""
        self.backend.close()

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
        from dainrt.engine import Runner
        from dainrt.runtime.transfer import to_tensor

        x0, x1 = (to_tensor(f).to(self.backend.device) for f in (frame0, frame1))
        # Ids 0 and 1 are reused across calls, so forget the previous call's pictures first.
        self.runner.clear()
        # The plain runner keeps the pair's results, so one t per call holds one output at a time;
        # tiles that keep nothing across calls get every t in one call (the pair once per tile).
        steps = [[t] for t in times] if isinstance(self.runner, Runner) else [times]
        for step in steps:
            for out in self.runner.interpolate(0, x0, 1, x1, step):
                yield out.clamp(0.0, 1.0).permute(1, 2, 0).float().cpu().numpy()


def _load(weights):
    from dainrt.model.checkpoint import load_model
    from dainrt.model.weights import resolve_weights

    return load_model(resolve_weights(weights), device="cpu")


def interpolate(
    frame0: np.ndarray,
    frame1: np.ndarray,
    times: Sequence[float] = (0.5,),
    weights: str | os.PathLike | None = None,
    backend: str | None = None,
    device: str = "cpu",
    **backend_options,
) -> list[np.ndarray]:
    """One-shot `Interpolator(weights, backend, device).interpolate(frame0, frame1, times)`."""
    return Interpolator(weights, backend, device, **backend_options).interpolate(frame0, frame1, times)
