"""The one interface every backend implements (design.md §5).

A backend runs a named stage (`frame`, `pair`, `warp`, `rectify`; see
`dainrt.model.STAGE_IO` for the tensor names and order) on torch tensors that live on the
backend's device, and returns torch tensors on that device. The runtime never knows which
backend it has. Backends are registered by name and imported lazily, so a machine without
onnxruntime or TensorRT never imports them.
"""
from __future__ import annotations

import importlib
from typing import Callable, Protocol

import torch

from dainrt.errors import DainrtError


class Backend(Protocol):
    name: str
    device: torch.device

    def run(self, stage: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Run `stage` on `inputs` (in STAGE_IO order, float32 NCHW on `device`)."""
        ...


# name -> "module:factory"; factories take (model, device, **options) and return a Backend.
_REGISTRY: dict[str, str] = {
    "torch": "dainrt.engine.torch_backend:TorchBackend",
    "onnxruntime": "dainrt.engine.onnxruntime_backend:OnnxRuntimeBackend",
    "tensorrt": "dainrt.engine.tensorrt.backend:TensorRTBackend",
}


def register_backend(name: str, target: str) -> None:
    """Add a backend factory, given as "package.module:callable" (imported on first use)."""
    _REGISTRY[name] = target


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def _factory(name: str) -> Callable[..., Backend]:
    if name not in _REGISTRY:
        raise DainrtError(f"unknown backend {name!r}; choose one of: {', '.join(available_backends())}")
    module, attr = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)


def create_backend(name: str, model, device: str | torch.device = "cpu", **options) -> Backend:
    """Build backend `name` for `model` (a `dainrt.model.DAIN`) on `device`."""
    return _factory(name)(model, resolve_device(device), **options)


def resolve_device(device: str | torch.device) -> torch.device:
    """`cpu`, `cuda`, `cuda:N` -> torch.device, with a one-line error when CUDA is missing."""
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise DainrtError(f"bad device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DainrtError(f"device {device!r} asked for, but this machine has no usable CUDA GPU (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise DainrtError(f"device {device!r} is not supported (use cpu or cuda)")
    return dev
