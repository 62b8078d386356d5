"""Which backend and options run the model: what the user asked for, completed with the fastest
path this machine has, or refused in one line naming what is missing.

The user-facing choices map one to one onto backend options (docs/architecture.md §5):

| choice      | values                          | backends                     |
|-------------|---------------------------------|------------------------------|
| `backend`   | torch, onnxruntime, tensorrt    |                              |
| `precision` | fp32, fp16, int8                | all three (warp is FP32 always); int8: onnxruntime, tensorrt |
| `calibration` | a `dainrt calibrate` folder   | onnxruntime, tensorrt (needed for int8) |
| `kernels`   | reference, numba, triton        | torch (numba: CPU; Triton: CUDA) |
| `compile`   | on/off                          | torch                        |

Defaults: on the CPU, torch FP32 with the Numba warp kernel (`engine/numba_warp.py`); on CUDA,
torch FP16 with the Triton kernels where triton is installed. `compile` is never on by
default: it costs minutes of compilation per shape before the first frame.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import torch

from dainrt.base.errors import OptionError

from .backend import BACKENDS
from .torch_backend import KERNELS, default_kernels
from .torch_backend import PRECISIONS as TORCH_PRECISIONS

PRECISIONS = (*TORCH_PRECISIONS, "int8")
CALIBRATED = ("onnxruntime", "tensorrt")   # the backends that run a calibration folder
# The default precision of the backends other than torch (whose default depends on the device).
BACKEND_PRECISION = {"onnxruntime": "fp32", "tensorrt": "fp16"}


@dataclass(frozen=True)
class EngineChoice:
    """A backend name and the options `create_backend` takes for it."""

    backend: str
    options: dict = field(default_factory=dict)
    picked: bool = False        # True when dainrt chose something the user did not ask for

    def describe(self) -> str:
        """For people: `torch fp16, triton kernels, compiled`."""
        o = self.options
        extras = [f"{o['kernels']} kernels"] if o.get("kernels", "reference") != "reference" else []
        extras += ["compiled"] if o.get("compile") else []
        return f"{self.backend} {o.get('precision', 'fp32')}" + "".join(f", {x}" for x in extras)


def choose_engine(device: torch.device, backend: str | None = None, precision: str | None = None,
                  kernels: str | None = None, compile: bool = False, calibration=None) -> EngineChoice:
    """The engine for `device` (a resolved torch.device): the user's choices where given, the
    fastest available path for the rest. OptionError for a combination this machine cannot run.
    `calibration`: a folder made by `dainrt calibrate`; its precision is the default precision."""
    if backend is not None and backend not in BACKENDS:
        raise OptionError("backend", f"{backend!r} is unknown; choose one of: {', '.join(sorted(BACKENDS))}")
    if precision is not None and precision not in PRECISIONS:
        raise OptionError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if kernels is not None and kernels not in KERNELS:
        raise OptionError("kernels", f"must be one of {', '.join(KERNELS)}, got {kernels!r}")
    cuda = device.type == "cuda"
    name = backend or "torch"
    if calibration is not None and name not in CALIBRATED:
        raise OptionError("calibration", f"applies to the {' and '.join(CALIBRATED)} backends only (not {name})")
    if precision == "int8" and name not in CALIBRATED:
        raise OptionError("precision", f"int8 runs on the {' and '.join(CALIBRATED)} backends, with --calibration DIR")
    if name != "torch":
        for option, given in (("kernels", kernels is not None), ("compile", compile)):
            if given:
                raise OptionError(option, f"applies to the torch backend only (not {name})")
        _check_backend_here(name, device)
        if calibration is not None and precision is None:
            from dainrt.export import read_manifest

            precision = (read_manifest(calibration) or {}).get("precision")
        if precision == "int8" and calibration is None:
            raise OptionError("calibration", "is needed for int8: make one with `dainrt calibrate INPUT -o DIR`, "
                                             "then pass --calibration DIR")
        options = {"precision": precision or BACKEND_PRECISION[name]}
        if calibration is not None:
            options["calibration"] = calibration
        return EngineChoice(name, options, picked=precision is None and cuda)
    if not cuda:
        if precision == "fp16":
            raise OptionError("precision", "fp16 with the torch backend needs a CUDA device; on the CPU, "
                                           "the onnxruntime backend runs fp16")
        if kernels == "triton":
            raise OptionError("kernels", "triton needs a CUDA device (this run is on the CPU)")
    elif kernels == "numba":
        raise OptionError("kernels", "numba runs on the CPU only (this run is on CUDA; use triton or reference)")
    elif kernels == "triton" and importlib.util.find_spec("triton") is None:
        raise OptionError("kernels", "triton needs the triton package (pip install 'dainrt[triton]')")
    options = {
        "precision": precision or ("fp16" if cuda else "fp32"),
        "kernels": kernels or default_kernels(device),
        "compile": bool(compile),
    }
    picked = cuda and (precision is None or kernels is None)
    return EngineChoice("torch", options, picked=picked)


def _check_backend_here(name: str, device: torch.device) -> None:
    """One line naming what this machine lacks for backend `name` on `device`, before any work."""
    if name == "tensorrt":
        from .tensorrt import require_tensorrt

        require_tensorrt("the tensorrt backend")
        if device.type != "cuda":
            raise OptionError("device", "must be a CUDA device for the tensorrt backend")
    elif name == "onnxruntime" and device.type == "cuda":
        try:
            import onnxruntime
        except ImportError:
            raise OptionError("backend", "onnxruntime needs the onnxruntime package") from None
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise OptionError("backend", "onnxruntime on a CUDA device needs onnxruntime-gpu (this ONNX Runtime "
                                         "has no CUDAExecutionProvider): pip install 'dainrt[gpu]'")
