"""Chains the stages over a stream of frames on any backend, caching what can be shared.

A frame's `frame` results serve the pairs on both sides of it; a pair's `pair` results serve
every t of that pair (docs/architecture.md §3). The runner keeps the results of the last two
frames and of the last pair, so a stream costs one `frame` per input frame, one `pair` per input
pair and one `warp` + `rectify` per output frame. Frames are identified by a caller-chosen
hashable id (a frame index in a video, a path for two pictures).

The runner takes and returns float tensors on the backend's device: converting pictures from
and to the host's integer formats is the caller's job (`dainrt.runtime.transfer`).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Sequence

import torch

from dainrt.model import crop, pad, padding_for

from .backend import Backend, warp_rectify

FRAMES_KEPT = 2   # a stream needs the two frames of the current pair


class Runner:
    """Interpolates between frames of a stream with `backend` (official padding rule)."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._frames: OrderedDict[Hashable, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = OrderedDict()
        self._pair_key: tuple[Hashable, Hashable] | None = None
        self._pair: tuple[torch.Tensor, ...] = ()
        self.calls = {"frame": 0, "pair": 0, "warp": 0, "rectify": 0}

    def _run(self, stage: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        self.calls[stage] += 1
        return self.backend.run(stage, inputs)

    def _frame(self, key: Hashable, image: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if key in self._frames:
            self._frames.move_to_end(key)
            return self._frames[key]
        x = image.unsqueeze(0)
        padded = pad(x, padding_for(x.shape[-2], x.shape[-1]))
        entry = (padded, self._run("frame", (padded,)))
        self._frames[key] = entry
        while len(self._frames) > FRAMES_KEPT:
            self._frames.popitem(last=False)
        return entry

    def interpolate(self, key0: Hashable, image0: torch.Tensor, key1: Hashable, image1: torch.Tensor,
                    times: Sequence[float]) -> list[torch.Tensor]:
        """Frames at each t in `times` between image0 (t=0) and image1 (t=1).

        Images: (3,H,W) float32 RGB in [0,1] on the backend's device, both the same size.
        Returns one (3,H,W) float32 tensor per t on that device, cropped to the input size, not
        clamped.
        """
        for image in (image0, image1):
            if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3 \
                    or image.dtype != torch.float32:
                what = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
                raise ValueError(f"the runner takes (3,H,W) float32 tensors, got {what}")
        if image0.shape != image1.shape:
            (_, h0, w0), (_, h1, w1) = image0.shape, image1.shape
            raise ValueError(f"frames differ in size: {w0}x{h0} vs {w1}x{h1}")
        padding = padding_for(image0.shape[-2], image0.shape[-1])
        img0, (ctx0, *feats0) = self._frame(key0, image0)
        img1, (ctx1, *feats1) = self._frame(key1, image1)
        if self._pair_key != (key0, key1):
            self._pair = self._run("pair", (img0, img1, *feats0, *feats1))
            self._pair_key = (key0, key1)
        flow01, flow10, kernel0, kernel1 = self._pair
        outputs = []
        for t in times:
            tt = torch.full((1,), float(t), dtype=torch.float32, device=self.backend.device)
            self.calls["warp"] += 1
            self.calls["rectify"] += 1
            frame = warp_rectify(self.backend, (img0, img1, ctx0, ctx1, flow01, flow10, kernel0, kernel1, tt))
            outputs.append(crop(frame, padding)[0])
        return outputs

    def interpolate_alpha(self, key0: Hashable, alpha0: torch.Tensor, key1: Hashable, alpha1: torch.Tensor,
                          times: Sequence[float]) -> list[torch.Tensor]:
        """The alpha (1,H,W) at each t between the frames of the last `interpolate` call (same
        keys), warped with that pair's flows, kernels and depth weights: the warp stage run on
        the alpha (repeated to 3 channels, as the stage takes images), its blend taken. The
        rectify net is left out: it was trained on colour and would invent transparency.
        Returns (1,H,W) float32 per t, not clamped."""
        if self._pair_key != (key0, key1) or key0 not in self._frames or key1 not in self._frames:
            raise ValueError("interpolate_alpha follows interpolate on the same pair")
        padding = padding_for(alpha0.shape[-2], alpha0.shape[-1])
        a0 = pad(alpha0.expand(3, -1, -1).unsqueeze(0), padding)
        a1 = pad(alpha1.expand(3, -1, -1).unsqueeze(0), padding)
        ctx0, ctx1 = self._frames[key0][1][0], self._frames[key1][1][0]
        outputs = []
        for t in times:
            tt = torch.full((1,), float(t), dtype=torch.float32, device=self.backend.device)
            _, blend = self._run("warp", (a0, a1, ctx0, ctx1, *self._pair, tt))
            outputs.append(crop(blend, padding)[0, :1].clone())    # a backend may reuse its output buffers
        return outputs

    def clear(self) -> None:
        """Forget cached results (e.g. after a scene cut or a seek)."""
        self._frames.clear()
        self._pair_key, self._pair = None, ()
