"""TensorRT on a machine without it: one-line errors, and the plugin binding checked in Python.

* `dainrt build-engine` without TensorRT or a GPU exits non-zero with ONE line naming what is
  missing (no traceback); the `tensorrt` backend refuses the same way.
* `register_plugins()` run against a stand-in `tensorrt.plugin` module (recording the
  decorators) declares exactly the plugins the export's nodes bind to (op_type, namespace,
  plugin_version, inputs), with the right shapes and dtypes, and its AOT implementation
  returns the Triton PTX with TensorRT's argument order and launch geometry. The stand-in is
  written from TensorRT's documented QDP interface; the real module has never run here.
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
import types

import pytest

from dainrt.engine.tensorrt import missing_requirements
from dainrt.engine.tensorrt import plugins
from dainrt.base.errors import DainrtError

HAVE_TRITON = importlib.util.find_spec("triton") is not None


def test_build_engine_without_tensorrt_is_one_line():
    missing = missing_requirements()
    if not missing:
        pytest.skip("this machine has a GPU, TensorRT and triton: build-engine would really build")
    env = {**os.environ, "DAINRT_CACHE": os.devnull + "-unused"}
    proc = subprocess.run([sys.executable, "-m", "dainrt", "build-engine", "--size", "640x360"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dainrt: error: dainrt build-engine requires an NVIDIA GPU with TensorRT")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for problem in missing:  # every missing piece is named
        assert problem in lines[0]


def test_missing_requirements_name_each_piece(monkeypatch):
    import dainrt.engine.tensorrt as trt_pkg

    real = importlib.util.find_spec
    monkeypatch.setattr(trt_pkg.importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in ("tensorrt", "triton") else real(name, *a, **k))
    missing = " ".join(missing_requirements(plugins=True))
    assert "TensorRT is not installed" in missing and "triton is not installed" in missing
    assert "triton" not in " ".join(missing_requirements(plugins=False))


def test_tensorrt_backend_refuses_in_one_line():
    if not missing_requirements():
        pytest.skip("TensorRT is usable here")
    from dainrt.engine.backend import create_backend

    with pytest.raises(DainrtError) as err:
        create_backend("tensorrt", None, "cpu")
    assert "\n" not in str(err.value) and "TensorRT" in str(err.value)


def test_modules_import_without_tensorrt():
    code = ("import dainrt.engine.tensorrt.plugins, dainrt.engine.tensorrt.cache, dainrt.engine.tensorrt.builder, "
            "dainrt.engine.tensorrt.backend, sys; assert 'tensorrt' not in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# ------------------------------------------------------------------------- the binding

def test_binding_matches_export_constants():
    custom_ops = pytest.importorskip("dainrt.export.custom_ops")
    assert plugins.NAMESPACE == custom_ops.PLUGIN_NAMESPACE == custom_ops.DOMAIN
    assert plugins.PARSER_PLUGIN_VERSION == custom_ops.PLUGIN_VERSION
    assert {plugins.DFP_OP, plugins.AW_OP} == {custom_ops.DFP_OP, custom_ops.AW_OP}


def _nodes_of(function_proto):
    return [n for n in function_proto.node if n.domain not in ("", "ai.onnx")]


@pytest.mark.skipif(not HAVE_TRITON, reason="triton not installed (optional): registration compiles Triton kernels")
def test_registered_plugins_match_the_nodes_export_writes(monkeypatch):
    """The export's translation functions write exactly the nodes the registered plugins bind to."""
    custom_ops = pytest.importorskip("dainrt.export.custom_ops")
    from onnx import helper

    reg = _register_on_standin(monkeypatch)
    translations = {"DepthFlowProjection": custom_ops._dfp_onnx, "AdaptiveWarp": custom_ops._aw_onnx}
    for op, fn in translations.items():
        (node,) = _nodes_of(fn.to_function_proto())
        assert f"{node.domain}::{node.op_type}" in reg
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        assert attrs == {"plugin_namespace": plugins.NAMESPACE, "plugin_version": plugins.PARSER_PLUGIN_VERSION}
        params = list(inspect.signature(reg[f"{node.domain}::{node.op_type}"]["register"]).parameters)
        assert len(node.input) == len(params) and len(node.output) == 1   # no attribute reaches the plugin


def test_exported_warp_onnx_has_the_plugin_nodes(tmp_path, small_model):
    export = pytest.importorskip("dainrt.export")
    import onnx

    manifest = export.export_stages(small_model, tmp_path, "fp32", stages=("warp",))
    model = onnx.load(str(export.stage_files(tmp_path, manifest)["warp"]), load_external_data=False)
    custom = [n for n in model.graph.node if n.domain == plugins.NAMESPACE]
    assert {n.op_type for n in custom} == {plugins.DFP_OP, plugins.AW_OP}
    assert sum(n.op_type == "DepthFlowProjection" for n in custom) == 2
    assert sum(n.op_type == "AdaptiveWarp" for n in custom) == 4
    for n in custom:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs.get("plugin_namespace") in (b"dain", "dain") and attrs.get("plugin_version") in (b"1", "1")


def test_plugin_version_hashes_the_code():
    v = plugins.plugin_version()
    assert v.startswith(plugins.IMPL_VERSION + "+") and v == plugins.plugin_version()


# ------------------------------------------------------ register_plugins on a stand-in QDP

class _Desc:
    def __init__(self, shape, dtype="float32"):
        self.shape_expr = list(shape)
        self.dtype = dtype

    def like(self):
        return _Desc(self.shape_expr, self.dtype)


def _fake_tensorrt():
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.9.0.34"
    trt.float32 = "float32"
    trtp = types.ModuleType("tensorrt.plugin")
    trtp.registry = {}

    def deco(kind):
        def outer(plugin_id, **_):
            def inner(fn):
                trtp.registry.setdefault(plugin_id, {})[kind] = fn
                return fn
            return inner
        return outer

    for kind in ("register", "impl", "aot_impl", "autotune"):
        setattr(trtp, kind, deco(kind))
    trtp.TensorDesc, trtp.Tensor = _Desc, object
    trtp.cdiv = lambda a, b: -(-a // b)
    trtp.SymInt32 = lambda e: ("i32", e)
    trtp.SymIntExprs = types.SimpleNamespace(from_tuple=lambda t: list(t))
    trtp.KernelLaunchParams = types.SimpleNamespace
    trtp.AutoTuneCombination = lambda types_, layout="LINEAR", *a: (types_, layout)
    trt.plugin = trtp
    return trt, trtp


def _register_on_standin(monkeypatch) -> dict:
    """Run `register_plugins()` against the stand-in; returns plugin id -> {decorator: function}."""
    trt, trtp = _fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    monkeypatch.setattr(plugins, "_REGISTERED", False)
    plugins.register_plugins(arch=86)
    return trtp.registry


# plugin id -> the input shapes (B,C,H,W) of a sample call, and the output shape it must declare.
SAMPLES = {
    "dain::DepthFlowProjection": ([(2, 2, 64, 96), (2, 1, 64, 96)], (2, 2, 64, 96)),
    "dain::AdaptiveWarp": ([(1, 196, 64, 96), (1, 2, 64, 96), (1, 16, 64, 96)], (1, 196, 64, 96)),
}


@pytest.mark.skipif(not HAVE_TRITON, reason="triton not installed (optional): the AOT impl compiles Triton kernels")
def test_register_plugins_on_standin_qdp(monkeypatch):
    reg = _register_on_standin(monkeypatch)
    assert set(reg) == {"dain::DepthFlowProjection", "dain::AdaptiveWarp"}
    assert set(reg["dain::DepthFlowProjection"]) == {"register", "impl", "autotune"}   # JIT only
    assert set(reg["dain::AdaptiveWarp"]) == {"register", "impl", "aot_impl", "autotune"}

    for plugin_id, (shapes, want) in SAMPLES.items():
        entry = reg[plugin_id]
        inputs = list(inspect.signature(entry["register"]).parameters)
        assert len(inputs) == len(shapes)                 # no attributes: none come from the node
        out = entry["register"](*(_Desc(s) for s in shapes))
        assert tuple(out.shape_expr) == want and out.dtype == "float32"
        (combo,) = entry["autotune"](*(_Desc(s) for s in shapes), (out,))
        assert combo[0].replace(" ", "").split(",") == ["FP32"] * (len(shapes) + 1)
        impl_params = list(inspect.signature(entry["impl"]).parameters)
        assert impl_params == inputs + ["outputs", "stream"]

    B, C, H, W = 2, 196, 128, 256
    descs = (_Desc((B, C, H, W)), _Desc((B, 2, H, W)), _Desc((B, 16, H, W)))
    name, ptx, params, extra = reg["dain::AdaptiveWarp"]["aot_impl"](*descs, (descs[0].like(),), 0)
    assert name == "adaptive_warp_kernel" and f".entry {name}(" in ptx and ".target sm_86" in ptx
    assert params.grid_x == -(-H * W // 128) and params.grid_y == B and params.block_x == 128
    assert params.shared_mem == plugins.compiled_kernel("adaptive_warp_kernel", 86).shared
    assert extra == [("i32", C), ("i32", H), ("i32", W)]  # after the 3 inputs, before the output
