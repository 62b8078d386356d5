"""Procedural training clips with exact in-between frames (no downloads, no data sets).

A scene is a stack of layers, far to near: an opaque background and a few sprites (soft-edged
blobs, ellipses, rounded boxes) with their own depth. Each layer carries a texture (fractal
noise, stripes/checks/dots, or a crop of a photo shipped inside an installed package) and moves
with its own affine motion between a start and an end pose; a camera pan moves all of them.
Sprites overlap and move differently, so occlusion and disocclusion happen.

The frame at any time s in [0, 1] is *rendered* at that time (poses interpolated: position and
angle linearly, scale geometrically), so the ground truth at t is exact, not interpolated.
Ground-truth flows 0->1 and 1->0 (pixels, channel 0 = right, 1 = down), layer depth and, for
frames 0 and 1, which layer each pixel shows and which layers overlap (`LayerTruth`, the depth
phase's supervision) come with each clip. `ClipSettings` can widen the motion (camera pans as
large as the layers' own motion, sprites kept on screen half-way, pans near the largest) and draw
x4 gaps (t = 0.25 / 0.5 / 0.75), sprite depths that follow their size and a depth of field
(layers behind the nearest one blurred by their distance); its defaults draw
exactly the clips of earlier versions. It can also draw flat-coloured layers (cut-out puppets on a
plain backdrop: no texture inside, only edges show the motion) and motion blur (each frame the mean
of renders across an exposure, as a real camera's shutter blurs a pan). Also: brightness flicker (stop-motion lighting; the gain
at t is interpolated linearly), held frames (no motion), a little sensor noise and 8-bit rounding on the inputs.

Everything is seeded: `SyntheticClips(seed=s)[i]` is the same clip on every call.
"""
from __future__ import annotations

import importlib.util
import math
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# Pictures shipped inside installed packages that are usable as textures: (package, folder).
# Found without importing the package. Pictures from Middlebury data sets are skipped (evaluation
# only), as are the tiny or synthetic ones.
PACKAGE_IMAGE_DIRS = (("skimage", "data"),)
SKIPPED_NAMES = ("motorcycle", "middlebury", "chessboard", "phantom", "microaneurysms", "multipage", "no_time", "horse")
MIN_IMAGE_SIDE = 160


# ----------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class Pose:
    """Where a layer's texture centre sits on screen (pixels), its rotation (radians) and scale."""

    x: float
    y: float
    angle: float = 0.0
    scale: float = 1.0


def pose_at(p0: Pose, p1: Pose, s: float) -> Pose:
    return Pose(
        p0.x + s * (p1.x - p0.x),
        p0.y + s * (p1.y - p0.y),
        p0.angle + s * (p1.angle - p0.angle),
        p0.scale * (p1.scale / p0.scale) ** s,
    )


@dataclass
class Layer:
    """texture (3,h,w) RGB in [0,1]; alpha (1,h,w) in [0,1] or None for an opaque layer whose
    texture repeats by reflection (a background); depth > 0 (larger = farther)."""

    texture: torch.Tensor
    alpha: torch.Tensor | None
    depth: float
    start: Pose
    end: Pose


@dataclass
class Scene:
    """Layers far to near on a height x width screen; gains (3,) multiply frames 0 and 1."""

    height: int
    width: int
    layers: list[Layer]
    gain0: torch.Tensor = field(default_factory=lambda: torch.ones(3))
    gain1: torch.Tensor = field(default_factory=lambda: torch.ones(3))


def _screen(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(height, dtype=torch.float32).view(height, 1).expand(height, width)
    xs = torch.arange(width, dtype=torch.float32).view(1, width).expand(height, width)
    return xs, ys


def _to_texture(pose: Pose, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen pixel -> texture coordinates relative to the texture centre (texture pixels)."""
    c, s = math.cos(pose.angle), math.sin(pose.angle)
    dx, dy = xs - pose.x, ys - pose.y
    return (c * dx + s * dy) / pose.scale, (-s * dx + c * dy) / pose.scale


def _to_screen(pose: Pose, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c, s = math.cos(pose.angle), math.sin(pose.angle)
    return pose.x + pose.scale * (c * u - s * v), pose.y + pose.scale * (s * u + c * v)


def _sample(layer: Layer, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear texture and alpha at texture coordinates (u, v): (3,H,W), (1,H,W)."""
    h, w = layer.texture.shape[-2:]
    grid = torch.stack((2 * u / w, 2 * v / h), dim=-1).unsqueeze(0)  # centre -> 0, edges -> +-1
    if layer.alpha is None:
        rgb = F.grid_sample(layer.texture[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return rgb[0], torch.ones_like(rgb[0, :1])
    both = torch.cat((layer.texture * layer.alpha, layer.alpha))[None]   # premultiplied
    out = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    alpha = out[3:].clamp(0, 1)
    return out[:3] / alpha.clamp(min=1e-6) * (alpha > 0), alpha


SOLID_ALPHA = 0.98       # a layer at least this opaque hides what lies behind it
CLEAR_ALPHA = 0.02       # a layer at most this opaque does not show
MIN_OVERLAP_PX = 4       # two layers overlap when both cover (alpha >= 0.5) this many pixels


class LayerTruth(NamedTuple):
    """Which layer each pixel shows and which layers overlap, at one time s.

    index (1,H,W) int64: the layer (0 = background, larger = nearer, as `Scene.layers`) seen at
    each pixel, -1 where no single layer is seen (soft edges, a layer showing through another);
    overlap (L,L) bool, symmetric, False on the diagonal: the two layers' shapes (alpha >= 0.5,
    hidden parts included) share at least `MIN_OVERLAP_PX` pixels. L = len(scene.layers).
    """

    index: torch.Tensor
    overlap: torch.Tensor


def render_layers(scene: Scene, s: float) -> tuple[torch.Tensor, torch.Tensor, LayerTruth]:
    """`render` plus the `LayerTruth` at time s (same compositing, no extra sampling)."""
    xs, ys = _screen(scene.height, scene.width)
    image = torch.zeros(3, scene.height, scene.width)
    depth = torch.zeros(1, scene.height, scene.width)
    index = torch.full((1, scene.height, scene.width), -1, dtype=torch.long)
    clean = torch.zeros(1, scene.height, scene.width, dtype=torch.bool)
    shapes = []
    for k, layer in enumerate(scene.layers):
        u, v = _to_texture(pose_at(layer.start, layer.end, s), xs, ys)
        rgb, alpha = _sample(layer, u, v)
        image = image + alpha * (rgb - image)
        depth = depth + alpha * (layer.depth - depth)
        solid, shows = alpha >= SOLID_ALPHA, alpha > CLEAR_ALPHA
        index = torch.where(alpha >= 0.5, k, index)
        clean = torch.where(solid, True, clean & ~shows)
        shapes.append((alpha >= 0.5).flatten())
    index = torch.where(clean, index, -1)
    cover = torch.stack(shapes).float()                  # (L, H*W)
    overlap = (cover @ cover.T) >= MIN_OVERLAP_PX
    overlap.fill_diagonal_(False)
    return image, depth, LayerTruth(index, overlap)


def render(scene: Scene, s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The scene at time s: image (3,H,W) (gain not applied) and depth (1,H,W), alpha-composited."""
    image, depth, _ = render_layers(scene, s)
    return image, depth


def exposed(scene: Scene, s: float, exposure: float, renders: int) -> torch.Tensor:
    """The image (3,H,W) (gain not applied) with the shutter open from s - exposure/2 to
    s + exposure/2 (fractions of the 0->1 interval): the mean of `renders` >= 2 renders spread evenly
    across it, i.e. motion blur. Depth, flow and layer truth stay those of the instant s."""
    times = [s + exposure * (k / (renders - 1) - 0.5) for k in range(renders)]
    return torch.stack([render(scene, u)[0] for u in times]).mean(0)


def flow(scene: Scene, s_from: float, s_to: float) -> torch.Tensor:
    """Ground-truth flow (2,H,W) in pixels: where each pixel of the frame at s_from is at s_to.

    At soft edges the flows of the layers are composited with the same alphas as the image.
    """
    xs, ys = _screen(scene.height, scene.width)
    out = torch.zeros(2, scene.height, scene.width)
    for layer in scene.layers:
        u, v = _to_texture(pose_at(layer.start, layer.end, s_from), xs, ys)
        _, alpha = _sample(layer, u, v)
        x1, y1 = _to_screen(pose_at(layer.start, layer.end, s_to), u, v)
        out = out + alpha * (torch.stack((x1 - xs, y1 - ys)) - out)
    return out


def gain_at(scene: Scene, s: float) -> torch.Tensor:
    return ((1 - s) * scene.gain0 + s * scene.gain1).view(3, 1, 1)


# ----------------------------------------------------------------------------------------------
# Textures


class _Rng:
    """Draws from one seeded torch.Generator (CPU), as Python floats/ints or tensors."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def uniform(self, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.g, dtype=torch.float64))

    def log_uniform(self, lo: float, hi: float) -> float:
        return math.exp(self.uniform(math.log(lo), math.log(hi)))

    def integer(self, lo: int, hi: int) -> int:
        """lo <= n <= hi."""
        return int(torch.randint(lo, hi + 1, (), generator=self.g))

    def chance(self, p: float) -> bool:
        return self.uniform() < p

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.g)

    def color(self) -> torch.Tensor:
        return self.rand(3, 1, 1)


def fractal_noise(rng: _Rng, channels: int, h: int, w: int) -> torch.Tensor:
    """Multi-octave value noise (channels,h,w), each channel rescaled to [0,1]."""
    out = torch.zeros(1, channels, h, w)
    cells = rng.integer(2, 6)
    persistence = rng.uniform(0.35, 0.8)
    amp = 1.0
    while cells <= max(h, w) // 2:
        grid = rng.rand(1, channels, cells + 1, cells + 1)
        out += amp * F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)
        amp *= persistence
        cells *= 2
    lo = out.amin(dim=(2, 3), keepdim=True)
    hi = out.amax(dim=(2, 3), keepdim=True)
    return ((out - lo) / (hi - lo).clamp(min=1e-6))[0]


def _colorize(rng: _Rng, gray: torch.Tensor) -> torch.Tensor:
    """(1,h,w) or (3,h,w) values in [0,1] -> RGB between/around random colours."""
    c0, c1 = rng.color(), rng.color()
    if gray.shape[0] == 1:
        return c0 + (c1 - c0) * gray
    mix = torch.eye(3) * rng.uniform(0.3, 1.0) + (rng.rand(3, 3) - 0.5) * rng.uniform(0.0, 1.0)
    return (0.5 * (c0 + c1) + torch.einsum("ij,jhw->ihw", mix, gray - 0.5)).clamp(0, 1)


def _pattern(rng: _Rng, h: int, w: int) -> torch.Tensor:
    """Stripes, checks or dots at a random frequency and angle, sharp or soft, coloured."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    a = rng.uniform(0, math.pi)
    period = rng.log_uniform(3.0, 40.0)
    p = (xs * math.cos(a) + ys * math.sin(a)) * (2 * math.pi / period) + rng.uniform(0, 6.3)
    q = (-xs * math.sin(a) + ys * math.cos(a)) * (2 * math.pi / period) + rng.uniform(0, 6.3)
    kind = rng.integer(0, 2)
    if kind == 0:
        wave = torch.sin(p)
    elif kind == 1:
        wave = torch.sin(p) * torch.sin(q)
    else:
        wave = 1.0 - 2.0 * ((torch.cos(p) + torch.cos(q) + 2) / 4 < rng.uniform(0.2, 0.6)).float()
    sharp = rng.log_uniform(1.0, 20.0)
    wave = torch.tanh(sharp * wave) / math.tanh(sharp)
    return _colorize(rng, (0.5 + 0.5 * wave)[None])


def _photo(rng: _Rng, images: Sequence[torch.Tensor], h: int, w: int) -> torch.Tensor:
    """A random crop of a random picture, rescaled to (h, w), flipped and colour-jittered."""
    img = images[rng.integer(0, len(images) - 1)]
    ih, iw = img.shape[-2:]
    zoom = rng.log_uniform(0.6, 1.6)                    # texture pixels per picture pixel
    ch, cw = min(ih, max(8, round(h / zoom))), min(iw, max(8, round(w / zoom)))
    y0, x0 = rng.integer(0, ih - ch), rng.integer(0, iw - cw)
    crop = img[:, y0:y0 + ch, x0:x0 + cw].float() / 255.0
    crop = F.interpolate(crop[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    if rng.chance(0.5):
        crop = crop.flip(-1)
    if crop.shape[0] == 1 or rng.chance(0.1):            # grey picture: tint it
        crop = crop.mean(0, keepdim=True) * (0.5 + rng.color())
    crop = crop * (0.75 + 0.5 * rng.rand(3, 1, 1))       # white balance
    return crop.clamp(0, 1) ** rng.uniform(0.7, 1.4)


def texture(rng: _Rng, images: Sequence[torch.Tensor], h: int, w: int) -> torch.Tensor:
    """An RGB texture (3,h,w) in [0,1]: photo, noise or pattern, sometimes two mixed, shaded."""
    def one() -> torch.Tensor:
        r = rng.uniform()
        if images and r < 0.55:
            return _photo(rng, images, h, w)
        if r < 0.8:
            n = fractal_noise(rng, rng.integer(1, 3) if rng.chance(0.5) else 3, h, w)
            return _colorize(rng, n if n.shape[0] != 2 else n[:1])
        return _pattern(rng, h, w)

    tex = one()
    if rng.chance(0.35):
        mask = fractal_noise(rng, 1, h, w)
        edge = rng.log_uniform(0.02, 0.3)
        mask = torch.sigmoid((mask - rng.uniform(0.3, 0.7)) / edge)
        tex = tex + mask * (one() - tex)
    if rng.chance(0.5):                                    # smooth shading
        tex = tex * (1 + rng.uniform(0.1, 0.5) * (2 * fractal_noise(rng, 1, h, w) - 1))
    return tex.clamp(0, 1)


def _blur(x: torch.Tensor, sigma: float, grow: bool = False) -> torch.Tensor:
    """Separable Gaussian blur of (C,h,w) with std `sigma` px (radius 3 sigma): the same size with
    the borders reflected, or with `grow` zeros around it and 2 x radius larger (nothing cut off)."""
    r = max(1, min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1))
    taps = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    c = x.shape[0]
    x = F.pad(x[None], (2 * r,) * 4) if grow else F.pad(x[None], (r,) * 4, mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, taps.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)[0]


def defocused(layer: Layer, sigma: float) -> Layer:
    """`layer` seen out of focus: texture and alpha blurred by a Gaussian of std `sigma` screen
    pixels (sigma / scale texture pixels at its start pose); a sprite's texture grows by the blur's
    reach so that its widened soft edge is not cut off (its centre stays where it was)."""
    sigma = sigma / layer.start.scale
    if sigma < 0.3:
        return layer
    if layer.alpha is None:
        return replace(layer, texture=_blur(layer.texture, sigma))
    both = _blur(torch.cat((layer.texture * layer.alpha, layer.alpha)), sigma, grow=True)   # premultiplied
    alpha = both[3:].clamp(0, 1)
    return replace(layer, texture=(both[:3] / alpha.clamp(min=1e-6)).clamp(0, 1), alpha=alpha)


def sprite_alpha(rng: _Rng, h: int, w: int) -> torch.Tensor:
    """A soft-edged (anti-aliased, ~1 texel) shape filling part of an (h, w) canvas: (1,h,w)."""
    ys, xs = torch.meshgrid(
        (torch.arange(h, dtype=torch.float32) + 0.5 - h / 2) / (h / 2),
        (torch.arange(w, dtype=torch.float32) + 0.5 - w / 2) / (w / 2),
        indexing="ij",
    )
    a = rng.uniform(0, math.pi)
    x, y = xs * math.cos(a) + ys * math.sin(a), -xs * math.sin(a) + ys * math.cos(a)
    rx, ry = rng.uniform(0.3, 0.95), rng.uniform(0.3, 0.95)
    kind = rng.integer(0, 2)
    if kind == 0:        # blob: radius with random harmonics
        r = torch.sqrt((x / rx) ** 2 + (y / ry) ** 2)
        theta = torch.atan2(y, x)
        bound = torch.ones_like(r)
        for k in range(2, 6):
            bound = bound + rng.uniform(-0.12, 0.12) * torch.cos(k * theta + rng.uniform(0, 6.3))
        dist = (r - bound) * min(rx, ry)
    elif kind == 1:      # ellipse
        dist = (torch.sqrt((x / rx) ** 2 + (y / ry) ** 2) - 1) * min(rx, ry)
    else:                # rounded box (superellipse)
        p = rng.uniform(3.0, 10.0)
        dist = ((x.abs() / rx) ** p + (y.abs() / ry) ** p) ** (1 / p) - 1
        dist = dist * min(rx, ry)
    texel = 2.0 / min(h, w)
    return (0.5 - dist / texel).clamp(0, 1)[None]


# ----------------------------------------------------------------------------------------------
# Pictures from installed packages


def package_image_dirs() -> list[Path]:
    """Folders of sample pictures inside installed packages (found without importing them)."""
    found = []
    for package, sub in PACKAGE_IMAGE_DIRS:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for root in (spec.submodule_search_locations or []) if spec else []:
            if (Path(root) / sub).is_dir():
                found.append(Path(root) / sub)
    return found


def load_images(dirs: Sequence[str | Path] | None = None) -> list[torch.Tensor]:
    """uint8 (C,H,W) tensors (C = 1 or 3) of the pictures in `dirs` (default: the installed
    packages' sample folders), sorted by name; tiny, synthetic and Middlebury pictures skipped.
    No pictures found is fine: the generator then uses noise and patterns only."""
    from PIL import Image

    dirs = package_image_dirs() if dirs is None else [Path(d) for d in dirs]
    files = sorted({f for d in dirs for f in Path(d).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES})
    images = []
    for f in files:
        if any(s in f.name.lower() for s in SKIPPED_NAMES):
            continue
        try:
            with Image.open(f) as im:
                im = im.convert("L" if im.mode in ("L", "I;16", "I", "1") else "RGB")
                arr = np.asarray(im)
        except OSError:
            continue
        if min(arr.shape[:2]) < MIN_IMAGE_SIDE:
            continue
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        images.append(torch.from_numpy(np.array(arr, copy=True)))
    return images


# ----------------------------------------------------------------------------------------------
# Clips


class Clip(NamedTuple):
    """frame0, frame1, frame_t (3,H,W) in [0,1]; t; flow01, flow10 (2,H,W) px; depth0, depth1
    (1,H,W) alpha-composited layer depth (larger = farther, background 100).

    Layer truth of frames 0 and 1 (see `LayerTruth`), padded to L = max_sprites + 1 layers so
    that clips of one set stack: layers0, layers1 (1,H,W) int64 layer seen per pixel (-1: none);
    layer_depth (L,) the layers' depths (0: no such layer); overlap0, overlap1 (L,L) bool.
    """

    frame0: torch.Tensor
    frame1: torch.Tensor
    frame_t: torch.Tensor
    t: float
    flow01: torch.Tensor
    flow10: torch.Tensor
    depth0: torch.Tensor
    depth1: torch.Tensor
    layers0: torch.Tensor
    layers1: torch.Tensor
    layer_depth: torch.Tensor
    overlap0: torch.Tensor
    overlap1: torch.Tensor


@dataclass(frozen=True)
class ClipSettings:
    """What the generator draws from. Motions are per layer, frame 0 -> frame 1, in pixels."""

    max_motion: float = 40.0       # largest layer displacement
    small_motion: float = 6.0      # half of the layers move at most this much (uniform)
    max_sprites: int = 4
    pan_chance: float = 0.6        # camera pan (all layers)
    held_chance: float = 0.05      # a held frame: nothing moves
    flicker_chance: float = 0.3
    flicker: float = 0.06          # std of the per-frame gain
    noise: float = 0.01            # largest sensor-noise std on the inputs
    middle_chance: float = 0.7     # t = 0.5, else t uniform in [0.1, 0.9]
    # Large motion and x4 gaps (the defaults keep the draws of earlier versions bit for bit).
    pan_scale: float = 0.5         # camera pan = a `_motion` draw times this (1: pans up to max_motion)
    centred: bool = False          # place each sprite's *mid* pose on screen (large motions stay in view)
    quarter_chance: float = 0.0    # t drawn from 0.25 / 0.5 / 0.75 (an x4 gap), before middle_chance
    wide_pan_chance: float = 0.0   # share of pans drawn uniform in [1/2, 1] x the largest pan (the
                                   # log-uniform draw makes pans near the largest rare: ~3 % above 40 px of 64)
    perspective: bool = False      # a sprite's depth follows its size (nearer = larger, as through a lens,
                                   # up to a factor-2 jitter): a cue a one-frame depth net can learn besides occlusion
    defocus: float = 0.0           # depth of field: focus on the nearest layer, a layer at depth d blurred with a
                                   # Gaussian of std k x (1 - d_near / d) px, k uniform in [0.3, 1] x this (0: all sharp)
    flat_chance: float = 0.0       # share of layers (background included) of one flat colour: the stop-motion
                                   # puppet on a plain backdrop, whose motion only its edges show
    shutter: float = 0.0           # motion blur: each frame's exposure uniform in [0, this] x the 0->1 interval
                                   # (frames 0, 1 and t drawn apart, as a camera's speed changes; 0: sharp)


class SyntheticClips(torch.utils.data.Dataset):
    """An endless, seeded set of clips: `clips[i]` is a `Clip` of `height` x `width` pixels.

    `images`: picture tensors from `load_images` (default: the installed packages' pictures).
    `t`: a fixed time for every clip (e.g. 0.5 for validation) instead of the random draw.
    """

    def __init__(self, size: int | tuple[int, int] = 128, seed: int = 0, images: Sequence[torch.Tensor] | None = None,
                 settings: ClipSettings = ClipSettings(), t: float | None = None, length: int = 2**31 - 1):
        self.height, self.width = (size, size) if isinstance(size, int) else size
        self.seed = int(seed)
        self.images = list(load_images() if images is None else images)
        self.settings = settings
        self.t = t
        self.length = length

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int) -> _Rng:
        return _Rng(zlib.crc32(f"dainrt-synthetic:{self.seed}:{index}".encode()))

    def _motion(self, rng: _Rng, wide: bool = False) -> tuple[float, float]:
        """A displacement (x, y) px in a random direction: `wide` draws its length uniform in
        [1/2, 1] x max_motion, else from the layers' mix (small uniform or log-uniform)."""
        st = self.settings
        if wide:
            m = rng.uniform(0.5, 1.0) * st.max_motion
        else:
            m = rng.uniform(0.0, st.small_motion) if rng.chance(0.5) else rng.log_uniform(0.5, st.max_motion)
        a = rng.uniform(0, 2 * math.pi)
        return m * math.cos(a), m * math.sin(a)

    def _texture(self, rng: _Rng, side: int) -> torch.Tensor:
        """A layer's (3,side,side) texture: `texture`, or one flat colour with `flat_chance`."""
        if self.settings.flat_chance > 0 and rng.chance(self.settings.flat_chance):   # no draw at 0: default clips unchanged
            return rng.color().expand(3, side, side).clone()
        return texture(rng, self.images, side, side)

    def exposures(self, index: int) -> tuple[float, float, float]:
        """Exposure of frames 0, 1 and t of clip `index` (fractions of the 0->1 interval; 0: sharp)."""
        if self.settings.shutter <= 0:
            return 0.0, 0.0, 0.0
        rng = self._rng(index + (2 << 40))         # a stream of its own: the scene and noise draws stay
        return tuple(rng.uniform(0, self.settings.shutter) for _ in range(3))

    def scene(self, index: int) -> tuple[Scene, float]:
        """The scene of clip `index` and its time t."""
        rng, st = self._rng(index), self.settings
        h, w = self.height, self.width
        held = rng.chance(st.held_chance)
        pan = (0.0, 0.0)
        if rng.chance(st.pan_chance):
            pan = self._motion(rng, wide=st.wide_pan_chance > 0 and rng.chance(st.wide_pan_chance))
        pan = (pan[0] * st.pan_scale, pan[1] * st.pan_scale)

        def poses(x, y, own, turn, zoom, scale) -> tuple[Pose, Pose]:
            if st.centred and not held:            # (x, y) is where the layer is half-way
                x, y = x - 0.5 * (own[0] + pan[0]), y - 0.5 * (own[1] + pan[1])
            start = Pose(x, y, rng.uniform(-math.pi, math.pi), scale)
            if held:
                return start, start
            end = Pose(x + own[0] + pan[0], y + own[1] + pan[1], start.angle + turn, scale * math.exp(zoom))
            return start, end

        layers = []
        side = 2 * max(h, w)      # background canvas: room for pans and turns
        bg = poses(w / 2 + rng.uniform(-8, 8), h / 2 + rng.uniform(-8, 8),
                   self._motion(rng) if rng.chance(0.3) else (0.0, 0.0),
                   rng.uniform(-0.03, 0.03) if rng.chance(0.3) else 0.0,
                   rng.uniform(-0.06, 0.06) if rng.chance(0.3) else 0.0, rng.log_uniform(0.8, 1.25))
        layers.append(Layer(self._texture(rng, side), None, 100.0, *bg))
        n = rng.integer(0, st.max_sprites)
        smallest = max(16, min(h, w) // 4)
        if st.perspective:          # 12 x (frame side / size) x jitter: depths 8-67 (background 100)
            sizes = [rng.integer(smallest, max(h, w)) for _ in range(n)]
            sprites = sorted(((min(80.0, 12.0 * max(h, w) / size * rng.log_uniform(0.7, 1.4)), size) for size in sizes), reverse=True)
        else:
            sprites = [(depth, None) for depth in sorted((rng.uniform(1.0, 50.0) for _ in range(n)), reverse=True)]
        for depth, size in sprites:    # far to near
            size = rng.integer(smallest, max(h, w)) if size is None else size
            tex_side = max(16, int(size / rng.uniform(0.8, 1.2)))
            scale = size / tex_side
            alpha = sprite_alpha(rng, tex_side, tex_side)
            start, end = poses(rng.uniform(0, w), rng.uniform(0, h), self._motion(rng),
                               rng.uniform(-0.15, 0.15) if rng.chance(0.5) else 0.0,
                               rng.uniform(-0.1, 0.1) if rng.chance(0.4) else 0.0, scale)
            layers.append(Layer(self._texture(rng, tex_side), alpha, depth, start, end))

        scene = Scene(h, w, layers)
        if rng.chance(st.flicker_chance):
            scene.gain0, scene.gain1 = (1 + st.flicker * (torch.randn((), generator=rng.g) + 0.3 * torch.randn(3, generator=rng.g)).clamp(-3, 3)
                                        for _ in range(2))
        if self.t is not None:
            t = self.t
        elif st.quarter_chance > 0 and rng.chance(st.quarter_chance):
            t = (0.25, 0.5, 0.75)[rng.integer(0, 2)]
        else:
            t = 0.5 if rng.chance(st.middle_chance) else rng.uniform(0.1, 0.9)
        if st.defocus > 0:       # drawn last: the other draws stay those of a sharp clip
            strength = rng.uniform(0.3, 1.0) * st.defocus
            near = min(layer.depth for layer in layers)
            scene.layers = [defocused(layer, strength * (1 - near / layer.depth)) for layer in layers]
        return scene, float(t)

    def __getitem__(self, index: int) -> Clip:
        scene, t = self.scene(index)
        rng = self._rng(index + (1 << 40))          # noise stream, independent of the scene draws
        frames, depths, truth = [], [], []
        for s, exposure in zip((0.0, 1.0, t), self.exposures(index)):
            image, depth, layers = render_layers(scene, s)
            if exposure > 0:     # ~2 px of the largest motion between renders: a smear, not copies
                image = exposed(scene, s, exposure, 2 + math.ceil(exposure * self.settings.max_motion / 2))
            frames.append((image * gain_at(scene, s)).clamp(0, 1))
            depths.append(depth)
            truth.append(layers)
        noise = rng.uniform(0, self.settings.noise)
        for i in (0, 1):        # inputs: sensor noise and 8-bit rounding; the target stays exact
            noisy = frames[i] + noise * torch.randn(frames[i].shape, generator=rng.g)
            frames[i] = (noisy.clamp(0, 1) * 255).round() / 255
        n = self.settings.max_sprites + 1
        layer_depth = torch.zeros(n)
        layer_depth[:len(scene.layers)] = torch.tensor([layer.depth for layer in scene.layers])
        overlaps = []
        for lt in truth[:2]:
            o = torch.zeros(n, n, dtype=torch.bool)
            o[:len(scene.layers), :len(scene.layers)] = lt.overlap
            overlaps.append(o)
        return Clip(frames[0], frames[1], frames[2], t, flow(scene, 0.0, 1.0), flow(scene, 1.0, 0.0), depths[0], depths[1],
                    truth[0].index, truth[1].index, layer_depth, *overlaps)


def collate(clips: Sequence[Clip]) -> Clip:
    """Stack clips into a batch: tensors get a leading batch dim, t becomes a (B,) tensor."""
    return Clip(*(torch.tensor([c.t for c in clips], dtype=torch.float32) if name == "t"
                  else torch.stack([getattr(c, name) for c in clips]) for name in Clip._fields))
