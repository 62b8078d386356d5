"""The adaptive warping layer as a compiled CPU kernel (Numba), for the torch backend on the CPU.

Why: the reference (`dainrt.model.ops.adaptive_warp`) is 16 whole-image gathers with an int64
index per element plus 16 multiply-adds, each a pass over (B,C,H,W) in memory. For the
context (C = 100 at width 0.5) that is memory traffic, not arithmetic: it was ~70 % of the warp
stage's time on the CPU (docs/architecture.md §4). This kernel computes each output row's 16
tap positions and weights once, then walks the channels with the taps in registers and cache, so
every source plane is read where the flow points and every output value is written once.

Same semantics as the reference (docs/dain-spec.md §6.3): the same float32 coordinates, weights
``(wy * wx) * k`` and tap order, so results agree to rounding (within 1e-6 of the reference; the
reference's vectorised multiply-add may fuse where this one does not). Inference only (no
autograd). Rows run in parallel on Numba's threads, as many as torch uses.

Numba's OpenMP threading layer resets the calling thread's OpenMP thread count to all cores when
it starts, and torch reads its own thread count from OpenMP: left alone, the first warp of a
process silently changed torch to every core (undoing the run's thread rule and a user's
`torch.set_num_threads`, and making a process's first frames differ in rounding from its later
ones). `adaptive_warp` puts torch's count back after each call.
"""
from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from dainrt.model.config import FILTER_SIZE

TAPS = FILTER_SIZE * FILTER_SIZE


@numba.njit(parallel=True, cache=True)
def _warp_rows(image, flow, kernel, out):  # pragma: no cover - compiled; covered through adaptive_warp
    B, C, H, W = image.shape
    one = np.float32(1.0)
    half = FILTER_SIZE // 2
    for row in numba.prange(B * H):
        b, y = row // H, row % H
        index = np.empty((W, TAPS), np.int64)
        weight = np.empty((W, TAPS), np.float32)
        valid = np.empty(W, np.bool_)
        for x in range(W):
            u, v = flow[b, 0, y, x], flow[b, 1, y, x]
            X, Y = np.float32(x) + u, np.float32(y) + v
            # False for NaN, as in the reference.
            valid[x] = (X >= 0) and (X <= W - 1) and (Y >= 0) and (Y <= H - 1) \
                and (abs(u) < W / 2) and (abs(v) < H / 2)
            if not valid[x]:
                continue
            x0, y0 = np.floor(X), np.floor(Y)
            a, bb = X - x0, Y - y0
            for dy in range(FILTER_SIZE):
                wy = (one - bb) if dy < half else bb
                r = min(max(int(y0) + dy + 1 - half, 0), H - 1)
                for dx in range(FILTER_SIZE):
                    wx = (one - a) if dx < half else a
                    c = min(max(int(x0) + dx + 1 - half, 0), W - 1)
                    tap = FILTER_SIZE * dy + dx
                    index[x, tap] = r * W + c
                    weight[x, tap] = (wy * wx) * kernel[b, tap, y, x]
        for ch in range(C):
            plane = image[b, ch].ravel()
            for x in range(W):
                if not valid[x]:
                    out[b, ch, y, x] = image[b, ch, y, x]
                    continue
                acc = plane[index[x, 0]] * weight[x, 0]
                for tap in range(1, TAPS):
                    acc = acc + plane[index[x, tap]] * weight[x, tap]
                out[b, ch, y, x] = acc


def adaptive_warp(image: Tensor, flow: Tensor, kernel: Tensor) -> Tensor:
    """`dainrt.model.ops.adaptive_warp` on CPU tensors: image (B,C,H,W), flow (B,2,H,W) pixels,
    kernel (B,16,H,W) -> (B,C,H,W) float32, contiguous. Inputs are never modified."""
    for name, t in (("image", image), ("flow", flow), ("kernel", kernel)):
        if t.device.type != "cpu":
            raise ValueError(f"{name} is on {t.device}: the numba kernels run on the CPU")
    B, C, H, W = image.shape
    if tuple(flow.shape) != (B, 2, H, W) or tuple(kernel.shape) != (B, TAPS, H, W):
        raise ValueError(f"adaptive_warp: image {tuple(image.shape)}, flow {tuple(flow.shape)} and kernel "
                         f"{tuple(kernel.shape)} do not match")
    arrays = [t.detach().to(torch.float32).contiguous().numpy() for t in (image, flow, kernel)]
    out = torch.empty((B, C, H, W), dtype=torch.float32)
    if out.numel():
        threads = torch.get_num_threads()
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        try:
            _warp_rows(*arrays, out.numpy())
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
    return out
