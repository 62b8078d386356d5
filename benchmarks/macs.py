"""Multiply-accumulate counts of DAIN, per component, per stage and per output frame (docs/dain-spec.md §11).

Convolutions are counted with forward hooks on every `Conv2d` / `ConvTranspose2d` while the
modules run on the `meta` device (shapes only: no memory, no arithmetic, instant even at 4k).
The custom layers have no module to hook, so they are counted analytically:

* correlation: 81 * C MACs per feature-map pixel of each of the 5 decoder levels;
* adaptive warp: 16 taps per pixel per channel of the four warped tensors (3 + 3 + 2 * Ck);
* depth-aware flow projection: 4 corners x 3 accumulated values per pixel (scatter-adds, not
  true MACs; docs/dain-spec.md §11 lists them as "~24" and leaves them out of its official total).

One MAC is one multiply-add; FLOP = 2 x MAC. Counts are for padded frames (H, W multiples of 64).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from dainrt.model import DAIN, ModelConfig
from dainrt.model.config import FILTER_SIZE, MAX_DISPLACEMENT
from dainrt.model.convnets import run_kernel_net

CORR_TAPS = (2 * MAX_DISPLACEMENT + 1) ** 2
SPLAT_OPS_PER_PIXEL = 4 * 3      # 4 corners x (weighted u, weighted v, weight)


def conv_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """MACs of one Conv2d / ConvTranspose2d call from its input and output shapes.

    Conv2d: every output element sums (Cin / groups) * kh * kw products. ConvTranspose2d: every
    input element scatters into (Cout / groups) * kh * kw outputs. Padding is not subtracted
    (the border products with zeros are still executed by dense kernels).
    """
    kh, kw = module.kernel_size
    if isinstance(module, nn.ConvTranspose2d):
        return inp.numel() * (module.out_channels // module.groups) * kh * kw
    return out.numel() * (module.in_channels // module.groups) * kh * kw


class ConvCounter:
    """Context manager: counts conv MACs per top-level child of `model` while it is active.

    >>> with ConvCounter(model) as c: model.ctxNet(x)
    >>> c.by_module["ctxNet"]
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.by_module: dict[str, int] = {}
        self._handles: list = []

    def __enter__(self) -> "ConvCounter":
        for name, mod in self.model.named_modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
                top = name.split(".", 1)[0]
                self._handles.append(mod.register_forward_hook(self._hook(top)))
        return self

    def _hook(self, top: str):
        def hook(mod, inputs, output):
            self.by_module[top] = self.by_module.get(top, 0) + conv_macs(mod, inputs[0], output)
        return hook

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @property
    def total(self) -> int:
        return sum(self.by_module.values())


@dataclass(frozen=True)
class ModelMacs:
    """MACs of one padded frame size, per component (each counted once) and derived totals."""

    height: int
    width: int
    depth_net: int
    context_net: int
    pyramid: int            # PWC feature pyramid of one frame
    decoder: int            # PWC decoders + context refinement, one direction
    correlation: int        # the 5 cost volumes of one direction
    kernel_net: int         # trunk + both heads, one ordered pair
    adaptive_warp: int      # the 4 warps of one output frame
    projection: int         # the 2 depth-aware flow projections of one output frame
    rectify: int

    @property
    def pixels(self) -> int:
        return self.height * self.width

    # Stage costs (docs/architecture.md §3)
    @property
    def frame(self) -> int:
        return self.depth_net + self.context_net + self.pyramid

    @property
    def pair(self) -> int:
        return 2 * (self.decoder + self.correlation) + self.kernel_net

    @property
    def warp(self) -> int:
        return self.adaptive_warp + self.projection

    def stage(self, name: str) -> int:
        return {"frame": self.frame, "pair": self.pair, "warp": self.warp, "rectify": self.rectify}[name]

    @property
    def official(self) -> int:
        """One output frame of the official monolithic forward: depth and context of both
        frames, PWC called twice on the pair (4 pyramid passes), kernel net, warps, rectify."""
        return 2 * (self.depth_net + self.context_net) + 4 * self.pyramid + self.pair + self.warp + self.rectify

    def streamed(self, factor: int) -> float:
        """Per output frame on a stream at `factor` (factor - 1 outputs per input pair), with
        per-frame results cached for one step and per-pair results shared by all t."""
        return (self.frame + self.pair) / (factor - 1) + self.warp + self.rectify

    def per_pixel(self) -> dict[str, float]:
        names = ("depth_net", "context_net", "pyramid", "decoder", "correlation", "kernel_net",
                 "adaptive_warp", "projection", "rectify")
        out = {n: getattr(self, n) / self.pixels for n in names}
        out["official"] = self.official / self.pixels
        return out


def count_model_macs(config: ModelConfig, height: int, width: int) -> ModelMacs:
    """Count the MACs of `DAIN(config)` at padded size `height` x `width` (multiples of 64).

    A shape-only copy of the architecture is built and run on `meta` (weights do not matter).
    """
    if height % 64 or width % 64:
        raise ValueError(f"padded size must be a multiple of 64, got {width}x{height}")
    return _count(config, height, width)


@functools.lru_cache(maxsize=32)
def _count(config: ModelConfig, height: int, width: int) -> ModelMacs:
    with torch.device("meta"):
        m = DAIN(config).eval()
    ck = m.config.context_channels
    x = torch.empty(1, 3, height, width, device="meta")
    with torch.no_grad(), ConvCounter(m) as c:
        m.depthNet(x)
        m.ctxNet(x)
        feats = m.flownets.pyramid(x)
        after_frame = dict(c.by_module)
        m.flownets.decode(feats, feats)
        trunk = run_kernel_net(m.initScaleNets_filter, torch.empty(1, 6, height, width, device="meta"))
        run_kernel_net(m.initScaleNets_filter1, trunk)
        run_kernel_net(m.initScaleNets_filter2, trunk)
        m.rectifyNet(torch.empty(1, m.config.rectify_channels, height, width, device="meta"))
    counts = c.by_module
    correlation = sum(CORR_TAPS * f.shape[1] * f.shape[2] * f.shape[3] for f in feats)
    pixels = height * width
    return ModelMacs(
        height=height,
        width=width,
        depth_net=counts.get("depthNet", 0),
        context_net=counts.get("ctxNet", 0),
        pyramid=after_frame.get("flownets", 0),
        decoder=counts.get("flownets", 0) - after_frame.get("flownets", 0),
        correlation=correlation,
        kernel_net=sum(v for k, v in counts.items() if k.startswith("initScaleNets_filter")),
        adaptive_warp=FILTER_SIZE**2 * (3 + 3 + 2 * ck) * pixels,
        projection=2 * SPLAT_OPS_PER_PIXEL * pixels,
        rectify=counts.get("rectifyNet", 0),
    )


def end_to_end_macs(macs: ModelMacs, backend: str, factor: int) -> float:
    """MACs per output frame: the official forward for the baseline, else the streamed cost."""
    return float(macs.official) if backend == "baseline" else macs.streamed(factor)
