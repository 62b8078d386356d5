"""dainrt's two plugins against the REAL `tensorrt.plugin` (QDP) module, where TensorRT imports.

No GPU is needed: registration, the shape and type descriptors and the AOT implementation
(Triton -> PTX for a chosen SM, exactly what a build asks for) are pure host work. What stays
unexecuted without a GPU: `trt.Builder`, parsing the ONNX, building and running an engine, the
JIT implementations (`@trtp.impl`, they launch kernels) and the CUDA graph.

Run it where `import tensorrt` works (e.g. `pip install tensorrt-cu12` with NVIDIA's package
index reachable, plus triton): `python -m pytest -q tests/test_tensorrt_real.py`. Everywhere else
every test is skipped, with the import error as the reason. On the development machine the
PyPI `tensorrt-cu12` 11.4 is a stub that downloads `tensorrt-cu12-libs` from pypi.nvidia.com
(not reachable there), and the bindings wheel alone cannot load (`libnvinfer.so.11` missing).
"""
from __future__ import annotations

import importlib.util

import pytest

from dainrt.engine.tensorrt import plugins


def _tensorrt_or_skip():
    try:
        import tensorrt
        import tensorrt.plugin  # noqa: F401
    except Exception as err:  # noqa: BLE001 - ImportError, OSError from a missing libnvinfer, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        pytest.skip(f"the real TensorRT package does not import here: {first}")
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed: the plugins' kernels are Triton kernels")
    return tensorrt


# plugin id -> sample input shapes (B,C,H,W) and the output shape the descriptor must declare.
SAMPLES = {
    "dain::DepthFlowProjection": ([(2, 2, 64, 96), (2, 1, 64, 96)], (2, 2, 64, 96)),
    "dain::AdaptiveWarp": ([(1, 196, 64, 96), (1, 2, 64, 96), (1, 16, 64, 96)], (1, 196, 64, 96)),
}


@pytest.fixture(scope="module")
def registry():
    trt = _tensorrt_or_skip()
    from tensorrt.plugin._lib import QDP_REGISTRY

    plugins.register_plugins(arch=90)
    return trt, QDP_REGISTRY


def _value(expr) -> int:
    v = expr.constant_value
    return int(v() if callable(v) else v)


def test_both_plugins_register_with_the_real_api(registry):
    _, reg = registry
    assert {"dain::DepthFlowProjection", "dain::AdaptiveWarp"} <= set(reg)
    assert reg["dain::AdaptiveWarp"].aot_impl_func is not None
    assert reg["dain::DepthFlowProjection"].impl_func is not None


@pytest.mark.parametrize("plugin_id", list(SAMPLES))
def test_shape_and_type_descriptors(registry, plugin_id):
    trt, reg = registry
    import tensorrt.plugin as trtp

    shapes, want = SAMPLES[plugin_id]
    descs = [trtp.from_shape_expr(s, dtype=trt.float32) for s in shapes]
    out = reg[plugin_id].register_func(*descs)
    assert tuple(_value(e) for e in out.shape_expr) == want
    assert out.dtype == trt.float32
    combos = reg[plugin_id].autotune_func(*descs, (out,))
    assert len(combos) == 1


def test_aot_implementation_is_the_triton_ptx(registry):
    trt, reg = registry
    import tensorrt.plugin as trtp

    shapes, _ = SAMPLES["dain::AdaptiveWarp"]
    descs = [trtp.from_shape_expr(s, dtype=trt.float32) for s in shapes]
    out = reg["dain::AdaptiveWarp"].register_func(*descs)
    name, ptx, params, extra = reg["dain::AdaptiveWarp"].aot_impl_func(*descs, (out,), 0)
    assert name == "adaptive_warp_kernel"
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    assert f".entry {name}(" in ptx and ".target sm_90" in ptx
    assert params.block_x == plugins.compiled_kernel("adaptive_warp_kernel", 90).threads
