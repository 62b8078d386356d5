"""INT8 calibration on this CPU: speed and accuracy of ONNX Runtime INT8 against ONNX Runtime FP32
(issue 15). A separate script, not a test; run it on a quiet machine if you can:

    dainrt calibrate tests/data/video/davis_car-turn.mp4 -o cal-int8 [--weights W]
    python benchmarks/int8_check.py --calibration cal-int8 [--weights W] [--runs 5]

1. Reads the calibration folder (made by `dainrt calibrate`; benchmarks/ may not import
   calibration/) and prints its gate and chosen configuration.
2. Times, in the same run and interleaved run by run (fp32, int8, fp32, ...), the rectify stage
   and the x4 stream per output frame (one new frame, one pair, three warp + rectify per step)
   at 256x256 and 480p (854x480), medians of `--runs`; prints the ratios.
3. Profiles one rectify call of each at 256x256 by op type (ONNX Runtime's profiler), which says
   where the time goes on this CPU.
4. PSNR of both against the truth on the real-motion sets in tests/data (Middlebury;
   car-turn and Big Buck Bunny triplets at spacing 2) through `dainrt eval` (subprocesses).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SIZES = {"256x256": (256, 256), "480p": (854, 480)}


def say(msg: str) -> None:
    print(msg, flush=True)


def time_pair(fns: dict, runs: int, warmup: int = 1) -> dict[str, list[float]]:
    """Milliseconds of each callable, interleaved run by run, after `warmup` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            out[k].append((time.perf_counter() - start) * 1e3)
    return out


def stream_step(backend, frames, factor: int):
    """A callable pushing the next frame of `frames` through a Runner: one output step at x`factor`."""
    from dainrt.base.times import times_for_factor
    from dainrt.engine import Runner

    runner = Runner(backend)
    runner.interpolate(0, frames[0], 1, frames[1], [])
    times = times_for_factor(factor)
    counter = iter(range(1, 10**9))

    def step():
        k = next(counter) % (len(frames) - 1)
        if k == 0:
            runner.clear()
            k = 1
        runner.interpolate(k, frames[k], k + 1, frames[k + 1], times)

    return step


def profile_rectify(backend, inputs, tmp: Path) -> dict[str, float]:
    """Milliseconds per op type of one rectify call (ONNX Runtime's profiler, after a warm-up)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / f"prof-{backend.precision}")
    if backend.threads:
        opts.intra_op_num_threads = backend.threads
    entry = backend.manifest["stages"]["rectify"]
    data = (Path(backend.onnx_dir) / entry["file"]).read_bytes()
    data = backend._form(data) if entry.get("precision") == "int8" else data
    s = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(s.get_inputs(), inputs)}
    s.run(None, feeds)
    s.run(None, feeds)
    events = json.loads(Path(s.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    per_op: dict[str, float] = {}
    for e in runs:
        per_op[e["args"]["op_name"]] = per_op.get(e["args"]["op_name"], 0.0) + e["dur"] / 1e3 / 2
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def eval_psnr(args_common: list[str], what: list[str], tmp: Path, tag: str) -> float | None:
    out = tmp / f"eval-{tag}.json"
    cmd = [sys.executable, "-m", "dainrt", "eval", *what, "--no-minterpolate", "--json", str(out), "-y", *args_common]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        say(f"  eval {tag} failed: {proc.stderr.strip().splitlines()[-1:]}")
        return None
    rows = json.loads(out.read_text())
    mean = rows.get("mean") if isinstance(rows, dict) else None
    return float(mean["psnr"]) if mean and "psnr" in mean else None


def time_and_profile(model, cal_dir: Path, runs: int, threads: int | None, tmp: Path) -> None:
    """Parts 2 and 3 of the module docstring. The sessions are closed before it returns: at 480p
    the two hold about 20 GB, which the PSNR part's subprocesses need (it was OOM-killed)."""
    from dainrt.benchmarks.harness import stream_frames
    from dainrt.engine.onnxruntime_backend import OnnxRuntimeBackend
    from dainrt.runtime.transfer import to_tensor

    fp32 = OnnxRuntimeBackend(model, progress=None, threads=threads)
    int8 = OnnxRuntimeBackend(model, precision="int8", calibration=cal_dir, progress=None, threads=threads)
    backends = {"fp32": fp32, "int8": int8}
    say(f"\n== timing: ONNX Runtime CPU, medians of {runs} interleaved runs, load average {os.getloadavg()}")
    say(f"{'size':10s} {'what':22s} {'fp32 ms':>10s} {'int8 ms':>10s} {'speed-up':>9s}")
    results = {}
    for label, (w, h) in SIZES.items():
        frames = [to_tensor(f) for f in stream_frames(w, h, runs + 4, seed=0)]
        rec = {}

        class _Keep:
            name, device = "keep", torch.device("cpu")

            def run(self, stage, inputs):
                rec.setdefault(stage, inputs)
                return fp32.run(stage, inputs)

            def close(self):
                pass

        from dainrt.engine import Runner

        Runner(_Keep()).interpolate(0, frames[0], 1, frames[1], [0.5])
        rect_in = rec["rectify"]
        t = time_pair({k: (lambda b=b: b.run("rectify", rect_in)) for k, b in backends.items()}, runs)
        steps = {k: stream_step(b, frames, 4) for k, b in backends.items()}
        s = time_pair(steps, runs)
        for what, ms, per in (("rectify", t, 1), ("x4 stream / out frame", s, 3)):
            f, i = np.median(ms["fp32"]) / per, np.median(ms["int8"]) / per
            results[(label, what)] = (f, i)
            say(f"{label:10s} {what:22s} {f:10.0f} {i:10.0f} {f / i:8.2f}x")
        if label == "256x256":
            profiles = {k: profile_rectify(b, rect_in, tmp) for k, b in backends.items()}
    say(f"\n== rectify at 256x256 by op type (ms per call, ONNX Runtime profiler)")
    ops = sorted(set(profiles["fp32"]) | set(profiles["int8"]), key=lambda o: -max(profiles["fp32"].get(o, 0), profiles["int8"].get(o, 0)))
    say(f"{'op':24s} {'fp32':>8s} {'int8':>8s}")
    for op in ops:
        say(f"{op:24s} {profiles['fp32'].get(op, 0):8.1f} {profiles['int8'].get(op, 0):8.1f}")
    say(f"{'total':24s} {sum(profiles['fp32'].values()):8.1f} {sum(profiles['int8'].values()):8.1f}")
    for b in backends.values():
        b.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--calibration", required=True, help="an int8 folder made by `dainrt calibrate` for --weights")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-eval", action="store_true", help="timing and profile only")
    ap.add_argument("--skip-timing", action="store_true", help="the PSNR part only")
    a = ap.parse_args()

    from dainrt.model.checkpoint import load_model
    from dainrt.model.weights import resolve_weights

    torch.set_grad_enabled(False)
    tmp = Path(tempfile.mkdtemp(prefix="dainrt-int8-"))
    weights = resolve_weights(a.weights)
    model = load_model(weights, device="cpu")
    say(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}, weights {weights}")
    cal_dir = Path(a.calibration)
    report = json.loads((cal_dir / "calibration.json").read_text())
    g = report["gate"]
    say(f"calibration {cal_dir}: {report['stage_precisions']}; gate: FP32 {g['fp32_psnr_db']:.3f} dB, chosen "
        f"{g['psnr_db']:.3f} dB, drop {g['drop_db']:+.3f} dB (limit {report['gate_db']} dB), "
        f"{report['seconds']['total_s']:.0f} s to calibrate")

    if not a.skip_timing:
        time_and_profile(model, cal_dir, a.runs, a.threads, tmp)

    if not a.skip_eval:
        say("\n== PSNR vs truth (dB, dainrt eval, ONNX Runtime)")
        common = ["--backend", "onnxruntime"] + (["--weights", str(weights)] if a.weights else [])
        sets = {"middlebury": [str(DATA / "middlebury")],
                "car-turn x2": ["--video", str(DATA / "video" / "davis_car-turn.mp4"), "--spacing", "2", "--triplets", "4"],
                "big buck bunny x2": ["--video", str(DATA / "video" / "big_buck_bunny_11s-21s_scenecuts.mkv"),
                                      "--spacing", "2", "--triplets", "3"]}
        say(f"{'set':20s} {'fp32':>8s} {'int8':>8s} {'drop':>7s}  gate {report['gate_db']} dB")
        for name, what in sets.items():
            f = eval_psnr(common + ["--precision", "fp32"], what, tmp, f"{name}-fp32")
            i = eval_psnr(common + ["--precision", "int8", "--calibration", str(cal_dir)], what, tmp, f"{name}-int8")
            if f is not None and i is not None:
                say(f"{name:20s} {f:8.2f} {i:8.2f} {f - i:+7.2f}  {'within' if f - i <= report['gate_db'] else 'OUTSIDE'}")
    say(f"\nload average at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
