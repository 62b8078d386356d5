"""`dainrt bench`: the harness end to end on the CPU (no timed assertions), the MAC counter vs
docs/dain-spec.md §11, and the official monolithic baseline vs the staged model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import MIDDLEBURY
from dainrt.benchmarks.baseline import OfficialForward, OfficialRunner
from dainrt.base.sizes import parse_size
from dainrt.benchmarks.harness import device_peak_tflops
from dainrt.benchmarks.macs import count_model_macs
from dainrt.benchmarks.report import EXTRA_FIELDS, RESULT_FIELDS
from dainrt.cli import main
from dainrt.engine import Runner, create_backend
from dainrt.engine.backend import BACKENDS as backend_registry
from dainrt.base.errors import DainrtError
from dainrt.base.images import read_image
from dainrt.model import ModelConfig, pad, padding_for
from dainrt.runtime.transfer import to_tensor

STAGES = ("frame", "pair", "warp", "rectify")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: on a loaded 2-core machine two threads spin against other processes
    and run several times slower. Restored afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


class RoundingBackend:
    """Stands in for a reduced-precision backend (no ONNX export in this test): the torch
    stages with every stage output rounded to FP16, as an fp16 engine would hand them over."""

    name = "onnxruntime"

    def __init__(self, model, device, precision="fp32", threads=None):
        self.inner = create_backend("torch", model, device)
        self.device = self.inner.device
        self.precision = precision

    def run(self, stage, inputs):
        out = self.inner.run(stage, inputs)
        return tuple(o.half().float() for o in out) if self.precision == "fp16" else out


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "out" / "bench.json"
    saved = dict(backend_registry)
    backend_registry["onnxruntime"] = f"{__name__}:RoundingBackend"
    try:
        rc = main(["bench", "--device", "cpu", "--size", "64x64", "--factor", "2", "4", "--width", "0.25",
                   "--runs", "2", "--warmup", "1", "--backends", "torch", "onnxruntime", "--threads", "1",
                   "--json", str(path)])
    finally:
        backend_registry.clear()
        backend_registry.update(saved)
    assert rc == 0
    return json.loads(path.read_text())


def test_bench_json_has_every_field(bench_json, capsys):
    r = bench_json
    assert set(r) >= {"machine", "versions", "commit", "config", "results", "skipped", "accuracy"}
    assert r["machine"]["device"] == "cpu" and r["machine"]["cpu_count"] >= 1 and r["machine"]["gpu"] is None
    assert r["versions"]["torch"] == torch.__version__ and r["versions"]["python"]
    assert r["commit"] is None or (isinstance(r["commit"], str) and len(r["commit"]) == 40)
    assert r["config"]["sizes"] == ["64x64"] and r["config"]["factors"] == [2, 4] and r["config"]["runs"] == 2
    assert r["machine"]["torch_threads"] == 1
    for row in r["results"]:
        assert set(row) == set(RESULT_FIELDS + EXTRA_FIELDS), row
        assert row["size"] == "64x64"
        assert isinstance(row["backend"], str) and row["precision"] in ("fp32", "fp16", "int8", "fp8")
        assert 0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["peak_mem_mb"] > 0 and row["gmac"] > 0 and row["tflops"] > 0
        assert row["pct_of_peak"] is None                         # no known peak for a CPU
        assert row["speedup_vs_baseline"] > 0
        if row["stage"] == "end_to_end":
            assert row["factor"] in (2, 4)
            assert row["fps"] == pytest.approx(1e3 / row["median_ms"])
            assert row["runs"] == 2
        else:
            assert row["stage"] in STAGES and row["factor"] is None and row["fps"] is None
        if row["precision"] == "fp32":
            assert row["psnr_vs_fp32"] is None
        else:                                                      # FP16-rounded stage outputs
            assert 40 < row["psnr_vs_fp32"] < 999
    for s in r["skipped"]:
        assert set(s) == {"backend", "precision", "reason"} and s["reason"]
    # the estimated peak memory (engine/memory.py) of each torch precision benchmarked, per size
    (est,) = r["memory_estimates"]
    assert (est["size"], est["backend"], est["precision"], est["device"]) == ("64x64", "torch", "fp32", "cpu")
    assert est["estimate_mb"] > 0 and est["line"].startswith("estimated peak RAM")
    # Unavailable variants are skipped with a reason, never silently.
    ran = {(row["backend"], row["precision"]) for row in r["results"]}
    assert ran == {("baseline", "fp32"), ("torch", "fp32"), ("torch-numba", "fp32"), ("onnxruntime", "fp32"),
                   ("onnxruntime", "fp16")}
    assert {("torch", "fp16"), ("torch-triton", "fp16"), ("torch-compile", "fp16"), ("onnxruntime", "int8")} <= {
        (s["backend"], s["precision"]) for s in r["skipped"]}
    # PSNR of the reduced-precision variant on each Middlebury pair, cropped to the bench size.
    acc = r["accuracy"]
    assert {a["pair"] for a in acc} == {"RubberWhale", "Dimetrodon", "Venus"}
    for a in acc:
        assert (a["backend"], a["precision"], a["size"], a["t"]) == ("onnxruntime", "fp16", "64x64", 0.5)


def test_bench_baseline_and_stream_rows(bench_json):
    rows = bench_json["results"]
    base = [x for x in rows if x["backend"] == "baseline"]
    assert {x["factor"] for x in base} == {2, 4}
    for x in base:
        assert x["stage"] == "end_to_end" and x["precision"] == "fp32"
        assert x["speedup_vs_baseline"] == 1.0
    torch_rows = {(x["stage"], x["factor"]) for x in rows if x["backend"] == "torch" and x["precision"] == "fp32"}
    assert torch_rows == {("end_to_end", 2), ("end_to_end", 4), *((s, None) for s in STAGES)}
    for x in rows:
        if x["backend"] == "torch" and x["precision"] == "fp32" and x["stage"] != "end_to_end":
            assert x["speedup_vs_baseline"] == 1.0                # stages compare with torch fp32 eager
    stage = {x["stage"]: x for x in rows if x["backend"] == "torch" and x["stage"] != "end_to_end"}
    # Per stream step at x4: 1 frame, 1 pair, 3 warps, 3 rectifies per timed step (x2: 1 each).
    assert stage["frame"]["runs"] == 2 + 2 and stage["warp"]["runs"] == 2 + 6


def test_bench_prints_table(tmp_path, capsys):
    rc = main(["bench", "--size", "64", "--factor", "2", "--width", "0.25", "--runs", "1", "--warmup", "0",
               "--backends", "torch"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "baseline" in out and "end_to_end" in out and "rectify" in out and "speedup" in out
    assert "estimated peak RAM (resident, beyond the loaded libraries):" in out and "at 64x64 (padded 128x128)" in out


def test_bench_rejects_bad_options(capsys):
    assert main(["bench", "--size", "big"]) == 2
    assert "--size bad size 'big'" in capsys.readouterr().err
    assert main(["bench", "--size", "64", "--backends", "tpu"]) == 2
    assert "unknown --backends" in capsys.readouterr().err
    assert main(["bench", "--size", "64", "--width", "0.25", "--weights", "x.pth"]) == 2
    assert main(["bench", "--size", "64", "--factor", "1"]) == 2


def test_parse_size_and_peaks():
    assert parse_size("256") == (256, 256)
    assert parse_size("480p") == (854, 480)
    assert parse_size("1080P") == (1920, 1080)
    assert parse_size("4k") == (3840, 2160)
    assert parse_size("640x480") == (640, 480)
    with pytest.raises(DainrtError):
        parse_size("0x5")
    assert device_peak_tflops("NVIDIA H100 80GB HBM3", "fp16") == pytest.approx(989.4)
    assert device_peak_tflops("NVIDIA H100 PCIe", "fp32") == pytest.approx(51.2)
    assert device_peak_tflops(None, "fp32") is None
    assert device_peak_tflops("NVIDIA H100 80GB HBM3", "int8") is None


def test_mac_counter_reproduces_spec_section_11():
    # Per padded pixel at width 1 (docs/dain-spec.md §11); per-pixel counts do not depend on the size.
    for h, w in ((64, 64), (256, 384)):
        m = count_model_macs(ModelConfig(1.0), h, w)
        px = m.per_pixel()
        assert px["depth_net"] == 613_640
        assert px["context_net"] == 156_864
        assert round(px["pyramid"]) == 5_624
        assert round(px["decoder"]) == 172_117
        assert round(px["correlation"]) == 287
        assert px["kernel_net"] == 58_464
        assert px["adaptive_warp"] == 6_368
        assert px["projection"] == 24                              # spec: "~24 (scatter ops)"
        assert px["rectify"] == 3_629_056
        # The spec's total leaves out the ~24 scatter-adds of the flow projections.
        assert abs(px["official"] - 5_602_200) <= 24 + 1
        assert abs(m.streamed(2) / m.pixels - 4_814_824) <= 24 + 1
        assert abs(m.streamed(4) / m.pixels - 4_028_557) <= 24 + 1


@pytest.mark.parametrize("t", [0.5, 0.25])
def test_baseline_forward_equals_staged_model(small_model, t):
    f0, f1 = (read_image(MIDDLEBURY / "RubberWhale" / f"frame1{i}.png")[100:164, 200:296] for i in (0, 1))
    official = OfficialRunner(small_model)
    staged = Runner(create_backend("torch", small_model))
    x0, x1 = to_tensor(f0), to_tensor(f1)
    (a,) = official.interpolate(0, x0, 1, x1, [t])
    (b,) = staged.interpolate(0, x0, 1, x1, [t])
    assert a.shape == b.shape == (3, 64, 96)
    torch.testing.assert_close(a, b, rtol=0, atol=2e-5)
    assert official.calls == {"forward": 1}
    # ... and directly on padded tensors: the module is the official forward, the model's forward
    # composes the stages.
    x0, x1 = (pad(torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)[None].float() / 255, padding_for(64, 96))
              for f in (f0, f1))
    tt = torch.tensor([t])
    torch.testing.assert_close(OfficialForward(small_model)(x0, x1, tt), small_model(x0, x1, tt), rtol=0, atol=2e-5)
