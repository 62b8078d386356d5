"""Evaluation on real frames: folders in the Middlebury layout (frame10.png, frame11.png ->
frame10i11.png) and triplets cut from a video (frames i and i+s in, i+1 .. i+s-1 the truth).

Metrics on the 8-bit RGB output (the model's frame rounded as `dainrt interpolate` writes it)
against the 8-bit ground truth, over all pixels and the three channels:

* PSNR = 10 log10(255^2 / MSE) in dB;
* SSIM with the usual constants (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, L 255),
  per channel over the window positions that fit inside the image, averaged over channels.

Two baselines next to the model:

* the blend of the two frames in 8 bits, t-weighted, ``floor((1-t) a + t b + 0.5)`` (at t = 0.5
  the 50/50 blend with halves rounded up, as ffmpeg's; the team's ffmpeg 5.1 figures: 38.48 /
  32.54 / 25.06 dB on RubberWhale / Dimetrodon / Venus, mean 32.03);
* ffmpeg's ``minterpolate`` (`MINTERPOLATE`: motion-compensated, overlapped-block, bidirectional
  search, variable-size blocks) run in yuv444p through PyAV's bundled libavfilter: the two
  frames (RGB -> yuv444p -> the filter -> RGB, swscale's default conversions) at 1 fps, the
  filter asked for ``fps=s``, its frame at pts k (time base 1/s) is the one at t = k/s.

Video triplets (`video_triplets`): every frame of the clip goes through the runtime's scene-cut
detector (`dainrt.runtime.scenes.Detector`, default thresholds); N triplets evenly spaced over
the clip are picked and those whose span holds a cut skipped (`pick_triplets`).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dainrt.base.errors import DainrtError
from dainrt.base.files import write_json as _write_json
from dainrt.base.metrics import psnr

FRAME0, FRAME1, MIDDLE = "frame10.png", "frame11.png", "frame10i11.png"
MINTERPOLATE = "mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1"
MINTERPOLATE_FORMAT = "yuv444p"
DEFAULT_TRIPLETS = {2: 12, 4: 8}        # per spacing, as the team's reference figures (tests/data/video/README.md)


class Result(NamedTuple):
    """One evaluated frame (or a mean): PSNR in dB, SSIM in [0,1], for the model, the blend and
    minterpolate (NaN where not run); t is the frame's time between its two inputs."""

    name: str
    psnr: float
    ssim: float
    blend_psnr: float
    blend_ssim: float
    mi_psnr: float = math.nan
    mi_ssim: float = math.nan
    t: float = 0.5


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two HxWx3 uint8 arrays (see the module docstring)."""
    x = torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1).unsqueeze(1)   # (3,1,H,W)
    y = torch.from_numpy(b.astype(np.float64)).permute(2, 0, 1).unsqueeze(1)
    r = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    g = g / g.sum()

    def blur(z):        # the 11x11 Gaussian window as two 1-D passes (same sums, ~10x faster)
        return F.conv2d(F.conv2d(z, g.view(1, 1, 1, 11)), g.view(1, 1, 11, 1))

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def zero_depth(model):
    """The depth ablation: zero the depth net's output conv (weights and bias), so its log-depth
    is 0 everywhere and the flow projection weighs every source pixel alike, as an untrained
    depth net does. Changes `model` (a `DAIN`) in place and returns it."""
    import torch

    out = model.depthNet[-1]
    with torch.no_grad():
        out.weight.zero_()
        if out.bias is not None:
            out.bias.zero_()
    return model


def find_sequences(root: str | os.PathLike) -> list[Path]:
    """`root` itself if it holds the three frames, else its sub-folders that do (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise DainrtError(f"not a folder: {root}")

    def complete(d: Path) -> bool:
        return all((d / f).is_file() for f in (FRAME0, FRAME1, MIDDLE))

    if complete(root):
        return [root]
    found = sorted(d for d in root.iterdir() if d.is_dir() and complete(d))
    if not found:
        raise DainrtError(f"no sequence folders with {FRAME0}, {FRAME1} and {MIDDLE} in {root}")
    return found


def blend(frame0: np.ndarray, frame1: np.ndarray, t: float) -> np.ndarray:
    """The t-weighted 8-bit blend of two HxWx3 uint8 frames, rounded half up (see the docstring)."""
    mixed = (1.0 - t) * frame0.astype(np.float64) + t * frame1.astype(np.float64)
    return np.floor(mixed + 0.5).clip(0, 255).astype(np.uint8)


def minterpolate(frame0: np.ndarray, frame1: np.ndarray, spacing: int,
                 options: str = MINTERPOLATE, pix_fmt: str = MINTERPOLATE_FORMAT) -> list[np.ndarray]:
    """ffmpeg minterpolate's frames at t = 1/s .. (s-1)/s between two HxWx3 uint8 RGB frames.

    Runs libavfilter through PyAV (`av.filter.Graph`): buffer (pix_fmt, 1 fps) -> minterpolate
    (fps = spacing, `options`) -> buffersink. Returns spacing - 1 HxWx3 uint8 RGB frames.
    """
    import av
    from fractions import Fraction

    h, w = frame0.shape[:2]
    graph = av.filter.Graph()
    src = graph.add("buffer", f"video_size={w}x{h}:pix_fmt={pix_fmt}:time_base=1/1:frame_rate=1/1:pixel_aspect=1/1")
    mi = graph.add("minterpolate", f"fps={spacing}:{options}")
    sink = graph.add("buffersink")
    src.link_to(mi)
    mi.link_to(sink)
    graph.configure()
    # frame1 twice: the filter then has a frame after the pair, and emits every frame up to t = 1
    for pts, rgb in enumerate((frame0, frame1, frame1)):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format=pix_fmt)
        frame.pts, frame.time_base = pts, Fraction(1, 1)
        src.push(frame)
    src.push(None)
    out: dict[int, np.ndarray] = {}
    while True:
        try:
            frame = sink.pull()
        except (av.BlockingIOError, av.EOFError):
            break
        k = frame.pts * frame.time_base * spacing       # t * spacing
        if k.denominator == 1 and 0 < k < spacing:
            out[int(k)] = frame.to_ndarray(format="rgb24")
    if sorted(out) != list(range(1, spacing)):
        raise DainrtError(f"minterpolate returned frames {sorted(out)}, expected 1..{spacing - 1} of {spacing}")
    return [out[k] for k in range(1, spacing)]


def _score(name: str, out: np.ndarray, gt: np.ndarray, f0: np.ndarray, f1: np.ndarray, t: float,
           mi: np.ndarray | None) -> Result:
    b = blend(f0, f1, t)
    mi_scores = (psnr(mi, gt), ssim(mi, gt)) if mi is not None else (math.nan, math.nan)
    return Result(name, psnr(out, gt), ssim(out, gt), psnr(b, gt), ssim(b, gt), *mi_scores, t)


def check_sizes(sequences: Sequence[Path]) -> None:
    """One line naming the first sequence whose three pictures differ in size, before any model work."""
    from PIL import Image, UnidentifiedImageError

    for d in sequences:
        sizes = {}
        for f in (FRAME0, FRAME1, MIDDLE):
            try:
                with Image.open(d / f) as img:
                    sizes[f] = img.size
            except (UnidentifiedImageError, OSError) as err:
                raise DainrtError(f"cannot read {d / f}: not a picture Pillow understands ({err})") from None
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{f} {w}x{h}" for f, (w, h) in sizes.items())
            raise DainrtError(f"{d}: the pictures differ in size ({shown}); the ground truth must match the frames")


def evaluate(sequences: Sequence[Path], interpolator, minterpolate_baseline: bool = True) -> list[Result]:
    """Interpolate t = 0.5 for each sequence with `interpolator` (a `dainrt.Interpolator`)."""
    from dainrt.base.images import read_image, to_dtype
    from dainrt.base.progress import progress_bar

    results = []
    for d in progress_bar(sequences, desc="evaluating", unit="pair"):
        f0, f1, gt = (read_image(d / f) for f in (FRAME0, FRAME1, MIDDLE))
        if not (f0.dtype == f1.dtype == gt.dtype == np.uint8):
            raise DainrtError(f"{d}: evaluation needs 8-bit pictures")
        (mid,) = interpolator.interpolate(f0, f1, [0.5])
        mi = minterpolate(f0, f1, 2)[0] if minterpolate_baseline else None
        results.append(_score(d.name, to_dtype(mid, np.uint8), gt, f0, f1, 0.5, mi))
    return results


# ----------------------------------------------------------------------------------------------
# Video triplets


class Triplet(NamedTuple):
    """Frames first .. first+spacing of a clip (HxWx3 uint8 RGB): the two ends are the inputs,
    the ones between the truth at t = k/spacing."""

    first: int
    spacing: int
    frames: list[np.ndarray]


def scan_video(path: str | os.PathLike) -> tuple[int, list[int]]:
    """(number of frames, scene cuts) of a clip's first video stream. A cut k lies between frames
    k-1 and k, as the runtime's detector sees it (default thresholds, nothing dropped)."""
    from dainrt.runtime.scenes import Detector, thumbnail

    detector, cuts, n = Detector(), [], 0
    with _open_video(path) as container:
        for frame in container.decode(video=0):
            if detector.check(thumbnail(frame)).cut:
                cuts.append(n)
            n += 1
    return n, cuts


def pick_triplets(n_frames: int, spacing: int, count: int, cuts: Sequence[int] = ()) -> list[int]:
    """First frames of the triplets (i, i+spacing) of a clip of `n_frames`: i = j * step for
    j = 0 .. count-1, step = (n_frames - spacing) // count (at least 1, i + spacing inside the
    clip), less those whose span holds a cut (k in `cuts` with i < k <= i + spacing), which are
    skipped, not replaced. This is the rule of the team's reference figures."""
    if spacing < 2 or count < 1:
        raise DainrtError(f"need a spacing >= 2 and at least one triplet, got spacing {spacing}, {count} triplets")
    step = max(1, (n_frames - spacing) // count)
    starts = [j * step for j in range(count) if j * step + spacing < n_frames]
    return [i for i in starts if not any(i < k <= i + spacing for k in cuts)]


def video_triplets(path: str | os.PathLike, spacing: int, count: int | None = None) -> list[Triplet]:
    """`count` (default `DEFAULT_TRIPLETS`, else 8) triplets of a clip, evenly spaced, none
    across a scene cut (`scan_video`, `pick_triplets`), decoded to RGB (swscale's default)."""
    count = DEFAULT_TRIPLETS.get(spacing, 8) if count is None else count
    n, cuts = scan_video(path)
    firsts = pick_triplets(n, spacing, count, cuts)
    if not firsts:
        raise DainrtError(f"{path}: no {spacing}-frame span without a scene cut in its {n} frames")
    wanted = {i + k for i in firsts for k in range(spacing + 1)}
    frames: dict[int, np.ndarray] = {}
    with _open_video(path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")
            if index >= max(wanted):
                break
    return [Triplet(i, spacing, [frames[i + k] for k in range(spacing + 1)]) for i in firsts]


def _open_video(path: str | os.PathLike):
    import av

    if not Path(path).is_file():
        raise DainrtError(f"no such video: {path}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise DainrtError(f"cannot read {path}: {err}") from None
    if not container.streams.video:
        container.close()
        raise DainrtError(f"{path} has no video stream")
    return container


def evaluate_video(triplets: Sequence[Triplet], interpolator, minterpolate_baseline: bool = True) -> list[Result]:
    """One row per ground-truth frame, named ``i->i+s t=k/s``, for the model (all the triplet's
    times in one `interpolate` call), the t-weighted blend and minterpolate."""
    from dainrt.base.images import to_dtype

    from dainrt.base.progress import progress_bar

    results = []
    for tri in progress_bar(triplets, desc="evaluating", unit="triplet"):
        s, f0, f1 = tri.spacing, tri.frames[0], tri.frames[-1]
        times = [k / s for k in range(1, s)]
        outs = interpolator.interpolate(f0, f1, times)
        mis = minterpolate(f0, f1, s) if minterpolate_baseline else [None] * len(times)
        for k, (t, out, mi) in enumerate(zip(times, outs, mis), start=1):
            name = f"{tri.first}->{tri.first + s} t={k}/{s}"
            results.append(_score(name, to_dtype(out, np.uint8), tri.frames[k], f0, f1, t, mi))
    return results


def mean(results: Sequence[Result], name: str = "mean") -> Result:
    """The mean of every score (NaN when any row lacks it); t is the mean time."""
    return Result(name, *(float(np.mean([getattr(r, k) for r in results])) for k in Result._fields[1:]))


def format_table(results: Sequence[Result], title: str = "sequence") -> str:
    """Per-row lines and their mean, PSNR (dB) with 2 decimals and SSIM with 4; the
    minterpolate columns when it ran."""
    rows = list(results) + ([mean(results)] if len(results) > 1 else [])
    with_mi = any(not math.isnan(r.mi_psnr) for r in rows)
    width = max(8, len(title), *(len(r.name) for r in rows))
    head = f"{title:<{width}}  {'PSNR':>6}  {'SSIM':>6}  {'blend PSNR':>10}  {'blend SSIM':>10}"
    lines = [head + (f"  {'mi PSNR':>7}  {'mi SSIM':>7}" if with_mi else "")]
    for r in rows:
        line = f"{r.name:<{width}}  {r.psnr:6.2f}  {r.ssim:6.4f}  {r.blend_psnr:10.2f}  {r.blend_ssim:10.4f}"
        lines.append(line + (f"  {r.mi_psnr:7.2f}  {r.mi_ssim:7.4f}" if with_mi else ""))
    return "\n".join(lines)


def write_json(path: str | os.PathLike, results: Sequence[Result], **about) -> Path:
    """Every row and the mean as JSON, written atomically: {**about, "rows": [...], "mean": {...}}
    (NaN -> null)."""
    def row(r: Result) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r._asdict().items()}

    path = Path(path)
    _write_json(path, {**about, "rows": [row(r) for r in results], "mean": row(mean(results))})
    return path
