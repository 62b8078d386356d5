"""Slow per-pixel loop transcriptions of docs/dain-spec.md §6.1, §6.3 and §6.4.

Test-only, for tiny inputs: numpy arrays in, numpy float32 arrays out, scalar float32 arithmetic
in the order the CUDA kernels use. They are deliberately naive so that they can be checked
against the spec line by line; the vectorised ops in `dainrt.model.ops` are tested against them.
"""
from __future__ import annotations

import numpy as np

f32 = np.float32


def dfp_reference(flow, weight, fill=True):
    """DepthFlowProjection (§6.1). flow (B,2,H,W), weight (B,1,H,W). Returns (out, S)."""
    B, _, H, W = flow.shape
    N = np.zeros((B, 2, H, W), f32)
    S = np.zeros((B, 1, H, W), f32)
    for b in range(B):
        for y in range(H):
            for x in range(W):
                u, v, w = flow[b, 0, y, x], flow[b, 1, y, x], weight[b, 0, y, x]
                X, Y = f32(x) + u, f32(y) + v
                if not (0 <= X <= W - 1 and 0 <= Y <= H - 1):  # NaN fails too
                    continue
                xl, yt = int(X), int(Y)
                xr, yb = min(xl + 1, W - 1), min(yt + 1, H - 1)
                for yy, xx in ((yt, xl), (yt, xr), (yb, xl), (yb, xr)):
                    S[b, 0, yy, xx] += w
                    N[b, 0, yy, xx] += -w * u
                    N[b, 1, yy, xx] += -w * v

    P = np.zeros((B, 2, H, W), f32)
    for b in range(B):
        for y in range(H):
            for x in range(W):
                if S[b, 0, y, x] > 0:
                    P[b, :, y, x] = N[b, :, y, x] / S[b, 0, y, x]
    if not fill:
        return P, S

    out = P.copy()
    for b in range(B):
        for y in range(H):
            for x in range(W):
                if S[b, 0, y, x] > 0:
                    continue
                found = []
                for dy, dx in ((0, -1), (0, 1), (-1, 0), (1, 0)):  # left, right, up, down
                    yy, xx = y + dy, x + dx
                    while 0 <= yy < H and 0 <= xx < W:
                        if S[b, 0, yy, xx] > 0:
                            found.append((yy, xx))
                            break
                        yy, xx = yy + dy, xx + dx
                if not found:
                    continue
                for c in range(2):
                    total = f32(0)
                    for yy, xx in found:
                        total += P[b, c, yy, xx]
                    out[b, c, y, x] = total / f32(len(found))
    return out, S


def aw_reference(image, flow, kernel):
    """FilterInterpolation / adaptive warp (§6.3). image (B,C,H,W), flow (B,2,H,W) target ->
    source, kernel (B,16,H,W). Returns (B,C,H,W) float32."""
    B, C, H, W = image.shape
    out = np.zeros((B, C, H, W), f32)
    for b in range(B):
        for y in range(H):
            for x in range(W):
                u, v = flow[b, 0, y, x], flow[b, 1, y, x]
                X, Y = f32(x) + u, f32(y) + v
                if not (0 <= X <= W - 1 and 0 <= Y <= H - 1 and abs(u) < W / 2 and abs(v) < H / 2):
                    out[b, :, y, x] = image[b, :, y, x]  # identity copy, not zero
                    continue
                x0, y0 = int(X), int(Y)
                alpha, beta = X - f32(x0), Y - f32(y0)
                for c in range(C):
                    quad = np.zeros((2, 2), f32)  # TL, TR / BL, BR partial sums
                    for dy in range(4):
                        for dx in range(4):
                            yy = min(max(y0 - 1 + dy, 0), H - 1)
                            xx = min(max(x0 - 1 + dx, 0), W - 1)
                            quad[dy // 2, dx // 2] += kernel[b, 4 * dy + dx, y, x] * image[b, c, yy, xx]
                    out[b, c, y, x] = ((1 - alpha) * (1 - beta) * quad[0, 0] + alpha * (1 - beta) * quad[0, 1]
                                       + (1 - alpha) * beta * quad[1, 0] + alpha * beta * quad[1, 1])
    return out


def corr_reference(f1, f2, max_displacement=4):
    """PWC correlation (§6.4), kernel 1, strides 1. f1, f2 (B,C,h,w). Returns (B,(2d+1)^2,h,w)."""
    d = max_displacement
    B, C, h, w = f1.shape
    out = np.zeros((B, (2 * d + 1) ** 2, h, w), f32)
    for b in range(B):
        for y in range(h):
            for x in range(w):
                for dy in range(-d, d + 1):
                    for dx in range(-d, d + 1):
                        yy, xx = y + dy, x + dx
                        if not (0 <= yy < h and 0 <= xx < w):
                            continue  # f2 is zero outside the map
                        total = f32(0)
                        for c in range(C):
                            total += f32(f1[b, c, y, x]) * f32(f2[b, c, yy, xx])
                        out[b, (dy + d) * (2 * d + 1) + (dx + d), y, x] = total / f32(C)
    return out
