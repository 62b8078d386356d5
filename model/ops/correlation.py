"""PWC-Net cost volume (the official `Correlation` layer), docs/dain-spec.md §6.4.

Parameters fixed as in PWC: kernel 1, strides 1, pad = max displacement, so the output keeps the
input's spatial size. Written as pad + shifted slices + multiply + channel mean: standard ops only
(Pad, Slice, Mul, ReduceMean once exported), no data-dependent control flow, dynamic h and w.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def correlation(f1: Tensor, f2: Tensor, max_displacement: int = 4) -> Tensor:
    """Cost volume between two feature maps.

    Args:
        f1, f2: (B, C, h, w) features of the same shape, any float dtype.
        max_displacement: d, in pixels of the feature grid; displacements dy, dx in [-d, d].

    Returns:
        (B, (2d+1)^2, h, w) in the input dtype, with
        ``out[:, (dy+d)*(2d+1) + (dx+d), y, x] = (1/C) * sum_c f1[:, c, y, x] * f2[:, c, y+dy, x+dx]``
        (f2 is zero outside the map). dy, the vertical offset, is the outer index. Products and
        sums are float32 even for half inputs, as in the CUDA kernel. No LeakyReLU (PWC applies it).
    """
    d = int(max_displacement)
    h, w = f1.shape[-2], f1.shape[-1]
    a = f1.float()
    b = F.pad(f2.float(), (d, d, d, d))  # zeros outside the map
    planes = [
        (a * b[:, :, dy:dy + h, dx:dx + w]).mean(dim=1)
        for dy in range(2 * d + 1)  # outer index: vertical offset
        for dx in range(2 * d + 1)
    ]
    return torch.stack(planes, dim=1).to(f1.dtype)
