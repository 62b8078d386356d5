"""PWC-DC-Net optical flow, as fine-tuned inside DAIN (docs/dain-spec.md §5.1).

Split in two for streaming: `pyramid(image)` depends on one frame (computed once per video
frame), `decode(feats_a, feats_b)` on an ordered pair. `forward(cat(Ia, Ib))` is the official
call. Flow units: the decoder predicts flow / 20 in quarter-resolution grid cells; multiplying
by 20 gives full-resolution pixels (channel 0 = u, right; channel 1 = v, down).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MAX_DISPLACEMENT, ModelConfig
from .ops import correlation

CORR_CHANNELS = (2 * MAX_DISPLACEMENT + 1) ** 2


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 conv with bias + LeakyReLU(0.1); the `.0` in the official keys is the conv."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation), nn.LeakyReLU(0.1))


def _deconv(cin: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, 2, 4, 2, 1)


def warp_features(feat: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp `feat` (B,C,h,w) by `flow` (B,2,h,w) in level pixels, PWC style.

    The official code normalises with `2p/max(W-1,1) - 1` and relied on PyTorch 1.0's
    grid_sample, i.e. align_corners=True; samples whose bilinear footprint leaves the map are
    zeroed by a validity mask (grid-sampled ones below 0.9999). Arithmetic order kept as official.
    """
    b, _, h, w = feat.shape
    ys = torch.arange(h, device=feat.device, dtype=torch.float32).view(1, h, 1).expand(b, h, w)
    xs = torch.arange(w, device=feat.device, dtype=torch.float32).view(1, 1, w).expand(b, h, w)
    gx = 2.0 * (xs + flow[:, 0].float()) / max(w - 1, 1) - 1.0
    gy = 2.0 * (ys + flow[:, 1].float()) / max(h - 1, 1) - 1.0
    grid = torch.stack((gx, gy), dim=3)
    out = F.grid_sample(feat.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    ones = torch.ones((b, 1, h, w), device=feat.device, dtype=torch.float32)
    mask = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    mask = (mask >= 0.9999).to(out.dtype)
    return (out * mask).to(feat.dtype)


class PWCDCNet(nn.Module):
    """Feature pyramid (6 levels) plus coarse-to-fine decoders with dense blocks and context net."""

    LEVELS = (6, 5, 4, 3, 2)
    SCALES = {5: 0.625, 4: 1.25, 3: 2.5, 2: 5.0}   # 20 / 2**l: full-res/20 units -> level-l pixels

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        c = config.ch
        widths = [c(16), c(32), c(64), c(96), c(128), c(196)]
        cin = 3
        for lvl, cout in enumerate(widths, start=1):
            names = ("aa", "a", "b") if lvl == 6 else ("a", "aa", "b")   # level 6 runs conv6aa first
            for j, suffix in enumerate(names):
                setattr(self, f"conv{lvl}{suffix}", _conv(cin if j == 0 else cout, cout, stride=2 if j == 0 else 1))
            cin = cout
        dense = [c(128), c(128), c(96), c(64), c(32)]
        for lvl in self.LEVELS:
            width = CORR_CHANNELS if lvl == 6 else CORR_CHANNELS + widths[lvl - 1] + 4
            for j, out in enumerate(dense):
                setattr(self, f"conv{lvl}_{j}", _conv(width, out))
                width += out
            setattr(self, f"predict_flow{lvl}", nn.Conv2d(width, 2, 3, 1, 1))
            setattr(self, f"deconv{lvl}", _deconv(2))       # deconv2 exists in the weights, unused
            if lvl > 2:
                setattr(self, f"upfeat{lvl}", _deconv(width))
        self.dc_conv1 = _conv(width, c(128))
        self.dc_conv2 = _conv(c(128), c(128), dilation=2)
        self.dc_conv3 = _conv(c(128), c(128), dilation=4)
        self.dc_conv4 = _conv(c(128), c(96), dilation=8)
        self.dc_conv5 = _conv(c(96), c(64), dilation=16)
        self.dc_conv6 = _conv(c(64), c(32))
        self.dc_conv7 = nn.Conv2d(c(32), 2, 3, 1, 1)
        self.leaky = nn.LeakyReLU(0.1)

    def pyramid(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Features of one RGB frame (B,3,H,W): levels 2..6 at H/4 .. H/64 (level 1 is not kept)."""
        x, feats = image, []
        for lvl in range(1, 7):
            names = ("aa", "a", "b") if lvl == 6 else ("a", "aa", "b")
            for suffix in names:
                x = getattr(self, f"conv{lvl}{suffix}")(x)
            if lvl >= 2:
                feats.append(x)
        return tuple(feats)

    def _dense(self, lvl: int, x: torch.Tensor) -> torch.Tensor:
        for j in range(5):
            x = torch.cat((getattr(self, f"conv{lvl}_{j}")(x), x), dim=1)   # new features first
        return x

    def decode(self, feats_a: tuple[torch.Tensor, ...], feats_b: tuple[torch.Tensor, ...],
               correlate=correlation) -> torch.Tensor:
        """Flow from frame a to frame b, (B,2,H/4,W/4), in units of full-res pixels / 20.

        `correlate` implements the cost volume (see `stages.CustomOps`)."""
        fa = dict(zip(range(2, 7), feats_a))
        fb = dict(zip(range(2, 7), feats_b))
        x = self.leaky(correlate(fa[6], fb[6], MAX_DISPLACEMENT))
        x = self._dense(6, x)
        flow = self.predict_flow6(x)
        for lvl in (5, 4, 3, 2):
            up_flow = getattr(self, f"deconv{lvl + 1}")(flow)
            up_feat = getattr(self, f"upfeat{lvl + 1}")(x)
            warped = warp_features(fb[lvl], up_flow * self.SCALES[lvl])
            corr = self.leaky(correlate(fa[lvl], warped, MAX_DISPLACEMENT))
            x = self._dense(lvl, torch.cat((corr, fa[lvl], up_flow, up_feat), dim=1))
            flow = getattr(self, f"predict_flow{lvl}")(x)
        y = self.dc_conv4(self.dc_conv3(self.dc_conv2(self.dc_conv1(x))))
        return flow + self.dc_conv7(self.dc_conv6(self.dc_conv5(y)))

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """Official call: `pair` = cat(Ia, Ib) (B,6,H,W) -> flow a->b (B,2,H/4,W/4) / 20."""
        return self.decode(self.pyramid(pair[:, :3]), self.pyramid(pair[:, 3:]))
