"""Where the CPU time goes when interpolating real footage, per stage and per op, and what each
CPU engine costs per output frame, measured side by side in one run.

    python -m dainrt.benchmarks.cpu_profile                       # 720p BBB, x4, 3 rounds (~1 h on 2 busy cores)
    python -m dainrt.benchmarks.cpu_profile --size 640x360 --rounds 5 --json cpu.json

Frames: consecutive pictures of real footage (`--input`, default the Big Buck Bunny clip in
tests/data, 1280x720), scaled to `--size`; the model: the bundled default (or `--weights`).

1. **Speed.** Each engine (`--engines`) streams the clip at x`--factor` through the `Runner`:
   an untimed priming pair, then `--rounds` steps, each one new input frame (one `frame`, one
   `pair`, factor-1 `warp` + `rectify`). Rounds alternate between the engines, so background
   load falls on all alike. Per output frame: median wall seconds and median CPU seconds (all
   threads of this process), per stage, and the ratio to the first engine. The engines:

   * `before`: the CPU path as it was before this benchmark existed: torch FP32, the vectorised
     PyTorch warping ops, and glibc's default allocation (large blocks mmapped, so freed
     activations are page-faulted in again; emulated per round with its steady state, mmap
     threshold 32 MiB and trim threshold 64 MiB);
   * `reference`: the same ops with freed memory reused (`engine/host_memory.py`);
   * `numba`: that, with the compiled adaptive warp: the CPU default now;
   * `onnxruntime`: ORT FP32, freed memory reused.
2. **Same pictures.** Max |difference| and PSNR of every engine's frames against the first's.
3. **Profile** (`--profile`, on by default): one step per torch engine under torch.profiler,
   self CPU time per op, with the custom layers and the correlation as named ranges; for ONNX
   Runtime, its own profiler's node time per op type and stage.

Threads: `--threads` (default: torch's default) for torch, numba and ORT alike. The load average
before and after is printed, because this machine is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from dainrt.base.metrics import psnr
from dainrt.base.sizes import size_argument
from dainrt.base.times import times_for_factor

DEFAULT_INPUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "video" / "big_buck_bunny_11s-21s_scenecuts.mkv"
ENGINES = ("before", "reference", "numba", "onnxruntime")
STAGES = ("frame", "pair", "warp", "rectify")


def read_frames(path: Path, count: int, size: tuple[int, int], skip: int = 20) -> list[torch.Tensor]:
    """`count` consecutive pictures after the first `skip` (Big Buck Bunny's first shot is 16
    frames), scaled to `size` (W, H): (3,H,W) float32 [0,1] RGB."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i < skip:
                continue
            rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
            frames.append(torch.from_numpy(rgb).permute(2, 0, 1).float().div(255))
            if len(frames) == count:
                break
    if len(frames) < count:
        raise SystemExit(f"{path}: fewer than {skip + count} frames")
    return frames


class StageClock:
    """Wraps a backend: wall and CPU seconds per stage call (delegates everything else)."""

    def __init__(self, backend):
        self.inner = backend
        self.name, self.device = backend.name, backend.device
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def run(self, stage, inputs):
        w, c = time.perf_counter(), time.process_time()
        out = self.inner.run(stage, inputs)
        self.wall[stage] += time.perf_counter() - w
        self.cpu[stage] += time.process_time() - c
        return out

    def reset(self) -> None:
        self.wall.clear()
        self.cpu.clear()

    def close(self) -> None:
        self.inner.close()


def _named(fn, name: str):
    """`fn` inside a profiler range called `name`, so the profile shows the custom layer itself."""
    def wrapped(*args, **kwargs):
        with torch.profiler.record_function(name):
            return fn(*args, **kwargs)
    return wrapped


def allocation(engine: str) -> None:
    """glibc's large-block policy for the next round: `before` emulates the default's steady
    state (blocks above 32 MiB mmapped, freed ones unmapped), the others reuse freed memory."""
    from dainrt.engine import host_memory as hm

    libc = hm._libc()
    if libc is None:
        return
    mmap = hm.GLIBC_MAX_MMAP_THRESHOLD if engine == "before" else hm.reuse_freed_memory() or hm.GLIBC_MAX_MMAP_THRESHOLD
    libc.mallopt(hm.M_MMAP_THRESHOLD, mmap)
    libc.mallopt(hm.M_TRIM_THRESHOLD, 2 * mmap)
    libc.malloc_trim(0)


def make_engine(name: str, model, threads: int):
    from dainrt.engine import create_backend
    from dainrt.engine.torch_backend import _custom_ops

    if name == "onnxruntime":
        return create_backend("onnxruntime", model, "cpu", precision="fp32", threads=threads)
    kernels = "reference" if name == "before" else name
    backend = create_backend("torch", model, "cpu", kernels=kernels)
    ops = _custom_ops(kernels)
    ops = ops._replace(correlate=_named(ops.correlate, "dain::correlation"),
                       project=_named(ops.project, "dain::depth_flow_projection"),
                       warp=_named(ops.warp, "dain::adaptive_warp"))
    backend.stages = model.stages(ops)._asdict()
    return backend


def step(runner, frames, index: int, times) -> list[torch.Tensor]:
    """One streaming step: the pair (index, index+1) at `times`."""
    return runner.interpolate(index, frames[index], index + 1, frames[index + 1], times)


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def torch_profile(runner, frames, index, times, rows: int) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(runner, frames, index, times)
    table = []
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:rows]:
        table.append({"op": e.key, "calls": e.count, "self_cpu_s": e.self_cpu_time_total / 1e6,
                      "total_cpu_s": e.cpu_time_total / 1e6})
    for e in prof.key_averages():     # the custom layers, always listed (inclusive time)
        if e.key.startswith("dain::") and e.key not in {t["op"] for t in table}:
            table.append({"op": e.key, "calls": e.count, "self_cpu_s": e.self_cpu_time_total / 1e6,
                          "total_cpu_s": e.cpu_time_total / 1e6})
    return table


def ort_profile(backend, frames, index, times) -> list[dict]:
    """ONNX Runtime's own profiler over one step: node time per (stage, op type)."""
    from dainrt.engine.runner import Runner

    prefix = Path(tempfile.mkdtemp(prefix="dainrt-ortprof-")) / "stage"
    sessions = {}
    for stage in STAGES:
        options = backend.session_options()
        options.enable_profiling = True
        options.profile_file_prefix = f"{prefix}-{stage}"
        sessions[stage] = backend.ort.InferenceSession(
            str(Path(backend.onnx_dir) / backend.manifest["stages"][stage]["file"]), options,
            providers=["CPUExecutionProvider"])
    saved, backend._sessions = backend._sessions, sessions
    try:
        runner = Runner(backend)
        step(runner, frames, index, times)
        totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
        for stage, session in sessions.items():
            with open(session.end_profiling()) as f:
                for ev in json.load(f):
                    if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
                        key = (stage, ev["args"].get("op_name", "?"))
                        totals[key][0] += 1
                        totals[key][1] += ev["dur"] / 1e6
    finally:
        backend._sessions = saved
    return [{"stage": s, "op": op, "calls": n, "wall_s": t}
            for (s, op), (n, t) in sorted(totals.items(), key=lambda kv: -kv[1][1])]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dainrt.benchmarks.cpu_profile", description=__doc__.splitlines()[0])
    p.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="a clip of real footage")
    p.add_argument("--size", type=size_argument, default=(1280, 720), metavar="WxH", help="default 1280x720")
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="timed steps per engine (default 3)")
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--weights", default=None)
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--rows", type=int, default=12, help="ops per profile table")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from dainrt.engine.runner import Runner
    from dainrt.model.checkpoint import load_model
    from dainrt.model.weights import resolve_weights

    torch.set_num_threads(args.threads)
    weights = resolve_weights(args.weights)
    model = load_model(weights)
    times = times_for_factor(args.factor)
    frames = read_frames(args.input, args.rounds + 2 + int(args.profile), args.size)
    w, h = args.size
    report = {"input": str(args.input), "size": f"{w}x{h}", "factor": args.factor, "threads": args.threads,
              "weights": str(weights), "cpu": _cpu_name(), "load_before": load(), "engines": {}}
    print(f"{report['cpu']}; {args.threads} threads; {w}x{h} x{args.factor}; {args.rounds} rounds; "
          f"load average {report['load_before']}")

    engines = {name: StageClock(make_engine(name, model, args.threads)) for name in args.engines}
    runners = {name: Runner(clock) for name, clock in engines.items()}
    outputs: dict[str, list[torch.Tensor]] = defaultdict(list)
    samples: dict[str, dict[str, list[float]]] = {n: defaultdict(list) for n in engines}
    for name, runner in runners.items():          # priming: frames 0 and 1, pair (0, 1), compiles
        allocation(name)
        outputs[name] += step(runner, frames, 0, times)
    for r in range(1, args.rounds + 1):
        for name, runner in runners.items():
            clock = engines[name]
            allocation(name)
            clock.reset()
            wall, cpu, use = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
            outputs[name] += step(runner, frames, r, times)
            per = len(times)
            after = resource.getrusage(resource.RUSAGE_SELF)
            samples[name]["wall_s"].append((time.perf_counter() - wall) / per)
            samples[name]["cpu_s"].append((time.process_time() - cpu) / per)
            samples[name]["sys_s"].append((after.ru_stime - use.ru_stime) / per)
            samples[name]["page_faults"].append((after.ru_minflt - use.ru_minflt) / per)
            for stage in STAGES:
                samples[name][f"{stage}_wall_s"].append(clock.wall[stage] / per)
                samples[name][f"{stage}_cpu_s"].append(clock.cpu[stage] / per)
            print(f"  round {r} {name:<12} {samples[name]['wall_s'][-1]:7.2f} s wall "
                  f"{samples[name]['cpu_s'][-1]:7.2f} CPU-s per output frame", flush=True)

    first = args.engines[0]
    print(f"\nper output frame (x{args.factor}: frame and pair shared by {len(times)} frames), median of "
          f"{args.rounds}; CPU-s = all threads")
    print(f"{'engine':<12} {'wall s':>8} {'CPU s':>8} {'sys s':>7} {'faults':>9} {'vs ' + first:>12} "
          + " ".join(f"{s + ' s':>10}" for s in STAGES))
    for name in engines:
        med = {k: statistics.median(v) for k, v in samples[name].items()}
        ratio = statistics.median(samples[first]["wall_s"]) / med["wall_s"]
        report["engines"][name] = {"median": med, "samples": samples[name], "speedup_vs_first": ratio}
        print(f"{name:<12} {med['wall_s']:8.2f} {med['cpu_s']:8.2f} {med['sys_s']:7.2f} {med['page_faults']:9.0f} "
              f"{ratio:11.2f}x "
              + " ".join(f"{med[s + '_wall_s']:10.2f}" for s in STAGES))

    print(f"\nsame pictures: every engine's {len(outputs[first])} frames against {first}'s")
    for name in engines:
        diff = max(float((a - b).abs().max()) for a, b in zip(outputs[name], outputs[first]))
        db = min(psnr(a.clamp(0, 1).numpy(), b.clamp(0, 1).numpy(), peak=1.0)
                 for a, b in zip(outputs[name], outputs[first]))
        report["engines"][name].update({"max_abs_diff": diff, "min_psnr_db": db})
        print(f"  {name:<12} max |diff| {diff:.2e}   min PSNR {db:.1f} dB")

    if args.profile:
        index = args.rounds + 1 - 1
        for name, clock in engines.items():
            allocation(name)
            if name == "onnxruntime":
                table = ort_profile(clock.inner, frames, index, times)
                print(f"\nprofile {name} (one step; ONNX Runtime node time by stage and op type)")
                for row in table[:args.rows]:
                    print(f"  {row['stage']:<8} {row['op']:<28} {row['calls']:6d} {row['wall_s']:9.3f} s")
            else:
                table = torch_profile(Runner(clock.inner), frames, index, times, args.rows)
                print(f"\nprofile {name} (one step; self CPU time per op; dain:: rows are the custom layers, inclusive)")
                for row in table:
                    print(f"  {row['op']:<32} {row['calls']:6d} {row['self_cpu_s']:9.3f} s self "
                          f"{row['total_cpu_s']:9.3f} s total")
            report["engines"][name]["profile"] = table
    report["load_after"] = load()
    print(f"\nload average after: {report['load_after']}")
    for clock in engines.values():
        clock.close()
    if args.json:
        from dainrt.base.files import write_json

        write_json(args.json, report)
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" x{os.cpu_count()}"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs"


if __name__ == "__main__":
    raise SystemExit(main())
