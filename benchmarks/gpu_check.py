"""One prepared GPU check (issue 13, item 4): everything a session with a GPU should run, in one go.

    bash benchmarks/gpu_check.sh [--json gpu-check.json]        # = python -m dainrt.benchmarks.gpu_check

Steps, in order; each is timed and recorded, and a failing step does not stop the next ones:

1. `gpu_tests`: `python -m pytest -q -m gpu tests/gpu` in a subprocess (time limit
   `TEST_TIMEOUT_S`); the pytest summary counts are parsed into the report.
2. `triton`: the Triton kernels against the reference ops (`model/ops`) at 1080p (padded
   1984x1152, random flows with NaN and huge values, 196-channel context): the largest absolute
   difference and `allclose` at rtol = atol = 1e-5 (the GPU tests' tolerance); both timed.
3. `throughput`: each torch path's 1080p x4 throughput per output frame, on a stream of
   distinct frames (one `frame`, one `pair`, three `warp` + `rectify` per step, as in
   `benchmarks/harness.py`), full-width synthetic weights (official shapes), through the
   `Runner` and `TorchBackend` options: eager FP32 (the baseline of this run), FP16, FP16 +
   Triton, FP16 + `torch.compile`. Speed-up = baseline median / path median.
4. `memory` (with step 3): each path's `torch.cuda.max_memory_allocated` over its stream, next
   to the estimate of `engine/memory.py` (its `tensors` part, which is what torch allocates).
5. `psnr`: FP16 against FP32 (PSNR in dB, frames clipped to [0, 1]) on the Middlebury pairs
   (`tests/data/middlebury`), t = 0.5, with the real weights (`resolve_weights`: the cache's
   official file if present, else the bundled model).
6. `run`: `dainrt run --device cuda` end to end on the first frames of the shared clip
   (`tests/data/video`, 720p, audio): decode with pinned uploads on their own stream, the
   model, encode; the run's JSON report is checked and its figures kept.

Output: one JSON file (`--json`, default `gpu-check.json`) and a table on stdout. Exit 0 when
every step that ran passed, 1 otherwise. Without a CUDA GPU it prints one line
(`dainrt: error: ...`) and exits 2, before doing anything.

Expected time on one H100/H200: tests 1-3 min (engine builds where TensorRT is installed; they
skip without it), Triton 10 s, throughput about 2-3 min (FP32 eager about 1 s per output frame
at full width; the compile path adds Inductor's first compilation), PSNR 10 s, run 30 s:
4-6 min in all, inside the 8-minute budget. `--quick` (fewer timed runs, no compile path) for
a second try.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
TEST_TIMEOUT_S = 180
RUN_TIMEOUT_S = 120
BUDGET_S = 7 * 60                # a step that would start later is skipped: the check ends within 8 min
TOL = 1e-5                       # rtol = atol of the Triton comparison (tests/gpu)
FACTOR = 4
SIZE = "1080p"
PATHS = (                         # label, TorchBackend options
    ("fp32 eager", {}),
    ("fp16", {"precision": "fp16"}),
    ("fp16+triton", {"precision": "fp16", "kernels": "triton"}),
    ("fp16+compile", {"precision": "fp16", "compile": True}),
)
BASELINE = "fp32 eager"


class CheckError(Exception):
    """A reason the whole check cannot start (one line)."""


# ------------------------------------------------------------------------------------------
# Pure helpers (tested on the CPU: tests/test_gpu_check.py)

_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected|warnings?)")


def parse_pytest_summary(output: str) -> dict:
    """Counts from pytest's last summary line, e.g. "3 passed, 2 skipped in 4.1s" ->
    {"passed": 3, "skipped": 2, "failed": 0, "errors": 0, ..., "seconds": 4.1}; an output
    without a summary gives all zeros and seconds None."""
    counts = {k: 0 for k in ("passed", "failed", "skipped", "errors", "xfailed", "xpassed", "deselected", "warnings")}
    counts["seconds"] = None
    summary = [line for line in output.splitlines() if re.search(r"\bin [\d.]+s\b", line)]
    if not summary:
        return counts
    line = summary[-1]
    for n, kind in _COUNT.findall(line):
        key = {"error": "errors", "warning": "warnings"}.get(kind, kind)
        counts[key] = int(n)
    t = re.search(r"\bin ([\d.]+)s\b", line)
    counts["seconds"] = float(t.group(1)) if t else None
    return counts


def speedups(rows: list[dict], baseline: str = BASELINE) -> list[dict]:
    """Fill `speedup` (baseline median / row median) and `estimate_ratio` (estimate / measured
    peak) into throughput rows {"path", "ms_per_frame", "peak_mb", "estimate_mb", ...}, in place;
    None where a figure is missing. Returns the rows."""
    base = next((r["ms_per_frame"] for r in rows if r["path"] == baseline and r.get("ms_per_frame")), None)
    for r in rows:
        ms = r.get("ms_per_frame")
        r["fps"] = 1e3 / ms if ms else None
        r["speedup"] = base / ms if base and ms else None
        peak, est = r.get("peak_mb"), r.get("estimate_mb")
        r["estimate_ratio"] = est / peak if peak and est else None
    return rows


def _f(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_report(report: dict) -> str:
    """The steps (status, seconds, one-line detail), then the throughput/memory table and the
    PSNR values, as plain text."""
    lines = [f"{'step':<11} {'status':<6} {'s':>6}  detail", "-" * 72]
    for s in report["steps"]:
        lines.append(f"{s['step']:<11} {s['status']:<6} {_f(s.get('seconds'), '.1f'):>6}  {s.get('detail', '')}")
    rows = report.get("throughput") or []
    if rows:
        lines += ["", f"{report.get('size', SIZE)} x{FACTOR}, per output frame, speed-up vs {BASELINE} of this run; "
                  "peak = torch.cuda.max_memory_allocated, estimate = engine/memory.py",
                  f"{'path':<13} {'ms/frame':>9} {'fps':>6} {'speedup':>7} {'peak MiB':>9} {'est MiB':>8} {'est/peak':>8}  note"]
        for r in rows:
            lines.append(f"{r['path']:<13} {_f(r.get('ms_per_frame'), '.1f'):>9} {_f(r.get('fps'), '.2f'):>6} "
                         f"{_f(r.get('speedup'), '.2f'):>7} {_f(r.get('peak_mb'), '.0f'):>9} "
                         f"{_f(r.get('estimate_mb'), '.0f'):>8} {_f(r.get('estimate_ratio'), '.2f'):>8}  {r.get('note', '')}")
    psnr_rows = report.get("psnr") or []
    if psnr_rows:
        lines += ["", "FP16 vs FP32 PSNR (dB), t = 0.5: " + ", ".join(f"{p['pair']} {p['psnr_db']:.1f}" for p in psnr_rows)]
    lines += ["", f"device: {report.get('device')}; total {report.get('seconds', 0):.0f} s; "
              f"{'all passed' if report.get('ok') else 'FAILED'}"]
    return "\n".join(lines)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def run_step(name: str, fn: Callable[[], tuple[str, str, dict]], report: dict, log) -> None:
    """Run one step: fn returns (status "ok"|"fail"|"skip", one-line detail, extra fields)."""
    log(f"== {name}")
    t0 = time.perf_counter()
    try:
        status, detail, extra = fn()
    except Exception as err:  # noqa: BLE001 - a failed step is recorded, the next one runs
        status, detail, extra = "fail", _one_line(err), {}
    step = {"step": name, "status": status, "seconds": time.perf_counter() - t0, "detail": detail, **extra}
    report["steps"].append(step)
    log(f"   {status}: {detail} ({step['seconds']:.1f} s)")


# ------------------------------------------------------------------------------------------
# The steps (each takes the device, so the CPU tests can run them on tiny inputs)


def step_gpu_tests(timeout: float = TEST_TIMEOUT_S) -> tuple[str, str, dict]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(REPO / "tests" / "gpu")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return "fail", f"pytest did not finish within {timeout:.0f} s", {}
    counts = parse_pytest_summary(proc.stdout)
    detail = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "errors", "skipped") if counts[k])
    ok = proc.returncode == 0 and not counts["failed"] and not counts["errors"]
    return ("ok" if ok else "fail"), detail or f"pytest exit {proc.returncode}", \
        {"counts": counts, "tail": proc.stdout.strip().splitlines()[-15:]}


def step_triton(device, height: int = 1152, width: int = 1984, channels: int = 196) -> tuple[str, str, dict]:
    """Triton kernels vs the reference ops on one padded frame (default 1080p, padded)."""
    import torch

    from dainrt.engine.kernels import kernels_available
    from dainrt.model import ops

    if not kernels_available():
        return "skip", "triton is not installed (pip install 'dainrt[triton]')", {}
    from dainrt.engine import kernels

    g = torch.Generator(device=device).manual_seed(0)
    H, W = height, width
    flow = torch.randn(1, 2, H, W, device=device, generator=g) * 10
    flow[0, 0, :5, :5] = float("nan")
    flow[0, 1, 10:12] = 1e30
    weight = torch.rand(1, 1, H, W, device=device, generator=g) + 0.05
    kernel = torch.randn(1, 16, H, W, device=device, generator=g)
    image = torch.randn(1, channels, H, W, device=device, generator=g)
    out, worst, ok = {}, 0.0, True
    for name, ref_fn, tri_fn in (
        ("dfp", lambda: ops.depth_flow_projection(flow, weight), lambda: kernels.depth_flow_projection(flow, weight)),
        ("aw", lambda: ops.adaptive_warp(image, ft, kernel), lambda: kernels.adaptive_warp(image, ft, kernel)),
    ):
        if name == "aw":
            ft = out["dfp_reference"]
        ref, ref_ms = _timed(ref_fn, device)
        tri, tri_ms = _timed(tri_fn, device)
        out[f"{name}_reference"] = ref
        diff = (tri - ref).abs()
        both_nan = torch.isnan(tri) & torch.isnan(ref)
        err = float(diff[~both_nan].max()) if (~both_nan).any() else 0.0
        close = bool(torch.allclose(tri, ref, rtol=TOL, atol=TOL, equal_nan=True))
        ok &= close
        worst = max(worst, err)
        out[name] = {"max_abs_diff": err, "allclose": close, "reference_ms": ref_ms, "triton_ms": tri_ms}
    result = {k: v for k, v in out.items() if not k.endswith("_reference")}
    detail = (f"{W}x{H}: DFP max |diff| {result['dfp']['max_abs_diff']:.2e} "
              f"({result['dfp']['reference_ms']:.1f} -> {result['dfp']['triton_ms']:.1f} ms), "
              f"AW C={channels} {result['aw']['max_abs_diff']:.2e} "
              f"({result['aw']['reference_ms']:.1f} -> {result['aw']['triton_ms']:.1f} ms)")
    return ("ok" if ok else "fail"), detail, {"kernels": result}


def _timed(fn, device, repeat: int = 3):
    """fn's result and its median time in ms over `repeat` calls after one warm-up call."""
    import torch

    from .timing import Stopwatch

    result = fn()
    samples = []
    for _ in range(repeat):
        with Stopwatch(torch.device(device)) as sw:
            result = fn()
        samples.append(sw.ms)
    return result, sorted(samples)[len(samples) // 2]


def measure_paths(model, device, width: int, height: int, paths=PATHS, runs: int = 5, warmup: int = 1,
                  log=lambda m: None, deadline: float | None = None) -> list[dict]:
    """Per torch path: ms per output frame at x4 on a stream, peak allocated MiB (CUDA) or peak
    RSS MiB (CPU), the memory estimate (MiB) and a note where the path could not run. A path
    that would start after `deadline` (time.perf_counter()) is left out with a note."""
    import gc

    import torch

    from dainrt.base.times import times_for_factor
    from dainrt.engine import Runner
    from dainrt.engine.memory import estimate_memory
    from dainrt.engine.torch_backend import TorchBackend
    from dainrt.runtime.transfer import to_tensor

    from .harness import stream_frames
    from .timing import measure

    device = torch.device(device)
    frames = [to_tensor(f).to(device) for f in stream_frames(width, height, runs + warmup + 2)]
    times = times_for_factor(FACTOR)
    rows = []
    for label, options in paths:
        est = estimate_memory(model.config, height, width, device.type, options.get("precision", "fp32"),
                              kernels=options.get("kernels", "reference"), compile=options.get("compile", False))
        row = {"path": label, "options": options, "ms_per_frame": None, "peak_mb": None,
               "estimate_mb": est.tensors / 2**20, "note": ""}
        if deadline is not None and time.perf_counter() > deadline:
            row["note"] = "not run: out of the check's time budget"
            rows.append(row)
            continue
        backend = runner = None
        try:
            backend = TorchBackend(model, device, **options)
            runner = Runner(backend)
            runner.interpolate(0, frames[0], 1, frames[1], [])          # prime (and compile)
            step_no = iter(range(1, 10**9))

            def step() -> None:
                k = next(step_no)
                runner.interpolate(k, frames[k], k + 1, frames[k + 1], times)

            m = measure(step, runs, warmup, device, lambda i, ms: log(f"   {label}: run {i + 1}/{runs} {ms:.0f} ms"))
            row["ms_per_frame"] = m.stats.median_ms / (FACTOR - 1)
            row["peak_mb"] = m.peak_mem_mb
            row["note"] = m.peak_mem_note
        except Exception as err:  # noqa: BLE001 - this path is reported as failed, the others run
            row["note"] = _one_line(err)
        finally:
            backend = runner = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    return speedups(rows)


def step_throughput(report: dict, device, size: str = SIZE, runs: int = 5, warmup: int = 1, paths=PATHS,
                    model_width: float = 1.0, log=lambda m: None, deadline: float | None = None) -> tuple[str, str, dict]:
    from dainrt.base.sizes import parse_size

    from .harness import _load_model

    width, height = parse_size(size)
    model, desc = _load_model(None, model_width, 0)
    rows = measure_paths(model, device, width, height, paths, runs, warmup, log, deadline)
    report["throughput"], report["size"], report["throughput_weights"] = rows, f"{width}x{height}", desc
    failed = [r["path"] for r in rows if r["ms_per_frame"] is None]
    best = max((r for r in rows if r.get("speedup")), key=lambda r: r["speedup"], default=None)
    detail = f"{len(rows) - len(failed)}/{len(rows)} paths ran"
    if best:
        detail += f"; fastest {best['path']} {best['ms_per_frame']:.1f} ms/frame ({best['speedup']:.2f}x {BASELINE})"
    if failed:
        detail += f"; failed: {', '.join(failed)}"
    return ("fail" if failed else "ok"), detail, {}


def step_psnr(report: dict, device, max_w: int = 1920, max_h: int = 1080, weights: str | None = None) -> tuple[str, str, dict]:
    import torch

    from dainrt.base.metrics import psnr
    from dainrt.engine import Runner
    from dainrt.engine.torch_backend import TorchBackend
    from dainrt.model.checkpoint import load_model
    from dainrt.model.weights import resolve_weights
    from dainrt.runtime.transfer import to_tensor

    from .harness import PSNR_T, default_pairs_dir, load_pairs

    folder = default_pairs_dir()
    if folder is None:
        return "skip", "tests/data/middlebury not found (run from a source checkout)", {}
    path = resolve_weights(weights)
    model = load_model(path)
    rows = []
    for name, f0, f1 in load_pairs(folder, max_w, max_h):
        a, b = to_tensor(f0).to(device), to_tensor(f1).to(device)
        frames = {}
        for precision in ("fp32", "fp16"):
            frames[precision] = Runner(TorchBackend(model, torch.device(device), precision=precision)) \
                .interpolate(0, a, 1, b, [PSNR_T])[0].clamp(0, 1).cpu()
        rows.append({"pair": name, "size": f"{a.shape[2]}x{a.shape[1]}", "psnr_db": psnr(frames["fp16"], frames["fp32"])})
    report["psnr"], report["psnr_weights"] = rows, str(path)
    if not rows:
        return "skip", f"no Middlebury pairs under {folder}", {}
    low = min(r["psnr_db"] for r in rows)
    return "ok", f"{len(rows)} pairs, lowest {low:.1f} dB ({Path(path).name})", {}


def step_run(device: str = "cuda", clip: str | None = None, max_frames: int = 12,
             timeout: float = RUN_TIMEOUT_S) -> tuple[str, str, dict]:
    clip = clip or str(REPO / "tests" / "data" / "video" / "big_buck_bunny_11s-21s_scenecuts.mkv")
    if not Path(clip).is_file():
        return "skip", f"no clip at {clip}", {}
    with tempfile.TemporaryDirectory(prefix="dainrt-gpu-check-") as tmp:
        out, rep = Path(tmp) / "out.mkv", Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "dainrt", "run", clip, "-o", str(out), "--factor", "2", "--device", device,
               "--max-frames", str(max_frames), "--report", str(rep), "--no-progress"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        except subprocess.TimeoutExpired:
            return "fail", f"dainrt run did not finish within {timeout:.0f} s", {}
        if proc.returncode != 0 or not out.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return "fail", f"dainrt run exit {proc.returncode}: {last}", {"stderr": proc.stderr[-2000:]}
        r = json.loads(rep.read_text())
    frames = r.get("frames", {})
    extra = {"command": " ".join(cmd[1:]), "report": {k: r.get(k) for k in ("frames", "wall_time_s", "output_fps")},
             "summary": proc.stdout.strip().splitlines()[-1:]}
    detail = (f"{r['output']['frames']} frames ({frames.get('interp', 0)} interpolated) in {r['wall_time_s']:.1f} s, "
              f"{r.get('output_fps') or 0:.2f} frames/s")
    return ("ok" if frames.get("interp", 0) > 0 else "fail"), detail, extra


# ------------------------------------------------------------------------------------------


def require_cuda() -> str:
    """The GPU's name, or CheckError saying in one line why there is none."""
    try:
        import torch
    except ImportError as err:
        raise CheckError(f"torch is not importable: {err}") from None
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, but no device is visible"
        raise CheckError(f"the GPU check needs a CUDA GPU; torch {torch.__version__} is {build}")
    return torch.cuda.get_device_name(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default="gpu-check.json", metavar="PATH", help="report file (default gpu-check.json)")
    p.add_argument("--runs", type=int, default=5, help="timed steps per path (3 output frames each; default 5)")
    p.add_argument("--quick", action="store_true", help="2 timed steps per path, no compile path, no GPU tests")
    p.add_argument("--skip", nargs="+", default=[], choices=("gpu_tests", "triton", "throughput", "psnr", "run"),
                   help="steps to leave out")
    args = p.parse_args(argv)
    try:
        gpu = require_cuda()
    except CheckError as err:
        print(f"dainrt: error: {err}", file=sys.stderr)
        return 2

    from dainrt.base.files import write_json

    from .report import git_commit, versions

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    report = {"device": gpu, "commit": git_commit(), "versions": versions(), "steps": []}
    skip = set(args.skip) | ({"gpu_tests"} if args.quick else set())
    runs = 2 if args.quick else args.runs
    paths = [x for x in PATHS if not (args.quick and x[1].get("compile"))]
    steps = [
        ("gpu_tests", lambda: step_gpu_tests()),
        ("triton", lambda: step_triton("cuda")),
        ("throughput", lambda: step_throughput(report, "cuda", SIZE, runs, 1, paths, log=log,
                                               deadline=t0 + BUDGET_S - 60)),
        ("psnr", lambda: step_psnr(report, "cuda")),
        ("run", lambda: step_run("cuda")),
    ]
    for name, fn in steps:
        if name in skip:
            report["steps"].append({"step": name, "status": "skip", "seconds": 0.0, "detail": "--skip/--quick"})
            continue
        if time.perf_counter() - t0 > BUDGET_S:
            report["steps"].append({"step": name, "status": "skip", "seconds": 0.0,
                                    "detail": f"not started: past the {BUDGET_S} s budget"})
            continue
        run_step(name, fn, report, log)
    report["seconds"] = time.perf_counter() - t0
    report["ok"] = all(s["status"] != "fail" for s in report["steps"])
    write_json(args.json, report)
    print(format_report(report))
    print(f"wrote {args.json}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
