"""The onnxruntime backend: golden parity per stage and end to end, ORT vs torch on Middlebury,
FP16, and the export cache.

Full width (golden checkpoint) where the goldens need it, width 0.25 elsewhere. Exports are
shared with test_export.py through `shared_export` (one per model and precision per session).
"""
from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import E2E_CASES, MIDDLEBURY, assert_robust_image, load_golden, robust_metrics
from dainrt.model.checkpoint import fingerprint
from dainrt.engine import Runner, create_backend
from dainrt.engine.onnxruntime_backend import OnnxRuntimeBackend
from dainrt.base.errors import DainrtError
from dainrt.export import export_stages
from dainrt.model import STAGE_IO
from dainrt.runtime.transfer import to_tensor
from dainrt.base.metrics import psnr
from test_export import shared_export

SEQUENCES = ["RubberWhale", "Dimetrodon", "Venus"]


def t_(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def close(ours, gold: np.ndarray, atol: float, what: str) -> None:
    ours = ours.numpy() if isinstance(ours, torch.Tensor) else ours
    d = float(np.abs(ours.astype(np.float64) - gold).max())
    assert d <= atol, f"{what}: max |d| = {d:.3g} > {atol}"


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def golden_backend(tmp_path_factory, golden_model):
    directory, _ = shared_export(tmp_path_factory, golden_model)
    return OnnxRuntimeBackend(golden_model, torch.device("cpu"), onnx_dir=directory, progress=None)


@pytest.fixture(scope="module")
def small_backend(tmp_path_factory, small_model):
    directory, _ = shared_export(tmp_path_factory, small_model)
    return OnnxRuntimeBackend(small_model, torch.device("cpu"), onnx_dir=directory, progress=None)


@pytest.fixture(scope="module")
def case_a():
    return load_golden(E2E_CASES[0])


# --------------------------------------------------------------- stages with golden inputs


@pytest.mark.slow
def test_frame_and_pair_stages_with_golden_inputs(golden_backend, case_a):
    """tests/data/golden/README.md §4.2 item 3: logD 1e-4, context 1e-4 / 1e-5 (means), PWC 5e-5, kernels 1e-5."""
    z = case_a
    y, x = z["patch_yx"][:2]
    images, feats = [], []
    for i in (0, 1):
        image = t_(z[f"input{i}_padded"])
        context, *f = golden_backend.run("frame", (image,))
        close(context[:, -1:], z[f"logD{i}"], 1e-4, f"logD{i}")
        close(context[:, :, y : y + 8, x : x + 8], z[f"ctx{i}_patch"], 1e-4, f"ctx{i}_patch")
        np.testing.assert_allclose(context.double().mean(dim=(-1, -2)).numpy().reshape(-1), z[f"ctx{i}_chmean"], atol=1e-5)
        images.append(image)
        feats.append(f)
    flow01, flow10, k0, k1 = golden_backend.run("pair", (*images, *feats[0], *feats[1]))
    close(flow01 / 20.0, z["pwc_flow01"], 5e-5, "pwc_flow01")
    close(flow10 / 20.0, z["pwc_flow10"], 5e-5, "pwc_flow10")
    close(k0, z["k0"], 1e-5, "k0")
    close(k1, z["k1"], 1e-5, "k1")


def test_custom_layer_bodies_with_golden_stage_inputs(case_a):
    """Item 3 per layer: DFP(dfp_in, w from logD) vs Ft (1e-4), AW(input, Ft, k) vs warped (1e-5),
    through the model-local function bodies of warp.onnx."""
    from dainrt.export.onnx_functions import single_op_model

    z = case_a
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    dfp = ort.InferenceSession(single_op_model("DepthFlowProjection", ["flow", "weight"], "out").SerializeToString(), so,
                               providers=["CPUExecutionProvider"])
    aw = ort.InferenceSession(single_op_model("AdaptiveWarp", ["image", "flow", "kernel"], "out").SerializeToString(), so,
                              providers=["CPUExecutionProvider"])
    for i in (0, 1):
        weight = (1e-6 + 1 / torch.exp(t_(z[f"logD{i}"]))).numpy()
        (ft,) = dfp.run(None, {"flow": z[f"dfp_in{i}"][0], "weight": weight})
        close(ft, z[f"Ft{i}"][0], 1e-4, f"Ft{i}")
        (warped,) = aw.run(None, {"image": z[f"input{i}_padded"], "flow": z[f"Ft{i}"][0], "kernel": z[f"k{i}"]})
        close(warped, z[f"warped{i}"][0], 1e-5, f"warped{i}")


@pytest.mark.slow
def test_warp_and_rectify_stages_with_golden_inputs(golden_backend, golden_model, case_a):
    """The whole warp stage fed the golden images, PWC flows, kernels and log-depth (the golden
    has no full context tensor: the rest of the context comes from the torch frame stage).
    Chained, AW sees our Ft (within 1e-4 of the golden), so warped gets Ft's 1e-4 too."""
    z = case_a
    frame = golden_model.stages().frame
    contexts = []
    for i in (0, 1):
        c = frame(t_(z[f"input{i}_padded"]))[0].clone()
        c[:, -1:] = t_(z[f"logD{i}"])
        contexts.append(c)
    t = torch.tensor(z["t"], dtype=torch.float32)
    inputs = (t_(z["input0_padded"]), t_(z["input1_padded"]), *contexts, 20.0 * t_(z["pwc_flow01"]),
              20.0 * t_(z["pwc_flow10"]), t_(z["k0"]), t_(z["k1"]), t)
    rectify_input, blend = golden_backend.run("warp", inputs)
    ck = contexts[0].shape[1]
    close(rectify_input[:, 9:11], z["Ft0"][0], 1e-4, "Ft0")
    close(rectify_input[:, 11:13], z["Ft1"][0], 1e-4, "Ft1")
    close(rectify_input[:, 3:6], z["warped0"][0], 1e-4, "warped0")
    close(rectify_input[:, 6:9], z["warped1"][0], 1e-4, "warped1")
    close(blend, z["blend"][0], 1e-4, "blend")
    assert torch.equal(rectify_input[:, :3], blend)
    y, x = z["patch_yx"][:2]
    for i, part in enumerate((rectify_input[:, 45 : 45 + ck], rectify_input[:, 45 + ck :])):
        close(part[..., y : y + 8, x : x + 8], z[f"ctxw{i}_patch"][0], 1e-4, f"ctxw{i}_patch")
    # And the torch warp stage on the same inputs agrees with ORT's.
    ref = golden_model.stages().warp(*inputs)
    assert_robust_image(rectify_input, ref[0].numpy(), "warp vs torch")
    # Rectify on the golden window alone (blend = 0 leaves the net's output).
    window = t_(z["rect_window_in"])
    (out,) = golden_backend.run("rectify", (window, torch.zeros(1, 3, 24, 24)))
    close(out, z["rect_window_out"], 1e-5, "rect_window_out")


# --------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize("case", E2E_CASES)
def test_end_to_end_on_the_goldens(golden_backend, case):
    """tests/data/golden/README.md §4.2 item 4 on the final frames, through the stream Runner."""
    z = load_golden(case)
    runner = Runner(golden_backend)
    outs = runner.interpolate(0, to_tensor(z["frame0_u8"]), 1, to_tensor(z["frame1_u8"]), [float(t) for t in z["t"]])
    assert runner.calls == {"frame": 2, "pair": 1, "warp": len(z["t"]), "rectify": len(z["t"])}
    for k, out in enumerate(outs):
        m = robust_metrics(out, z["out_crop"][k][0])
        print(f"{case} t={z['t'][k]}: PSNR {m['psnr']:.1f} dB, mean |d| {m['mean']:.2e}, share>1e-3 {m['share']:.2e}")
        assert_robust_image(out, z["out_crop"][k][0], f"{case} t={z['t'][k]}")
        u8 = np.round(np.clip(out.permute(1, 2, 0).numpy(), 0, 1) * 255.0).astype(np.uint8)
        assert np.mean(u8 != z["out_u8"][k]) <= 5e-3


# --------------------------------------------------------------- Middlebury, ORT vs torch


@pytest.fixture(scope="module")
def middlebury():
    return {s: (read_png(MIDDLEBURY / s / "frame10.png"), read_png(MIDDLEBURY / s / "frame11.png")) for s in SEQUENCES}


@pytest.fixture(scope="module")
def torch_frames(small_model, middlebury):
    runner = Runner(create_backend("torch", small_model, "cpu"))
    return {s: runner.interpolate((s, 0), to_tensor(f0), (s, 1), to_tensor(f1), [0.5])[0] for s, (f0, f1) in middlebury.items()}


@pytest.fixture(scope="module")
def ort_frames(small_backend, middlebury):
    runner = Runner(small_backend)
    return {s: runner.interpolate((s, 0), to_tensor(f0), (s, 1), to_tensor(f1), [0.5])[0] for s, (f0, f1) in middlebury.items()}


def test_middlebury_onnxruntime_matches_torch(torch_frames, ort_frames, middlebury):
    for s in SEQUENCES:
        h, w = middlebury[s][0].shape[:2]
        assert ort_frames[s].shape == torch_frames[s].shape == (3, h, w)
        p = psnr(ort_frames[s].clamp(0, 1), torch_frames[s].clamp(0, 1))
        print(f"{s} {w}x{h}: ORT vs torch PSNR {p:.1f} dB")
        assert p >= 50.0, s


def _ort_fp16_fallbacks(path: Path) -> dict[str, int]:
    """Op types ONNX Runtime CPU wrapped in Casts (no fp16 kernel): it runs them in fp32."""
    optimized = path.with_suffix(".ort.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    model = onnx.load(str(optimized))
    cast_out = {n.output[0] for n in model.graph.node if n.op_type == "Cast" and "InsertedPrecisionFreeCast" in n.output[0]}
    return dict(collections.Counter(n.op_type for n in model.graph.node
                                    if n.op_type != "Cast" and any(i in cast_out for i in n.input)))


def test_fp16_psnr_against_fp32(tmp_path_factory, small_model, middlebury, ort_frames, capsys):
    directory, manifest = shared_export(tmp_path_factory, small_model)
    fp32 = {s: onnx.load(str(directory / f"{s}.onnx")) for s in STAGE_IO}
    out = tmp_path_factory.mktemp("fp16")
    export_stages(small_model, out, "fp16", checkpoint_sha256=manifest["checkpoint_sha256"], protos=fp32)
    backend = OnnxRuntimeBackend(small_model, torch.device("cpu"), onnx_dir=out, precision="fp16", progress=None)
    runner = Runner(backend)
    lines = []
    for s, (f0, f1) in middlebury.items():
        half = runner.interpolate((s, 0), to_tensor(f0), (s, 1), to_tensor(f1), [0.5])[0]
        p = psnr(half.clamp(0, 1), ort_frames[s].clamp(0, 1))
        lines.append(f"{s}: FP16 vs FP32 PSNR {p:.1f} dB")
        # Random synthetic weights hit DFP/AW discontinuities often (tests/data/golden/README.md §5: fp16
        # weights alone cost ~42 dB at width 1); this floor holds with margin at width 0.25.
        assert p >= 30.0, lines[-1]
    fallbacks = {s: _ort_fp16_fallbacks(out / f"{s}.onnx") for s in ("frame", "pair", "rectify")}
    with capsys.disabled():
        print("\n" + "\n".join(lines))
        print(f"ONNX Runtime CPU fp16 kernels missing (run in fp32 between inserted casts): {json.dumps(fallbacks)}")


# --------------------------------------------------------------- backend plumbing and cache


def test_registry_and_api_use_the_backend(tmp_path_factory, small_model, small_backend, middlebury):
    import dainrt

    directory, _ = shared_export(tmp_path_factory, small_model)
    backend = create_backend("onnxruntime", small_model, "cpu", onnx_dir=directory, progress=None)
    assert backend.name == "onnxruntime" and backend.onnx_dir == directory
    f0, f1 = (f[:96, :128] for f in middlebury["RubberWhale"])
    frames = dainrt.interpolate(f0, f1, [0.5], weights=small_model, backend="onnxruntime", onnx_dir=directory,
                                progress=None)
    ref = Runner(small_backend).interpolate(0, to_tensor(f0), 1, to_tensor(f1), [0.5])[0].clamp(0, 1).permute(1, 2, 0).numpy()
    assert frames[0].shape == (96, 128, 3)
    np.testing.assert_allclose(frames[0], ref, atol=1e-6)


def test_explicit_onnx_dir_from_another_checkpoint_is_refused(tmp_path_factory, small_model, golden_model, tmp_path):
    directory, _ = shared_export(tmp_path_factory, small_model)
    with pytest.raises(DainrtError, match="cannot be used: exported from checkpoint") as err:
        OnnxRuntimeBackend(golden_model, torch.device("cpu"), onnx_dir=directory, progress=None)
    assert "\n" not in str(err.value) and "dainrt export" in str(err.value)
    with pytest.raises(DainrtError, match="precision fp32, not fp16"):
        OnnxRuntimeBackend(small_model, torch.device("cpu"), onnx_dir=directory, precision="fp16", progress=None)


def test_cache_is_used_when_current_and_rebuilt_when_stale(tmp_path_factory, small_model, monkeypatch, tmp_path):
    """onnx_dir=None: the cache entry under $DAINRT_CACHE. A manifest from another dainrt version,
    or a damaged file, makes the backend rebuild the entry (the export itself is stubbed here by
    a copy of the session's real export: the expensive part is tested above)."""
    import dainrt.export.exporter as exporter

    directory, manifest = shared_export(tmp_path_factory, small_model)
    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_export(model, out_dir, precision="fp32", **kw):
        calls.append(Path(out_dir))
        for f in directory.iterdir():
            shutil.copy(f, Path(out_dir) / f.name)
        return json.loads((Path(out_dir) / "manifest.json").read_text())

    monkeypatch.setattr(exporter, "export_stages", fake_export)
    sha = fingerprint(small_model.state_dict())[0]
    from dainrt import __version__

    entry = tmp_path / "cache" / "onnx" / f"{sha[:16]}-{__version__}-fp32"
    messages = []
    backend = OnnxRuntimeBackend(small_model, torch.device("cpu"), progress=messages.append)
    assert backend.onnx_dir == entry and len(calls) == 1 and calls[0] != entry  # built beside, renamed
    assert "not exported yet" in messages[0]
    OnnxRuntimeBackend(small_model, torch.device("cpu"), progress=messages.append)
    assert len(calls) == 1  # current: reused

    stale = json.loads((entry / "manifest.json").read_text())
    stale["dainrt_version"] = "0.0.1"
    (entry / "manifest.json").write_text(json.dumps(stale))
    backend = OnnxRuntimeBackend(small_model, torch.device("cpu"), progress=messages.append)
    assert len(calls) == 2 and "exported by dainrt 0.0.1" in messages[-1]
    assert json.loads((entry / "manifest.json").read_text())["dainrt_version"] == __version__

    with open(entry / "warp.onnx", "ab") as f:  # a modified file is never run
        f.write(b"\0")
    OnnxRuntimeBackend(small_model, torch.device("cpu"), progress=messages.append)
    assert len(calls) == 3 and "warp.onnx does not match" in messages[-1]
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    # The rebuilt entry runs.
    x = torch.rand(1, 3, 64, 64)
    context = backend.run("frame", (x,))[0]
    assert context.shape == (1, small_model.config.context_channels, 64, 64)
