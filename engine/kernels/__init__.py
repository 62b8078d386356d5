"""Triton kernels for DAIN's two warping layers (docs/dain-spec.md §6.1 and §6.3).

One kernel source serves three uses:

* the torch backend's fast CUDA path: `depth_flow_projection` and `adaptive_warp` have the
  signatures of the PyTorch references in `dainrt.model.ops`, so
  ``WarpStage(project=kernels.depth_flow_projection, warp=kernels.adaptive_warp)`` runs them;
* the TensorRT plugins (`dainrt.engine.tensorrt.plugins`), which compile the same kernels to
  PTX (`compile_ptx`);
* the CPU tests, through Triton's interpreter (`TRITON_INTERPRET=1` set before triton is
  imported).

`triton` is optional: this package imports without it; `kernels_available()` says whether the
kernels can be used, and touching a kernel name without triton raises ImportError naming the fix.
"""
from __future__ import annotations

import importlib
import importlib.util

__all__ = [
    "adaptive_warp",
    "compile_ptx",
    "depth_flow_projection",
    "fill_holes",
    "interpreting",
    "kernels_available",
    "splat",
]

_LAZY = {
    "adaptive_warp": "ops",
    "depth_flow_projection": "ops",
    "fill_holes": "ops",
    "splat": "ops",
    "interpreting": "ops",
    "compile_ptx": "aot",
}


def kernels_available() -> bool:
    """True when triton is installed (the kernels then run on CUDA tensors, or on CPU tensors
    under TRITON_INTERPRET=1)."""
    return importlib.util.find_spec("triton") is not None


def __getattr__(name: str):
    if name in _LAZY:
        if not kernels_available():
            raise ImportError(
                f"dainrt.engine.kernels.{name} needs triton: pip install 'dainrt[triton]' (or pip install triton)"
            )
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
