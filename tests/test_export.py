"""ONNX export of the four stages (dainrt.export): function bodies, files, manifest, CLI.

Exports are the expensive part (about a minute each on 2 cores, whatever the width: the cost is
the graph, not the weights), so every test that needs one shares the session's export of the
width-0.25 model in `<basetemp>/onnx-...` through `ensure_exported`, which
test_onnxruntime_backend.py uses too. The CLI test exports the same weights a second time and
so doubles as the determinism test.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dainrt.model.checkpoint import fingerprint, save_checkpoint
from dainrt.export import ensure_exported, export_stages, manifest_problem, read_manifest
from dainrt.export.custom_ops import AW_OP, DFP_OP
from dainrt.export.onnx_functions import single_op_model
from dainrt.model import STAGE_IO, STAGE_NAMES
from dainrt.model.ops import adaptive_warp, depth_flow_projection

GOLDEN_OPS = Path(__file__).parent / "data" / "golden" / "ops"


def shared_export(tmp_path_factory, model, precision: str = "fp32"):
    """(directory, manifest) of this session's export of `model` (made on first use)."""
    sha = fingerprint(model.state_dict())[0]
    directory = tmp_path_factory.getbasetemp() / f"onnx-{sha[:16]}-{precision}"
    return ensure_exported(model, directory, precision, checkpoint_sha256=sha, progress=None)


def session(model_or_path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    data = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def small_export(tmp_path_factory, small_model):
    return shared_export(tmp_path_factory, small_model)


# ---------------------------------------------------------------- function bodies vs PyTorch


@pytest.mark.parametrize("name", ["dfp_random", "dfp_edges", "dfp_holes"])
def test_dfp_function_body_matches_reference(name):
    model = single_op_model(DFP_OP, ["flow", "weight"], "projected")
    onnx.checker.check_model(model, full_check=True)
    with np.load(GOLDEN_OPS / f"{name}.npz") as z:
        flow, weight, gold = z["flow"], z["weight"], z["out_fill"]
    (ours,) = session(model).run(None, {"flow": flow, "weight": weight})
    ref = depth_flow_projection(torch.from_numpy(flow), torch.from_numpy(weight), fill=True).numpy()
    assert not np.isnan(ours).any()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours, gold, rtol=1e-5, atol=1e-5)  # tests/data/golden/README.md §4.2 item 2


@pytest.mark.parametrize("name", ["aw_c3", "aw_c196", "aw_bilinear_kernel"])
def test_aw_function_body_matches_reference(name):
    model = single_op_model(AW_OP, ["image", "flow", "kernel"], "warped")
    onnx.checker.check_model(model, full_check=True)
    with np.load(GOLDEN_OPS / f"{name}.npz") as z:
        image, flow, kernel, gold = z["input"], z["flow"], z["filter"], z["out"]
        valid = z["valid"] if "valid" in z else None
    (ours,) = session(model).run(None, {"image": image, "flow": flow, "kernel": kernel})
    ref = adaptive_warp(*(torch.from_numpy(a) for a in (image, flow, kernel))).numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours, gold, rtol=1e-5, atol=1e-5)
    if valid is not None:  # out-of-range pixels are an exact copy
        invalid = np.broadcast_to(~valid, ours.shape)
        np.testing.assert_array_equal(ours[invalid], image[invalid])


# ---------------------------------------------------------------- the exported files


def test_files_pass_the_checker_and_hold_the_custom_nodes(small_export):
    directory, manifest = small_export
    models = {s: onnx.load(str(directory / f"{s}.onnx")) for s in STAGE_NAMES}
    for stage, model in models.items():
        onnx.checker.check_model(model, full_check=True)
        assert model.ir_version == 10
        assert {o.domain or "": o.version for o in model.opset_import}.get("") == 18
        assert [v.name for v in model.graph.input] == list(STAGE_IO[stage][0])
        assert [v.name for v in model.graph.output] == list(STAGE_IO[stage][1])
        # No source paths or exporter traces in the files.
        assert not any(n.metadata_props for n in model.graph.node)
        assert b"/work/" not in model.SerializeToString() and b"stack_trace" not in model.SerializeToString()

    warp = models["warp"]
    custom = [n for n in warp.graph.node if n.domain == "dain"]
    assert sorted(n.op_type for n in custom) == [AW_OP] * 4 + [DFP_OP] * 2
    for n in custom:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs == {"plugin_namespace": b"dain", "plugin_version": b"1"}
    assert sorted(f.name for f in warp.functions) == [AW_OP, DFP_OP]
    assert {o.domain: o.version for o in warp.opset_import}["dain"] == 1
    body_ops = {n.op_type for f in warp.functions for n in f.node}
    assert {"ScatterElements", "CumSum", "GatherElements", "Gather"} <= body_ops
    assert all(n.domain in ("", "ai.onnx") for f in warp.functions for n in f.node)

    # Correlation and everything else in pair.onnx: standard ops only, no functions.
    pair = models["pair"]
    assert not pair.functions and all(n.domain == "" for n in pair.graph.node)
    ops = [n.op_type for n in pair.graph.node]
    assert ops.count("ReduceMean") == 10 * 81  # 5 levels x 2 directions x 81 displacements
    for n in pair.graph.node:
        if n.op_type == "GridSample":  # opset-16 spelling: TensorRT maps "linear" to nearest
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert attrs["mode"] == b"bilinear" and attrs["align_corners"] == 1
    for stage in ("frame", "pair", "rectify"):
        assert not any(n.domain == "dain" for n in models[stage].graph.node)


def test_manifest(small_export, small_model):
    directory, manifest = small_export
    from dainrt import __version__

    on_disk = json.loads((directory / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["dainrt_version"] == __version__
    assert manifest["checkpoint_sha256"] == fingerprint(small_model.state_dict())[0]
    assert manifest["model_config"] == {"width": 0.25}
    assert (manifest["precision"], manifest["opset"], manifest["ir_version"]) == ("fp32", 18, 10)
    assert set(manifest["stages"]) == set(STAGE_NAMES)
    ck = small_model.config.context_channels
    frame, pair, warp, rectify = (manifest["stages"][s] for s in STAGE_NAMES)
    assert frame["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["batch", 3, "64*h", "64*w"]}]
    assert frame["outputs"][0] == {"name": "context", "dtype": "float32", "shape": ["batch", ck, "64*h", "64*w"]}
    assert [o["shape"][2:] for o in frame["outputs"][1:]] == [["16*h", "16*w"], ["8*h", "8*w"], ["4*h", "4*w"],
                                                              ["2*h", "2*w"], ["h", "w"]]
    assert [i["name"] for i in pair["inputs"]] == list(STAGE_IO["pair"][0])
    assert pair["outputs"][0]["shape"] == ["batch", 2, "16*h", "16*w"]
    assert warp["inputs"][-1] == {"name": "t", "dtype": "float32", "shape": ["batch"]}
    assert warp["custom_ops"] == ["dain::AdaptiveWarp", "dain::DepthFlowProjection"]
    assert rectify["outputs"] == [{"name": "frame", "dtype": "float32", "shape": ["batch", 3, "64*h", "64*w"]}]
    for stage, entry in manifest["stages"].items():
        data = (directory / entry["file"]).read_bytes()
        assert entry["bytes"] == len(data) and entry["precision"] == "fp32"
    assert manifest_problem(manifest, directory, manifest["checkpoint_sha256"], "fp32") is None


def test_dynamic_shapes_one_file_two_sizes(small_export, small_model):
    """The same files run at two padded sizes (and two batch sizes) and match torch."""
    directory, _ = small_export
    s = small_model.stages()
    sess = {k: session(directory / f"{k}.onnx") for k in STAGE_NAMES}

    def run(k, *xs):
        return sess[k].run(None, {n: x.numpy() for n, x in zip(STAGE_IO[k][0], xs)})

    g = torch.Generator().manual_seed(3)
    for batch, h, w in ((1, 64, 128), (2, 192, 64)):
        i0 = torch.rand(batch, 3, h, w, generator=g)
        i1 = (0.9 * i0 + 0.1 * torch.rand(batch, 3, h, w, generator=g)).roll(2, -1)
        f0, f1 = s.frame(i0), s.frame(i1)
        for ours, ref in zip(run("frame", i0), f0):
            assert ours.shape == tuple(ref.shape)
            np.testing.assert_allclose(ours, ref.numpy(), atol=1e-4)
        pair = s.pair(i0, i1, *f0[1:], *f1[1:])
        for ours, ref in zip(run("pair", i0, i1, *f0[1:], *f1[1:]), pair):
            np.testing.assert_allclose(ours, ref.numpy(), atol=1e-4)
        t = torch.full((batch,), 0.4)
        warp = s.warp(i0, i1, f0[0], f1[0], *pair, t)
        for ours, ref in zip(run("warp", i0, i1, f0[0], f1[0], *pair, t), warp):
            d = np.abs(ours - ref.numpy())
            assert d.mean() < 1e-5 and np.mean(d > 1e-3) < 5e-3  # DFP/AW are discontinuous
        (frame,) = run("rectify", *warp)
        np.testing.assert_allclose(frame, s.rectify(*warp).numpy(), atol=1e-5)


# ---------------------------------------------------------------- FP16


def test_fp16_pass_keeps_the_fp32_islands(small_export, small_model, tmp_path):
    from dainrt.export.fp16 import plan_summary

    directory, manifest = small_export
    fp32 = {s: onnx.load(str(directory / f"{s}.onnx")) for s in STAGE_NAMES}
    out = tmp_path / "fp16"
    m16 = export_stages(small_model, out, "fp16", checkpoint_sha256=manifest["checkpoint_sha256"], protos=fp32)
    assert m16["precision"] == "fp16"
    assert {s: e["precision"] for s, e in m16["stages"].items()} == {"frame": "fp16", "pair": "fp16", "warp": "fp32",
                                                                     "rectify": "fp16"}
    # The FP32 warp stage is byte-identical to the FP32 export's (same checkpoint, same graph).
    assert (out / "warp.onnx").read_bytes() == (directory / "warp.onnx").read_bytes()
    for stage in ("frame", "pair", "rectify"):
        model = onnx.load(str(out / f"{stage}.onnx"))
        onnx.checker.check_model(model, full_check=True)
        for v in (*model.graph.input, *model.graph.output):  # I/O stays FP32: casts inside
            assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
        assert convs and all(n.input[0].endswith("__fp16") for n in convs)
        inits = {t.name: t.data_type for t in model.graph.initializer}
        assert all(inits[n.input[1]] == onnx.TensorProto.FLOAT16 for n in convs)
    plan = plan_summary(fp32["pair"])
    for op in ("GridSample", "ReduceMean"):  # warp grid and correlation accumulation: FP32
        assert plan[op]["fp16"] == 0 and plan[op]["fp32"] > 0
    assert plan["Mul"]["fp16"] == 0          # correlation products and flow scaling: FP32
    assert plan["Conv"]["fp32"] == 0
    plan = plan_summary(fp32["rectify"])     # the final residual add (+ blend) is FP32
    last = [n for n in fp32["rectify"].graph.node if n.output[0] == "frame"][0]
    assert last.op_type == "Add" and plan["Add"]["fp32"] == 1


# ---------------------------------------------------------------- CLI, determinism, errors


def test_cli_export_is_deterministic(small_export, small_model, tmp_path, capsys):
    """`dainrt export` of the same weights writes byte-identical files."""
    from dainrt.cli import main

    directory, manifest = small_export
    ckpt = save_checkpoint(small_model, None, tmp_path / "small.pth")
    out = tmp_path / "cli"
    assert main(["export", "--weights", str(ckpt), "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert "pair.onnx" in printed.out and "exporting pair" in printed.err
    for name in [f"{s}.onnx" for s in STAGE_NAMES] + ["manifest.json"]:
        assert (out / name).read_bytes() == (directory / name).read_bytes(), name
    assert not list(out.glob(".*.tmp"))


def _cli_error(argv, capsys) -> str:
    from dainrt.cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("dainrt: error: ") and "\n" not in err, err
    return err


def test_cli_export_errors(tmp_path, capsys, small_model):
    good = save_checkpoint(small_model, None, tmp_path / "good.pth")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    err = _cli_error(["export", "--weights", str(good), "-o", str(blocker / "onnx")], capsys)
    assert "cannot write ONNX files" in err
    err = _cli_error(["export", "--weights", str(good), "-o", str(blocker)], capsys)
    assert "not a folder" in err

    sd = small_model.state_dict()
    broken = {k: v for k, v in sd.items() if k != "rectifyNet.block5.0.bias"}
    bad = save_checkpoint(broken, small_model.config, tmp_path / "bad.pth")
    err = _cli_error(["export", "--weights", str(bad), "-o", str(tmp_path / "x")], capsys)
    assert "rectifyNet.block5.0.bias" in err and "missing" in err
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 100)
    err = _cli_error(["export", "--weights", str(tmp_path / "junk.pth"), "-o", str(tmp_path / "y")], capsys)
    assert "junk.pth" in err
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_stale_or_damaged_exports_are_detected(small_export, tmp_path):
    from dainrt import __version__

    directory, manifest = small_export
    sha = manifest["checkpoint_sha256"]
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    assert manifest_problem(read_manifest(copy), copy, sha, "fp32") is None
    assert "checkpoint" in manifest_problem(read_manifest(copy), copy, "0" * 64, "fp32")
    assert "precision" in manifest_problem(read_manifest(copy), copy, sha, "fp16")
    other = dict(manifest, dainrt_version="0.0.1")
    assert "dainrt 0.0.1" in manifest_problem(other, copy, sha, "fp32")
    with open(copy / "pair.onnx", "r+b") as f:  # truncated file
        f.truncate(1000)
    assert "pair.onnx" in manifest_problem(read_manifest(copy), copy, sha, "fp32")
    (copy / "manifest.json").unlink()
    assert manifest_problem(read_manifest(copy), copy, sha, "fp32") == "no valid manifest.json"
    assert __version__
