"""The benchmark report: machine and version facts, a terminal table and the JSON file.

JSON layout (issue 6)::

    {"machine": {...}, "versions": {...}, "commit": "<git HEAD or null>", "config": {...},
     "results": [{"backend", "precision", "stage", "size", "factor", "median_ms", "p10_ms",
                  "p90_ms", "fps", "speedup_vs_baseline", "peak_mem_mb", "psnr_vs_fp32",
                  "tflops", "pct_of_peak", "gmac", "runs"}, ...],
     "skipped": [{"backend", "precision", "reason"}], "accuracy": [{"backend", "precision",
                  "pair", "size", "t", "psnr_db"}]}

`stage` is a stage name (`frame`, `pair`, `warp`, `rectify`; `factor` and `fps` null, times per
call) or `end_to_end` (times per output frame, fps = output frames per second). `size` is the
input `WxH` before padding. Unknown values are null.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from dainrt.base.files import atomic_write

RESULT_FIELDS = (
    "backend", "precision", "stage", "size", "factor", "median_ms", "p10_ms", "p90_ms", "fps",
    "speedup_vs_baseline", "peak_mem_mb", "psnr_vs_fp32",
)
EXTRA_FIELDS = ("tflops", "pct_of_peak", "gmac", "runs")
STAGE_ORDER = {"end_to_end": 0, "frame": 1, "pair": 2, "warp": 3, "rectify": 4}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    """What ran the benchmark: CPU, core count, torch threads, load, and the GPU if used."""
    info = {
        "device": str(device),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
    }
    try:
        info["load_avg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_capability=f"{props.major}.{props.minor}",
                    gpu_memory_gb=round(props.total_memory / 2**30, 1))
    info["machine_class"] = info["gpu"] or f"cpu-{info['cpu_count']}core"
    return info


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    for dist in ("dainrt", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "triton"):
        out[dist] = _version(dist)
    return out


def git_commit(root: str | os.PathLike | None = None) -> str | None:
    """`git rev-parse HEAD` of the source checkout, or None (not a checkout, no git)."""
    root = Path(root) if root else Path(__file__).resolve().parents[1]
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def make_report(machine: dict, versions: dict, commit: str | None, config: dict, rows: list[dict],
                skipped: list[dict], accuracy: list[dict]) -> dict:
    rows = sorted(rows, key=lambda r: (r["size"], STAGE_ORDER.get(r["stage"], 9), r["factor"] or 0,
                                       r["backend"] != "baseline", r["backend"], r["precision"]))
    results = [{k: r.get(k) for k in RESULT_FIELDS + EXTRA_FIELDS} for r in rows]
    if machine.get("load_avg_1_5_15") is not None:
        try:
            machine["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            pass
    return {"machine": machine, "versions": versions, "commit": commit, "config": config,
            "results": results, "skipped": skipped, "accuracy": accuracy}


def write_json(report: dict, path: str | os.PathLike) -> Path:
    """Write the report atomically (temp file + rename); parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(report, indent=1, allow_nan=False) + "\n")
    return path


def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def format_table(report: dict) -> str:
    """The results as a fixed-width text table (one line per result), plus skipped variants."""
    head = ("size", "backend", "prec", "stage", "x", "median ms", "p10-p90 ms", "fps", "speedup",
            "TFLOP/s", "%peak", "peak MB", "PSNR dB")
    lines = []
    for r in report["results"]:
        spread = f"{r['p10_ms']:.0f}-{r['p90_ms']:.0f}" if r["p10_ms"] is not None else "-"
        lines.append((
            r["size"], r["backend"], r["precision"], r["stage"], _fmt(r["factor"], "d"),
            _fmt(r["median_ms"], ".1f"), spread, _fmt(r["fps"], ".3g"),
            _fmt(r["speedup_vs_baseline"], ".2f"), _fmt(r["tflops"], ".3f"), _fmt(r["pct_of_peak"], ".1f"),
            _fmt(r["peak_mem_mb"], ".0f"), _fmt(r["psnr_vs_fp32"], ".1f"),
        ))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    right = set(range(4, len(head)))

    def fmt_line(cells) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [fmt_line(head), fmt_line(["-" * w for w in widths])]
    out += [fmt_line(line) for line in lines]
    m = report["machine"]
    cfg = report.get("config", {})
    out.append("")
    out.append(f"machine: {m.get('gpu') or m.get('cpu')} ({m.get('cpu_count')} CPUs, torch threads "
               f"{m.get('torch_threads')}, load {m.get('load_avg_1_5_15')} -> {m.get('load_avg_at_end')}); "
               f"commit {(report.get('commit') or 'unknown')[:12]}")
    out.append(f"weights: {cfg.get('weights')}; warm-up {cfg.get('warmup')}, runs {cfg.get('runs')}; "
               "end_to_end times are per output frame on a stream, stage times per call; "
               "stage speed-up is vs torch fp32 eager of the same stage")
    for e in report.get("memory_estimates", []):
        out.append(e["line"])
    for s in report.get("skipped", []):
        out.append(f"skipped {s['backend']} {s['precision']}: {s['reason']}")
    return "\n".join(out)
