"""Chains the stages over a stream of frames on any backend, caching what can be shared.

A frame's `frame` results serve the pairs on both sides of it; a pair's `pair` results serve
every t of that pair (design.md §3). The runner keeps the results of the last two frames and
of the last pair, so a stream costs one `frame` per input frame, one `pair` per input pair and
one `warp` + `rectify` per output frame. Frames are identified by a caller-chosen hashable id
(a frame index in a video, a path for two pictures).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Sequence

import numpy as np
import torch

from dainrt.model import crop, pad, padding_for

from .backend import Backend


def to_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """HxWx3 uint8 (0..255), uint16 (0..65535) or float in [0,1] -> (1,3,H,W) float32 in [0,1]."""
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint16:
            image = image.astype(np.float32) / 65535.0
        elif not image.flags.writeable:      # torch refuses to wrap read-only memory silently
            image = image.copy()
        t = torch.from_numpy(np.ascontiguousarray(image))
    else:
        t = image
    if t.ndim != 3 or t.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {tuple(t.shape)}")
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.to(torch.float32)
    return t.permute(2, 0, 1).unsqueeze(0).contiguous()


class Runner:
    """Interpolates between frames of a stream with `backend`, padding by `padding_mode`."""

    def __init__(self, backend: Backend, padding_mode: str = "official", frames_kept: int = 2):
        self.backend = backend
        self.padding_mode = padding_mode
        self._frames: OrderedDict[Hashable, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = OrderedDict()
        self._pair_key: tuple[Hashable, Hashable] | None = None
        self._pair: tuple[torch.Tensor, ...] = ()
        self._frames_kept = frames_kept
        self.calls = {"frame": 0, "pair": 0, "warp": 0, "rectify": 0}

    def _run(self, stage: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        self.calls[stage] += 1
        return self.backend.run(stage, inputs)

    def _frame(self, key: Hashable, image) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if key in self._frames:
            self._frames.move_to_end(key)
            return self._frames[key]
        x = to_tensor(image).to(self.backend.device)
        padded = pad(x, padding_for(x.shape[-2], x.shape[-1], self.padding_mode))
        entry = (padded, self._run("frame", (padded,)))
        self._frames[key] = entry
        while len(self._frames) > self._frames_kept:
            self._frames.popitem(last=False)
        return entry

    def interpolate(self, key0: Hashable, image0, key1: Hashable, image1, times: Sequence[float]) -> list[torch.Tensor]:
        """Frames at each t in `times` between image0 (t=0) and image1 (t=1).

        Images are HxWx3 (see `to_tensor`); both must have the same size. Returns one (3,H,W)
        float32 tensor per t on the backend's device, cropped to the input size, not clamped.
        """
        shape0, shape1 = tuple(np.shape(image0))[:2], tuple(np.shape(image1))[:2]
        if shape0 != shape1:
            raise ValueError(f"frames differ in size: {shape0[1]}x{shape0[0]} vs {shape1[1]}x{shape1[0]}")
        padding = padding_for(shape0[0], shape0[1], self.padding_mode)
        img0, (ctx0, *feats0) = self._frame(key0, image0)
        img1, (ctx1, *feats1) = self._frame(key1, image1)
        if self._pair_key != (key0, key1):
            self._pair = self._run("pair", (img0, img1, *feats0, *feats1))
            self._pair_key = (key0, key1)
        flow01, flow10, kernel0, kernel1 = self._pair
        outputs = []
        for t in times:
            tt = torch.full((1,), float(t), dtype=torch.float32, device=self.backend.device)
            rectify_input, blend = self._run("warp", (img0, img1, ctx0, ctx1, flow01, flow10, kernel0, kernel1, tt))
            (frame,) = self._run("rectify", (rectify_input, blend))
            outputs.append(crop(frame, padding)[0])
        return outputs

    def clear(self) -> None:
        """Forget cached results (e.g. after a scene cut or a seek)."""
        self._frames.clear()
        self._pair_key, self._pair = None, ()
