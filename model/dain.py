"""The DAIN network: the official module tree (so `best.pth` loads with strict=True) and the
official forward, composed from the four stages of `stages.py`."""
from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .convnets import ContextNet, RectifyNet, kernel_head, kernel_trunk
from .megadepth import MegaDepth
from .pwcnet import PWCDCNet
from .stages import CustomOps, FrameStage, PairStage, RectifyStage, Stages, WarpStage


class DAIN(nn.Module):
    """Depth-Aware video frame INterpolation (Bao et al., CVPR 2019), inference form.

    Attribute names and their order are the official ones: the state dict has the official keys
    in the official order. Inputs are padded RGB frames in [0,1], (B,3,H,W) with H, W multiples
    of 64 (see `padding.py`).
    """

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        self.initScaleNets_filter = kernel_trunk(config)
        self.initScaleNets_filter1 = kernel_head(config)
        self.initScaleNets_filter2 = kernel_head(config)
        self.ctxNet = ContextNet(config)
        self.rectifyNet = RectifyNet(config)
        self.flownets = PWCDCNet(config)
        self.depthNet = MegaDepth(config)

    def stages(self, ops: CustomOps = CustomOps()) -> Stages:
        """The four stage modules, sharing this model's parameters (cheap to build); `ops` are
        the custom-layer implementations they call."""
        return Stages(
            frame=FrameStage(self.depthNet, self.ctxNet, self.flownets),
            pair=PairStage(self.flownets, self.initScaleNets_filter, self.initScaleNets_filter1, self.initScaleNets_filter2,
                           correlate=ops.correlate),
            warp=WarpStage(project=ops.project, warp=ops.warp),
            rectify=RectifyStage(self.rectifyNet),
        )

    def forward(self, image0: torch.Tensor, image1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Interpolated frames at times `t` (B,) in (0,1): (B,3,H,W), not clamped.

        Equal (up to float rounding of the once-per-pair flow upsampling, which is exact here)
        to the official `DAIN` / `DAIN_slowmotion` output `rectified` at that t.
        """
        s = self.stages()
        f0 = s.frame(image0)
        f1 = s.frame(image1)
        flow01, flow10, kernel0, kernel1 = s.pair(image0, image1, *f0[1:], *f1[1:])
        rectify_input, blend = s.warp(image0, image1, f0[0], f1[0], flow01, flow10, kernel0, kernel1, t)
        return s.rectify(rectify_input, blend)
