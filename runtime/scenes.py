"""Held frames and scene cuts, decided on small thumbnails of consecutive frames.

Every decoded frame is shrunk to a thumbnail `THUMB_WIDTH` pixels wide (area averaging, which
also averages compression noise away) and compared with the last *kept* frame. Two numbers,
both in percent of full scale (0-100):

* `peak`: the largest per-pixel difference. A held frame (a stop-motion drawing exposed for two
  or more frames, "on twos") differs only by coding noise, so every pixel stays close: it is a
  duplicate when `peak <= dedup_threshold` (default 3: measured x264 CRF 23 holds peak at
  1.2-2.4, real changes between drawings at 5-14). A slow pan can pass as held too, which is
  harmless: the frames are then interpolated across the longer span.
* `mean`: the mean difference. A scene cut changes everything at once; the score is
  `min(mean, |mean - previous mean|)` (the rule of FFmpeg's `scdet`), so a run of violent motion
  does not read as a string of cuts. A cut is declared when `score >= scene_threshold`
  (default 10; the cuts in the shared Big Buck Bunny clip score about 30, its fastest motion
  about 3). A threshold of 0 turns cut detection off. Two cuts on consecutive frames are seen
  as one (the second scores low), a documented limit.

Duplicates are always detected (and reported); they are dropped only with `--dedup`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THUMB_WIDTH = 64
DEDUP_THRESHOLD = 3.0
SCENE_THRESHOLD = 10.0


def thumbnail_size(width: int, height: int) -> tuple[int, int]:
    """(w, h) of the thumbnail: `THUMB_WIDTH` wide (or the frame's width if smaller), aspect kept."""
    w = min(THUMB_WIDTH, width)
    h = max(1, round(height * w / width))
    return w, h


def thumbnail(frame) -> np.ndarray:
    """An `av.VideoFrame` -> small uint8 RGB array (area averaged), whatever its bit depth."""
    w, h = thumbnail_size(frame.width, frame.height)
    return frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()


def differences(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean, peak) absolute difference of two uint8 thumbnails in percent of full scale."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(d.mean()) * 100.0 / 255.0, float(d.max()) * 100.0 / 255.0


@dataclass(frozen=True)
class Decision:
    duplicate: bool   # near-identical to the last kept frame
    drop: bool        # duplicate and --dedup: not used as an interpolation anchor
    cut: bool         # a scene cut lies between the last kept frame and this one
    mean: float
    peak: float
    score: float


class Detector:
    """Stateful comparison of each frame with the last kept one (see the module docstring)."""

    def __init__(self, dedup: bool = False, dedup_threshold: float = DEDUP_THRESHOLD,
                 scene_threshold: float = SCENE_THRESHOLD):
        if dedup_threshold < 0:
            raise ValueError(f"dedup threshold must be >= 0, got {dedup_threshold}")
        if not 0 <= scene_threshold <= 100:
            raise ValueError(f"scene threshold must lie in [0, 100], got {scene_threshold}")
        self.dedup = dedup
        self.dedup_threshold = float(dedup_threshold)
        self.scene_threshold = float(scene_threshold)
        self.ref: np.ndarray | None = None   # thumbnail of the last kept frame
        self.prev_mean = 0.0                 # mean difference at the last kept frame

    def check(self, thumb: np.ndarray) -> Decision:
        """Decide about the next decoded frame; the first frame is always kept."""
        if self.ref is None:
            self.ref = thumb
            return Decision(False, False, False, 0.0, 0.0, 0.0)
        if thumb.shape != self.ref.shape:      # a size change mid-stream is always a cut
            self.ref, self.prev_mean = thumb, 100.0
            return Decision(False, False, True, 100.0, 100.0, 100.0)
        mean, peak = differences(thumb, self.ref)
        duplicate = peak <= self.dedup_threshold
        if duplicate and self.dedup:
            return Decision(True, True, False, mean, peak, 0.0)
        score = min(mean, abs(mean - self.prev_mean))
        cut = (not duplicate) and self.scene_threshold > 0 and score >= self.scene_threshold
        self.ref, self.prev_mean = thumb, mean
        return Decision(duplicate, False, cut, mean, peak, score)

    def state(self) -> dict:
        return {"prev_mean": self.prev_mean}

    def restore(self, state: dict, ref: np.ndarray) -> None:
        """Resume with the last kept frame's thumbnail `ref`."""
        self.prev_mean = float(state["prev_mean"])
        self.ref = ref
