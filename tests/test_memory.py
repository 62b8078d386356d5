"""The peak-memory estimate (engine/memory.py): its scaling, its stage term against the live
tensors of the real stages, against the measured peak RSS on the CPU, and where it is printed."""
from __future__ import annotations

import pytest

from dainrt.benchmarks.memory_check import TOLERANCE, measure_subprocess, trace_stages
from dainrt.cli import main
from dainrt.engine.memory import (CUDA_OVERHEAD_BYTES, estimate_memory, format_bytes, memory_line,
                                  warp_activation_channels, weight_values)
from dainrt.model import ModelConfig
from dainrt.runtime.synthetic import moving, write_clip


def test_estimate_scales_with_padded_pixels_and_width():
    cfg = ModelConfig(1.0)
    small = estimate_memory(cfg, 256, 256)          # padded 320x320
    large = estimate_memory(cfg, 576, 576)          # padded 640x640: 4x the pixels
    assert (small.padded_height, small.padded_width, large.padded_height) == (320, 320, 640)
    for part in ("frames_kept", "pair_kept", "activations"):
        assert getattr(large, part) == 4 * getattr(small, part), part
    assert large.weights == small.weights == weight_values(cfg) * 4
    assert weight_values(cfg) == pytest.approx(24_031_656, rel=1e-3)      # parameters + BN buffers
    # every full-resolution term is channels x pixels x 4 bytes; narrower models hold fewer channels
    assert warp_activation_channels(cfg) == 437 + 2 * 196 + 19
    narrow = estimate_memory(ModelConfig(0.5), 576, 576)
    assert narrow.frames_kept < large.frames_kept and narrow.activations < large.activations
    # the same padded size (256x256: official padding) gives the same estimate, apart from the
    # caller's unpadded frames
    a, b = estimate_memory(cfg, 200, 250), estimate_memory(cfg, 250, 130)
    assert a.activations == b.activations and a.frames_kept == b.frames_kept and a.io != b.io


def test_estimate_per_device_and_precision():
    cfg = ModelConfig(1.0)
    cpu = estimate_memory(cfg, 1080, 1920, "cpu")
    cuda = estimate_memory(cfg, 1080, 1920, "cuda:0")
    half = estimate_memory(cfg, 1080, 1920, "cuda", "fp16")
    assert (cuda.padded_height, cuda.padded_width) == (1152, 1984)
    assert cuda.overhead_bytes == CUDA_OVERHEAD_BYTES and cpu.overhead_bytes == 0
    # on CUDA the warp's set is the peak: (R + 2 Ck + 19) x P x 4 bytes
    assert cuda.activations == 848 * 1152 * 1984 * 4
    assert cpu.activations > cuda.activations           # oneDNN's reordered copy of the rectify input
    # the warp stays FP32; the rectify's FP16 copy of its input brings it level with the warp
    assert cuda.activations <= half.activations < 1.01 * cuda.activations
    assert half.weights == cuda.weights * 3 // 2        # plus autocast's FP16 weight copies
    assert 10 * 2**30 < cuda.total < 14 * 2**30          # 1080p at full width in FP32: about 12 GiB
    # ONNX Runtime: measured on the CPU (activations x7, its own copy of the weights); not on CUDA
    ort = estimate_memory(cfg, 1080, 1920, "cpu", backend="onnxruntime")
    assert ort.activations == 7 * cpu.activations and ort.weights == 2 * cpu.weights
    assert ort.frames_kept == cpu.frames_kept
    # A calibrated INT8 graph on ONNX Runtime: twice the FP32 activations (measured); torch has no int8
    ort8 = estimate_memory(cfg, 1080, 1920, "cpu", "int8", backend="onnxruntime")
    assert ort8.activations == 2 * ort.activations and ort8.weights == ort.weights and ort8.precision == "int8"
    with pytest.raises(ValueError, match="int8 on onnxruntime"):
        estimate_memory(cfg, 64, 64, "cpu", "int8")
    with pytest.raises(ValueError, match="onnxruntime backend on cuda"):
        estimate_memory(cfg, 64, 64, "cuda", backend="onnxruntime")
    assert "none (no memory estimate for the tensorrt backend" in memory_line(cfg, 64, 64, backend="tensorrt")
    assert format_bytes(3 * 2**30) == "3.0 GiB" and format_bytes(5 * 2**20) == "5 MiB"


def test_warp_term_equals_the_traced_live_tensors():
    """The warp stage's term is what the real stage holds at its peak, traced op by op."""
    cfg = ModelConfig(0.25)
    rows = {r["stage"]: r for r in trace_stages(64, 64, 0.25)}      # padded 128x128
    assert rows["warp"]["peak_values_per_px"] == pytest.approx(warp_activation_channels(cfg), rel=1e-3)
    assert "cat" in rows["warp"]["at"]
    assert all(rows[s]["peak_values_per_px"] < warp_activation_channels(cfg) for s in ("frame", "pair", "rectify"))


@pytest.mark.parametrize("width,height", [(128, 128), (256, 192)])
def test_estimate_within_25_percent_of_measured_peak_rss(width, height):
    """A real interpolation in a fresh process (one thread), width-0.25 synthetic weights."""
    r = measure_subprocess(width, height, 0.25, threads=1, timeout=300)
    assert r["finite"]
    assert abs(r["ratio"] - 1) <= TOLERANCE, r


def test_dry_run_prints_the_estimated_peak(tmp_path, capsys):
    clip = write_clip(str(tmp_path / "in.mp4"), moving(3, 96, 64), rate=24)
    assert main(["run", clip, "--factor", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if "estimated peak" in x]
    assert len(line) == 1 and "96x64 (padded 128x128)" in line[0] and "torch fp32 on cpu" in line[0], out


def test_dry_run_without_usable_weights_still_plans(tmp_path, capsys):
    clip = write_clip(str(tmp_path / "in.mp4"), moving(3, 96, 64), rate=24)
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    assert main(["run", clip, "--factor", "2", "--dry-run", "--weights", str(bad)]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if "estimated peak" in x]
    assert len(line) == 1 and "none (" in line[0] and "bad.pth is not a readable PyTorch checkpoint" in line[0]
