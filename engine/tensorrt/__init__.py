"""TensorRT engines for the DAIN stages: plugins, engine cache, builder and backend.

Modules: `plugins` (the `dain::` QDP plugins and their pure-Python description), `cache`
(engine cache keys and files), `builder` (ONNX -> engine with the TensorRT Python API),
`backend` (`TensorRTBackend`). `tensorrt` itself is imported only when an engine is built or
run; this package and `cache`/`plugins` import on any machine.

`missing_requirements()` lists what this machine lacks for TensorRT (package, GPU, triton), as
words a one-line error can carry; `require_tensorrt()` raises that error.
"""
from __future__ import annotations

import importlib.util

from dainrt.base.errors import DainrtError

MIN_TENSORRT = (10, 9)   # tensorrt.plugin.aot_impl (AOT QDP plugins) appeared in 10.9


def _version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def tensorrt_problem() -> str | None:
    """None when `import tensorrt` works and is new enough, else what is wrong (a phrase)."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'dainrt[tensorrt]', TensorRT >= 10.9)"
    try:
        import tensorrt as trt
    except Exception as err:  # noqa: BLE001 - libnvinfer missing, driver too old, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"TensorRT cannot be loaded ({first})"
    version = getattr(trt, "__version__", "0")
    if _version_tuple(version) < MIN_TENSORRT:
        return f"TensorRT {version} is too old (>= {'.'.join(map(str, MIN_TENSORRT))} needed)"
    return None


def cuda_problem() -> str | None:
    """None when torch sees a CUDA GPU, else what is wrong."""
    import torch

    if not torch.backends.cuda.is_built():
        return "this torch build has no CUDA (install a CUDA build of torch)"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return None


def triton_problem() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'dainrt[triton]'; or --no-plugins)"
    return None


def missing_requirements(plugins: bool = True) -> list[str]:
    """Everything this machine lacks to build or run TensorRT engines, as phrases."""
    problems = [cuda_problem(), tensorrt_problem()]
    if plugins:
        problems.append(triton_problem())
    return [p for p in problems if p]


def require_tensorrt(what: str = "TensorRT engines", plugins: bool = True) -> None:
    """Raise a one-line DainrtError naming everything missing for `what`."""
    missing = missing_requirements(plugins)
    if missing:
        raise DainrtError(f"{what} requires an NVIDIA GPU with TensorRT; missing here: " + "; ".join(missing))
