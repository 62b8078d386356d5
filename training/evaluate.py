"""Evaluation on folders in the Middlebury layout: frame10.png, frame11.png -> frame10i11.png.

Metrics on the 8-bit RGB output (the model's frame rounded as `dainrt interpolate` writes it)
against the 8-bit ground truth, over all pixels and the three channels:

* PSNR = 10 log10(255^2 / MSE) in dB;
* SSIM with the usual constants (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, L 255),
  per channel over the window positions that fit inside the image, averaged over channels.

The baseline is the plain 50/50 blend of the two frames in 8 bits with halves rounded up, as
ffmpeg's blend (the team's ffmpeg 5.1 figures: 38.48 / 32.54 / 25.06 dB on RubberWhale / Dimetrodon /
Venus, mean 32.03).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dainrt.base.errors import DainrtError
from dainrt.base.metrics import psnr

FRAME0, FRAME1, MIDDLE = "frame10.png", "frame11.png", "frame10i11.png"


class Result(NamedTuple):
    name: str
    psnr: float
    ssim: float
    blend_psnr: float
    blend_ssim: float


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two HxWx3 uint8 arrays (see the module docstring)."""
    x = torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1).unsqueeze(1)   # (3,1,H,W)
    y = torch.from_numpy(b.astype(np.float64)).permute(2, 0, 1).unsqueeze(1)
    r = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]

    def blur(z):
        return F.conv2d(z, win)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def find_sequences(root: str | os.PathLike) -> list[Path]:
    """`root` itself if it holds the three frames, else its sub-folders that do (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise DainrtError(f"not a folder: {root}")

    def complete(d: Path) -> bool:
        return all((d / f).is_file() for f in (FRAME0, FRAME1, MIDDLE))

    if complete(root):
        return [root]
    found = sorted(d for d in root.iterdir() if d.is_dir() and complete(d))
    if not found:
        raise DainrtError(f"no sequence folders with {FRAME0}, {FRAME1} and {MIDDLE} in {root}")
    return found


def check_sizes(sequences: Sequence[Path]) -> None:
    """One line naming the first sequence whose three pictures differ in size, before any model work."""
    from PIL import Image, UnidentifiedImageError

    for d in sequences:
        sizes = {}
        for f in (FRAME0, FRAME1, MIDDLE):
            try:
                with Image.open(d / f) as img:
                    sizes[f] = img.size
            except (UnidentifiedImageError, OSError) as err:
                raise DainrtError(f"cannot read {d / f}: not a picture Pillow understands ({err})") from None
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{f} {w}x{h}" for f, (w, h) in sizes.items())
            raise DainrtError(f"{d}: the pictures differ in size ({shown}); the ground truth must match the frames")


def evaluate(sequences: Sequence[Path], interpolator) -> list[Result]:
    """Interpolate t = 0.5 for each sequence with `interpolator` (a `dainrt.Interpolator`)."""
    from dainrt.base.images import read_image, to_dtype

    check_sizes(sequences)
    results = []
    for d in sequences:
        f0, f1, gt = (read_image(d / f) for f in (FRAME0, FRAME1, MIDDLE))
        if not (f0.dtype == f1.dtype == gt.dtype == np.uint8):
            raise DainrtError(f"{d}: evaluation needs 8-bit pictures")
        (mid,) = interpolator.interpolate(f0, f1, [0.5])
        out = to_dtype(mid, np.uint8)
        blend = ((f0.astype(np.uint16) + f1 + 1) // 2).astype(np.uint8)     # halves round up, as ffmpeg
        results.append(Result(d.name, psnr(out, gt), ssim(out, gt), psnr(blend, gt), ssim(blend, gt)))
    return results


def mean(results: Sequence[Result]) -> Result:
    return Result("mean", *(float(np.mean([getattr(r, k) for r in results])) for k in Result._fields[1:]))


def format_table(results: Sequence[Result]) -> str:
    """Per-sequence rows and the mean, PSNR with 2 decimals and SSIM with 4."""
    rows = list(results) + ([mean(results)] if len(results) > 1 else [])
    width = max(8, *(len(r.name) for r in rows))
    lines = [f"{'sequence':<{width}}  {'PSNR':>6}  {'SSIM':>6}  {'blend PSNR':>10}  {'blend SSIM':>10}"]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.psnr:6.2f}  {r.ssim:6.4f}  {r.blend_psnr:10.2f}  {r.blend_ssim:10.4f}")
    return "\n".join(lines)
