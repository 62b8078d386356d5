"""The PyTorch backend: the stage modules themselves, eager or compiled, no autograd.

Options (each maps to one `dainrt run` flag on the GPU paths):

* `precision`: `fp32` (default; TF32 off on CUDA, for parity with the official model) or
  `fp16`: frame, pair and rectify under autocast FP16; the warp stage (custom layers, every
  coordinate) always runs in FP32 (docs/architecture.md §4). Outputs are float32 either way.
* `kernels`: `reference` (the vectorised PyTorch ops of `model/ops`), `numba` (the compiled CPU
  adaptive warp of `dainrt.engine.numba_warp`; the projection and correlation stay the reference,
  now the larger custom-layer cost: benchmarks/README.md, "Where the CPU time goes")
  or `triton` (the Triton kernels of `dainrt.engine.kernels` for the two warping layers; CUDA, or
  Triton's interpreter).
  Default (`default_kernels`): numba on the CPU; on CUDA triton where installed, else the
  reference. The one default for every way in (`dainrt run`, the API, `RunOptions` as is), so
  that the same pictures come out of each.
* `compile`: put every stage through `torch.compile` (static shapes).
"""
from __future__ import annotations

import contextlib
import importlib.util

import torch

from dainrt.base.errors import OptionError
from dainrt.model import DAIN, CustomOps

PRECISIONS = ("fp32", "fp16")
KERNELS = ("reference", "numba", "triton")


def default_kernels(device: torch.device) -> str:
    """The fastest kernels `device` has: numba on the CPU; triton on CUDA if installed, else reference."""
    if torch.device(device).type == "cuda":
        return "triton" if importlib.util.find_spec("triton") is not None else "reference"
    return "numba"


def _custom_ops(kernels: str) -> CustomOps:
    if kernels not in KERNELS:
        raise OptionError("kernels", f"must be one of {', '.join(KERNELS)}, got {kernels!r}")
    if kernels == "reference":
        return CustomOps()
    if kernels == "numba":
        from dainrt.engine import numba_warp

        return CustomOps(warp=numba_warp.adaptive_warp)
    from dainrt.engine import kernels as triton_kernels

    if not triton_kernels.kernels_available():
        raise OptionError("kernels", "triton needs the triton package (pip install 'dainrt[triton]')")
    return CustomOps(project=triton_kernels.depth_flow_projection, warp=triton_kernels.adaptive_warp)


class TorchBackend:
    """Runs `model`'s stages in PyTorch on `device` (see the module docstring for the options)."""

    name = "torch"

    def __init__(self, model: DAIN, device: torch.device, precision: str = "fp32", kernels: str | None = None,
                 compile: bool = False):
        if precision not in PRECISIONS:
            raise OptionError("precision", f"must be one of {', '.join(PRECISIONS)} for the torch backend, "
                                           f"got {precision!r}")
        self.device = torch.device(device)
        kernels = kernels or default_kernels(self.device)
        self.precision, self.kernels, self.compiled = precision, kernels, bool(compile)
        if self.device.type == "cuda" and precision == "fp32":
            # TF32 convs round operands to 10 mantissa bits: far outside the golden tolerances.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.model = model.to(self.device).eval()
        self.stages = self.model.stages(_custom_ops(kernels))._asdict()
        if compile:
            self.stages = {k: torch.compile(v, dynamic=False) for k, v in self.stages.items()}

    def _autocast(self, stage: str):
        if self.precision == "fp16" and stage != "warp":
            return torch.autocast(self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def run(self, stage: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        with self._autocast(stage):
            out = self.stages[stage](*inputs)
        out = out if isinstance(out, tuple) else (out,)
        return tuple(o if o.dtype == torch.float32 else o.float() for o in out)

    def close(self) -> None:
        self.stages = {}
