"""Depth-aware flow projection (the official `DepthFlowProjection` layer), docs/dain-spec.md §6.1.

Forward-splats a flow from the source frame to time t with inverse-depth weights, normalises, and
(at inference) fills the holes from their nearest non-hole neighbours. Everything is float32: the
splat coordinates lose integer precision in fp16 above 2048 px.

The hole search uses only CumSum / ScatterElements / GatherElements-shaped ops (no cummax, which
ONNX lacks), see docs/architecture.md §4.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _grid(n: int, dim: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """0..n-1 laid out along `dim` of a 4-D tensor (size 1 elsewhere)."""
    shape = [1, 1, 1, 1]
    shape[dim] = n
    return torch.arange(n, dtype=dtype, device=device).view(shape)


def splat(flow: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Equal-weight 2x2 forward splat of `-weight * flow`.

    Args:
        flow: (B, 2, H, W) flow (u, v) in pixels, already multiplied by t. Any float dtype.
        weight: (B, 1, H, W) inverse depth of the source pixel, > 0.

    Returns:
        (weighted_sum, weight_sum), float32: weighted_sum (B, 2, H, W) = sum over sources of
        ``-w * flow``, weight_sum S (B, 1, H, W) = sum of ``w``. A source q = (x, y) lands at
        X = x + u, Y = y + v, is kept iff 0 <= X <= W-1 and 0 <= Y <= H-1 (NaN/inf rejected) and
        adds its full weight to the 4 pixels (xL|xR, yT|yB), xL = floor(X), xR = min(xL+1, W-1)
        (likewise rows), so a landing exactly on the last column/row counts twice there.
    """
    flow = flow.float()
    weight = weight.float()
    B, _, H, W = flow.shape
    u, v = flow[:, 0:1], flow[:, 1:2]
    X = _grid(W, 3, flow.dtype, flow.device) + u
    Y = _grid(H, 2, flow.dtype, flow.device) + v
    ok = (X >= 0) & (X <= W - 1) & (Y >= 0) & (Y <= H - 1)  # False for NaN
    # Rejected sources get a harmless coordinate, then their values go to a spare slot H*W.
    xl = torch.where(ok, X, 0.0).long()  # truncation == floor, X >= 0
    yt = torch.where(ok, Y, 0.0).long()
    xr = (xl + 1).clamp(max=W - 1)
    yb = (yt + 1).clamp(max=H - 1)
    spare = H * W
    corners = [torch.where(ok, yy * W + xx, spare) for yy in (yt, yb) for xx in (xl, xr)]
    index = torch.cat([c.flatten(2) for c in corners], dim=2).expand(B, 3, 4 * H * W)

    values = torch.cat([-weight * u, -weight * v, weight], dim=1)
    values = torch.where(ok, values, 0.0).flatten(2).repeat(1, 1, 4)  # (B, 3, 4*H*W)
    acc = values.new_zeros(B, 3, H * W + 1).scatter_add(2, index, values)
    acc = acc[:, :, :spare].reshape(B, 3, H, W)
    return acc[:, :2], acc[:, 2:]


def _nearest_valid(valid: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Nearest valid pixel along `dim` on each side of every INVALID pixel.

    Args:
        valid: (B, 1, H, W) bool.
        dim: 2 (columns: up/down) or 3 (rows: left/right).

    Returns:
        (before, has_before, after, has_after): int64 positions along `dim` of the nearest valid
        pixel before / after, and bool masks saying whether one exists. Meaningful only where
        `valid` is False (at a valid pixel "before" is the pixel itself).
    """
    n = valid.shape[dim]
    pos = _grid(n, dim, torch.long, valid.device).expand_as(valid)
    rank = torch.cumsum(valid.long(), dim)  # number of valid pixels at or before each position
    total = rank.narrow(dim, n - 1, 1)
    # table[r] = position of the r-th valid pixel (0-based). Invalid pixels write to spare slots
    # n + pos so that no slot is written twice; the table is 2n long.
    slot = torch.where(valid, rank - 1, pos + n)
    table = torch.cat([torch.zeros_like(pos), torch.zeros_like(pos)], dim).scatter(dim, slot, pos)
    # At an invalid pixel, `rank` valid pixels lie strictly before it: the nearest one before is
    # the (rank-1)-th, the nearest one after is the rank-th.
    before = table.gather(dim, (rank - 1).clamp(min=0))
    after = table.gather(dim, rank)
    return before, rank > 0, after, rank < total


def fill_holes(projected: Tensor, weight_sum: Tensor) -> Tensor:
    """Replace every hole by the unweighted mean of its nearest non-holes left, right, up, down.

    Args:
        projected: (B, C, H, W) float32 normalised flow (pixels), 0 in the holes. C is 2 in DAIN.
        weight_sum: (B, 1, H, W) splat weight sum S; a hole is S <= 0.

    Returns:
        (B, C, H, W) float32. Non-holes unchanged. Each scan stops at the border; a hole whose
        four scans all fail stays 0. The mean is not distance weighted and not iterative (holes
        read only non-holes).
    """
    projected = projected.float()
    valid = weight_sum > 0
    C = projected.shape[1]
    total = torch.zeros_like(projected)
    count = torch.zeros_like(weight_sum, dtype=projected.dtype)
    for dim in (3, 2):  # left, right, then up, down (the kernel's order)
        before, has_before, after, has_after = _nearest_valid(valid, dim)
        for index, found in ((before, has_before), (after, has_after)):
            picked = projected.gather(dim, index.expand(-1, C, -1, -1))
            total = total + torch.where(found, picked, 0.0)
            count = count + found.to(count.dtype)
    return torch.where(valid, projected, total / count.clamp(min=1.0))


def depth_flow_projection(flow: Tensor, weight: Tensor, fill: bool = True) -> Tensor:
    """Project a forward flow to time t: ``Ft0(p) = -sum_q w(q) F(q) / sum_q w(q)``.

    Args:
        flow: (B, 2, H, W) source-frame flow in pixels, already multiplied by t (e.g. t * F01).
        weight: (B, 1, H, W) inverse depth of the source frame, > 0 (``1e-6 + exp(-logD)``,
            computed in float32).
        fill: fill the holes (the official layer does so only when grad is disabled, i.e. at
            inference; pass ``not torch.is_grad_enabled()`` to reproduce that).

    Returns:
        (B, 2, H, W) float32 flow from time t to the source frame, in pixels. Holes (no source
        lands within a pixel's 2x2 footprint) are 0 without fill.
    """
    weighted_sum, weight_sum = splat(flow, weight)
    has = weight_sum > 0
    projected = torch.where(has, weighted_sum / torch.where(has, weight_sum, 1.0), 0.0)
    return fill_holes(projected, weight_sum) if fill else projected
