"""The one interface every backend implements (docs/architecture.md §5).

A backend runs a named stage (`frame`, `pair`, `warp`, `rectify`; see
`dainrt.model.STAGE_IO` for the tensor names and order) on torch tensors that live on the
backend's device, and returns torch tensors on that device. The runtime never knows which
backend it has. Backends are imported lazily, so a machine without onnxruntime or TensorRT
never imports them.
"""
from __future__ import annotations

import importlib
from typing import Callable, Protocol

import torch

from dainrt.base.errors import DainrtError, OptionError


class Backend(Protocol):
    name: str
    device: torch.device

    def run(self, stage: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Run `stage` on `inputs` (in STAGE_IO order, float32 NCHW on `device`)."""
        ...

    def close(self) -> None:
        """Release what the backend holds (sessions, engines, streams); it is not used again."""
        ...

    # Optional: `warp_rectify(inputs) -> frame`, the warp and rectify stages as one call on the
    # warp stage's inputs, for a backend that fuses them (TensorRT's CUDA graph). `warp_rectify()`
    # below falls back to the two stages.


def warp_rectify(backend: Backend, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The output frame (B,3,H,W) for the warp stage's `inputs`: the backend's fused call where
    it has one, else `warp` then `rectify`. The result is the caller's to keep."""
    fused = getattr(backend, "warp_rectify", None)
    if fused is not None:
        return fused(inputs)
    rectify_input, blend = backend.run("warp", inputs)
    (frame,) = backend.run("rectify", (rectify_input, blend))
    return frame


# name -> "module:factory"; factories take (model, device, **options) and return a Backend.
BACKENDS: dict[str, str] = {
    "torch": "dainrt.engine.torch_backend:TorchBackend",
    "onnxruntime": "dainrt.engine.onnxruntime_backend:OnnxRuntimeBackend",
    "tensorrt": "dainrt.engine.tensorrt.backend:TensorRTBackend",
}


def available_backends() -> list[str]:
    return sorted(BACKENDS)


def _factory(name: str) -> Callable[..., Backend]:
    if name not in BACKENDS:
        raise OptionError("backend", f"{name!r} is unknown; choose one of: {', '.join(available_backends())}")
    module, attr = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def create_backend(name: str, model, device: str | torch.device = "cpu", **options) -> Backend:
    """Build backend `name` for `model` (a `dainrt.model.DAIN`) on `device`. On the CPU this also
    makes freed tensor memory reusable process-wide (`host_memory.reuse_freed_memory`)."""
    device = resolve_device(device)
    if device.type == "cpu":
        from .host_memory import reuse_freed_memory

        reuse_freed_memory()
    return _factory(name)(model, device, **options)


def resolve_device(device: str | torch.device) -> torch.device:
    """`cpu`, `cuda`, `cuda:N` -> torch.device, with a one-line error when CUDA is missing."""
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise OptionError("device", f"{device!r} is not a device: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("device", f"{device!r} asked for, but this machine has no usable CUDA GPU (use cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise OptionError("device", f"{device!r} is not supported (use cpu or cuda)")
    return dev
