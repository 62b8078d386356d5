"""The PyTorch backend: the stage modules themselves, eager, FP32, no autograd."""
from __future__ import annotations

import torch

from dainrt.model import DAIN


class TorchBackend:
    """Runs `model`'s stages in eager PyTorch on `device` (FP32; TF32 off on CUDA for parity)."""

    name = "torch"

    def __init__(self, model: DAIN, device: torch.device):
        self.device = device
        if device.type == "cuda":
            # TF32 convs round operands to 10 mantissa bits: far outside the golden tolerances.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.model = model.to(device).eval()
        self.stages = self.model.stages()._asdict()

    @torch.inference_mode()
    def run(self, stage: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        out = self.stages[stage](*inputs)
        return out if isinstance(out, tuple) else (out,)
