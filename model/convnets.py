"""The plain convolutional sub-networks of DAIN: context (docs/dain-spec.md §5.3), kernel estimation (§5.4)
and rectify (§5.5). Module and attribute names follow the official state-dict keys."""
from __future__ import annotations

import torch
from torch import nn

from .config import FILTER_SIZE, ModelConfig


class BasicBlock(nn.Module):
    """Residual block without bias or BN: relu(conv2(relu(conv1(x))) + x); conv1 may be dilated."""

    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


class ContextNet(nn.Module):
    """S2DF_3dense: (B,3,H,W) RGB -> cat(image, a1, a2, a3) (B, 3+3*c64, H, W) at full resolution."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        c64 = config.ch(64)
        self.block1 = nn.Sequential(nn.Conv2d(3, c64, 7, padding=3, bias=False), nn.ReLU())
        self.block2 = BasicBlock(c64, dilation=4)
        self.block3 = BasicBlock(c64, dilation=8)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        a1 = self.block1(image)
        a2 = self.block2(a1)
        a3 = self.block3(a2)
        return torch.cat((image, a1, a2, a3), dim=1)


class RectifyNet(nn.Module):
    """MultipleBasicBlock_4: the frame-synthesis net, (B,437,H,W) -> residual (B,3,H,W)."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        mid = config.ch(128)
        self.block1 = nn.Sequential(nn.Conv2d(config.rectify_channels, mid, 7, padding=3), nn.ReLU())
        self.block2 = BasicBlock(mid)
        self.block3 = BasicBlock(mid)
        self.block4 = BasicBlock(mid)
        self.block5 = nn.Sequential(nn.Conv2d(mid, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block5(self.block4(self.block3(self.block2(self.block1(x)))))


def kernel_trunk(config: ModelConfig = ModelConfig()) -> nn.ModuleList:
    """`initScaleNets_filter`: a flat list of 34 layers (U-Net with additive skips, see
    `run_kernel_net`). Input cat(I0, I1) (B,6,H,W), H and W divisible by 32; output (B,c16,H,W)."""
    c = config.ch
    down = [c(16), c(32), c(64), c(128), c(256), c(512)]
    layers: list[nn.Module] = [nn.Conv2d(6, down[0], 3, padding=1), nn.ReLU(), nn.Conv2d(down[0], down[1], 3, padding=1), nn.ReLU()]
    for cin, cout in zip(down[1:], down[2:] + [c(512)]):
        layers += [nn.MaxPool2d(2), nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
    up = [c(512), c(256), c(128), c(64), c(32), c(16)]
    for cin, cout in zip(up[:-1], up[1:]):
        layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
    return nn.ModuleList(layers)


def kernel_head(config: ModelConfig = ModelConfig()) -> nn.ModuleList:
    """`initScaleNets_filter1/2`: conv, ReLU, conv -> 16 raw (unnormalised) kernel taps per pixel."""
    c16 = config.ch(16)
    return nn.ModuleList([nn.Conv2d(c16, c16, 3, padding=1), nn.ReLU(), nn.Conv2d(c16, FILTER_SIZE**2, 3, padding=1)])


def run_kernel_net(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """Run a kernel-net layer list. The input of every max-pool is pushed on a stack and popped
    and added right after every upsample: the skips live in this loop, not in the weights."""
    stack = []
    for layer in layers:
        if isinstance(layer, nn.MaxPool2d):
            stack.append(x)
        x = layer(x)
        if isinstance(layer, nn.Upsample):
            x = x + stack.pop()
    return x
