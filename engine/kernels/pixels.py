"""What every dainrt kernel program starts with: its block of pixels of one batch item.

The grid is (cdiv(H*W, BLOCK), B): axis 0 walks blocks of flat pixel offsets of an (H, W)
plane, axis 1 the batch. Helpers are `triton.jit` functions, inlined into the kernels.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def pixel_block(H, W, BLOCK: tl.constexpr):
    """(b, HW, offs, lane, y, x): batch item (int64), plane size, flat offsets of this block,
    which of them are inside the plane, and their row and column (pixels)."""
    b = tl.program_id(1).to(tl.int64)
    HW = H * W
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    lane = offs < HW
    y = offs // W
    x = offs - y * W
    return b, HW, offs, lane, y, x


@triton.jit
def load_flow(flow_ptr, b, HW, offs, lane):
    """(u, v) at `offs` of batch item b of a (B, 2, H, W) FP32 flow, pixels (0 off the plane)."""
    u = tl.load(flow_ptr + b * 2 * HW + offs, mask=lane, other=0.0)
    v = tl.load(flow_ptr + b * 2 * HW + HW + offs, mask=lane, other=0.0)
    return u, v
