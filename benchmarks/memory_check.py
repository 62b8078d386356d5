"""The memory estimate (`engine/memory.py`) against the measured peak, on the CPU.

    python -m dainrt.benchmarks.memory_check --size 256 480p 720p --model-width 0.5 1.0 --threads 1
    python -m dainrt.benchmarks.memory_check --size 960x540 --tile off 384 512 768    # peak RSS against tile size

Each (size, model width) runs in a **fresh subprocess**, so one measurement's allocator state
cannot leak into the next. In it:

1. imports torch and dainrt and sets the torch threads;
2. loads the model (the bundled model for width 0.5 unless `--weights`, else the synthetic
   weights of `dainrt weights init --width W`, made in memory) and interpolates once at 64x64
   (warm-up: pages in torch's CPU kernels and oneDNN's JIT code, about 75 MiB that do not
   depend on the frame size and are not tensors);
3. `base` = VmRSS (bytes) now, and the peak is reset (`/proc/self/clear_refs`);
4. makes two distinct frames (a synthetic camera pan) and interpolates one frame at t = 0.5
   with the `Runner` on the torch backend (a real interpolation: frame, frame, pair, warp,
   rectify);
5. measured = VmHWM (the peak RSS) - base + the weights' bytes (resident in `base`).

The workers run with glibc's `MALLOC_MMAP_THRESHOLD_` fixed at 1 MiB (`--allocator fixed`,
the default): glibc's default threshold moves with the sizes freed so far, and the same
measurement then moved by 137 MiB from one process to the next (512 and 649 MiB for 256x256
at width 0.5, baseline then taken before the warm-up). `--allocator default` leaves glibc alone.

The estimate is `estimate_memory(...).tensors` for the same size, width, precision fp32 on the
CPU. The table: size, model width, estimate, measured (MiB), estimate / measured.

`--trace` instead prints, per stage, the peak of live tensor bytes allocated inside the stage
(per padded pixel, in float32 values) and the op where it occurs: the measurement behind the
activation term of the formula.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

from dainrt.base.sizes import size_argument

WARMUP_SIZE = 64       # pixels: the warm-up interpolation before the measurement
TOLERANCE = 0.25        # the estimate must be within 25 % of the measured peak


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.MULTILINE).group(1)) * 1024


def _load(model_width: float, weights: str | None):
    from dainrt.model import DAIN, ModelConfig
    from dainrt.model.checkpoint import load_model, synthetic_state_dict

    if weights:
        return load_model(weights)
    if model_width == 0.5:
        from dainrt.model.weights import default_weights

        return load_model(default_weights())
    config = ModelConfig(model_width)
    model = DAIN(config)
    model.load_state_dict(synthetic_state_dict(config, seed=0), strict=True)
    return model.eval()


def measure_once(width: int, height: int, model_width: float, weights: str | None = None,
                 threads: int | None = None, tile: str | None = "off") -> dict:
    """Measure in this process (call it in a fresh one): see the module docstring. Bytes.
    `tile` (`--tile`: off, auto, WxH) runs through `engine.tiling`; `peak_rss` is the whole
    process's peak (what `DAINRT_MEMORY_BUDGET_MB` caps), `measured` its growth as above."""
    import torch

    from dainrt.benchmarks.harness import stream_frames
    from dainrt.benchmarks.timing import reset_peak_memory
    from dainrt.engine import Runner
    from dainrt.engine.memory import estimate_memory
    from dainrt.engine.tiling import make_runner, parse_tile, plan_memory
    from dainrt.engine.torch_backend import TorchBackend
    from dainrt.runtime.transfer import to_tensor

    if threads:
        torch.set_num_threads(threads)
    model = _load(model_width, weights)
    with torch.inference_mode():           # pages in the CPU kernels and oneDNN's JIT code, tiny tensors
        w0, w1 = (to_tensor(f) for f in stream_frames(WARMUP_SIZE, WARMUP_SIZE, 2))
        Runner(TorchBackend(model, torch.device("cpu"))).interpolate(0, w0, 1, w1, [0.5])
        del w0, w1
    base = _rss_bytes("VmRSS")
    note = reset_peak_memory(torch.device("cpu"))
    t0 = time.perf_counter()
    f0, f1 = (to_tensor(f) for f in stream_frames(width, height, 2))
    runner = make_runner(TorchBackend(model, torch.device("cpu")), parse_tile(tile), model.config)
    with torch.inference_mode():
        out = runner.interpolate(0, f0, 1, f1, [0.5])
    seconds = time.perf_counter() - t0
    est = estimate_memory(model.config, height, width, "cpu", "fp32")
    plan = getattr(runner, "plan", None)
    estimate = est.tensors if plan is None else plan_memory(model.config, plan)
    measured = _rss_bytes("VmHWM") - base + est.weights       # the weights are resident in `base`
    return {"size": f"{width}x{height}", "model_width": model.config.width, "estimate": estimate,
            "measured": measured, "ratio": estimate / measured, "seconds": seconds,
            "base_rss": base, "peak_rss": _rss_bytes("VmHWM"), "tile": tile or "off",
            "plan": plan.describe() if plan is not None else "whole frames",
            "finite": bool(torch.isfinite(out[0]).all()), "note": note, "parts": est.to_dict()}


MMAP_THRESHOLD = 1 << 20


def measure_subprocess(width: int, height: int, model_width: float, weights: str | None = None,
                       threads: int | None = 1, timeout: float | None = None, allocator: str = "fixed",
                       tile: str = "off", budget_mb: float | None = None) -> dict:
    """`measure_once` in a fresh Python process (with `DAINRT_MEMORY_BUDGET_MB=budget_mb` when
    given); returns its result dict."""
    env = dict(os.environ)
    if allocator == "fixed":
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    if budget_mb is not None:
        env["DAINRT_MEMORY_BUDGET_MB"] = f"{budget_mb:g}"
    cmd = [sys.executable, "-m", "dainrt.benchmarks.memory_check", "--worker", f"{width}x{height}",
           "--model-width", str(model_width), "--tile", tile]
    if weights:
        cmd += ["--weights", str(weights)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_table(rows: list[dict]) -> str:
    """size, model width, estimate, measured (MiB) and estimate / measured, one row each."""
    head = (f"{'size':>9}  {'width':>5}  {'tile':>7}  {'estimate MiB':>12}  {'measured MiB':>12}  {'ratio':>5}  "
            f"{'peak RSS MiB':>12}  {'time s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['size']:>9}  {r['model_width']:>5g}  {r.get('tile', 'off'):>7}  {r['estimate'] / 2**20:>12.0f}  "
                     f"{r['measured'] / 2**20:>12.0f}  {r['ratio']:>5.2f}  {r.get('peak_rss', 0) / 2**20:>12.0f}  "
                     f"{r['seconds']:>7.1f}")
    return "\n".join(lines)


def memory_rows(sizes: list[tuple[int, int]], model_widths: list[float], tiles: list[str],
                budget_mb: float, threads: int | None = 1, progress=None) -> list[dict]:
    """`dainrt bench --memory`: one row per (size, model width, tile), each measured in a fresh
    process under `DAINRT_MEMORY_BUDGET_MB=budget_mb` (which `--tile auto` plans for). A run
    that cannot fit this machine is a row, not a crash: whole frames whose estimate exceeds the
    available RAM are not started (the estimate is within 25 % of the measured peak,
    `tests/test_memory.py`), and a worker that fails is recorded with its last error line."""
    from dainrt.engine.memory import estimate_memory, format_bytes
    from dainrt.engine.tiling import BUDGET_MARGIN, available_ram
    from dainrt.model import ModelConfig

    rows = []
    for (w, h) in sizes:
        for mw in model_widths:
            for tile in tiles:
                row = {"size": f"{w}x{h}", "model_width": mw, "tile": tile, "budget_mb": budget_mb}
                need = estimate_memory(ModelConfig(mw), h, w).tensors
                room = available_ram() * BUDGET_MARGIN
                if tile == "off" and need > room:
                    row.update(status="does not fit", estimate=need,
                               error=f"whole frames need about {format_bytes(need)}, {format_bytes(int(room))} available")
                else:
                    try:
                        row.update(measure_subprocess(w, h, mw, None, threads, tile=tile, budget_mb=budget_mb),
                                   status="ok")
                    except (RuntimeError, subprocess.TimeoutExpired) as err:
                        row.update(status="failed", estimate=need, error=str(err).strip().splitlines()[-1][:200])
                rows.append(row)
                if progress is not None:
                    progress(row)
    return rows


def format_memory_table(rows: list[dict]) -> str:
    """size, model width, tile, plan, estimate, peak RSS, time: one row each; failures say why."""
    head = (f"{'size':>9}  {'width':>5}  {'tile':>5}  {'plan':<58}  {'estimate MiB':>12}  {'peak RSS MiB':>12}  "
            f"{'time s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['size']:>9}  {r['model_width']:>5g}  {r['tile']:>5}  {r['status'] + ': ' + r['error']}")
            continue
        lines.append(f"{r['size']:>9}  {r['model_width']:>5g}  {r['tile']:>5}  {r['plan'][:58]:<58}  "
                     f"{r['estimate'] / 2**20:>12.0f}  {r['peak_rss'] / 2**20:>12.0f}  {r['seconds']:>7.1f}")
    return "\n".join(lines)


def trace_stages(width: int, height: int, model_width: float) -> list[dict]:
    """Per stage: peak bytes of the tensors allocated inside it (inputs, weights excluded), per
    padded pixel in float32 values, and the op at the peak. Real tensors on the CPU."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from dainrt.model import DAIN, ModelConfig, pad, padding_for

    config = ModelConfig(model_width)
    model = DAIN(config).eval()
    stages = model.stages()
    outside: set[int] = set()

    class Live(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.size, self.refs, self.now, self.peak, self.at = {}, {}, 0, 0, ""

        def _drop(self, key):
            self.refs[key] -= 1
            if not self.refs[key]:
                self.now -= self.size.pop(key)
                del self.refs[key]

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if not isinstance(t, torch.Tensor):
                    continue
                key = t.untyped_storage().data_ptr()
                if key == 0 or key in outside:
                    continue
                if key not in self.size:
                    self.size[key], self.refs[key] = t.untyped_storage().nbytes(), 0
                    self.now += self.size[key]
                self.refs[key] += 1
                weakref.finalize(t, self._drop, key)
            if self.now > self.peak:
                self.peak, self.at = self.now, f"{func} {tuple(out.shape) if isinstance(out, torch.Tensor) else ''}"
            return out

    def keep(*tensors):
        outside.update(t.untyped_storage().data_ptr() for t in tensors)

    rows = []

    def run(name, fn, *args):
        keep(*args)
        with Live() as live:
            out = fn(*args)
        out = out if isinstance(out, tuple) else (out,)
        pixels = args[0].shape[-2] * args[0].shape[-1]
        rows.append({"stage": name, "peak_values_per_px": live.peak / 4 / pixels, "at": live.at,
                     "out_values_per_px": sum(o.numel() for o in out) / pixels})
        return out

    keep(*model.parameters(), *model.buffers())
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        x = [torch.rand(1, 3, height, width, generator=g) for _ in range(2)]
        x = [pad(i, padding_for(height, width)) for i in x]
        f0, f1 = run("frame", stages.frame, x[0]), stages.frame(x[1])
        keep(*f1)
        pair = run("pair", stages.pair, x[0], x[1], *f0[1:], *f1[1:])
        warp = run("warp", stages.warp, x[0], x[1], f0[0], f1[0], *pair, torch.full((1,), 0.5))
        run("rectify", stages.rectify, *warp)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dainrt.benchmarks.memory_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", dest="sizes", nargs="+", type=size_argument, default=None, metavar="SIZE")
    p.add_argument("--model-width", dest="widths", nargs="+", type=float, default=[0.5], metavar="W")
    p.add_argument("--weights", metavar="PATH", help="checkpoint to load instead of the bundled/synthetic model")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads in each worker (default 1)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--allocator", choices=("fixed", "default"), default="fixed",
                   help="fixed: glibc's mmap threshold at 1 MiB in the workers (default); default: glibc's own")
    p.add_argument("--trace", action="store_true", help="print the per-stage live-tensor peaks instead")
    p.add_argument("--tile", dest="tiles", nargs="+", default=["off"], metavar="TILE",
                   help="--tile of the runs: off (default), auto or WxH; several give peak memory against tile size")
    p.add_argument("--worker", type=size_argument, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        w, h = args.worker
        print(json.dumps(measure_once(w, h, args.widths[0], args.weights, args.threads, args.tiles[0])))
        return 0
    sizes = args.sizes or [(256, 256)]
    if args.trace:
        import torch

        torch.set_num_threads(args.threads)
        for (w, h) in sizes:
            for mw in args.widths:
                for r in trace_stages(w, h, mw):
                    print(f"{w}x{h} width {mw:g} {r['stage']:>7}: peak {r['peak_values_per_px']:7.1f} values/px "
                          f"at {r['at']}; outputs {r['out_values_per_px']:.1f} values/px")
        return 0
    rows = []
    for (w, h) in sizes:
        for mw in args.widths:
            for tile in args.tiles:
                rows.append(measure_subprocess(w, h, mw, args.weights, args.threads, allocator=args.allocator,
                                               tile=tile))
                print(f"{rows[-1]['size']} width {mw:g} tile {tile}: estimate {rows[-1]['estimate'] / 2**20:.0f} MiB, "
                      f"measured {rows[-1]['measured'] / 2**20:.0f} MiB", file=sys.stderr, flush=True)
    print(format_table(rows))
    if args.json:
        from dainrt.base.files import write_json

        write_json(args.json, {"load": os.getloadavg(), "rows": rows})
    bad = [r for r in rows if abs(r["ratio"] - 1) > TOLERANCE]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
