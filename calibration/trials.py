"""Trying a configuration: the FP32 pipeline on ONNX Runtime with some stages swapped for trial
graphs, judged by the final frames of the held-out triplets against their truth.

`Trials(model, onnx_dir, samples)` runs the FP32 export over the held-out triplets and keeps
the `rectify` inputs (padded NCHW float32, the pipeline's own tensors), so that a trial changing
only `rectify` reruns that stage alone; other trials rerun the whole pipeline. A stage's inputs
on the calibration pairs (for ONNX Runtime's calibrator) are recomputed pair by pair when asked
for, not kept: the rectify input alone is 437 channels at full resolution (470 MB at 640x360). `score(graphs)` is the mean PSNR (dB,
peak 1, frames clamped to [0,1]) of the held-out frames at t = 0.5 against the truth, their
mean PSNR against the FP32 frames, and the noise cost: the largest drop one held-out frame is
expected to take from the difference to its FP32 frame (`noise_cost`). The mean drop alone misses
it: on held-out frames that FP32 gets only roughly right (22-25 dB) added noise costs nothing, on
a clean frame (41 dB) the same noise costs 0.6 dB.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dainrt.base.metrics import psnr
from dainrt.engine import Runner
from dainrt.engine.onnxruntime_backend import OnnxRuntimeBackend
from dainrt.model import STAGE_NAMES, crop, padding_for
from dainrt.runtime.transfer import to_tensor

T = 0.5


class _Recorder:
    """A backend that runs another and keeps each stage's inputs (a real ONNX Runtime backend
    underneath; only the copies are added)."""

    def __init__(self, backend, stages=STAGE_NAMES):
        self.backend, self.name, self.device = backend, backend.name, backend.device
        self.inputs: dict[str, list[tuple[torch.Tensor, ...]]] = {s: [] for s in stages}

    def run(self, stage, inputs):
        if stage in self.inputs:
            self.inputs[stage].append(tuple(x.clone() for x in inputs))
        return self.backend.run(stage, inputs)

    def close(self):
        pass


def noise_cost(fp32_db: float, vs_fp32_db: float) -> float:
    """Expected PSNR drop (dB) of a frame whose FP32 result scores `fp32_db` against the truth
    when the result moves `vs_fp32_db` away from the FP32 one, the two errors independent:
    10 log10(1 + 10^((P - Q)/10)). Checked with the bundled model's car-turn INT8 calibration
    (predicted / measured drop, dB): RubberWhale 0.55 / 0.62, Dimetrodon 0.26 / 0.24, Venus
    0.17 / 0.27, car-turn frames 38-40 0.06 / -0.01; it overstates car-turn 0-2 (0.60 / 0.25)."""
    return 10 * math.log10(1 + 10 ** ((fp32_db - vs_fp32_db) / 10))


@dataclass(frozen=True)
class Score:
    psnr_db: float          # mean PSNR vs the truth
    vs_fp32_db: float       # mean PSNR vs the FP32 frames
    noise_db: float         # the largest `noise_cost` of one held-out frame


class Trials:
    def __init__(self, model, onnx_dir, samples, threads: int | None = None):
        self.backend = OnnxRuntimeBackend(model, torch.device("cpu"), onnx_dir=onnx_dir, threads=threads, progress=None)
        self.samples = samples
        rec = _Recorder(self.backend, ("rectify",))
        self.truth = [to_tensor(s.frames[1]) for s in samples.held_out]
        self.fp32 = [self._interpolate(rec, s) for s in samples.held_out]
        self.fp32_frame_db = [psnr(f.clamp(0, 1), t) for f, t in zip(self.fp32, self.truth)]
        self.held_out_inputs = rec.inputs
        self.baseline = self._score(self.fp32)

    def calibration_inputs(self, stage: str, limit: int | None = None):
        """The FP32 inputs of `stage` on the calibration pairs (two per pair for `frame`), computed
        pair by pair as they are consumed; `limit`: the first pairs only."""
        for s in self.samples.calibration[:limit]:
            rec = _Recorder(self.backend, (stage,))
            Runner(rec).interpolate(0, to_tensor(s.frames[0]), 1, to_tensor(s.frames[1]), [T])
            yield from rec.inputs[stage]

    @staticmethod
    def _interpolate(backend, s) -> torch.Tensor:
        return Runner(backend).interpolate(0, to_tensor(s.frames[0]), 1, to_tensor(s.frames[2]), [T])[0]

    def _score(self, frames) -> Score:
        # A configuration that overflows (inf, NaN) scores as the picture it would show: black or white.
        frames = [torch.nan_to_num(f, nan=0.0).clamp(0, 1) for f in frames]
        reference = [r.clamp(0, 1) for r in self.fp32]
        vs_fp32 = [psnr(f, r) for f, r in zip(frames, reference)]
        return Score(float(np.mean([psnr(f, t) for f, t in zip(frames, self.truth)])), float(np.mean(vs_fp32)),
                     max(noise_cost(p, q) for p, q in zip(self.fp32_frame_db, vs_fp32)))

    def score(self, graphs: dict[str, bytes]) -> Score:
        """The held-out score with `graphs` (stage -> serialized ONNX) replacing those stages."""
        try:
            for stage, data in graphs.items():
                self.backend.use_graph(stage, data)
            if set(graphs) <= {"rectify"}:
                frames = []
                for s, inputs in zip(self.samples.held_out, self.held_out_inputs["rectify"]):
                    (out,) = self.backend.run("rectify", inputs)
                    h, w = s.frames[0].shape[:2]
                    frames.append(crop(out, padding_for(h, w))[0])
            else:
                frames = [self._interpolate(self.backend, s) for s in self.samples.held_out]
            return self._score(frames)
        finally:
            for stage in graphs:
                self.backend.use_graph(stage, None)
