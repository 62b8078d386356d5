"""Triton kernel for the adaptive warping layer (FilterInterpolation, docs/dain-spec.md §6.3).

One program per block of target pixels of one batch item (grid = (cdiv(H*W, BLOCK), B)). The
program computes each pixel's 16 tap addresses and weights once, as a (BLOCK, 16) tile, in
FP32, then loops over the channels: one gather of 16 taps per pixel and channel, a sum, a
store. Invalid targets (landing outside the image, |u| >= W/2, |v| >= H/2, NaN) copy the
co-located input pixel, as the official kernel does.

Kernel arguments are ordered inputs, int32 scalars, outputs: the order TensorRT's AOT plugin
launcher uses.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .pixels import load_flow, pixel_block

BLOCK = 128  # target pixels per program


@triton.jit
def adaptive_warp_kernel(image_ptr, flow_ptr, kernel_ptr, C, H, W, out_ptr, BLOCK: tl.constexpr):
    b, HW, offs, lane, y, x = pixel_block(H, W, BLOCK)
    xf = x.to(tl.float32)
    yf = y.to(tl.float32)
    u, v = load_flow(flow_ptr, b, HW, offs, lane)
    X = xf + u
    Y = yf + v
    Wf = W.to(tl.float32)
    Hf = H.to(tl.float32)
    valid = ((X >= 0.0) & (X <= Wf - 1.0) & (Y >= 0.0) & (Y <= Hf - 1.0)
             & (tl.abs(u) < Wf * 0.5) & (tl.abs(v) < Hf * 0.5))  # all False for NaN
    # Invalid pixels sample at their own position (finite, in range); the copy replaces it.
    X = tl.where(valid, X, xf)
    Y = tl.where(valid, Y, yf)
    x0f = tl.floor(X)
    y0f = tl.floor(Y)
    alpha = X - x0f
    beta = Y - y0f
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)

    tap = tl.arange(0, 16)
    tdy = tap // 4
    tdx = tap - tdy * 4
    cols = tl.minimum(tl.maximum(x0[:, None] - 1 + tdx[None, :], 0), W - 1)
    rows = tl.minimum(tl.maximum(y0[:, None] - 1 + tdy[None, :], 0), H - 1)
    index = rows * W + cols  # (BLOCK, 16), always inside the plane
    wx = tl.where(tdx[None, :] < 2, 1.0 - alpha[:, None], alpha[:, None])
    wy = tl.where(tdy[None, :] < 2, 1.0 - beta[:, None], beta[:, None])
    m2 = lane[:, None] & (tap[None, :] < 16)
    k = tl.load(kernel_ptr + b * 16 * HW + tap[None, :] * HW + offs[:, None], mask=m2, other=0.0)
    weight = wy * wx * k  # (BLOCK, 16) FP32

    for c in range(0, C):
        plane = (b * C + c) * HW
        sample = tl.load(image_ptr + plane + index, mask=m2, other=0.0)
        acc = tl.sum(sample * weight, axis=1)
        center = tl.load(image_ptr + plane + offs, mask=lane, other=0.0)
        tl.store(out_ptr + plane + offs, tl.where(valid, acc, center), mask=lane)
