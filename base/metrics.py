"""Picture quality: PSNR."""
from __future__ import annotations

import math

import numpy as np

from .images import PEAK

PSNR_CAP_DB = 999.0   # identical pictures: a finite stand-in for infinity, so JSON stays valid


def psnr(a, b, peak: float | None = None) -> float:
    """PSNR in dB of two pictures of the same shape (numpy arrays or torch tensors), over all
    their values: 10 log10(peak^2 / MSE), computed in float64.

    `peak` defaults to the value range of `a`'s type: 255 for uint8, 65535 for uint16, 1 for
    floats (pictures in [0,1]). Identical pictures give PSNR_CAP_DB.
    """
    if peak is None:
        peak = PEAK.get(str(a.dtype).removeprefix("torch."), 1.0)
    x, y = (_float64(v) for v in (a, b))
    if x.shape != y.shape:
        raise ValueError(f"psnr of different shapes: {x.shape} vs {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * math.log10(peak**2 / mse))


def _float64(v) -> np.ndarray:
    if hasattr(v, "detach"):                 # a torch tensor (torch is not imported here)
        v = v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=np.float64)
