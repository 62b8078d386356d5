"""GPU-only tests: Triton kernels on CUDA, TensorRT plugins and engines (marked `gpu`).

Run on a machine with an NVIDIA GPU, CUDA torch, triton and TensorRT >= 10.9:

    python -m pytest -q -m gpu tests/gpu

Each test skips with the reason when a piece is missing (no GPU, no triton, no TensorRT, no
ONNX export). Engines are built into a temporary cache, so the first run takes minutes.
"""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from conftest import E2E_CASES, MIDDLEBURY, assert_robust_image, load_golden, robust_metrics  # noqa: E402

pytestmark = pytest.mark.gpu

HAVE_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA GPU")
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")


def _tensorrt_missing() -> str | None:
    from dainrt.engine.tensorrt import missing_requirements

    missing = missing_requirements()
    return "; ".join(missing) if missing else None


needs_tensorrt = pytest.mark.skipif(bool(_tensorrt_missing()), reason=f"TensorRT not usable: {_tensorrt_missing()}")


def _export_available() -> bool:
    try:
        from dainrt.export import export_stages  # noqa: F401
    except ImportError:
        return False
    return True


needs_export = pytest.mark.skipif(not _export_available(), reason="dainrt.export.export_stages not available")


def _golden_op(name):
    with np.load(TESTS / "data" / "golden" / "ops" / f"{name}.npz") as z:
        return {k: torch.from_numpy(v).cuda() for k, v in z.items()}


# ------------------------------------------------------------------- Triton on CUDA

@needs_cuda
@needs_triton
@pytest.mark.parametrize("name", ["dfp_random", "dfp_edges", "dfp_holes"])
def test_triton_dfp_cuda_golden(name):
    from dainrt.engine import kernels

    assert not kernels.interpreting(), "run the GPU tests in their own pytest process (no TRITON_INTERPRET)"
    z = _golden_op(name)
    torch.testing.assert_close(kernels.depth_flow_projection(z["flow"], z["weight"]), z["out_fill"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernels.depth_flow_projection(z["flow"], z["weight"], fill=False), z["out_nofill"],
                               rtol=1e-5, atol=1e-5)


@needs_cuda
@needs_triton
@pytest.mark.parametrize("name", ["aw_c3", "aw_c196", "aw_bilinear_kernel"])
def test_triton_aw_cuda_golden(name):
    from dainrt.engine import kernels

    z = _golden_op(name)
    torch.testing.assert_close(kernels.adaptive_warp(z["input"], z["flow"], z["filter"]), z["out"], rtol=1e-5, atol=1e-5)


@needs_cuda
@needs_triton
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triton_cuda_vs_reference_random(seed):
    from dainrt.engine import kernels
    from dainrt.model import ops

    g = torch.Generator(device="cuda").manual_seed(seed)
    B, C, H, W = 2, 196, 96, 160
    flow = torch.randn(B, 2, H, W, device="cuda", generator=g) * 8
    flow[0, 0, :5, :5] = float("nan")
    flow[1, 1, 10:12] = 1e30
    weight = torch.rand(B, 1, H, W, device="cuda", generator=g) + 0.05
    image = torch.randn(B, C, H, W, device="cuda", generator=g)
    kernel = torch.randn(B, 16, H, W, device="cuda", generator=g)
    torch.testing.assert_close(kernels.depth_flow_projection(flow, weight), ops.depth_flow_projection(flow, weight),
                               rtol=1e-5, atol=1e-5)
    ft = ops.depth_flow_projection(flow, weight)
    torch.testing.assert_close(kernels.adaptive_warp(image, ft, kernel), ops.adaptive_warp(image, ft, kernel),
                               rtol=1e-5, atol=1e-5)


def _time(fn, n=20):
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / n * 1e3


@needs_cuda
@needs_triton
def test_triton_timing_1080p(capsys):
    """Triton kernels vs the vectorised PyTorch ops at 1080p (padded 1984x1152); prints ms."""
    from dainrt.engine import kernels
    from dainrt.model import ops

    H, W = 1152, 1984
    flow = torch.randn(1, 2, H, W, device="cuda") * 10
    weight = torch.rand(1, 1, H, W, device="cuda") + 0.05
    ft = ops.depth_flow_projection(flow, weight)
    kernel = torch.randn(1, 16, H, W, device="cuda")
    rows = []
    for label, ref, tri in [
        ("DFP (splat+fill)", lambda: ops.depth_flow_projection(flow, weight), lambda: kernels.depth_flow_projection(flow, weight)),
        ("AW C=3", lambda: ops.adaptive_warp(flow[:, :1].expand(1, 3, H, W), ft, kernel),
         lambda: kernels.adaptive_warp(flow[:, :1].expand(1, 3, H, W), ft, kernel)),
        ("AW C=196", lambda: ops.adaptive_warp(torch.zeros(1, 196, H, W, device="cuda"), ft, kernel),
         lambda: kernels.adaptive_warp(torch.zeros(1, 196, H, W, device="cuda"), ft, kernel)),
    ]:
        rows.append((label, _time(ref), _time(tri)))
    with capsys.disabled():
        print(f"\n{torch.cuda.get_device_name()}: op, torch ms, triton ms")
        for label, r, t in rows:
            print(f"  {label:18s} {r:8.3f} {t:8.3f}")


# ------------------------------------------------------------------ TensorRT plugins

def _plugin_onnx(path: Path, B, C, H, W):
    """A graph of just the two dain:: nodes, as the export writes them (no function bodies:
    with the plugins registered TensorRT never looks for them)."""
    import onnx
    from onnx import TensorProto, helper

    vi = lambda n, c: helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, c, H, W])  # noqa: E731
    attrs = dict(plugin_namespace="dain", plugin_version="1")
    nodes = [helper.make_node("DepthFlowProjection", ["flow", "weight"], ["projected"], domain="dain", **attrs),
             helper.make_node("AdaptiveWarp", ["image", "projected", "kernel"], ["warped"], domain="dain", **attrs)]
    graph = helper.make_graph(nodes, "plugins", [vi("flow", 2), vi("weight", 1), vi("image", C), vi("kernel", 16)],
                              [vi("projected", 2), vi("warped", C)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dain", 1)])
    model.ir_version = 10
    onnx.save(model, path)


@needs_cuda
@needs_tensorrt
def test_plugins_vs_reference_random(tmp_path):
    import tensorrt as trt

    from dainrt.engine.tensorrt.builder import BuildSettings, GpuIdentity, build_engine
    from dainrt.engine.tensorrt.cache import EngineCache, ShapeProfile
    from dainrt.model import ops

    B, C, H, W = 1, 196, 64, 96
    path = tmp_path / "plugins.onnx"
    _plugin_onnx(path, B, C, H, W)
    cache = EngineCache(tmp_path / "engines")
    result = build_engine(path, "warp", ShapeProfile.static(H, W, B), BuildSettings(), cache, GpuIdentity.current())
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(result.engine)
    ctx = engine.create_execution_context()
    g = torch.Generator(device="cuda").manual_seed(0)
    feeds = {"flow": torch.randn(B, 2, H, W, device="cuda", generator=g) * 6,
             "weight": torch.rand(B, 1, H, W, device="cuda", generator=g) + 0.05,
             "image": torch.randn(B, C, H, W, device="cuda", generator=g),
             "kernel": torch.randn(B, 16, H, W, device="cuda", generator=g)}
    outs = {"projected": torch.empty(B, 2, H, W, device="cuda"), "warped": torch.empty(B, C, H, W, device="cuda")}
    for name, t in {**feeds, **outs}.items():
        ctx.set_tensor_address(name, t.data_ptr())
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    assert ctx.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    ft = ops.depth_flow_projection(feeds["flow"], feeds["weight"])
    torch.testing.assert_close(outs["projected"], ft, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs["warped"], ops.adaptive_warp(feeds["image"], ft, feeds["kernel"]), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------- TensorRT engines

@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory):
    from dainrt.engine.tensorrt.cache import EngineCache

    return EngineCache(tmp_path_factory.mktemp("engines"))


def _interpolate(backend, z_or_frames, times):
    from dainrt.engine.runner import Runner
    from dainrt.runtime.transfer import to_tensor

    f0, f1 = (to_tensor(f).to(backend.device) for f in z_or_frames)
    return [o.float().cpu() for o in Runner(backend).interpolate(0, f0, 1, f1, times)]


@needs_cuda
@needs_tensorrt
@needs_export
@pytest.mark.parametrize("case", E2E_CASES)
def test_fp32_engines_vs_torch_on_golden(golden_model, engine_cache, case):
    from dainrt.engine.tensorrt.backend import TensorRTBackend

    z = load_golden(case)
    backend = TensorRTBackend(golden_model, torch.device("cuda"), precision="fp32", cache=engine_cache)
    outs = _interpolate(backend, (z["frame0_u8"], z["frame1_u8"]), [float(t) for t in z["t"]])
    for i, out in enumerate(outs):
        assert_robust_image(out[None], z["out_crop"][i], f"{case} t={z['t'][i]} TensorRT fp32")


def _middlebury(name):
    from dainrt.base.images import read_image

    d = MIDDLEBURY / name
    return read_image(d / "frame10.png"), read_image(d / "frame11.png"), read_image(d / "frame10i11.png")


@needs_cuda
@needs_tensorrt
@needs_export
@pytest.mark.parametrize("name", ["RubberWhale", "Dimetrodon", "Venus"])
def test_fp16_psnr_drop_on_middlebury(golden_model, engine_cache, name):
    from dainrt.engine.tensorrt.backend import TensorRTBackend

    f0, f1, truth = _middlebury(name)
    truth = torch.from_numpy(np.asarray(truth, np.float32) / (65535.0 if truth.dtype == np.uint16 else 255.0))
    truth = truth.permute(2, 0, 1)
    psnr = {}
    for precision in ("fp32", "fp16"):
        backend = TensorRTBackend(golden_model, torch.device("cuda"), precision=precision, cache=engine_cache)
        (out,) = _interpolate(backend, (f0, f1), [0.5])
        psnr[precision] = robust_metrics(out.clamp(0, 1).numpy(), truth.numpy())["psnr"]
    assert psnr["fp32"] - psnr["fp16"] <= 0.05, psnr


@needs_cuda
@needs_tensorrt
@needs_export
def test_cuda_graph_matches_plain(golden_model, engine_cache):
    from dainrt.engine.tensorrt.backend import TensorRTBackend

    z = load_golden(E2E_CASES[1])
    times = [float(t) for t in z["t"]]
    plain = _interpolate(TensorRTBackend(golden_model, torch.device("cuda"), precision="fp32", cache=engine_cache),
                         (z["frame0_u8"], z["frame1_u8"]), times)
    graph = _interpolate(TensorRTBackend(golden_model, torch.device("cuda"), precision="fp32", cache=engine_cache,
                                         cuda_graph=True), (z["frame0_u8"], z["frame1_u8"]), times)
    for a, b in zip(plain, graph):
        assert robust_metrics(b.numpy(), a.numpy())["psnr"] >= 80


@needs_cuda
@needs_tensorrt
@needs_export
def test_cached_engine_reused_and_stale_one_rebuilt(golden_model, engine_cache, tmp_path):
    from dainrt.engine.tensorrt.builder import EngineBuilder
    from dainrt.engine.tensorrt.cache import ShapeProfile

    builder = EngineBuilder(golden_model, "fp32", cache=engine_cache)
    profile = ShapeProfile.static(128, 256)
    key, data = builder.ensure("warp", profile)
    assert engine_cache.load(key) == data
    engine_cache.engine_path(key).write_bytes(data[:100])  # truncated: never loaded
    key2, data2 = builder.ensure("warp", profile)
    assert key2 == key and engine_cache.load(key) == data2
