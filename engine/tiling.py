"""Large frames in tiles: one fixed tile shape per film, overlapping tiles blended without seams.

A frame too large for the memory at hand is cut into overlapping rectangles of **one fixed
shape** (so ONNX Runtime and TensorRT see one input shape per film); each tile runs the four
stages on its own through its own `Runner`, which pads it by the official rule
(`model/padding.py`) and keeps its per-frame and per-pair results, so a stream keeps its
savings tile by tile (docs/architecture.md §13).

Geometry (pixels). Along an axis of length L, n tiles of length T (T <= L) start at evenly
spaced whole-pixel positions from 0 to L - T, n the fewest that make neighbours share at least
`overlap` pixels. Blending: a tile's weight along an axis is 0 within `overlap / 4` of an edge
that lies inside the frame (the network sees replicated padding there, not the neighbour's
pixels), rises along a smoothstep over the next `overlap / 2` pixels and is 1 beyond; frame
edges get no ramp. Weights are separable and normalised, so they sum to 1 at every pixel.

Motion: a pixel whose match lies outside its tile cannot be interpolated by that tile, so the
zero-weight margin must cover the motion: `auto_overlap` widens the overlap to 4 x the motion
of the pair (`estimate_motion`, block matching on thumbnails). Within a film the overlap only
widens, re-planning the tiles (same shape) and dropping the cached results.

The tile shape comes from `--tile WxH` or, for `--tile auto`, from `choose_tiles`: the largest
tile whose estimated peak memory (`engine/memory.py`) fits the memory budget (`memory_budget`:
`DAINRT_MEMORY_BUDGET_MB`, or the CUDA device's free memory, or the machine's available RAM),
trading tile size against the per-tile caches as `plan_cost` says.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Hashable, Sequence

import torch
import torch.nn.functional as F

from dainrt.base.errors import DainrtError, OptionError
from dainrt.base.sizes import MAX_SIDE
from dainrt.model import ModelConfig

from .backend import Backend
from .memory import estimate_memory, format_bytes
from .runner import Runner

DEFAULT_OVERLAP = 128        # pixels shared by neighbouring tiles: covers motions up to 32 px
MIN_TILE = 256               # pixels per side; smaller tiles spend most of their work on the overlap
RAMP_START = 0.25            # of the overlap: zero weight this close to a tile's inner edge, ramp to the middle
TILE_STEP = 64               # auto tile sides are multiples of the network's grid (64 px)
BUDGET_ENV = "DAINRT_MEMORY_BUDGET_MB"
BUDGET_MARGIN = 0.85         # of the budget: allocator slack and what the estimate leaves out
# Share of a x2 stream's work in the frame stage (docs/architecture.md §3, GMAC at 1080p:
# 1774 of 1774 + 920 + 15 + 8295): what a pair costs extra when its tiles' frame results are
# not kept across pairs.
FRAME_SHARE = 1774 / (1774 + 920 + 15 + 8295)
OUTPUTS_COUNTED = 4          # frame-sized output accumulators the memory plan allows for (x4 and below)
MOTION_THUMB = 128           # pixels: the motion estimate's thumbnail, longer side
MOTION_SEARCH = 12           # thumbnail pixels searched each way
MOTION_BLOCK = 5             # thumbnail pixels, block side of the matching
MOTION_QUANTILE = 0.995      # of the textured blocks' displacements: a small fast object counts (car-turn's car)


# -- what the user asked for --------------------------------------------------------------------

@dataclass(frozen=True)
class TileOption:
    """`--tile` and `--tile-overlap`: mode "off", "auto" or "fixed" (`size` = (width, height) px);
    `overlap` in pixels, or None for "from the motion of each pair"; `quiet`: auto says nothing
    when whole frames fit (the default, as opposed to an explicit `--tile auto`)."""

    mode: str = "auto"
    size: tuple[int, int] | None = None
    overlap: int | None = None
    quiet: bool = True

    def describe(self) -> str:
        return {"off": "off", "auto": "auto"}.get(self.mode, f"{self.size[0]}x{self.size[1]}") + \
            (f", overlap {self.overlap} px" if self.overlap is not None else "")


def parse_tile(text: str | None, overlap: int | None = None) -> TileOption:
    """`auto`, `off` or `WxH` (a side of at least MIN_TILE px; `W` alone: square) and the overlap
    in pixels (None: from the motion). None is the default: auto, quiet when whole frames fit.
    OptionError names the problem."""
    if overlap is not None and (not isinstance(overlap, int) or overlap < 16 or overlap > MAX_SIDE):
        raise OptionError("tile_overlap", f"must be a whole number of pixels from 16 to {MAX_SIDE}, got {overlap!r}")
    if text is None:
        return TileOption("auto", None, overlap, quiet=True)
    key = str(text).strip().lower()
    if key in ("auto", "off"):
        if key == "off" and overlap is not None:
            raise OptionError("tile_overlap", "needs tiles: drop it, or give --tile auto or WxH")
        return TileOption(key, None, overlap, quiet=False)
    parts = key.split("x")
    try:
        w, h = (int(p) for p in parts) if len(parts) == 2 else (int(key), int(key))
    except ValueError:
        raise OptionError("tile", f"must be auto, off or WIDTHxHEIGHT in pixels (e.g. 768x768), got {text!r}") from None
    if min(w, h) < MIN_TILE or max(w, h) > MAX_SIDE:
        raise OptionError("tile", f"sides must lie in {MIN_TILE}..{MAX_SIDE} pixels, got {text!r}")
    if overlap is not None and 2 * overlap > min(w, h):
        raise OptionError("tile_overlap", f"{overlap} px is more than half the {w}x{h} tile; use a larger tile")
    return TileOption("fixed", (w, h), overlap, quiet=False)


# -- geometry -----------------------------------------------------------------------------------

def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start pixels of the tiles along one axis: the fewest tiles of `tile` px (clamped to
    `length`) whose neighbours share at least `overlap` px, evenly spread from 0 to length - tile."""
    tile = min(tile, length)
    if tile == length:
        return [0]
    if overlap >= tile:
        raise ValueError(f"overlap {overlap} px must be less than the tile, {tile} px")
    n = math.ceil((length - overlap) / (tile - overlap))
    n = max(n, 2)
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _axis_weights(length: int, tile: int, starts: list[int], overlap: int) -> list[torch.Tensor]:
    """Per tile, its (tile,) weights along the axis before normalisation (module docstring)."""
    tile = min(tile, length)
    d = torch.arange(tile, dtype=torch.float64) + 0.5          # distance of pixel centres from the tile's start
    margin, ramp = overlap * RAMP_START, overlap * (1 - 2 * RAMP_START)

    def rise(dist):
        u = ((dist - margin) / ramp).clamp(0, 1)
        return u * u * (3 - 2 * u)

    out = []
    for s in starts:
        w = torch.ones(tile, dtype=torch.float64)
        if s > 0:
            w = w * rise(d)
        if s + tile < length:
            w = w * rise(tile - d)
        out.append(w)
    return out


def _normalised(length: int, tile: int, starts: list[int], overlap: int) -> list[torch.Tensor]:
    tile = min(tile, length)
    raw = _axis_weights(length, tile, starts, overlap)
    total = torch.zeros(length, dtype=torch.float64)
    for s, w in zip(starts, raw):
        total[s:s + tile] += w
    return [(w / total[s:s + tile]).float() for s, w in zip(starts, raw)]


@dataclass(frozen=True)
class TilePlan:
    """Tiles of one shape over a frame of `width` x `height` pixels. `tile_width` x `tile_height`
    is the tile (clamped to the frame), `overlap` the least shared pixels, `keep`: every tile keeps
    its frame and pair results across calls (else only the tile being computed holds any)."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    overlap: int
    keep: bool = True

    @property
    def xs(self) -> list[int]:
        return axis_starts(self.width, self.tile_width, self.overlap)

    @property
    def ys(self) -> list[int]:
        return axis_starts(self.height, self.tile_height, self.overlap)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of every tile, pixels."""
        return min(self.tile_height, self.height), min(self.tile_width, self.width)

    @property
    def count(self) -> int:
        return len(self.xs) * len(self.ys)

    @property
    def whole(self) -> bool:
        return self.count == 1

    def tiles(self) -> list[tuple[int, int]]:
        """(x, y) of each tile's top-left corner, row by row."""
        return [(x, y) for y in self.ys for x in self.xs]

    def weights(self) -> list[torch.Tensor]:
        """Per tile, its (1, h, w) float32 blending weights; they sum to 1 over the frame."""
        th, tw = self.shape
        wx = _normalised(self.width, tw, self.xs, self.overlap)
        wy = _normalised(self.height, th, self.ys, self.overlap)
        return [(wy[j][:, None] * wx[i][None, :])[None] for j in range(len(wy)) for i in range(len(wx))]

    def describe(self) -> str:
        th, tw = self.shape
        if self.whole:
            return f"whole {self.width}x{self.height} frames"
        return (f"{tw}x{th} tiles, overlap {self.overlap} px ({len(self.xs)}x{len(self.ys)} = {self.count} tiles"
                f"{'' if self.keep else ', frame results not kept across pairs'})")


# -- memory -------------------------------------------------------------------------------------

def plan_memory(config: ModelConfig, plan: TilePlan, device: str = "cpu", precision: str = "fp32",
                kernels: str = "reference", compile: bool = False, backend: str = "torch") -> int:
    """Estimated peak bytes of interpolating with `plan` on `backend` (`estimate_memory`: torch's
    figures, ONNX Runtime's on the CPU; torch's for the backends without one): one tile's run,
    the kept results of the other tiles when `plan.keep`, and the frame-sized inputs, output
    accumulators and weights. Beyond the loaded libraries on the CPU; with the CUDA overhead on a GPU."""
    th, tw = plan.shape
    figures = "onnxruntime" if backend == "onnxruntime" and str(device).split(":")[0] == "cpu" else "torch"
    # int8 has ONNX Runtime's CPU figure; elsewhere (TensorRT) the FP32 figure stands in.
    precision = precision if precision in ("fp32", "fp16") or figures == "onnxruntime" else "fp32"
    est = estimate_memory(config, th, tw, device, precision, figures, kernels, compile)
    if plan.whole:
        return est.total
    kept = (plan.count - 1) * (est.frames_kept + est.pair_kept) if plan.keep else 0
    frame_io = (2 * 3 + OUTPUTS_COUNTED * 3 + 2) * plan.width * plan.height * 4
    return est.total + kept + frame_io


def plan_cost(plan: TilePlan) -> float:
    """Relative work per pair: padded pixels over all tiles, plus the frame stage's share again
    when the frame results are not kept across pairs."""
    from dainrt.model import padded_size

    ph, pw = padded_size(*plan.shape)
    return plan.count * ph * pw * (1.0 if plan.keep else 1.0 + FRAME_SHARE)


def _rss_bytes() -> int:
    """Resident bytes of live data: freed memory the allocator keeps for reuse
    (`host_memory.reuse_freed_memory`) is given back first, so it does not count as spent."""
    from .host_memory import HeapTrimmer

    HeapTrimmer(every=0.0)()
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")    # pragma: no cover - no /proc


def memory_budget(device: torch.device | str) -> tuple[int, str]:
    """(bytes the run may still add, where that figure comes from), margin included.

    `DAINRT_MEMORY_BUDGET_MB` caps the whole process (CPU: its peak RSS, of which what is resident
    now is spent; CUDA: device memory, of which torch's reservations are spent); else the CUDA
    device's free memory (`torch.cuda.mem_get_info`) or the machine's available RAM."""
    device = torch.device(device)
    env = os.environ.get(BUDGET_ENV, "").strip()
    if env:
        try:
            mb = float(env)
        except ValueError:
            raise OptionError("memory budget", f"{BUDGET_ENV} must be a number of MB, got {env!r}") from None
        if not mb > 0:
            raise OptionError("memory budget", f"{BUDGET_ENV} must be above 0, got {env!r}")
        spent = torch.cuda.memory_reserved(device) if device.type == "cuda" else _rss_bytes()
        return int(mb * 2**20 * BUDGET_MARGIN) - spent, f"{BUDGET_ENV}={env}"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * BUDGET_MARGIN), f"free on {device}"
    return int(available_ram() * BUDGET_MARGIN), "available RAM"


def choose_tiles(config: ModelConfig, height: int, width: int, budget: int, overlap: int = DEFAULT_OVERLAP,
                 device: str = "cpu", precision: str = "fp32", kernels: str = "reference",
                 compile: bool = False, loaded: int = 0, backend: str = "torch") -> TilePlan:
    """The cheapest plan (`plan_cost`) whose estimated peak fits `budget` bytes: whole frames when
    they fit, else square tiles (sides multiples of TILE_STEP, at least MIN_TILE and twice the
    overlap), with or without each tile's results kept. `loaded`: bytes of the estimate already
    resident (the weights of a loaded model). OptionError when not even the smallest tile fits."""
    opts = dict(device=device, precision=precision, kernels=kernels, compile=compile, backend=backend)
    whole = TilePlan(width, height, width, height, overlap)
    if plan_memory(config, whole, **opts) - loaded <= budget:
        return whole
    best = None
    smallest = max(MIN_TILE, -(-2 * overlap // TILE_STEP) * TILE_STEP)
    for side in range(smallest, max(width, height) + TILE_STEP, TILE_STEP):
        for keep in (True, False):
            plan = TilePlan(width, height, side, side, overlap, keep)
            if plan.whole or plan_memory(config, plan, **opts) - loaded > budget:
                continue
            if best is None or plan_cost(plan) < plan_cost(best):
                best = plan
    if best is None:
        need = plan_memory(config, TilePlan(width, height, smallest, smallest, overlap, False), **opts) - loaded
        raise OptionError("tile", f"not even {smallest}x{smallest} tiles fit: they need about {format_bytes(need)}, "
                                  f"the budget leaves {format_bytes(max(budget, 0))}")
    return best


def engine_sizes(sizes: list[tuple[int, int]], option: TileOption, config: ModelConfig, budget: int | None = None,
                 device: str = "cuda", precision: str = "fp16") -> list[tuple[int, int]]:
    """(width, height) of the pictures each film of `sizes` feeds the engines with under `option`:
    its tile shape when it is tiled, else the frame (what `dainrt build-engine --tile` builds
    for). `budget` (bytes) is needed for auto, which plans as a run would at the default overlap."""
    out = []
    for (w, h) in sizes:
        if option.mode == "off":
            plan = TilePlan(w, h, w, h, DEFAULT_OVERLAP)
        elif option.mode == "fixed":
            plan = TilePlan(w, h, option.size[0], option.size[1], option.overlap or DEFAULT_OVERLAP)
        else:
            plan = choose_tiles(config, h, w, budget, option.overlap or DEFAULT_OVERLAP, device, precision)
        th, tw = plan.shape
        if (tw, th) not in out:
            out.append((tw, th))
    return out


# -- motion -------------------------------------------------------------------------------------

def estimate_motion(image0: torch.Tensor, image1: torch.Tensor) -> float:
    """A cheap estimate of the pair's large motions, in pixels: block matching of grey thumbnails
    (longer side MOTION_THUMB px, search +-MOTION_SEARCH thumbnail px, blocks of MOTION_BLOCK px).
    A block counts as moved only where its best match beats staying put clearly (at half the
    cost, and by 1 % of full scale), so flat and repetitive areas read as still; the result is
    the MOTION_QUANTILE of the displacement over textured blocks plus one thumbnail pixel,
    times the thumbnail's scale. Images: (3,H,W) float in [0,1]."""
    h, w = image0.shape[-2:]
    scale = max(h, w) / MOTION_THUMB
    size = (max(8, round(h / scale)), max(8, round(w / scale)))

    def thumb(x):
        return F.interpolate(x.detach().float().mean(0)[None, None].cpu(), size=size, mode="area")[0, 0]

    def pool(x):      # (..., H, W) -> block means, same shape
        return F.avg_pool2d(x.reshape(-1, 1, *x.shape[-2:]), MOTION_BLOCK, 1, MOTION_BLOCK // 2,
                            count_include_pad=False).reshape(x.shape)

    a, b = thumb(image0), thumb(image1)
    r = min(MOTION_SEARCH, min(size) // 2)
    bp = F.pad(b[None, None], (r, r, r, r), mode="replicate")[0, 0]
    th, tw = size
    still = pool((a - b).abs())
    best, best_v = still.clone(), torch.zeros(size)
    dx = torch.arange(-r, r + 1, dtype=torch.float32)
    for dy in range(-r, r + 1):          # all horizontal shifts of one row of the search at once
        rows = bp[r + dy: r + dy + th].unfold(1, tw, 1).permute(1, 0, 2)       # (2r+1, th, tw)
        cost, i = pool((a[None] - rows).abs()).min(0)
        better = cost < best
        best = torch.where(better, cost, best)
        best_v = torch.where(better, torch.hypot(dx[i], torch.tensor(float(dy))), best_v)
    moved = (best < 0.5 * still) & (still - best > 0.01)
    textured = pool((a - pool(a)).abs()) > 0.02
    v = torch.where(moved, best_v, 0.0)[textured]
    if v.numel() == 0:
        return 0.0
    return (float(torch.quantile(v, MOTION_QUANTILE)) + 1.0) * scale


def auto_overlap(motion: float, least: int = DEFAULT_OVERLAP) -> int:
    """The overlap (pixels, a multiple of 16) whose zero-weight margins (a quarter of it)
    cover `motion` pixels, and at least `least`."""
    return max(least, -(-math.ceil(4 * motion) // 16) * 16)


def _say(message: str) -> None:
    print(f"dainrt: {message}", file=sys.stderr)


# -- the tiled runner ---------------------------------------------------------------------------

class TiledRunner:
    """`Runner`'s interface (`interpolate`, `clear`, `calls`, `backend`) over tiles: one `Runner`
    per tile, blended as the module docstring says. The plan is made on the first frame size
    seen (`option`: a TileOption; `config`: the model's, for the memory estimate of auto) and
    kept for the film; with an automatic overlap it is widened when a pair moves more."""

    def __init__(self, backend: Backend, option: TileOption, config: ModelConfig, engine_options: dict | None = None):
        self.backend, self.option, self.config = backend, option, config
        self.engine_options = {k: v for k, v in (engine_options or {}).items()
                               if k in ("precision", "kernels", "compile")}
        self.engine_options["backend"] = backend.name
        self.plan: TilePlan | None = None
        self._runners: list[Runner] = []
        self._weights: list[torch.Tensor] = []
        self._budget: tuple[int, str] | None = None
        self.calls = {"frame": 0, "pair": 0, "warp": 0, "rectify": 0}

    # planning

    def _loaded(self) -> int:
        """Bytes of the estimate already resident: the model's weights (loaded before the runner)."""
        from .memory import FLOAT32, weight_values

        return weight_values(self.config) * FLOAT32

    def _make_plan(self, height: int, width: int, overlap: int) -> TilePlan:
        o = self.option
        if o.mode == "fixed":
            plan = TilePlan(width, height, o.size[0], o.size[1], overlap)
            return plan if self._fits(plan) else TilePlan(width, height, o.size[0], o.size[1], overlap, keep=False)
        if self._budget is None:
            self._budget = memory_budget(self.backend.device)
        return choose_tiles(self.config, height, width, self._budget[0], overlap, self.backend.device.type,
                            loaded=self._loaded(), **self.engine_options)

    def _fits(self, plan: TilePlan) -> bool:
        if self._budget is None:
            self._budget = memory_budget(self.backend.device)
        return plan_memory(self.config, plan, self.backend.device.type, **self.engine_options) - self._loaded() \
            <= self._budget[0]

    def _use(self, plan: TilePlan) -> None:
        self.plan = plan
        for r in self._runners:
            self._count(r)
        self._runners = [Runner(self.backend) for _ in range(plan.count)]
        self._weights = [w.to(self.backend.device) for w in plan.weights()] if not plan.whole else []

    def _count(self, runner: Runner) -> None:
        for k, v in runner.calls.items():
            self.calls[k] += v
            runner.calls[k] = 0

    def _ensure_plan(self, image0: torch.Tensor, image1: torch.Tensor) -> None:
        h, w = image0.shape[-2:]
        if self.plan is not None and (self.plan.height, self.plan.width) != (h, w):
            self.plan = None             # pictures of another size (the API, eval): a new plan
        fixed = self.option.overlap
        if self.plan is None:
            plan = self._make_plan(h, w, fixed if fixed is not None else DEFAULT_OVERLAP)
            if not plan.whole and fixed is None:
                plan = self._widened(plan, image0, image1) or plan
            self._use(plan)
            if not (plan.whole and self.option.quiet):
                where = f" (estimated peak {format_bytes(self._peak())}, {format_bytes(self._budget[0])} free by " \
                        f"{self._budget[1]})" if self._budget else ""
                _say(f"tiles: {plan.describe()}{where}")
            return
        if not self.plan.whole and fixed is None:
            wider = self._widened(self.plan, image0, image1)
            if wider is not None:
                self._use(wider)
                _say(f"tiles: overlap widened to {wider.overlap} px for a large motion ({wider.describe()})")

    def _peak(self) -> int:
        return plan_memory(self.config, self.plan, self.backend.device.type, **self.engine_options)

    def _widened(self, plan: TilePlan, image0: torch.Tensor, image1: torch.Tensor) -> TilePlan | None:
        """The plan with the overlap the pair's motion needs, or None when `plan`'s suffices. The
        tile shape stays; the overlap is capped at half the tile along the tiled axes."""
        th, tw = plan.shape
        cap = min([t // 2 for t, n in ((th, plan.height), (tw, plan.width)) if t < n])
        need = min(auto_overlap(estimate_motion(image0, image1)), cap)
        if need <= plan.overlap:
            return None
        wider = TilePlan(plan.width, plan.height, plan.tile_width, plan.tile_height, need, plan.keep)
        if wider.keep and not self._fits(wider):
            wider = TilePlan(plan.width, plan.height, plan.tile_width, plan.tile_height, need, keep=False)
        return wider

    # running

    def interpolate(self, key0: Hashable, image0: torch.Tensor, key1: Hashable, image1: torch.Tensor,
                    times: Sequence[float]) -> list[torch.Tensor]:
        """`Runner.interpolate` over the tiles: (3,H,W) float32 in, one (3,H,W) float32 per t out."""
        self._ensure_plan(image0, image1)
        plan = self.plan
        if plan.whole:
            out = self._runners[0].interpolate(key0, image0, key1, image1, times)
            self._count(self._runners[0])
            return out
        th, tw = plan.shape
        outs = [torch.zeros_like(image0) for _ in times]
        for (x, y), runner, weight in zip(plan.tiles(), self._runners, self._weights):
            crop0, crop1 = (im[:, y:y + th, x:x + tw] for im in (image0, image1))
            for out, tile in zip(outs, runner.interpolate(key0, crop0, key1, crop1, times)):
                out[:, y:y + th, x:x + tw] += tile * weight
            if not plan.keep:
                runner.clear()
            self._count(runner)
        return outs

    def interpolate_alpha(self, key0: Hashable, alpha0: torch.Tensor, key1: Hashable, alpha1: torch.Tensor,
                          times: Sequence[float]) -> list[torch.Tensor]:
        """`Runner.interpolate_alpha` when the frame is one tile; alpha over several tiles is not
        built yet (its blend would need each tile's pair kept until its alpha is made)."""
        if self.plan is None or not self.plan.whole:
            raise DainrtError("alpha on tiled frames is not supported yet: use --tile off, or a memory budget "
                              "in which whole frames fit")
        return self._runners[0].interpolate_alpha(key0, alpha0, key1, alpha1, times)

    def clear(self) -> None:
        for r in self._runners:
            r.clear()


def make_runner(backend: Backend, option: TileOption | None, config: ModelConfig,
                engine_options: dict | None = None) -> Runner | TiledRunner:
    """The runner for `option`: the plain `Runner` when tiling is off, else a `TiledRunner`."""
    if option is None or option.mode == "off":
        return Runner(backend)
    return TiledRunner(backend, option, config, engine_options)
