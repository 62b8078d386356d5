"""Adaptive warping layer (the official `FilterInterpolation` layer), docs/dain-spec.md §6.3.

Backward warp with a per-target-pixel 4x4 kernel on top of bilinear quadrant weights. Written as
16 gathers over flattened H*W indices, accumulated tap by tap so that memory stays at a few
(B, C, H, W) tensors even for the 196-channel context at 1080p.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..config import FILTER_SIZE


def adaptive_warp(image: Tensor, flow: Tensor, kernel: Tensor) -> Tensor:
    """Warp `image` along `flow`, filtering each sample with its own 4x4 kernel.

    Args:
        image: (B, C, H, W) any C (3 for frames, 196 for context), any float dtype.
        flow: (B, 2, H, W) target -> source flow (u, v) in pixels (the projected flow).
        kernel: (B, 16, H, W) raw (unnormalised, possibly negative) 4x4 kernels, row-major:
            tap (dy, dx) is channel 4*dy + dx, read at the target pixel.

    Returns:
        (B, C, H, W) float32. For target p = (x, y), X = x + u, Y = y + v: valid iff
        0 <= X <= W-1, 0 <= Y <= H-1, |u| < W/2 and |v| < H/2 (NaN invalid). Invalid pixels copy
        image(p). Otherwise, with x0 = floor(X), a = X - x0 (likewise y0, b),
        ``out = sum_{dy,dx} wy(dy) wx(dx) k[4dy+dx](p) image(clamp(y0-1+dy), clamp(x0-1+dx))``,
        wx = (1-a, 1-a, a, a), wy = (1-b, 1-b, b, b), taps clamped to the border.
    """
    B, C, H, W = image.shape
    flat = image.float().reshape(B, C, H * W)
    flow = flow.float()
    kernel = kernel.float()
    u, v = flow[:, 0:1], flow[:, 1:2]
    xs = torch.arange(W, dtype=torch.float32, device=flow.device).view(1, 1, 1, W)
    ys = torch.arange(H, dtype=torch.float32, device=flow.device).view(1, 1, H, 1)
    X, Y = xs + u, ys + v
    valid = ((X >= 0) & (X <= W - 1) & (Y >= 0) & (Y <= H - 1)
             & (u.abs() < W / 2) & (v.abs() < H / 2))  # all False for NaN
    # Invalid pixels sample at their own position; the result is replaced by the copy below.
    X = torch.where(valid, X, xs)
    Y = torch.where(valid, Y, ys)
    x0, y0 = X.floor(), Y.floor()
    a, b = X - x0, Y - y0
    wx = (1 - a, 1 - a, a, a)
    wy = (1 - b, 1 - b, b, b)
    half = FILTER_SIZE // 2
    cols = [(x0.long() + (dx + 1 - half)).clamp(0, W - 1) for dx in range(FILTER_SIZE)]
    rows = [(y0.long() + (dy + 1 - half)).clamp(0, H - 1) * W for dy in range(FILTER_SIZE)]

    out = None
    for dy in range(FILTER_SIZE):
        for dx in range(FILTER_SIZE):
            tap = FILTER_SIZE * dy + dx
            index = (rows[dy] + cols[dx]).reshape(B, 1, H * W).expand(B, C, H * W)
            w = (wy[dy] * wx[dx] * kernel[:, tap:tap + 1]).reshape(B, 1, H * W)
            sample = flat.gather(2, index)
            # out is our own buffer: accumulating in place keeps one (B, C, H*W) temporary.
            out = sample * w if out is None else out.addcmul_(sample, w)
    out = out.reshape(B, C, H, W)
    return torch.where(valid, out, flat.reshape(B, C, H, W))
