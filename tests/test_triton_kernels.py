"""The Triton kernels (dainrt.engine.kernels) against the PyTorch references, on the CPU.

The kernels run under Triton's interpreter (TRITON_INTERPRET=1) in ONE worker subprocess: the
interpreter must be switched on before the kernels are decorated, and doing that in this
process would turn them into interpreter objects for every later test (the GPU tests run the
same kernels compiled). The worker is this file run as a script; it writes every case's outputs
to an .npz that the tests compare with the references here (golden op cases and the docs/dain-spec.md §6
edge cases, atol/rtol 1e-5).

PTX compilation for sm_86 and sm_90 runs here (no interpreter needed) and the PTX is assembled
with the ptxas that ships with triton.

Without triton every test here is skipped: the triton wheel is ~290 MB, so it is an optional
extra (`pip install 'dainrt[triton]'`), not part of `test`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).parent
GOLDEN_OPS = HERE / "data" / "golden" / "ops"
TOL = dict(rtol=1e-5, atol=1e-5)
HAVE_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(
    not HAVE_TRITON, reason="triton not installed (optional, ~290 MB wheel): pip install 'dainrt[triton]'"
)


# ------------------------------------------------------------------------------ the cases

def _golden(name):
    with np.load(GOLDEN_OPS / f"{name}.npz") as z:
        return dict(z)


def _huge_flows(H=9, W=13):
    """Huge, infinite and NaN flows everywhere but a few sources: nothing may hang or overflow."""
    rng = np.random.default_rng(5)
    flow = rng.choice(np.array([1e30, -1e30, 3e38, -3e38, 2.0**31, -(2.0**31), np.inf, -np.inf, np.nan], np.float32),
                      size=(2, 2, H, W))
    weight = rng.uniform(0.1, 2.0, (2, 1, H, W)).astype(np.float32)
    flow[0, :, 4, 6] = (0.5, 0.25)
    flow[1, :, 0, 0] = (W - 1, H - 1)   # exactly onto the corner
    return flow.astype(np.float32), weight


def _all_holes(H=3, W=260):
    """Every source leaves the image: all holes, full-length scans that find nothing."""
    flow = np.full((1, 2, H, W), 5000.0, np.float32)
    return flow, np.ones((1, 1, H, W), np.float32)


def _long_scans(H=4, W=300):
    """One valid source at the far left of each row: holes scan up to W-1 pixels."""
    flow = np.full((1, 2, H, W), -5000.0, np.float32)
    weight = np.ones((1, 1, H, W), np.float32)
    flow[0, :, 1, 0] = (1.0, 0.5)         # lands on (1, 1.5): P = (-1, -0.5)
    flow[0, :, 3, W - 1] = (-1.0, -0.5)   # lands on (W-2, 2.5): P = (1, 0.5)
    return flow, weight


def _odd_random(seed=3, B=2, H=37, W=53):
    """A size that is not a multiple of the block (masked lanes), larger flows."""
    rng = np.random.default_rng(seed)
    flow = rng.normal(0, 6.0, (B, 2, H, W)).astype(np.float32)
    weight = rng.uniform(0.05, 3.0, (B, 1, H, W)).astype(np.float32)
    return flow, weight


def _aw_extreme(seed=4, B=1, C=4, H=7, W=11):
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 1, (B, C, H, W)).astype(np.float32)
    kernel = rng.normal(0, 1, (B, 16, H, W)).astype(np.float32)
    flow = rng.normal(0, 1.5, (B, 2, H, W)).astype(np.float32)
    flow[0, :, 0, 0] = (np.inf, 0)
    flow[0, :, 0, 1] = (0, -np.inf)
    flow[0, :, 1, 1] = (np.nan, np.nan)
    flow[0, :, 2, 2] = (1e30, 0)
    flow[0, :, 3, 3] = (-3e38, 2.0**31)
    flow[0, :, 4, 0] = (W - 1, 0.0)          # |u| >= W/2 -> copy
    flow[0, :, 5, 5] = (W - 1 - 5, H - 1 - 5)  # exactly onto the last column and row
    return image, flow, kernel


def dfp_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    sys.path.insert(0, str(HERE))
    from test_ops import dfp_inputs, dfp_sparse_inputs

    cases = {f"golden_{n}": (_golden(n)["flow"], _golden(n)["weight"]) for n in ("dfp_random", "dfp_edges", "dfp_holes")}
    cases.update({
        "nan_inf_edges0": dfp_inputs(0), "nan_inf_edges1": dfp_inputs(1), "sparse_hole_rows": dfp_sparse_inputs(),
        "huge_flows": _huge_flows(), "all_holes": _all_holes(), "long_scans": _long_scans(), "odd_size": _odd_random(),
    })
    return cases


def aw_cases() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    sys.path.insert(0, str(HERE))
    from test_ops import aw_inputs

    cases = {}
    for n in ("aw_c3", "aw_c196", "aw_bilinear_kernel"):
        z = _golden(n)
        cases[f"golden_{n}"] = (z["input"], z["flow"], z["filter"])
    cases.update({"edges_c3": aw_inputs(0, C=3), "edges_c5": aw_inputs(1, C=5), "extreme_flows": _aw_extreme()})
    rng = np.random.default_rng(6)
    flow, _ = _odd_random(6, B=2, H=37, W=53)
    cases["odd_size"] = (rng.normal(0, 1, (2, 7, 37, 53)).astype(np.float32), flow / 3,
                         rng.normal(0, 1, (2, 16, 37, 53)).astype(np.float32))
    return cases


def fill_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    projected = np.zeros((1, 2, 1, 5), np.float32)
    projected[0, :, 0, 0] = (1.0, 2.0)
    projected[0, :, 0, 4] = (3.0, 6.0)
    S = np.array([1.0, 0, 0, 0, 1.0], np.float32).reshape(1, 1, 1, 5)
    rng = np.random.default_rng(8)
    S2 = (rng.uniform(0, 1, (2, 1, 9, 12)) > 0.7).astype(np.float32) * rng.uniform(0.5, 2, (2, 1, 9, 12)).astype(np.float32)
    P2 = np.where(S2 > 0, rng.normal(0, 3, (2, 2, 9, 12)), 0).astype(np.float32)
    return {"not_iterative": (projected, S), "random_mask": (P2, S2)}


# -------------------------------------------------------------------------------- worker

def _worker(out_path: str) -> None:
    """Run every case through the kernels (under TRITON_INTERPRET=1) and save the outputs."""
    from dainrt.engine import kernels

    assert kernels.interpreting(), "the worker must run with TRITON_INTERPRET=1"
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    out, seconds = {}, {}
    for name, (flow, weight) in dfp_cases().items():
        start = time.perf_counter()
        out[f"dfp_fill/{name}"] = kernels.depth_flow_projection(t(flow), t(weight), fill=True).numpy()
        out[f"dfp_nofill/{name}"] = kernels.depth_flow_projection(t(flow), t(weight), fill=False).numpy()
        num, den = kernels.splat(t(flow), t(weight))
        out[f"splat_num/{name}"], out[f"splat_den/{name}"] = num.numpy(), den.numpy()
        seconds[f"dfp/{name}"] = time.perf_counter() - start
    for name, (projected, S) in fill_cases().items():
        out[f"fill/{name}"] = kernels.fill_holes(t(projected), t(S)).numpy()
    for name, (image, flow, kernel) in aw_cases().items():
        start = time.perf_counter()
        out[f"aw/{name}"] = kernels.adaptive_warp(t(image), t(flow), t(kernel)).numpy()
        seconds[f"aw/{name}"] = time.perf_counter() - start
    # Inputs untouched, half/strided inputs accepted.
    flow, weight = dfp_cases()["nan_inf_edges0"]
    tf, tw = t(flow), t(weight)
    kernels.depth_flow_projection(tf, tw)
    out["untouched"] = np.array([np.array_equal(tf.numpy(), flow, equal_nan=True) and np.array_equal(tw.numpy(), weight)])
    image, flow, kernel = aw_cases()["edges_c3"]
    out["aw_half"] = kernels.adaptive_warp(t(image).half(), t(flow), t(kernel)).numpy()
    out["aw_strided"] = kernels.adaptive_warp(t(image).transpose(2, 3).contiguous().transpose(2, 3), t(flow), t(kernel)).numpy()
    np.savez(out_path, **out)
    Path(out_path + ".json").write_text(json.dumps(seconds))


@pytest.fixture(scope="module")
def kernel_outputs(tmp_path_factory):
    if not HAVE_TRITON:
        pytest.skip("triton not installed (optional, ~290 MB wheel): pip install 'dainrt[triton]'")
    path = str(tmp_path_factory.mktemp("triton") / "outputs.npz")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", path], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(path) as z:
        return dict(z), json.loads(Path(path + ".json").read_text())


def _check(ours, expected):
    assert ours.shape == expected.shape and ours.dtype == np.float32
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, expected, **TOL)


# --------------------------------------------------------------------------------- tests

@needs_triton
@pytest.mark.parametrize("name", list(dfp_cases()))
def test_dfp_kernels_match_reference(kernel_outputs, name):
    from dainrt.model.ops import depth_flow_projection, splat

    out, _ = kernel_outputs
    flow, weight = (torch.from_numpy(a) for a in dfp_cases()[name])
    _check(out[f"dfp_fill/{name}"], depth_flow_projection(flow, weight, fill=True).numpy())
    _check(out[f"dfp_nofill/{name}"], depth_flow_projection(flow, weight, fill=False).numpy())
    num, den = splat(flow, weight)
    _check(out[f"splat_num/{name}"], num.numpy())
    _check(out[f"splat_den/{name}"], den.numpy())
    if name.startswith("golden_"):
        z = _golden(name[len("golden_"):])
        _check(out[f"dfp_fill/{name}"], z["out_fill"])
        _check(out[f"dfp_nofill/{name}"], z["out_nofill"])
        _check(out[f"splat_den/{name}"], z["count"])


@needs_triton
def test_dfp_edge_semantics(kernel_outputs):
    out, _ = kernel_outputs
    assert (out["dfp_fill/all_holes"] == 0).all() and (out["splat_den/all_holes"] == 0).all()
    # huge/inf/NaN sources add nothing: only the two designed sources land
    den = out["splat_den/huge_flows"]
    assert (den > 0).sum() == 4 + 1  # a 2x2 footprint, and the corner counted four times in one pixel
    assert den[1, 0, -1, -1] == pytest.approx(4 * dfp_cases()["huge_flows"][1][1, 0, 0, 0])
    # long scans reach the far valid pixel
    filled = out["dfp_fill/long_scans"]
    assert (filled[0, :, 1, 200] != 0).all() and (filled[0, :, 3, 200] != 0).all()
    assert (filled[0, :, 0, 200] == 0).all()  # no valid pixel in its row or column


@needs_triton
@pytest.mark.parametrize("name", list(fill_cases()))
def test_fill_holes_kernel(kernel_outputs, name):
    from dainrt.model.ops import fill_holes

    out, _ = kernel_outputs
    projected, S = (torch.from_numpy(a) for a in fill_cases()[name])
    _check(out[f"fill/{name}"], fill_holes(projected, S).numpy())


@needs_triton
@pytest.mark.parametrize("name", list(aw_cases()))
def test_aw_kernel_matches_reference(kernel_outputs, name):
    from dainrt.model.ops import adaptive_warp

    out, _ = kernel_outputs
    image, flow, kernel = aw_cases()[name]
    ref = adaptive_warp(*(torch.from_numpy(a) for a in (image, flow, kernel))).numpy()
    _check(out[f"aw/{name}"], ref)
    if name.startswith("golden_"):
        _check(out[f"aw/{name}"], _golden(name[len("golden_"):])["out"])
    if name == "extreme_flows":  # inf/NaN/huge flows copy the co-located pixel exactly
        for y, x in ((0, 0), (0, 1), (1, 1), (2, 2), (3, 3), (4, 0)):
            np.testing.assert_array_equal(out[f"aw/{name}"][0, :, y, x], image[0, :, y, x])


@needs_triton
def test_wrapper_contract(kernel_outputs):
    from dainrt.model.ops import adaptive_warp

    out, _ = kernel_outputs
    assert out["untouched"].all()
    image, flow, kernel = (torch.from_numpy(a) for a in aw_cases()["edges_c3"])
    _check(out["aw_half"], adaptive_warp(image.half(), flow, kernel).numpy())
    _check(out["aw_strided"], out["aw/edges_c3"])


@needs_triton
def test_kernels_refuse_cpu_tensors_when_compiled():
    from dainrt.engine import kernels

    if kernels.interpreting():
        pytest.skip("this process runs the interpreter")
    with pytest.raises(ValueError, match="CUDA"):
        kernels.adaptive_warp(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 4), torch.zeros(1, 16, 4, 4))


def test_package_imports_without_triton():
    """`dainrt.engine.kernels` imports and answers kernels_available() with triton absent."""
    code = ("import importlib.util as u; _fs = u.find_spec\n"
            "u.find_spec = lambda n, *a, **k: None if n.split('.')[0] == 'triton' else _fs(n, *a, **k)\n"
            "import dainrt.engine.kernels as K\n"
            "assert K.kernels_available() is False\n"
            "try:\n    K.adaptive_warp\nexcept ImportError as e:\n    print('ImportError:', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "pip install" in proc.stdout and "triton" in proc.stdout


# ----------------------------------------------------------------------------------- PTX

def _ptxas():
    import triton

    p = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    return p if p.is_file() else None


@needs_triton
@pytest.mark.parametrize("arch", [86, 90])
def test_ptx_for_explicit_targets(arch, tmp_path):
    from dainrt.engine.kernels.aot import KERNEL_SIGNATURES, compile_ptx

    for kernel, (params, _, _) in KERNEL_SIGNATURES.items():
        ck = compile_ptx(kernel, arch)
        assert f".target sm_{arch}" in ck.ptx
        assert ck.name == kernel and f".entry {kernel}(" in ck.ptx
        assert ck.ptx_version == "8.0"  # old enough for any driver that runs TensorRT 10.9+
        # exactly the parameters TensorRT's AOT launcher passes: inputs, int32 scalars, outputs
        decl = ck.ptx[ck.ptx.index(f".entry {kernel}("):].split(")")[0]
        assert decl.count(".param") == len(params) == ck.num_params
        assert decl.count(".param .u32") == sum(t == "i32" for _, t in params)
        assert ck.threads == 128
        ptxas = _ptxas()
        if ptxas is not None:
            src = tmp_path / f"{kernel}_{arch}.ptx"
            src.write_text(ck.ptx)
            target = "sm_90a" if ".target sm_90a" in ck.ptx else f"sm_{arch}"
            proc = subprocess.run([str(ptxas), f"-arch={target}", str(src), "-o", str(tmp_path / "k.cubin")],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr


def test_strip_hidden_params_refuses_used_parameter():
    from dainrt.engine.kernels.aot import strip_hidden_params

    ptx = (".visible .entry k(\n\t.param .u64 k_param_0,\n\t.param .u64 k_param_1\n)\n{\n"
           "\tld.param.u64 %rd1, [k_param_0];\n}\n")
    stripped = strip_hidden_params(ptx, "k", keep=1)
    assert "k_param_1" not in stripped and "k_param_0" in stripped
    used = ptx.replace("[k_param_0]", "[k_param_1]")
    with pytest.raises(ValueError, match="used"):
        strip_hidden_params(used, "k", keep=1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.path.insert(0, str(HERE))
        _worker(sys.argv[2])
    else:
        sys.exit("usage: TRITON_INTERPRET=1 python tests/test_triton_kernels.py --worker OUT.npz")
