"""dainrt.calibration and its consumers: a calibration of the width-0.25 synthetic model on a small
picture sequence (96x64, 4 pairs, rectify searched), its files, the accuracy gate, the FP16
sensitivity search, the refusals and the TensorRT key (CPU side).

The FP32 export is the session's shared one (test_export.shared_export); only `rectify` is
searched here, as the frame and pair searches are the same code on larger graphs.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper

from conftest import synthetic_model
from dainrt import cli
from dainrt.base.errors import DainrtError, OptionError
from dainrt.base.metrics import psnr
from dainrt.calibration import calibrate
from dainrt.calibration.samples import Sample, Samples, sample
from dainrt.calibration.trials import Trials
from dainrt.calibration.variants import Int8Variants, units
from dainrt.engine import Runner
from dainrt.engine.onnxruntime_backend import OnnxRuntimeBackend
from dainrt.export import export_onnx, export_stages, stage_files
from dainrt.export.calibrated import load_calibration
from dainrt.runtime.transfer import to_tensor
from test_export import shared_export

GATE = 0.3


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """12 frames of a smooth texture panning 3 px right and 2 px down per frame (96x64)."""
    from PIL import Image

    from dainrt.benchmarks.harness import stream_frames

    folder = tmp_path_factory.mktemp("pictures")
    for i, f in enumerate(stream_frames(96, 64, 12, seed=1)):
        Image.fromarray(f).save(folder / f"f{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory, small_model):
    return shared_export(tmp_path_factory, small_model)[0]


@pytest.fixture(scope="module")
def int8_cal(tmp_path_factory, small_model, pictures, fp32_export, one_thread_module):
    out = tmp_path_factory.mktemp("cal") / "int8"
    report = calibrate(small_model, pictures, out, "int8", pairs=4, gate_db=GATE, stages=("rectify",),
                       onnx_dir=fp32_export, say=lambda m: None)
    return out, report


@pytest.fixture(scope="module")
def one_thread_module():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_sampling_skips_cuts_and_held_frames(tmp_path, pictures):
    from PIL import Image

    folder = tmp_path / "seq"
    shutil.copytree(pictures, folder)
    # frame 5 held (a copy of 4), frame 8 a scene cut (another picture entirely)
    shutil.copy(folder / "f004.png", folder / "f005.png")
    Image.fromarray(np.full((64, 96, 3), 250, np.uint8)).save(folder / "f008.png")
    s = sample(folder, 4)
    assert s.skipped == {"cuts": [8], "held": [5]}
    used = [tuple(int(x) for x in smp.name.split(":")[1].split("-")) for smp in s.calibration + s.held_out]
    for a, b in used:
        assert not any(a < k <= b for k in (5, 8)), (a, b)
    # Held-out triplets first (spread), then every remaining step without a cut or held frame.
    assert [x.name for x in s.held_out] == ["pictures:0-2", "pictures:8-10"] and s.held_out_source == "pictures"
    assert [x.name for x in s.calibration] == ["pictures:3-4", "pictures:5-6", "pictures:6-7"]


def test_int8_calibration_files_pass_the_checker_and_run(int8_cal, small_model, pictures, fp32_export):
    out, report = int8_cal
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    assert {s: e["precision"] for s, e in manifest["stages"].items()} == \
        {"frame": "fp32", "pair": "fp32", "warp": "fp32", "rectify": "int8"}
    for stage, path in stage_files(out, manifest).items():
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        ops = {n.op_type for n in model.graph.node}
        assert ("QuantizeLinear" in ops) == (stage == "rectify"), stage
    # TensorRT's form: int8 activations and weights with zero point 0 (int32 biases aside).
    rect = onnx.load(str(out / "rectify.onnx"))
    zps = [numpy_helper.to_array(t) for t in rect.graph.initializer if t.name.endswith("zero_point")]
    zps = [z for z in zps if z.dtype != np.int32]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    rows = report["stages"]["rectify"]["units"]
    assert len(rows) == 8 and rows[-1]["unit"] == "rectify_net.block5.0"
    assert report["gate"]["passed"] and report["gate"]["drop_db"] <= GATE and report["gate"]["noise_db"] <= GATE
    assert all(r["noise_db"] >= 0 for r in rows)
    assert len(report["samples"]["calibration"]) == 4 and report["samples"]["kind"] == "pictures"
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["onnx_sha256"]["rectify"] == manifest["stages"]["rectify"]["sha256"]

    # The ONNX Runtime backend runs it, and the frame stays close to FP32's.
    from PIL import Image

    f0, f1 = (to_tensor(np.asarray(Image.open(pictures / f"f00{i}.png"))) for i in (3, 4))
    y = Runner(OnnxRuntimeBackend(small_model, precision="int8", calibration=out, progress=None, threads=1)) \
        .interpolate(0, f0, 1, f1, [0.5])[0]
    ref = Runner(OnnxRuntimeBackend(small_model, onnx_dir=fp32_export, progress=None, threads=1)) \
        .interpolate(0, f0, 1, f1, [0.5])[0]
    assert psnr(y.clamp(0, 1), ref.clamp(0, 1)) > 35


def test_gate_rejects_the_final_conv_calibrated_on_one_black_pair(small_model, pictures, fp32_export, int8_cal,
                                                                    tmp_path):
    """The final residual conv quantized with ranges from one black pair clips every real picture's
    residual: the gate must reject it (the same conv with the 4-pair ranges passes), and the search
    on that one-pair calibration must back off layer by layer until it passes."""
    from dainrt.calibration.calibrate import search_stage

    good = sample(pictures, 4)
    black = np.zeros((64, 96, 3), np.uint8)
    bad = Samples("pictures", [Sample("black", (black, black))], good.held_out, "pictures", {"cuts": [], "held": []})
    trials = Trials(small_model, fp32_export, bad, threads=1)
    proto = onnx.load(str(fp32_export / "rectify.onnx"))
    final = units(proto, "rectify")["rectify_net.block5.0"]
    graph = Int8Variants(proto, "rectify", lambda: trials.calibration_inputs("rectify"), tmp_path).make(final)
    drop = trials.baseline.psnr_db - trials.score({"rectify": graph.SerializeToString()}).psnr_db
    assert abs(drop) > GATE, drop
    per_unit = {r["unit"]: r["drop_db"] for r in int8_cal[1]["stages"]["rectify"]["units"]}
    assert abs(per_unit["rectify_net.block5.0"]) <= GATE

    entry = search_stage(trials, "rectify", proto, "int8", GATE, {}, tmp_path, lambda m: None)
    steps = entry["gate_steps"]
    assert not steps[0]["passed"] and steps[0]["reduced_units"] == 8
    assert [s["reduced_units"] for s in steps] == list(range(8, 8 - len(steps), -1))    # one unit at a time
    assert steps[-1]["passed"] or steps[-1]["reduced_units"] == 0
    assert "rectify_net.block5.0" in entry["fp32"]
    costs = {r["unit"]: max(abs(r["drop_db"]), r["noise_db"]) for r in entry["units"]}
    assert entry["fp32"] == sorted(costs, key=costs.get, reverse=True)[:len(entry["fp32"])] or not steps[-1]["passed"]


def test_noise_cost_and_the_gate_that_holds_it():
    """The expected drop of a clean frame from noise against FP32 (measured with the bundled model's
    car-turn INT8 calibration on RubberWhale: FP32 41.52 dB, INT8 50.23 dB from FP32, 0.62 dB lost),
    and the gate: a small mean drop does not pass with a noise cost above the limit."""
    from dainrt.calibration.calibrate import passes
    from dainrt.calibration.trials import Score, noise_cost

    assert noise_cost(41.52, 50.23) == pytest.approx(0.548, abs=1e-3)
    assert noise_cost(24.89, 43.47) == pytest.approx(0.060, abs=1e-3)
    assert noise_cost(30.0, 30.0) == pytest.approx(3.010, abs=1e-3)      # as far from FP32 as from the truth
    assert noise_cost(40.0, 999.0) < 1e-9                               # identical to FP32
    assert passes(32.455, Score(32.320, 48.05, 0.29), GATE)
    assert not passes(32.455, Score(32.320, 48.05, 0.6), GATE)           # the car-turn calibration's pair
    assert not passes(32.455, Score(31.9, 60.0, 0.01), GATE)


def _sensitive_copy(model, k: float = 1e8):
    """`model` with rectify block2.conv1 scaled by k and conv2 by 1/k: the same function in FP32
    (ReLU is positively homogeneous), but conv1's output overflows FP16 (max 65504)."""
    m = copy.deepcopy(model)
    block = m.rectifyNet.block2
    with torch.no_grad():
        block.conv1.weight.mul_(k)
        block.conv2.weight.div_(k)
    return m


def test_fp16_search_keeps_the_sensitive_layer_in_fp32(small_model, pictures, fp32_export, tmp_path):
    model = _sensitive_copy(small_model)
    # Reuse the shared export's frame, pair and warp (same weights); export only the changed rectify.
    protos = {s: onnx.load(str(p)) for s, p in stage_files(fp32_export, json.loads(
        (fp32_export / "manifest.json").read_text())).items() if s != "rectify"}
    protos["rectify"] = export_onnx(model, ["rectify"])["rectify"]
    export_stages(model, tmp_path / "fp32", "fp32", protos=protos)
    report = calibrate(model, pictures, tmp_path / "fp16", "fp16", pairs=4, stages=("rectify",),
                       onnx_dir=tmp_path / "fp32", say=lambda m: None)
    entry = report["stages"]["rectify"]
    drops = {r["unit"]: r["drop_db"] for r in entry["units"]}
    assert drops["rectify_net.block2.conv1"] > 1.0, drops
    assert "rectify_net.block2.conv1" in entry["fp32"]
    assert {"rectify_net.block3.conv1", "rectify_net.block4.conv2", "rectify_net.block5.0"} <= set(entry["reduced"])
    assert report["gate"]["passed"]
    # The island is written into the FP16 ONNX: that conv's weights stay float32, the others are float16.
    rect = onnx.load(str(tmp_path / "fp16" / "rectify.onnx"))
    inits = {t.name: t.data_type for t in rect.graph.initializer}
    conv_w = {n.input[1].removesuffix("__fp16"): inits[n.input[1]] for n in rect.graph.node if n.op_type == "Conv"}
    assert conv_w["rectify_net.block2.conv1.weight"] == TensorProto.FLOAT
    assert conv_w["rectify_net.block3.conv1.weight"] == TensorProto.FLOAT16


def test_calibration_for_other_weights_or_version_is_refused_in_one_line(int8_cal, small_ckpt, pictures, tmp_path,
                                                                          capsys):
    from dainrt.model.checkpoint import save_checkpoint

    out, _ = int8_cal
    other = save_checkpoint(synthetic_model(0.25, seed=8), None, tmp_path / "other.pth")
    f0, f1 = str(pictures / "f000.png"), str(pictures / "f001.png")
    for weights in (other, small_ckpt):
        capsys.readouterr()
        args = ["interpolate", f0, f1, "-o", str(tmp_path / "frames"), "--weights", str(weights), "--backend",
                "onnxruntime", "--precision", "int8", "--calibration", str(out)]
        code = cli.main(args)
        err = capsys.readouterr().err.strip().splitlines()
        if weights == other:
            assert code == 2 and len(err) == 1 and "checkpoint" in err[0] and "calibrate" in err[0], err
            assert not list((tmp_path / "frames").glob("*.png"))
        else:
            assert code == 0, err
            assert len(list((tmp_path / "frames").glob("*.png"))) == 1
    # Another dainrt version (the manifest says so): refused too.
    moved = tmp_path / "old"
    shutil.copytree(out, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["dainrt_version"] = "0.0.1"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DainrtError, match="dainrt 0.0.1"):
        load_calibration(moved, int8_cal[1]["checkpoint_sha256"])
    with pytest.raises(DainrtError, match="is int8, not fp16"):
        load_calibration(out, int8_cal[1]["checkpoint_sha256"], "fp16")


def test_choices_for_int8(int8_cal):
    from dainrt.engine.choice import choose_engine

    cpu = torch.device("cpu")
    with pytest.raises(OptionError, match="int8 runs on the onnxruntime and tensorrt"):
        choose_engine(cpu, "torch", "int8")
    with pytest.raises(OptionError, match="is needed for int8"):
        choose_engine(cpu, "onnxruntime", "int8")
    with pytest.raises(OptionError, match="applies to the onnxruntime and tensorrt"):
        choose_engine(cpu, None, None, calibration=int8_cal[0])
    c = choose_engine(cpu, "onnxruntime", None, calibration=int8_cal[0])     # precision from the folder
    assert c.options == {"precision": "int8", "calibration": int8_cal[0]}


def test_engine_key_changes_with_the_calibration(int8_cal, small_model, pictures, fp32_export, tmp_path):
    """TensorRT cannot run here; the key and command logic can (no GPU identity is queried)."""
    from dainrt.engine.tensorrt.builder import EngineBuilder, GpuIdentity, build_command
    from dainrt.engine.tensorrt.cache import EngineCache, ShapeProfile

    fp16 = tmp_path / "fp16"
    calibrate(small_model, pictures, fp16, "fp16", pairs=2, stages=("rectify",), onnx_dir=fp32_export,
              say=lambda m: None)
    gpu = GpuIdentity("NVIDIA Test GPU", "9.0", "11.4.0")
    cache = EngineCache(tmp_path / "engines")
    profile = ShapeProfile.static(128, 128)
    a = EngineBuilder(small_model, "int8", cache=cache, identity=gpu, calibration=int8_cal[0])
    b = EngineBuilder(small_model, "fp16", cache=cache, identity=gpu, calibration=fp16)
    ka, kb = a.key("warp", profile), b.key("warp", profile)
    # Same warp ONNX (FP32 in both), yet another engine: the calibration's digest is in the key.
    assert ka.onnx_sha256 == kb.onnx_sha256 and ka.precision == kb.precision == "fp32"
    assert ka.calibration != kb.calibration and ka.digest() != kb.digest()
    assert ka.calibration == load_calibration(int8_cal[0], a.fingerprint).digest
    assert a.key("rectify", profile).precision == "int8" and b.key("rectify", profile).precision == "fp16"
    assert "--calibration" in build_command(profile, "int8", int8_cal[0])
    # A run's resume fingerprint holds the same digest, not the path: a copied folder resumes, a
    # folder calibrated again does not.
    from dainrt.runtime.pipeline import _options_key

    moved = shutil.copytree(int8_cal[0], tmp_path / "moved")
    keys = [_options_key({"precision": p, "calibration": str(d)})["calibration"]
            for p, d in (("int8", int8_cal[0]), ("int8", moved), ("fp16", fp16))]
    assert keys == [ka.calibration, ka.calibration, kb.calibration]
    with pytest.raises(OptionError, match="is needed for int8"):
        EngineBuilder(small_model, "int8", cache=cache, identity=gpu)


def test_eval_with_a_calibration_writes_its_json(int8_cal, small_ckpt, pictures, tmp_path, capsys):
    """`eval --json` with --calibration (a path among the options) writes the file (it raised
    TypeError after the whole evaluation), and the INT8 row is close to the FP32 one."""
    seq = tmp_path / "seqs" / "pan"
    seq.mkdir(parents=True)
    for name, i in (("frame10.png", 0), ("frame10i11.png", 1), ("frame11.png", 2)):
        shutil.copy(pictures / f"f{i:03d}.png", seq / name)
    out, _ = int8_cal
    common = ["eval", str(tmp_path / "seqs"), "--weights", str(small_ckpt), "--backend", "onnxruntime",
              "--no-minterpolate", "-y"]
    rows = {}
    for precision, extra in (("fp32", []), ("int8", ["--calibration", str(out)])):
        js = tmp_path / f"{precision}.json"
        code = cli.main(common + ["--precision", precision, *extra, "--json", str(js)])
        assert code == 0, capsys.readouterr().err
        rows[precision] = json.loads(js.read_text())
    assert rows["int8"]["calibration"] == str(out) and rows["int8"]["precision"] == "int8"
    assert "calibration" not in rows["fp32"]
    assert abs(rows["int8"]["mean"]["psnr"] - rows["fp32"]["mean"]["psnr"]) <= GATE


def _two_convs(weight: np.ndarray) -> onnx.ModelProto:
    """x (1,8,32,32) -> Conv -> Relu -> Conv, float32, the same 8x8x3x3 weights twice."""
    from onnx import helper

    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["y"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w"], ["z"], name="conv_b", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 8, 32, 32))],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight.astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fp16_trials_round_what_fp16_stores():
    """ONNX Runtime's CPU provider runs an FP16 graph in FP32; the trials' emulation rounds
    weights, inputs and outputs of the FP16 ops to FP16 as a GPU stores them."""
    import onnxruntime as ort

    from dainrt.calibration.variants import emulate_fp16
    from dainrt.export.fp16 import convert_to_fp16

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.3
    x = rng.standard_normal((1, 8, 32, 32)).astype(np.float32) * 3

    def ort_run(model):
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    def torch_fp16(weight):          # FP16 storage, FP32 arithmetic
        h = lambda t: t.half().float()
        y = torch.nn.functional.conv2d(h(torch.from_numpy(x)), h(torch.from_numpy(weight)), padding=1)
        return h(torch.nn.functional.conv2d(h(y).relu(), h(torch.from_numpy(weight)), padding=1)).numpy()

    fp32 = ort_run(_two_convs(w))
    scale = np.abs(fp32).max()
    emulated, reference = ort_run(emulate_fp16(_two_convs(w))), torch_fp16(w)
    err = np.abs(emulated - fp32).max() / scale
    assert 1e-4 < err < 3e-3                                             # FP16's 11 bits, not FP32's
    assert np.abs(emulated - reference).max() / scale < 2e-3 and np.mean(emulated != reference) < 0.02
    # what the real cast pass gives on this provider: FP16-rounded weights, FP32 activations (so
    # it cannot be what the trials run: with weights FP16 holds exactly it equals FP32)
    rounded_weights = ort_run(_two_convs(w.astype(np.float16).astype(np.float32)))
    assert np.abs(ort_run(convert_to_fp16(_two_convs(w))) - rounded_weights).max() / scale < 1e-5
    assert np.abs(emulated - rounded_weights).max() / scale > 1e-4
    # convolutions kept FP32 are FP32; an FP16 overflow becomes inf, as on a GPU
    assert np.array_equal(ort_run(emulate_fp16(_two_convs(w), keep_fp32={"conv_a", "conv_b"})), fp32)
    assert np.isinf(ort_run(emulate_fp16(_two_convs(w * 3e3)))).any()
