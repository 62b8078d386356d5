"""Frames to calibrate on and to judge by, taken from the user's own film or picture folder.

`sample(source, pairs)` returns:

* `calibration`: `pairs` consecutive frame pairs (k, k+1) spread evenly over the source, the
  pairs the user will interpolate: their stage inputs set the INT8 ranges.
* `held_out`: `held_out_count(pairs)` triplets (i, i+1, i+2), chosen first, spread evenly and
  sharing no frame with a calibration pair; the model
  interpolates i and i+2 at t = 0.5 and frame i+1 is the truth. They judge every configuration
  (the sensitivities and the accuracy gate). A source with fewer than `MIN_HELD_OUT` such
  triplets is judged on the Middlebury pairs of a source checkout instead (frame10, frame11,
  truth frame10i11; centre-cropped to `MAX_SIZE`).

Pairs and triplets never span a scene cut or a held frame (a drawing exposed twice), decided by
`dainrt.runtime.scenes.Detector` with its default thresholds, as `dainrt run` decides them.
Frames larger than `MAX_SIZE` are scaled down to fit (area averaging): activation ranges and
layer sensitivities do not depend on the size, the time taken does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dainrt.base.errors import DainrtError

MAX_SIZE = (640, 360)          # width, height the samples are scaled down (or Middlebury cropped) to fit
MIN_HELD_OUT = 2
PICTURES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
MIDDLEBURY = ("RubberWhale", "Dimetrodon", "Venus")


@dataclass(frozen=True)
class Sample:
    """Frames (HxWx3 uint8 RGB) named by where they come from: a pair (2 frames) or a triplet
    (3 frames, the middle one the truth at t = 0.5)."""

    name: str
    frames: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Samples:
    source: str                  # "film", "pictures"
    calibration: list[Sample]
    held_out: list[Sample]
    held_out_source: str         # "film", "pictures" or "middlebury"
    skipped: dict                # {"cuts": [...], "held": [...]}: frame indices never used


def _fit(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MAX_SIZE[0] / width, MAX_SIZE[1] / height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _film_frames(path: Path):
    """Every frame of the first video stream, as (thumbnail, small RGB uint8) pairs."""
    import av

    from dainrt.runtime.scenes import thumbnail

    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise DainrtError(f"cannot read {path}: {err}") from None
    with container:
        if not container.streams.video:
            raise DainrtError(f"{path} has no video stream")
        for frame in container.decode(video=0):
            w, h = _fit(frame.width, frame.height)
            yield thumbnail(frame), frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()


def _picture_frames(folder: Path):
    import av

    from dainrt.base.images import read_image, to_dtype
    from dainrt.runtime.scenes import thumbnail

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PICTURES and p.is_file())
    if len(files) < 2:
        raise DainrtError(f"{folder} holds {len(files)} picture(s); calibration needs a sequence of at least 2")
    for p in files:
        img = read_image(p)
        if img.dtype != np.uint8:
            img = to_dtype(img.astype(np.float32) / 65535.0, np.uint8)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        w, h = _fit(frame.width, frame.height)
        yield thumbnail(frame), frame.reformat(width=w, height=h, interpolation="AREA").to_ndarray()


def held_out_count(pairs: int) -> int:
    """Held-out triplets wanted for `pairs` calibration pairs: a quarter as many, at least
    MIN_HELD_OUT (each is rerun for every trial, and its rectify input kept in memory)."""
    return max(MIN_HELD_OUT, pairs // 4)


def _spread(candidates: list[int], count: int) -> list[int]:
    """`count` of `candidates` (sorted), evenly spread; all of them when there are fewer."""
    if len(candidates) <= count:
        return list(candidates)
    return [candidates[round(j * (len(candidates) - 1) / max(1, count - 1))] for j in range(count)]


def middlebury_dir() -> Path | None:
    """tests/data/middlebury of a source checkout, if present."""
    here = Path(__file__).resolve().parents[1] / "tests" / "data" / "middlebury"
    return here if here.is_dir() else None


def middlebury_triplets() -> list[Sample]:
    from dainrt.base.images import read_image

    root = middlebury_dir()
    if root is None:
        return []
    out = []
    for name in MIDDLEBURY:
        files = [root / name / f for f in ("frame10.png", "frame10i11.png", "frame11.png")]
        if all(f.is_file() for f in files):
            images = [read_image(f)[..., :3] for f in files]
            h, w = images[0].shape[:2]
            top, left = max(0, (h - MAX_SIZE[1]) // 2), max(0, (w - MAX_SIZE[0]) // 2)
            out.append(Sample(f"middlebury/{name}", tuple(
                np.ascontiguousarray(i[top : top + MAX_SIZE[1], left : left + MAX_SIZE[0]]) for i in images)))
    return out


def sample(source: str | os.PathLike, pairs: int) -> Samples:
    """Calibration pairs and held-out triplets of a film or a picture folder (module docstring)."""
    from dainrt.runtime.scenes import Detector

    path = Path(source).expanduser()
    if pairs < 1:
        raise DainrtError(f"--pairs must be 1 or more, got {pairs}")
    if path.is_dir():
        kind, frames = "pictures", _picture_frames(path)
    elif path.is_file():
        kind, frames = "film", _film_frames(path)
    else:
        raise DainrtError(f"no such film or picture folder: {path}")
    detector = Detector()
    images: list[np.ndarray] = []
    cuts, held = [], []
    for k, (thumb, rgb) in enumerate(frames):
        decision = detector.check(thumb)
        if decision.cut:
            cuts.append(k)
        elif decision.duplicate:
            held.append(k)
        images.append(rgb)
    bad = set(cuts) | set(held)              # frame k may not be the second frame of a step
    # Held-out triplets first (they need three good frames in a row), not overlapping, spread.
    spread, last = [], -3
    for i in range(len(images) - 2):
        if i + 1 not in bad and i + 2 not in bad and i > last + 2:
            spread.append(i)
            last = i
    held_idx = _spread(spread, held_out_count(pairs))
    if len(held_idx) < MIN_HELD_OUT:
        held_idx = []
    reserved = {i + k for i in held_idx for k in range(3)}
    steps = [k for k in range(len(images) - 1) if k + 1 not in bad and not reserved & {k, k + 1}]
    if not steps:
        raise DainrtError(f"{path}: no two consecutive frames without a scene cut or a held frame between them")
    calibration = [Sample(f"{kind}:{k}-{k + 1}", (images[k], images[k + 1])) for k in _spread(steps, pairs)]
    if held_idx:
        held_out = [Sample(f"{kind}:{i}-{i + 2}", (images[i], images[i + 1], images[i + 2])) for i in held_idx]
        held_source = kind
    else:
        held_out, held_source = middlebury_triplets(), "middlebury"
        if not held_out:
            raise DainrtError(f"{path} has too few frames for held-out triplets and the Middlebury pairs "
                              "(tests/data/middlebury of a source checkout) are not here; give a longer film")
    return Samples(kind, calibration, held_out, held_source, {"cuts": cuts, "held": held})
