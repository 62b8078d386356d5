"""The baseline: what the official DAIN code does for every output frame (docs/dain-spec.md §3, §11).

`DAIN.forward` in the official code (and `DAIN_slowmotion` with one time step) recomputes the
whole network for each interpolated frame: depthNet and ctxNet on both frames (as one batch of
two), PWC called twice on the channel-stacked pair, cat(I0, I1) and cat(I1, I0), each call
building the feature pyramids of both of its inputs (4 pyramid passes), the kernel net, the
flow projections and adaptive warps, and the rectify net. Nothing is cached between frames.

The warp and rectify stages are the same modules the staged model uses (they hold no state and
their semantics are the official ones), so the baseline and the staged model produce the same
frame up to float rounding; `tests/test_bench.py` pins that.
"""
from __future__ import annotations

from typing import Hashable, Sequence

import torch
from torch import nn

from dainrt.model import DAIN, crop, pad, padding_for
from dainrt.model.config import FLOW_SCALE
from dainrt.model.convnets import run_kernel_net


class OfficialForward(nn.Module):
    """One output frame the official way: (image0, image1 (B,3,H,W) padded RGB in [0,1], t (B,))
    -> frame (B,3,H,W), not clamped. H and W are multiples of 64."""

    def __init__(self, model: DAIN):
        super().__init__()
        self.model = model
        stages = model.stages()
        self.warp = stages.warp
        self.rectify = stages.rectify

    def forward(self, image0: torch.Tensor, image1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = self.model
        b = image0.shape[0]
        both = torch.cat((image0, image1), dim=0)                   # the official batch of two
        log_depth = m.depthNet(both)
        context = torch.cat((m.ctxNet(both), log_depth), dim=1)
        context0, context1 = context[:b], context[b:]
        flow01 = FLOW_SCALE * m.flownets(torch.cat((image0, image1), dim=1))   # pyramids of I0, I1
        flow10 = FLOW_SCALE * m.flownets(torch.cat((image1, image0), dim=1))   # ... and again
        trunk = run_kernel_net(m.initScaleNets_filter, torch.cat((image0, image1), dim=1))
        kernel0 = run_kernel_net(m.initScaleNets_filter1, trunk)
        kernel1 = run_kernel_net(m.initScaleNets_filter2, trunk)
        rectify_input, blend = self.warp(image0, image1, context0, context1, flow01, flow10, kernel0, kernel1, t)
        return self.rectify(rectify_input, blend)


class OfficialRunner:
    """`engine.Runner`'s interface with the official cost: every output frame recomputes
    everything (torch eager, FP32, no autograd). `calls["forward"]` counts the forwards."""

    def __init__(self, model: DAIN, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        if self.device.type == "cuda":
            # FP32 means FP32: TF32 would round conv operands to 10 mantissa bits.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.forward = OfficialForward(model.to(self.device).eval())
        self.calls = {"forward": 0}

    @torch.inference_mode()
    def interpolate(self, key0: Hashable, image0, key1: Hashable, image1, times: Sequence[float]) -> list[torch.Tensor]:
        """Frames at each t between image0 and image1 ((3,H,W) float32 in [0,1] on the device, as
        `engine.Runner` takes them): one (3,H,W) float32 tensor per t on the device, cropped, not
        clamped. Keys are ignored."""
        outputs = []
        for t in times:
            x0, x1 = image0.unsqueeze(0), image1.unsqueeze(0)
            padding = padding_for(x0.shape[-2], x0.shape[-1])
            tt = torch.full((1,), float(t), dtype=torch.float32, device=self.device)
            frame = self.forward(pad(x0, padding), pad(x1, padding), tt)
            self.calls["forward"] += 1
            outputs.append(crop(frame, padding)[0])
        return outputs

    def clear(self) -> None:
        """Nothing is cached; present for interface parity with `engine.Runner`."""
