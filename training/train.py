"""Train a DAIN of any width on procedural clips (`synthetic.py`): seeded and resumable.

Four phases, all supervised by what the generator knows, meant to run in this order:

* ``features``: PWC-Net's feature pyramid (levels 1-4) alone: at levels 2-4 the cost volume
  between the two frames' features, read as a softmax over its 81 displacements, must pick the
  ground-truth displacement (cross-entropy against the true flow split bilinearly over the four
  nearest displacements). Random features do not match (their cost volumes are biased towards
  high-contrast neighbours), and PWC trained end to end from them stays at zero flow for
  thousands of steps; this direct signal makes the cost volumes informative in minutes.
* ``flow``: PWC-Net alone, against the generator's ground-truth flow (multi-scale end-point
  error on every decoder level; with ``flow_loss_power`` < 1 each pixel's error to that power).
* ``depth``: MegaDepth alone, against the generator's layers (`depth_loss`): a scale-invariant
  log-depth loss on the pixels that show one layer plus a hinge on the mean log-depths of every
  pair of overlapping layers, so that the nearer layer gets the smaller log-depth. The flow
  projection weighs a source pixel by ``exp(-log-depth)``, so where projections collide the
  nearer layer then wins (an untrained depth net gives log-depth 0 everywhere: plain averaging).
  Its validation score is the depth-order accuracy (`depth_order_accuracy`). Its BatchNorms
  normalise with each batch's statistics while it trains; before every validation their running
  statistics, which inference uses, are measured on 512 generated pictures (`recalibrate_batchnorm`).
* ``full``: the whole network end to end, Charbonnier loss on the rectified output against the
  rendered in-between frame (the official loss), with the official per-module learning-rate
  multipliers (flow x0.01, depth x0.001). A multiplier of 0 freezes that module: it then runs
  without autograd, so the flow projection fills its holes exactly as at inference.

``features``, ``flow`` and ``depth`` use Adam (PWC-Net's recipe), ``full`` Adamax (DAIN's); the learning
rate follows a cosine from ``lr`` down to 10 % of it over ``steps``. A fresh model is He-initialised (PWC's feature pyramid then normalised on
generated frames, `center_features`) and starts as a flow-warped blend: the kernel
heads' last conv gives plain bilinear taps (1 on the inner 2x2, 0 elsewhere), the rectify net's
last conv gives 0 and the depth net's last conv gives log-depth 0 (equal projection weights);
the rectify net's weights on its log-depth inputs start at 0 and stay there until a ``full``
phase runs with a learned depth (`rectify_ignores_depth`; the ``depth`` phase zeroes them when it
starts from an untrained depth net).

State (model, optimizer, step, RNG, elapsed time) goes to ``OUT/last.pth`` every
``save_every`` steps and at the end; ``resume=True`` continues from it. The model with the best
validation score (held-out clips, t = 0.5, inference mode: ``full`` the PSNR of the output,
``features`` the cost-volume loss, ``flow`` the end-point error, ``depth`` the depth-order accuracy) is kept as ``OUT/best.pth`` and, in
FP16 storage, ``OUT/best-fp16.pth`` (dainrt checkpoint format: loads with `--weights`). With a
second or third validation set (`validation_sets`: training-like clips, all-flat clips) the score
is the smallest relative gain of the sets over the run's start, measured before its first step and
kept in the state.
Every log line is also appended as JSON to ``OUT/log.jsonl``.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from dainrt.model.checkpoint import load_checkpoint, save_checkpoint
from dainrt.base.errors import DainrtError
from dainrt.base.files import atomic_output
from dainrt.base.metrics import psnr
from dainrt.base.progress import progress_bar
from dainrt.model import DAIN, ModelConfig
from dainrt.model.config import MAX_DISPLACEMENT
from dainrt.model.ops import correlation

from .synthetic import ClipSettings, SyntheticClips, collate, load_images

STATE_FORMAT = "dainrt-train-state-1"
FLOW_LEVELS = (6, 5, 4, 3, 2)
# Weights of the per-level mean EPEs (px) next to the final output's (weight 1). The official
# PWC weights (0.32 .. 0.005) apply to *sums* over pixels; on means they over-weight the coarse
# levels 64-fold and flow learning stalls. These keep the official balance on means.
FLOW_LEVEL_WEIGHTS = {6: 0.08, 5: 0.16, 4: 0.24, 3: 0.32, 2: 0.64}
FEATURE_LEVELS = (2, 3, 4)
FEATURE_TEMPERATURE = 15.0           # softmax sharpness on the cost volume (PWC divides it by C)
CHARBONNIER_EPS = 1e-6
VAL_SEED_OFFSET = 1_000_003          # validation clips come from another seed: never trained on
VAL_SET_SEEDS = {"val": 0, "val_train": 1, "val_flat": 2}   # each set's seed past the offset (`validation_sets`)


PHASES = ("features", "flow", "depth", "full")
DEPTH_SI_LAMBDA = 0.85               # scale-invariant loss: 1 ignores a global offset, 0 is plain L2
DEPTH_MARGIN = 0.3                   # hinge: nearer layer's mean log-depth this much below the farther's
DEPTH_MIN_PIXELS = 16                # a layer counts in the ordinal loss / metric when this many pixels show it


@dataclass
class TrainConfig:
    out: str
    phase: str = "full"              # "features", "flow" or "full"
    width: float = 0.5
    size: int = 128                  # square crops, a multiple of 64
    batch: int = 4
    steps: int = 1000
    lr: float = 5e-4
    flow_lr_mult: float = 0.01
    depth_lr_mult: float = 0.001
    flow_loss: float = 0.0           # full phase: weight of the supervised flow loss (0: off)
    flow_loss_power: float = 1.0     # flow losses: per-pixel end-point error ** this (`FlowLevels`)
    max_motion: float = 40.0         # largest layer motion (px) in the training clips
    pan_scale: float = 0.5           # camera pan up to max_motion x this (ClipSettings)
    centred: bool = False            # sprites half-way through their motion are on screen
    quarter_chance: float = 0.0      # share of clips at t = 0.25 / 0.5 / 0.75 (x4 gaps)
    wide_pan_chance: float = 0.0     # share of pans near the largest (ClipSettings)
    perspective: bool = False        # sprite depth follows sprite size (ClipSettings)
    defocus: float = 0.0             # depth of field, largest blur std px (ClipSettings)
    flicker_chance: float = 0.3      # share of clips with brightness flicker
    flat_chance: float = 0.0         # share of flat-coloured layers (ClipSettings)
    shutter: float = 0.0             # motion blur, largest exposure (ClipSettings)
    ordinal_loss: float = 1.0        # depth phase: weight of the pairwise hinge next to the SI loss
    seed: int = 0
    init: str | None = None          # start from these weights (dainrt or official checkpoint)
    images: list[str] | None = None  # picture folders for textures (None: installed packages')
    val_clips: int = 16
    # Depth phase: clips (2 frames each) that set MegaDepth's BatchNorm statistics. With 32 the same
    # weights ordered 90.5-92.0 % of 961 validation pairs depending on which 64 pictures set them.
    bn_clips: int = 256
    val_like_training: bool = False  # also validate on clips drawn like the training clips (`validation_sets`)
    val_every: int = 200
    save_every: int = 50
    log_every: int = 10
    max_minutes: float | None = None
    device: str = "auto"

    def __post_init__(self):
        if self.phase not in PHASES:
            raise DainrtError(f"--phase must be one of {', '.join(PHASES)}, got {self.phase!r}")
        if self.size % 64 or self.size < 64:
            raise DainrtError(f"--size must be a multiple of 64, got {self.size}")
        if self.batch < 1 or self.steps < 0:
            raise DainrtError("--batch must be >= 1 and --steps >= 0")


# ----------------------------------------------------------------------------------------------
# Model set-up


def start_as_warped_blend(model: DAIN) -> DAIN:
    """He-initialise every conv (PyTorch's default init leaves PWC's features so small that its
    cost volumes carry no signal), then set the output convs so that the untrained network is a
    flow-warped blend."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                leaky = 0.1 if name.startswith("flownets") else 0.0
                torch.nn.init.kaiming_normal_(module.weight, a=leaky, nonlinearity="leaky_relu")
                if module.bias is not None:
                    module.bias.zero_()
        # PWC starts predicting no motion, and its x2 flow upsamplers start bilinear.
        net = model.flownets
        for lvl in (6, 5, 4, 3, 2):
            getattr(net, f"predict_flow{lvl}").weight.zero_()
            up = getattr(net, f"deconv{lvl}").weight       # (2, 2, 4, 4), stride 2, padding 1
            up.zero_()
            tap = torch.tensor([0.25, 0.75, 0.75, 0.25])
            up[0, 0] = up[1, 1] = tap[:, None] * tap[None, :]
        net.dc_conv7.weight.zero_()
        for head in (model.initScaleNets_filter1, model.initScaleNets_filter2):
            last = head[-1]
            last.weight.zero_()
            last.bias.zero_()
            last.bias[[5, 6, 9, 10]] = 1.0        # inner 2x2 taps: plain bilinear sampling
        rect = model.rectifyNet.block5[0]
        rect.weight.zero_()
        rect.bias.zero_()
        depth_out = model.depthNet[-1]
        depth_out.weight.zero_()
        depth_out.bias.zero_()
    rectify_ignores_depth(model)
    return model


@torch.no_grad()
def rectify_ignores_depth(model: DAIN) -> None:
    """Zero the rectify net's first-conv weights on its two log-depth inputs (the last channel
    of each warped context). A rectify net trained while the depth was constant 0 never got a
    gradient there: those weights are still their random init, and a learned depth fed through
    them is noise added to every output pixel (-0.1 dB on Middlebury). Zeroed, the learned depth
    acts only where it should, in the flow projection, until a `full` phase trains them."""
    weight = model.rectifyNet.block1[0].weight          # (out, rectify_channels, 7, 7)
    last = model.config.rectify_channels - 1            # the two warped contexts come last
    weight[:, [last - model.config.context_channels, last]] = 0


@torch.no_grad()
def center_features(flow_net: torch.nn.Module, images: torch.Tensor) -> None:
    """Data-dependent init of PWC's feature pyramid: each conv's outputs get zero mean and unit
    std per channel on `images` (B,3,H,W). Random features are then already discriminative: the
    cost volumes peak at the true displacement from the first step (with PyTorch's or He's init
    alone they are dominated by a constant, learning stalls and the features collapse)."""
    x = images
    for lvl in range(1, 7):
        for suffix in ("aa", "a", "b") if lvl == 6 else ("a", "aa", "b"):
            block = getattr(flow_net, f"conv{lvl}{suffix}")
            conv = block[0]
            pre = conv(x)
            mean, std = pre.mean((0, 2, 3)), pre.std((0, 2, 3)).clamp(min=1e-6)
            conv.weight.div_(std.view(-1, 1, 1, 1))
            conv.bias.copy_((conv.bias - mean) / std)
            x = block(x)


def build_model(cfg: TrainConfig, images: list[torch.Tensor] | None = None) -> DAIN:
    """The model to train: `cfg.init`'s weights, or a fresh one (see the module docstring)."""
    if cfg.init:
        state_dict, config = load_checkpoint(cfg.init)
        model = DAIN(config)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()})
        if cfg.phase == "depth" and not model.depthNet[-1].weight.any():
            rectify_ignores_depth(model)        # its depth is untrained: so is the rectify net's use of it
        return model
    torch.manual_seed(cfg.seed)
    model = start_as_warped_blend(DAIN(ModelConfig(cfg.width)))
    clips = SyntheticClips(cfg.size, seed=cfg.seed + 2 * VAL_SEED_OFFSET, images=images or [])
    center_features(model.flownets, torch.cat([torch.stack((c.frame0, c.frame1)) for c in (clips[i] for i in range(8))]))
    return model


def training_settings(cfg: TrainConfig) -> ClipSettings:
    """What the training clips are drawn from."""
    return ClipSettings(max_motion=cfg.max_motion, small_motion=min(6.0, cfg.max_motion), pan_scale=cfg.pan_scale,
                        centred=cfg.centred, quarter_chance=cfg.quarter_chance, flicker_chance=cfg.flicker_chance,
                        wide_pan_chance=cfg.wide_pan_chance, perspective=cfg.perspective, defocus=cfg.defocus,
                        flat_chance=cfg.flat_chance, shutter=cfg.shutter)


def validation_sets(cfg: TrainConfig, images: list[torch.Tensor]) -> dict[str, list]:
    """The held-out validation clips (t = 0.5, seeds of their own), by metric prefix.

    ``val``: the default motions, so that runs with different motions are scored alike, with the
    training's scene content (sprite depths, depth of field, flat colours, motion blur). With
    `val_like_training` also ``val_train``: clips drawn like the training clips, for a run that
    learns motions the default clips do not hold (wide pans). With flat layers in training also
    ``val_flat``: the default motions with every layer flat, scored inside the sprites' edges alone
    (`validate`): the stop-motion puppet on a plain backdrop, whose flow a mean over all pixels
    hides (flowS's 0.2 px shortfall on a 300-pixel sprite). With more than one set the run keeps
    a checkpoint by the set it improved least (`score`), so that gaining on one cannot hide
    losing on another.
    """
    content = ClipSettings(perspective=cfg.perspective, defocus=cfg.defocus, flat_chance=cfg.flat_chance,
                           shutter=cfg.shutter)
    sets = {"val": content}
    if cfg.val_like_training:
        sets["val_train"] = training_settings(cfg)
    if cfg.flat_chance > 0:
        sets["val_flat"] = replace(content, flat_chance=1.0)
    return {prefix: [clips[i] for i in range(cfg.val_clips)]
            for prefix, settings in sets.items()
            for clips in [SyntheticClips(cfg.size, seed=cfg.seed + VAL_SEED_OFFSET + VAL_SET_SEEDS[prefix], images=images,
                                         t=0.5, settings=settings)]}


def _groups(model: DAIN, cfg: TrainConfig) -> tuple[list[dict], list[torch.nn.Module]]:
    """Optimizer parameter groups (lr multiplier per module) and the frozen modules (0)."""
    if cfg.phase == "depth":
        mults = {"depthNet": 1.0}
    elif cfg.phase != "full":
        mults = {"flownets": 1.0}
    else:
        mults = {"flownets": cfg.flow_lr_mult, "depthNet": cfg.depth_lr_mult}
    groups, frozen = [], []
    for name, module in model.named_children():
        mult = mults.get(name, 1.0 if cfg.phase == "full" else 0.0)
        if mult == 0:
            module.requires_grad_(False)
            frozen.append(module)
            continue
        params = dict(module.named_parameters())
        if cfg.phase == "features":
            # Only the pyramid convs (conv{level}{a,aa,b}) below level 5 get a gradient.
            params = {k: p for k, p in params.items() if re.fullmatch(r"conv[1-4](a|aa|b)\..*", k)}
        groups.append({"params": list(params.values()), "lr": cfg.lr * mult, "name": name})
    return groups, frozen


def _set_train(model: DAIN, frozen: list[torch.nn.Module], phase: str) -> None:
    model.train()
    for module in frozen:
        module.eval()            # frozen BatchNorm keeps its running statistics
    # Outside the depth phase MegaDepth's BatchNorms keep the statistics the depth phase measured
    # (`recalibrate_batchnorm`): a few pictures a batch would drag them away from the population's.
    if phase != "depth":
        for module in model.depthNet.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()


@torch.no_grad()
def recalibrate_batchnorm(net: torch.nn.Module, images: torch.Tensor, chunk: int = 8) -> None:
    """Set every BatchNorm's running statistics of `net` to the mean and variance of its input
    over all of `images` (B,3,H,W) RGB [0,1], run in chunks of `chunk` pictures that the layers
    before it normalise with the chunk's own statistics, as in training. `images` may stay on the
    CPU: each chunk moves to the net's device on its own (512 pictures at 384x384 are ~0.9 GB).

    The depth phase trains MegaDepth on batch statistics (normalised layers learn much faster
    than with frozen statistics), but inference uses running statistics: a momentum average over
    batches of 8 generated pictures lags the weights and is far from the population, so the
    net users run is not the net that trained (the same weights once ordered 67 % of the
    validation layer pairs with batch statistics, 52 % with the momentum average).
    """
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    moments = {m: [0.0, 0.0, 0] for m in norms}        # sum of chunk means, of chunk E[x^2], chunks

    def measure(module, inputs):
        x = inputs[0].double()
        acc = moments[module]
        acc[0] = acc[0] + x.mean((0, 2, 3))
        acc[1] = acc[1] + (x * x).mean((0, 2, 3))
        acc[2] += 1

    modes = [m.training for m in norms]
    device = next(net.parameters()).device
    hooks = [m.register_forward_pre_hook(measure) for m in norms]
    try:
        for m in norms:
            m.train()            # the chunk's own statistics normalise it on the way down
        for i in range(0, len(images), chunk):
            net(images[i:i + chunk].to(device))
    finally:
        for h in hooks:
            h.remove()
        for m, training in zip(norms, modes):
            m.train(training)
    # Mean and variance over every pixel of every picture: per-chunk variances alone would miss
    # how much the chunks' means differ.
    for m, (sum_mean, sum_square, n) in moments.items():
        mean = sum_mean / n
        m.running_mean.copy_(mean)
        m.running_var.copy_((sum_square / n - mean * mean).clamp(min=0))
        m.num_batches_tracked.fill_(n)


# ----------------------------------------------------------------------------------------------
# Losses


def charbonnier(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((x - y) ** 2 + CHARBONNIER_EPS**2).mean()


ROBUST_EPS = 0.01                    # px: keeps the gradient of error ** power finite at 0


def _epe(pred: torch.Tensor, target: torch.Tensor, power: float = 1.0, where: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over pixels (those of the (B,H,W) bool mask `where` if given) of the end-point error
    (px) of (B,2,H,W) flows, each raised to `power` (+ ROBUST_EPS when power < 1)."""
    error = torch.linalg.vector_norm(pred - target, dim=1)
    if where is not None:
        error = error[where]
    return error.mean() if power == 1 else ((error + ROBUST_EPS) ** power).mean()


class FlowLevels:
    """Captures PWC's per-level predictions (flow / 20, full-res px) with forward hooks.

    `power` 1 makes the loss the mean end-point error. Below 1 each pixel's error counts as
    error ** power (PWC-Net's robust fine-tuning loss uses 0.4): with mean EPE the clips a wide
    pan defeats (errors of 30-70 px) outweigh everything else, and training on them wrecked the
    small motions (flowL, 384x384: EPE 1.6 -> 3.2 px and -4 dB on a 4 px clip in 250 steps)."""

    def __init__(self, flow_net: torch.nn.Module, power: float = 1.0):
        self.outputs: dict[int, torch.Tensor] = {}
        self.power = power
        self.handles = [
            getattr(flow_net, f"predict_flow{lvl}").register_forward_hook(self._hook(lvl)) for lvl in FLOW_LEVELS
        ]

    def _hook(self, lvl: int):
        def hook(_module, _inputs, output):
            self.outputs[lvl] = output
        return hook

    def loss(self, final: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Multi-scale EPE in px: the final (B,2,H/4,W/4) px flow plus every level, vs gt (B,2,H,W)."""
        total = _epe(final, F.avg_pool2d(gt, 4), self.power)
        for lvl, pred in self.outputs.items():
            f = 2**lvl
            total = total + FLOW_LEVEL_WEIGHTS[lvl] * _epe(20.0 * pred, F.avg_pool2d(gt, f), self.power)
        self.outputs.clear()
        return total

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def displacement_target(flow: torch.Tensor, d: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft one-hot over a cost volume's (2d+1)^2 displacements (dy outer, as `correlation`).

    `flow` (B,2,h,w) in grid pixels is split bilinearly over its four nearest integer
    displacements, so the expected displacement is the flow itself. Returns the target
    (B,(2d+1)^2,h,w) and a (B,h,w) mask of the pixels whose flow lies inside the window.
    """
    k = 2 * d + 1
    gx, gy = flow[:, 0].clamp(-d, d), flow[:, 1].clamp(-d, d)
    x0, y0 = gx.floor().clamp(-d, d - 1), gy.floor().clamp(-d, d - 1)
    ax, ay = gx - x0, gy - y0
    target = torch.zeros(flow.shape[0], k * k, *flow.shape[2:], device=flow.device)
    for oy, wy in ((0, 1 - ay), (1, ay)):
        for ox, wx in ((0, 1 - ax), (1, ax)):
            index = ((y0 + oy + d) * k + (x0 + ox + d)).long()
            target.scatter_add_(1, index[:, None], (wy * wx)[:, None])
    mask = (flow.abs().amax(1) <= d - 0.1).to(flow.dtype)
    return target, mask


def feature_loss(flow_net: torch.nn.Module, image0: torch.Tensor, image1: torch.Tensor, flow01: torch.Tensor) -> torch.Tensor:
    """The ``features`` phase's loss: per level of FEATURE_LEVELS, the cross-entropy between the
    softmax of the frames' cost volume and `displacement_target` of the true flow (B,2,H,W, px)."""
    return _cost_volume_loss(flow_net.pyramid(image0), flow_net.pyramid(image1), flow01)


def _cost_volume_loss(feats0: tuple[torch.Tensor, ...], feats1: tuple[torch.Tensor, ...], flow01: torch.Tensor) -> torch.Tensor:
    """`feature_loss` from the two frames' PWC pyramids (levels 2..6, as `pyramid` returns)."""
    pyramid0 = dict(zip(range(2, 7), feats0))
    pyramid1 = dict(zip(range(2, 7), feats1))
    total = flow01.new_zeros(())
    for lvl in FEATURE_LEVELS:
        cost = correlation(pyramid0[lvl], pyramid1[lvl], MAX_DISPLACEMENT)
        target, mask = displacement_target(F.avg_pool2d(flow01, 2**lvl) / 2**lvl, MAX_DISPLACEMENT)
        ce = -(target * F.log_softmax(FEATURE_TEMPERATURE * cost, dim=1)).sum(1)
        total = total + (ce * mask).sum() / mask.sum().clamp(min=1)
    return total


def layer_means(log_depth: torch.Tensor, index: torch.Tensor, n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean predicted log-depth per layer over the pixels that show it.

    log_depth (B,1,H,W); index (B,1,H,W) int64, the layer each pixel shows (-1: none). Returns
    means (B,L) (0 for a layer with no pixel) and pixel counts (B,L), L = n_layers.
    """
    b = log_depth.shape[0]
    valid = index >= 0
    slot = torch.where(valid, index, n_layers).flatten(1)            # -1 -> a spare slot
    values = torch.where(valid, log_depth, 0.0).flatten(1)
    sums = log_depth.new_zeros(b, n_layers + 1).scatter_add(1, slot, values)[:, :n_layers]
    counts = log_depth.new_zeros(b, n_layers + 1).scatter_add(1, slot, valid.flatten(1).to(log_depth.dtype))[:, :n_layers]
    return sums / counts.clamp(min=1), counts


def _ordered_pairs(layer_depth: torch.Tensor, overlap: torch.Tensor, counts: torch.Tensor, min_pixels: int) -> torch.Tensor:
    """(B,L,L) bool: pairs (near i, far j) of overlapping layers, both seen on >= min_pixels pixels."""
    seen = counts >= min_pixels
    nearer = (layer_depth[:, :, None] < layer_depth[:, None, :]) & (layer_depth[:, :, None] > 0)
    return overlap & nearer & seen[:, :, None] & seen[:, None, :]


def depth_order_accuracy(log_depth: torch.Tensor, index: torch.Tensor, layer_depth: torch.Tensor, overlap: torch.Tensor,
                         min_pixels: int = DEPTH_MIN_PIXELS) -> tuple[int, int]:
    """How many pairs of overlapping layers the predicted depth orders right: (correct, pairs).

    log_depth (B,1,H,W) the depth net's output (smaller = nearer, as the flow projection reads
    it); index (B,1,H,W) int64 layer seen per pixel (-1: none); layer_depth (B,L) true depths
    (> 0, larger = farther; 0 = no layer); overlap (B,L,L) bool. A pair counts when both layers
    are seen on >= `min_pixels` pixels and their true depths differ; it is right when the nearer
    layer's mean predicted log-depth is strictly smaller (a constant depth gets every pair wrong).
    """
    means, counts = layer_means(log_depth.float(), index, layer_depth.shape[1])
    pairs = _ordered_pairs(layer_depth, overlap, counts, min_pixels)
    right = pairs & (means[:, :, None] < means[:, None, :])
    return int(right.sum()), int(pairs.sum())


def depth_loss(log_depth: torch.Tensor, index: torch.Tensor, layer_depth: torch.Tensor, overlap: torch.Tensor,
               ordinal: float = 1.0) -> torch.Tensor:
    """The ``depth`` phase's loss (shapes as `depth_order_accuracy`).

    Scale-invariant log-depth error on the pixels that show one layer, per image
    ``mean(d^2) - DEPTH_SI_LAMBDA * mean(d)^2`` with d = log-depth - log(true depth), plus
    `ordinal` times the mean hinge ``relu(DEPTH_MARGIN - (m_far - m_near))`` over the pairs of
    overlapping layers (m: a layer's mean predicted log-depth).
    """
    valid = index >= 0
    true = torch.log(layer_depth.clamp(min=1e-3).gather(1, index.clamp(min=0).flatten(1)).view_as(log_depth))
    d = torch.where(valid, log_depth - true, 0.0).flatten(1)
    n = valid.flatten(1).sum(1).clamp(min=1)
    si = ((d**2).sum(1) / n - DEPTH_SI_LAMBDA * (d.sum(1) / n) ** 2).mean()
    if not ordinal:
        return si
    means, counts = layer_means(log_depth, index, layer_depth.shape[1])
    pairs = _ordered_pairs(layer_depth, overlap, counts, DEPTH_MIN_PIXELS)
    gap = means[:, None, :] - means[:, :, None]                    # [b, near i, far j] = m_j - m_i
    hinge = torch.where(pairs, F.relu(DEPTH_MARGIN - gap), 0.0).sum() / pairs.sum().clamp(min=1)
    return si + ordinal * hinge


def pwc_flow(model: DAIN, image0: torch.Tensor, image1: torch.Tensor) -> torch.Tensor:
    """PWC flow 0->1 in full-res pixels at quarter resolution (B,2,H/4,W/4)."""
    net = model.flownets
    return 20.0 * net.decode(net.pyramid(image0), net.pyramid(image1))


# ----------------------------------------------------------------------------------------------
# Validation


def _psnr_sum(x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum over the batch of per-image PSNR (peak 1) of (B,C,H,W) tensors."""
    return sum(psnr(a, b) for a, b in zip(x, y))


SPRITE_EDGE_BAND = 2                 # quarter pixels (8 px): how far inside a sprite's edge `sprite_edges` looks


def sprite_edges(layers: torch.Tensor, factor: int = 4, band: int = SPRITE_EDGE_BAND) -> torch.Tensor:
    """(B,H/f,W/f) bool: the pixels of a flow `factor` x smaller that lie wholly on one sprite in
    the (B,1,H,W) layer index of frame 0 (layer 0 is the background; -1 nothing) and at most
    `band` of them from a pixel that does not lie wholly on that sprite: the band inside its edge,
    where a flat sprite's motion shows (deep inside one, the flow is a guess)."""
    index = layers.float()
    high, low = F.max_pool2d(index, factor), -F.max_pool2d(-index, factor)
    on = torch.where((high == low) & (low >= 1), low, torch.full_like(low, -1.0))       # sprite index, else -1
    k = 2 * band + 1
    same = (F.max_pool2d(on, k, 1, band) == on) & (-F.max_pool2d(-on, k, 1, band) == on)   # whole window on it
    return ((on >= 1) & ~same)[:, 0]


@torch.no_grad()
def validate(model: DAIN, clips, device: torch.device, batch: int = 4, output: bool = True,
             sprites_only: bool = False) -> dict[str, float]:
    """The mean EPE (px) of the network's flow 0->1 at quarter resolution and the ``features``
    loss on the validation clips (t = 0.5); with `output` also the mean PSNR of the network and
    of the 50/50 blend (the whole network costs ~10x the flow net alone on a CPU). `sprites_only`:
    the EPE over the band inside the sprites' edges in frame 0 (`sprite_edges`), pooled over the
    set (a flat backdrop's motion shows nowhere, a flat sprite's only at its edges)."""
    model.eval()
    out = {"val_psnr": 0.0, "val_blend_psnr": 0.0} if output else {}
    out.update(val_epe=0.0, val_feature_loss=0.0)
    n = pixels = 0
    for i in range(0, len(clips), batch):
        c = collate(clips[i:i + batch])
        f0, f1, gt = c.frame0.to(device), c.frame1.to(device), c.frame_t.to(device)
        if output:
            pred = model(f0, f1, c.t.to(device)).clamp(0, 1)
            out["val_psnr"] += _psnr_sum(pred, gt)
            out["val_blend_psnr"] += _psnr_sum((1 - c.t.view(-1, 1, 1, 1).to(device)) * f0 + c.t.view(-1, 1, 1, 1).to(device) * f1, gt)
        flow01 = c.flow01.to(device)
        feats0, feats1 = model.flownets.pyramid(f0), model.flownets.pyramid(f1)    # once for both scores
        where = sprite_edges(c.layers0.to(device)) if sprites_only else None
        count = int(where.sum()) if sprites_only else flow01[:, 0, ::4, ::4].numel()
        if count:
            out["val_epe"] += float(_epe(20.0 * model.flownets.decode(feats0, feats1), F.avg_pool2d(flow01, 4), where=where)) * count
        out["val_feature_loss"] += float(_cost_volume_loss(feats0, feats1, flow01) * len(f0))
        n, pixels = n + len(f0), pixels + count
    out["val_epe"] /= max(pixels, 1)
    return {k: v if k == "val_epe" else v / n for k, v in out.items()}


@torch.no_grad()
def validate_depth(model: DAIN, clips, device: torch.device, batch: int = 4) -> dict[str, float]:
    """Depth-order accuracy (`depth_order_accuracy`, frames 0 and 1 of every clip), the number
    of pairs it counted and the mean scale-invariant loss, in inference mode."""
    model.eval()
    right = pairs = 0
    si, n = 0.0, 0
    for i in range(0, len(clips), batch):
        c = collate(clips[i:i + batch])
        images = torch.cat((c.frame0, c.frame1)).to(device)
        index = torch.cat((c.layers0, c.layers1)).to(device)
        layer_depth = torch.cat((c.layer_depth, c.layer_depth)).to(device)
        overlap = torch.cat((c.overlap0, c.overlap1)).to(device)
        log_depth = model.depthNet(images)
        r, p = depth_order_accuracy(log_depth, index, layer_depth, overlap)
        right, pairs = right + r, pairs + p
        si += float(depth_loss(log_depth, index, layer_depth, overlap, ordinal=0.0)) * len(images)
        n += len(images)
    return {"val_depth_order": right / max(pairs, 1), "val_depth_pairs": float(pairs), "val_depth_si": si / max(n, 1)}


PHASE_METRIC = {"features": ("feature_loss", -1), "flow": ("epe", -1), "depth": ("depth_order", 1), "full": ("psnr", 1)}


def score(metrics: dict[str, float], phase: str, reference: dict[str, float] | None = None) -> float:
    """What the best checkpoint maximises: the phase's metric (higher is better). With more than
    one validation set (``val_train_*``, ``val_flat_*`` metrics), the smallest of the sets'
    relative gains over `reference` (the metrics at the run's first step): a checkpoint that
    worsens any set scores below 0, whatever it gains on the others."""
    name, sign = PHASE_METRIC[phase]
    sets = [p for p in VAL_SET_SEEDS if f"{p}_{name}" in metrics]
    if sets == ["val"]:
        return sign * metrics[f"val_{name}"]
    # (a start at 0, e.g. an untrained depth net's order accuracy, divides by a tiny number instead)
    return min(sign * (metrics[f"{p}_{name}"] - reference[f"{p}_{name}"]) / max(abs(reference[f"{p}_{name}"]), 1e-6)
               for p in sets)


# ----------------------------------------------------------------------------------------------
# The loop


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _save_state(path: Path, model, optimizer, cfg: TrainConfig, step: int, best: float, elapsed: float,
                reference: dict[str, float] | None) -> None:
    payload = {
        "format": STATE_FORMAT,
        "train_config": asdict(cfg),
        "model_config": model.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "step": step,
        "best_score": best,
        "reference": reference,
        "elapsed_s": elapsed,
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def save_fp16(model: DAIN, path: str | Path) -> Path:
    """A dainrt checkpoint with float tensors stored as FP16 (load_model widens them to FP32)."""
    sd = {k: (v.detach().half() if v.is_floating_point() else v.detach()) for k, v in model.state_dict().items()}
    return save_checkpoint(sd, model.config, path)


def train(cfg: TrainConfig, resume: bool = False, log=print, progress: bool = False) -> dict:
    """Run (or continue) training; returns the last validation metrics. `progress`: a bar with
    the ETA of the planned steps, on a terminal (log lines then print above it)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = _device(cfg.device)
    state_path = out / "last.pth"
    state = None
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise DainrtError(f"{state_path} is not a dainrt training state")
        saved = dict(state["train_config"])
        # The run's recipe comes from the state; only how long to go on may change.
        saved.update(out=cfg.out, steps=cfg.steps, max_minutes=cfg.max_minutes, device=cfg.device)
        cfg = TrainConfig(**{f.name: saved[f.name] for f in fields(TrainConfig) if f.name in saved})
        model = DAIN(ModelConfig.from_dict(state["model_config"]))
        model.load_state_dict(state["model"])
    images = load_images(cfg.images)           # the saved run's pictures when resuming
    if state is None:
        model = build_model(cfg, images)
    model.to(device)
    groups, frozen = _groups(model, cfg)
    for group in groups:
        group["base_lr"] = group["lr"]
    optimizer = (torch.optim.Adamax if cfg.phase == "full" else torch.optim.Adam)(groups, lr=cfg.lr, betas=(0.9, 0.999))
    step, best, elapsed, reference = 0, -math.inf, 0.0, None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        step, best, elapsed, reference = state["step"], state["best_score"], state["elapsed_s"], state.get("reference")
        torch.set_rng_state(state["torch_rng"])
    else:
        torch.manual_seed(cfg.seed)

    data = SyntheticClips(cfg.size, seed=cfg.seed, images=images, settings=training_settings(cfg))
    val_sets = validation_sets(cfg, images)
    if cfg.phase == "depth":        # training clips of a seed of their own (`recalibrate_batchnorm`)
        bn_set = SyntheticClips(cfg.size, seed=cfg.seed + 2 * VAL_SEED_OFFSET + 1, images=images, settings=data.settings)
        bn_images = torch.cat([torch.stack((c.frame0, c.frame1)) for c in (bn_set[i] for i in range(cfg.bn_clips))])
    # One worker renders clips while the main process trains (it uses one thread of its own).
    loader = torch.utils.data.DataLoader(
        data, batch_size=cfg.batch, sampler=range(step * cfg.batch, cfg.steps * cfg.batch),
        num_workers=1, collate_fn=collate, prefetch_factor=4, persistent_workers=False,
    ) if step < cfg.steps else []
    levels = FlowLevels(model.flownets, cfg.flow_loss_power)
    log(f"dainrt train: phase {cfg.phase}, width {model.config.width}, {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(images)} pictures for textures, device {device}, step {step} of {cfg.steps}")

    def emit(record: dict) -> None:
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))

    def measure() -> dict:
        # The phases before ``full`` change nothing but one net: its scores alone (the network's
        # PSNR on the same clips costs ~10-20x more on a CPU).
        if cfg.phase == "depth":
            recalibrate_batchnorm(model.depthNet, bn_images)
        metrics = {}
        for prefix, clips in val_sets.items():
            m = (validate_depth(model, clips, device) if cfg.phase == "depth"
                 else validate(model, clips, device, output=cfg.phase == "full", sprites_only=prefix == "val_flat"))
            metrics.update({prefix + k.removeprefix("val"): v for k, v in m.items()})
        return metrics

    if len(val_sets) > 1 and (reference is None or any(f"{p}_{PHASE_METRIC[cfg.phase][0]}" not in reference for p in val_sets)):
        # a new run's start (or, for a state saved before references or before one of its sets, the resume's)
        reference, best = measure(), -math.inf
        emit({"step": step, "reference": True, **reference})

    def checkpoint_and_validate(step: int, elapsed: float) -> dict:
        nonlocal best
        metrics = measure()
        if score(metrics, cfg.phase, reference) > best:
            best = score(metrics, cfg.phase, reference)
            save_checkpoint(model, model.config, out / "best.pth")
            save_fp16(model, out / "best-fp16.pth")
        emit({"step": step, "elapsed_s": round(elapsed, 1), **metrics, "best_score": best})
        _set_train(model, frozen, cfg.phase)
        return metrics

    start = time.monotonic() - elapsed          # elapsed counts every run of this training
    this_run = time.monotonic()
    metrics = {}
    _set_train(model, frozen, cfg.phase)
    running, window = [], time.monotonic()
    bar = progress_bar(loader, total=cfg.steps, initial=step, desc=f"training ({cfg.phase})", unit="step",
                       show=None if progress else False)
    if not bar.disable:
        log = bar.write                          # log lines print above the bar
    for batch in bar:
        f0, f1, gt = batch.frame0.to(device), batch.frame1.to(device), batch.frame_t.to(device)
        flow01 = batch.flow01.to(device)
        if cfg.phase == "features":
            loss = feature_loss(model.flownets, f0, f1, flow01)
        elif cfg.phase == "flow":
            loss = levels.loss(pwc_flow(model, f0, f1), flow01)
        elif cfg.phase == "depth":
            loss = depth_loss(model.depthNet(torch.cat((f0, f1))), torch.cat((batch.layers0, batch.layers1)).to(device),
                              torch.cat((batch.layer_depth, batch.layer_depth)).to(device),
                              torch.cat((batch.overlap0, batch.overlap1)).to(device), cfg.ordinal_loss)
        else:
            loss = charbonnier(model(f0, f1, batch.t.to(device)), gt)
            levels.outputs.clear()
            if cfg.flow_loss and cfg.flow_lr_mult:
                loss = loss + cfg.flow_loss * levels.loss(pwc_flow(model, f0, f1), flow01)
        for group in optimizer.param_groups:      # cosine decay to 10 % over the planned steps
            group["lr"] = group["base_lr"] * (0.55 + 0.45 * math.cos(math.pi * min(step / max(cfg.steps, 1), 1.0)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        running.append(loss.item())
        elapsed = time.monotonic() - start
        if step % cfg.log_every == 0:
            emit({"step": step, "loss": sum(running) / len(running), "elapsed_s": round(elapsed, 1),
                  "s_per_step": round((time.monotonic() - window) / len(running), 2)})
            running, window = [], time.monotonic()
        out_of_time = cfg.max_minutes is not None and (time.monotonic() - this_run) / 60 >= cfg.max_minutes
        if step % cfg.val_every == 0 or step == cfg.steps or out_of_time:
            metrics = checkpoint_and_validate(step, elapsed)
        if step % cfg.save_every == 0 or step == cfg.steps or out_of_time:
            _save_state(state_path, model, optimizer, cfg, step, best, elapsed, reference)
        if out_of_time:
            log(f"dainrt train: stopped at step {step}: --max-minutes {cfg.max_minutes} reached")
            break
    levels.remove()
    if not metrics:
        metrics = checkpoint_and_validate(step, elapsed)
        _save_state(state_path, model, optimizer, cfg, step, best, elapsed, reference)
    return metrics
