"""DAIN split by what each part depends on (docs/architecture.md §3).

| stage   | depends on        | inputs -> outputs                                                     |
|---------|-------------------|-----------------------------------------------------------------------|
| frame   | one frame         | image -> context K (log-depth as last channel), PWC features l=2..6   |
| pair    | an ordered pair   | images + both feature pyramids -> flows 0->1, 1->0 (H/4, px), kernels |
| warp    | a pair and t      | images, contexts, flows, kernels, t -> rectify input (437 ch), blend  |
| rectify | the warp outputs  | rectify input, blend -> interpolated frame                            |

Every stage is an nn.Module with plain tensor inputs and outputs, no Python control flow on
values, so it exports to ONNX and runs the same on every backend. All tensors are NCHW float32;
images are padded RGB in [0,1] with H, W multiples of 64.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import FLOW_SCALE
from .convnets import run_kernel_net
from .ops import adaptive_warp, correlation, depth_flow_projection

DEPTH_EPS = 1e-6

# Tensor names of each stage's inputs and outputs, in call order. They name the ONNX graph
# inputs/outputs and the backends' bindings, so treat them as a stable interface.
_FEATS = ("feat2", "feat3", "feat4", "feat5", "feat6")
STAGE_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "frame": (("image",), ("context", *_FEATS)),
    "pair": (
        ("image0", "image1", *(f"{f[:4]}0_{f[4:]}" for f in _FEATS), *(f"{f[:4]}1_{f[4:]}" for f in _FEATS)),
        ("flow01", "flow10", "kernel0", "kernel1"),
    ),
    "warp": (
        ("image0", "image1", "context0", "context1", "flow01", "flow10", "kernel0", "kernel1", "t"),
        ("rectify_input", "blend"),
    ),
    "rectify": (("rectify_input", "blend"), ("frame",)),
}
STAGE_NAMES = tuple(STAGE_IO)


class CustomOps(NamedTuple):
    """The implementations of DAIN's custom layers that the stages call.

    The defaults are the vectorised PyTorch references of `model/ops/`; the ONNX export swaps in
    opaque custom ops (`dainrt.export.custom_ops.EXPORT_OPS`), the torch backend on CUDA the
    Triton kernels. Each has the reference's signature:
    correlate(f0, f1, max_displacement), project(flow, weight, fill), warp(image, flow, kernel).
    """

    correlate: Callable = correlation
    project: Callable = depth_flow_projection
    warp: Callable = adaptive_warp


class FrameStage(nn.Module):
    """Per-frame work: MegaDepth log-depth, context features, PWC feature pyramid.

    image (B,3,H,W) -> (context (B,Ck,H,W) = cat(image, ctx features, log-depth), feat2 (H/4),
    feat3 (H/8), feat4 (H/16), feat5 (H/32), feat6 (H/64)). Ck = 196 at width 1.
    """

    def __init__(self, depth_net: nn.Module, context_net: nn.Module, flow_net: nn.Module):
        super().__init__()
        self.depth_net = depth_net
        self.context_net = context_net
        self.flow_net = flow_net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        log_depth = self.depth_net(image)
        context = torch.cat((self.context_net(image), log_depth), dim=1)
        return (context, *self.flow_net.pyramid(image))


class PairStage(nn.Module):
    """Per-pair work: PWC decoders both ways and the two 4x4 kernel fields.

    (image0, image1 (B,3,H,W), feat0_2..6, feat1_2..6) -> (flow01, flow10 (B,2,H/4,W/4) in
    full-resolution pixels, i.e. 20x the PWC output; kernel0, kernel1 (B,16,H,W) raw taps).
    """

    def __init__(self, flow_net: nn.Module, trunk: nn.ModuleList, head0: nn.ModuleList, head1: nn.ModuleList,
                 correlate=correlation):
        super().__init__()
        self.flow_net = flow_net
        self.trunk = trunk
        self.head0 = head0
        self.head1 = head1
        self.correlate = correlate

    def forward(self, image0, image1, *feats):
        feats0, feats1 = feats[:5], feats[5:]
        flow01 = FLOW_SCALE * self.flow_net.decode(feats0, feats1, self.correlate)
        flow10 = FLOW_SCALE * self.flow_net.decode(feats1, feats0, self.correlate)
        trunk = run_kernel_net(self.trunk, torch.cat((image0, image1), dim=1))
        return flow01, flow10, run_kernel_net(self.head0, trunk), run_kernel_net(self.head1, trunk)


class WarpStage(nn.Module):
    """Per-t work: depth-aware flow projection and adaptive warping (all custom layers, FP32).

    Inputs: image0, image1 (B,3,H,W); context0, context1 (B,Ck,H,W) with log-depth last;
    flow01, flow10 (B,2,H/4,W/4) pixels; kernel0, kernel1 (B,16,H,W); t (B,) in (0,1).
    Outputs: rectify_input (B, 45+2Ck, H, W) = cat(blend, warped0, warped1, Ft0, Ft1, kernel0,
    kernel1, warped context0, warped context1) and blend (B,3,H,W) = (1-t) warped0 + t warped1.

    `project` and `warp` are the implementations of the two custom layers (see `CustomOps`).
    """

    def __init__(self, project=depth_flow_projection, warp=adaptive_warp):
        super().__init__()
        self.project = project
        self.warp = warp

    def forward(self, image0, image1, context0, context1, flow01, flow10, kernel0, kernel1, t):
        t = t.view(-1, 1, 1, 1)
        # Official order: scale the quarter-res flow by t, then upsample x4 (values not rescaled).
        flow_t0 = F.interpolate(flow01 * t, scale_factor=4, mode="bilinear", align_corners=False)
        flow_t1 = F.interpolate(flow10 * (1 - t), scale_factor=4, mode="bilinear", align_corners=False)
        weight0 = DEPTH_EPS + 1 / torch.exp(context0[:, -1:])
        weight1 = DEPTH_EPS + 1 / torch.exp(context1[:, -1:])
        # Hole filling is on at inference; the official code skipped it only when training.
        ft0 = self.project(flow_t0, weight0, fill=not flow_t0.requires_grad)
        ft1 = self.project(flow_t1, weight1, fill=not flow_t1.requires_grad)
        warped0 = self.warp(image0, ft0, kernel0)
        warped1 = self.warp(image1, ft1, kernel1)
        ctx0 = self.warp(context0, ft0, kernel0)
        ctx1 = self.warp(context1, ft1, kernel1)
        blend = warped0 * (1 - t) + warped1 * t
        rectify_input = torch.cat((blend, warped0, warped1, ft0, ft1, kernel0, kernel1, ctx0, ctx1), dim=1)
        return rectify_input, blend


class RectifyStage(nn.Module):
    """The frame-synthesis net: (rectify_input (B,437,H,W), blend (B,3,H,W)) -> frame (B,3,H,W),
    blend + residual, not clamped."""

    def __init__(self, rectify_net: nn.Module):
        super().__init__()
        self.rectify_net = rectify_net

    def forward(self, rectify_input: torch.Tensor, blend: torch.Tensor) -> torch.Tensor:
        return self.rectify_net(rectify_input) + blend


class Stages(NamedTuple):
    frame: FrameStage
    pair: PairStage
    warp: WarpStage
    rectify: RectifyStage
