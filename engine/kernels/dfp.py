"""Triton kernels for the depth-aware flow projection (docs/dain-spec.md §6.1).

Two passes over a (B, H, W) grid, one program per block of pixels of one batch item
(grid = (cdiv(H*W, BLOCK), B)):

1. `dfp_splat_kernel`: every source pixel that lands inside the image adds ``-w*u``, ``-w*v``
   and ``w`` to the 2x2 block of targets (xL|xR, yT|yB) with FP32 `tl.atomic_add` into zeroed
   buffers `num` (B,2,H,W) and `den` (B,1,H,W). Sources whose landing point fails
   ``0 <= X <= W-1 and 0 <= Y <= H-1`` (NaN and inf included) add nothing, and their
   coordinates are never turned into addresses.
2. `dfp_fill_kernel`: normalises (``P = num/den`` where ``den > 0``, else a hole) and, with
   FILL, replaces every hole by the unweighted mean of P at the nearest non-hole to the left,
   right, above and below. Each scan is a loop bounded by the row/column length that stops as
   soon as every lane of the block has found its pixel or met the border: it cannot hang,
   whatever the flow was (the first dain-ncnn-vulkan projection kernel did, on large flows).

Kernel arguments are ordered inputs, int32 scalars, outputs: the order TensorRT's AOT plugin
launcher uses. This module needs triton; `dainrt.engine.kernels` imports it lazily.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pixels import load_flow, pixel_block

BLOCK = 256  # pixels per program


@triton.jit
def dfp_splat_kernel(flow_ptr, weight_ptr, H, W, num_ptr, den_ptr, BLOCK: tl.constexpr):
    b, HW, offs, lane, y, x = pixel_block(H, W, BLOCK)
    u, v = load_flow(flow_ptr, b, HW, offs, lane)
    w = tl.load(weight_ptr + b * HW + offs, mask=lane, other=0.0)
    X = x.to(tl.float32) + u
    Y = y.to(tl.float32) + v
    # Comparisons with NaN are false, so NaN/inf landings are rejected here.
    ok = lane & (X >= 0.0) & (X <= (W - 1).to(tl.float32)) & (Y >= 0.0) & (Y <= (H - 1).to(tl.float32))
    # Rejected sources get coordinate 0 (never used: every add below is masked by `ok`).
    xl = tl.where(ok, X, 0.0).to(tl.int32)  # truncation == floor since X >= 0
    yt = tl.where(ok, Y, 0.0).to(tl.int32)
    xr = tl.minimum(xl + 1, W - 1)
    yb = tl.minimum(yt + 1, H - 1)
    nu = -w * u
    nv = -w * v
    num = num_ptr + b * 2 * HW
    den = den_ptr + b * HW
    for corner in tl.static_range(4):
        if corner == 0:
            idx = yt * W + xl
        elif corner == 1:
            idx = yt * W + xr
        elif corner == 2:
            idx = yb * W + xl
        else:
            idx = yb * W + xr
        tl.atomic_add(num + idx, nu, mask=ok, sem="relaxed")
        tl.atomic_add(num + HW + idx, nv, mask=ok, sem="relaxed")
        tl.atomic_add(den + idx, w, mask=ok, sem="relaxed")


@triton.jit
def _nearest_valid(num, den, HW, offs, pos, n, stride, direction, todo, NORMALISE: tl.constexpr):
    """For the lanes in `todo`, the nearest pixel with den > 0 along one direction.

    `pos` is each lane's position along the scanned axis (x or y), `n` the axis length,
    `stride` the linear step (1 or W), `direction` -1 or +1. Returns (found, P_u, P_v) with P
    the flow at the found pixel: num/den when NORMALISE, else num as it is. At most n-1
    iterations; the loop ends as soon as no lane of the block is still searching.
    """
    found = offs < 0  # all False, same shape as offs
    hit = offs
    k = 1
    nxt = pos + direction
    active = todo & (nxt >= 0) & (nxt < n)
    while (k < n) & (tl.max(active.to(tl.int32), axis=0) > 0):
        q = offs + direction * k * stride
        s = tl.load(den + q, mask=active, other=0.0)
        now = active & (s > 0.0)
        hit = tl.where(now, q, hit)
        found = found | now
        k += 1
        nxt = pos + direction * k
        active = active & (~now) & (nxt >= 0) & (nxt < n)
    pu = tl.load(num + hit, mask=found, other=0.0)
    pv = tl.load(num + HW + hit, mask=found, other=0.0)
    if NORMALISE:
        s = tl.load(den + hit, mask=found, other=1.0)
        pu = pu / s
        pv = pv / s
    return found, pu, pv


@triton.jit
def dfp_fill_kernel(num_ptr, den_ptr, H, W, out_ptr, NORMALISE: tl.constexpr, FILL: tl.constexpr,
                    BLOCK: tl.constexpr):
    """out = num/den where den > 0 (or num itself when not NORMALISE); holes 0 or filled."""
    b, HW, offs, lane, y, x = pixel_block(H, W, BLOCK)
    num = num_ptr + b * 2 * HW
    den = den_ptr + b * HW
    nu = tl.load(num + offs, mask=lane, other=0.0)
    nv = tl.load(num + HW + offs, mask=lane, other=0.0)
    s = tl.load(den + offs, mask=lane, other=0.0)
    valid = s > 0.0
    if NORMALISE:
        s_safe = tl.where(valid, s, 1.0)
        pu = tl.where(valid, nu / s_safe, 0.0)
        pv = tl.where(valid, nv / s_safe, 0.0)
    else:
        pu = nu
        pv = nv
    if FILL:
        hole = lane & (~valid)
        tot_u = tl.zeros_like(pu)
        tot_v = tl.zeros_like(pv)
        cnt = tl.zeros_like(pu)
        if tl.max(hole.to(tl.int32), axis=0) > 0:
            # left, right, up, down: the order the reference sums in
            for d in tl.static_range(4):
                if d == 0:
                    f, qu, qv = _nearest_valid(num, den, HW, offs, x, W, 1, -1, hole, NORMALISE)
                elif d == 1:
                    f, qu, qv = _nearest_valid(num, den, HW, offs, x, W, 1, 1, hole, NORMALISE)
                elif d == 2:
                    f, qu, qv = _nearest_valid(num, den, HW, offs, y, H, W, -1, hole, NORMALISE)
                else:
                    f, qu, qv = _nearest_valid(num, den, HW, offs, y, H, W, 1, hole, NORMALISE)
                tot_u += tl.where(f, qu, 0.0)
                tot_v += tl.where(f, qv, 0.0)
                cnt += f.to(tl.float32)
        pu = tl.where(valid, pu, tot_u / tl.maximum(cnt, 1.0))
        pv = tl.where(valid, pv, tot_v / tl.maximum(cnt, 1.0))
    out = out_ptr + b * 2 * HW
    tl.store(out + offs, pu, mask=lane)
    tl.store(out + HW + offs, pv, mask=lane)
