"""benchmarks/gpu_check.py on the CPU: its clean refusal without CUDA, its parsing and report
code, and its measuring steps on tiny inputs (the same functions the GPU run calls)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dainrt.base.files import write_json
from dainrt.benchmarks import gpu_check as gc
from dainrt.model import DAIN, ModelConfig
from dainrt.model.checkpoint import synthetic_state_dict

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_without_cuda_one_line_and_exit_2(tmp_path):
    out = tmp_path / "check.json"
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dainrt: error: the GPU check needs a CUDA GPU"), proc.stderr
    assert not out.exists()


def test_parse_pytest_summary():
    tail = "....ss.\n=== short test summary info ===\nSKIPPED [2] no TensorRT\n5 passed, 2 skipped, 1 warning in 41.27s\n"
    c = gc.parse_pytest_summary(tail)
    assert (c["passed"], c["skipped"], c["warnings"], c["failed"], c["errors"], c["seconds"]) == (5, 2, 1, 0, 0, 41.27)
    c = gc.parse_pytest_summary("F.\n1 failed, 1 passed, 3 deselected, 2 errors in 0.50s")
    assert (c["failed"], c["passed"], c["deselected"], c["errors"]) == (1, 1, 3, 2)
    c = gc.parse_pytest_summary("== 1 error in 0.1s ==")
    assert c["errors"] == 1
    assert gc.parse_pytest_summary("no tests ran in 0.01s")["passed"] == 0
    assert gc.parse_pytest_summary("ImportError: boom")["seconds"] is None


def _report():
    rows = gc.speedups([
        {"path": "fp32 eager", "ms_per_frame": 900.0, "peak_mb": 11000.0, "estimate_mb": 11400.0, "note": ""},
        {"path": "fp16", "ms_per_frame": 225.0, "peak_mb": 11500.0, "estimate_mb": 11480.0, "note": ""},
        {"path": "fp16+compile", "ms_per_frame": None, "peak_mb": None, "estimate_mb": 11480.0,
         "note": "RuntimeError: inductor failed"},
    ])
    return {"device": "NVIDIA H200", "steps": [
        {"step": "gpu_tests", "status": "ok", "seconds": 60.0, "detail": "20 passed, 3 skipped"},
        {"step": "throughput", "status": "fail", "seconds": 120.0, "detail": "2/3 paths ran"},
    ], "throughput": rows, "size": "1920x1080", "psnr": [{"pair": "Venus", "psnr_db": 47.25}],
        "seconds": 180.0, "ok": False}


def test_speedups_and_report_table(tmp_path):
    report = _report()
    base, half, failed = report["throughput"]
    assert base["speedup"] == 1.0 and half["speedup"] == 4.0 and failed["speedup"] is None
    assert half["fps"] == pytest.approx(1e3 / 225) and half["estimate_ratio"] == pytest.approx(11480 / 11500)
    text = gc.format_report(report)
    lines = text.splitlines()
    assert any(x.startswith("gpu_tests") and "20 passed" in x for x in lines)
    assert any(x.startswith("fp16 ") and "4.00" in x and "11500" in x for x in lines)
    assert any(x.startswith("fp16+compile") and "inductor failed" in x for x in lines)
    assert "Venus 47.2" in text and text.rstrip().endswith("FAILED")
    write_json(tmp_path / "r.json", report)
    assert json.loads((tmp_path / "r.json").read_text())["throughput"][1]["speedup"] == 4.0


def test_run_step_records_failure_in_one_line():
    report = {"steps": []}

    def boom():
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    gc.run_step("psnr", boom, report, log=lambda m: None)
    gc.run_step("triton", lambda: ("skip", "no triton", {}), report, log=lambda m: None)
    assert [(s["step"], s["status"]) for s in report["steps"]] == [("psnr", "fail"), ("triton", "skip")]
    assert report["steps"][0]["detail"] == "RuntimeError: CUDA out of memory."


def test_throughput_and_memory_rows_on_cpu(one_thread):
    """The throughput step's measuring code, for real, on a tiny frame with a tiny model."""
    config = ModelConfig(0.25)
    model = DAIN(config)
    model.load_state_dict(synthetic_state_dict(config, seed=0))
    rows = gc.measure_paths(model.eval(), "cpu", 64, 48, paths=(("fp32 eager", {}), ("fp16+triton",
                            {"precision": "fp16", "kernels": "triton"})), runs=1, warmup=0)
    base, triton = rows
    assert base["ms_per_frame"] > 0 and base["speedup"] == 1.0 and base["peak_mb"] > 0
    assert base["estimate_mb"] > 0
    assert triton["ms_per_frame"] is None and "kernels" in triton["note"]      # no triton / no CUDA here
    late = gc.measure_paths(model, "cpu", 64, 48, paths=(("fp32 eager", {}),), runs=1, warmup=0, deadline=0.0)
    assert late[0]["ms_per_frame"] is None and "budget" in late[0]["note"]


def test_psnr_step_on_cpu_small_crops(one_thread):
    report = {}
    status, detail, _ = gc.step_psnr(report, "cpu", max_w=64, max_h=64)
    assert status == "ok", detail
    assert [r["pair"] for r in report["psnr"]] == ["RubberWhale", "Dimetrodon", "Venus"]
    assert all(r["size"] == "64x64" and r["psnr_db"] > 30 for r in report["psnr"])


def test_triton_step_compares_kernels_with_reference():
    """Under Triton's CPU interpreter (set before triton is imported: a fresh process), the
    step's comparison code runs for real on a small frame; without triton it skips."""
    from dainrt.engine.kernels import kernels_available

    if not kernels_available():
        status, detail, _ = gc.step_triton("cpu", 32, 48, 4)
        assert status == "skip" and "triton" in detail
        return
    code = ("import json; from dainrt.benchmarks.gpu_check import step_triton; "
            "print(json.dumps(step_triton('cpu', 32, 48, 4)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TRITON_INTERPRET="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    status, detail, extra = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status == "ok", detail
    assert extra["kernels"]["dfp"]["allclose"] and extra["kernels"]["aw"]["allclose"]
    assert detail.startswith("48x32: DFP max |diff|")
