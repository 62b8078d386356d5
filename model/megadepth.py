"""MegaDepth "HourGlass": single-image log-depth (docs/dain-spec.md §5.2).

The official network is a Torch7 translation built from nested containers, so its state-dict
keys are numeric paths (`depthNet.3.0.0.3.0.0.1.2.3.weight`). The classes here rebuild exactly
that nesting; only `forward` is ours. Input: RGB in [0,1], (B,3,H,W), H and W divisible by 16.
Output: log-depth (B,1,H,W), no activation.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


class Inception(nn.Module):
    """Parallel branches on one input, concatenated along channels in branch order.

    Branch 0 is 1x1 conv -> BN -> ReLU; the others are 1x1 conv -> BN -> ReLU -> kxk conv -> BN
    -> ReLU. BatchNorms have no affine parameters (running statistics only). The branches are the
    module's direct children "0".."3", as in the official keys.
    """

    def __init__(self, cin: int, out0: int, branches: list[tuple[int, int, int]]):
        super().__init__()
        self.add_module("0", nn.Sequential(nn.Conv2d(cin, out0, 1), nn.BatchNorm2d(out0, affine=False), nn.ReLU()))
        for i, (k, mid, out) in enumerate(branches, start=1):
            self.add_module(str(i), nn.Sequential(
                nn.Conv2d(cin, mid, 1), nn.BatchNorm2d(mid, affine=False), nn.ReLU(),
                nn.Conv2d(mid, out, k, padding=(k - 1) // 2), nn.BatchNorm2d(out, affine=False), nn.ReLU(),
            ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.children()], dim=1)


class ParallelSum(nn.Module):
    """Two sub-networks on the same input, summed (Torch7's ConcatTable followed by CAddTable)."""

    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.add_module("0", a)
        self.add_module("1", b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.children()
        return a(x) + b(x)


def _up() -> nn.Module:
    return nn.UpsamplingNearest2d(scale_factor=2)


def _seq(*mods: nn.Module) -> nn.Sequential:
    return nn.Sequential(*mods)


class MegaDepth(nn.Sequential):
    """The hourglass, children [0] conv 7x7, [1] BN, [2] ReLU, [3] the nested hourglass, [4] conv 3x3."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        c = config.ch
        # The four inception flavours of the official net, at width-scaled channel counts.
        def inc_a(cin, o):      # 1x1 | 3x3 | 5x5 | 7x7 with `c(32)`-wide reductions
            return Inception(cin, o, [(3, c(32), o), (5, c(32), o), (7, c(32), o)])

        def inc_b(cin, o, r):   # 1x1 | 3x3 | 7x7 | 11x11 with r-wide reductions
            return Inception(cin, o, [(3, r, o), (7, r, o), (11, r, o)])

        c128, c256 = 4 * c(32), 4 * c(64)
        sixteenth = _seq(nn.AvgPool2d(2), inc_a(c256, c(64)), inc_a(c256, c(64)), inc_a(c256, c(64)), _up())
        eighth = _seq(
            nn.AvgPool2d(2), inc_a(c256, c(64)), inc_a(c256, c(64)),
            _seq(ParallelSum(_seq(inc_a(c256, c(64)), inc_a(c256, c(64))), sixteenth)),
            inc_a(c256, c(64)), inc_b(c256, c(64), c(64)), _up(),
        )
        quarter = _seq(
            nn.MaxPool2d(2), inc_a(c128, c(32)), inc_a(c128, c(64)),
            _seq(ParallelSum(_seq(inc_a(c256, c(64)), inc_b(c256, c(64), c(64))), eighth)),
            inc_a(c256, c(64)), inc_a(c256, c(32)), _up(),
        )
        half = _seq(
            nn.MaxPool2d(2), inc_a(c128, c(32)), inc_a(c128, c(32)),
            _seq(ParallelSum(quarter, _seq(inc_a(c128, c(32)), inc_b(c128, c(32), c(64))))),
            Inception(c128, c(32), [(3, c(64), c(32)), (5, c(64), c(32)), (7, c(64), c(32))]),
            inc_b(c128, c(16), c(32)), _up(),
        )
        full = _seq(inc_b(c128, c(16), c(64)))
        super().__init__(
            nn.Conv2d(3, c128, 7, padding=3), nn.BatchNorm2d(c128), nn.ReLU(),
            _seq(ParallelSum(half, full)),
            nn.Conv2d(4 * c(16), 1, 3, padding=1),
        )
