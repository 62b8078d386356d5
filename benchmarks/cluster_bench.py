"""`dainrt run --cluster local:2` against the single-process run, in the same process, same clip.

    python -m dainrt.benchmarks.cluster_bench [--frames 33] [--size 96x64] [--repeats 3] [--segment-frames 8]

A generated clip (a moving texture, H.264 with a keyframe every 12 frames, so every segment
really seeks) goes 2x through the bundled model (or `--weights`), in turn:

* `single, 2 threads`: the single-process run with torch on both cores (`run()` itself gives
  torch one core less at frames below `pipeline.SMALL_FRAME_PIXELS`, which the bench sets to 0);
* `single, default`: `run()` as `dainrt run` calls it (on 2 cores: torch 1 thread, decode and
  encode on the other core);
* `cluster local:2`: `--cluster local:2`, two Ray workers with one torch thread each; the wall
  time includes starting and stopping the local Ray cluster.

Prints the median wall time of each, the ratio to `single, 2 threads`, and the cluster's fixed and
per-segment costs: Ray start-up (`connect_s`), the driver's planning pass (`plan_s`), and the
median per-segment overhead inside a task (its time minus its model time: worker start on the
first task, seeking, decoding the carried frame, encoder set-up, writing the segment).
Minutes on 2 CPU cores; run it by hand, with the machine otherwise idle where possible (the
printout gives the load average).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def _film(tmp: Path, frames: int, width: int, height: int) -> str:
    from dainrt.runtime.synthetic import moving, write_clip

    return write_clip(str(tmp / "clip.mp4"), moving(frames, width, height, seed=3), rate=12, options={"g": "12"})


def _once(name: str, opts) -> dict:
    import torch

    from dainrt.runtime import pipeline

    t0 = time.perf_counter()
    small = pipeline.SMALL_FRAME_PIXELS
    if name == "single, 2 threads":      # measurement only: the run keeps torch on every core
        torch.set_num_threads(2)
        pipeline.SMALL_FRAME_PIXELS = 0
    try:
        result = pipeline.run(opts)
    finally:
        pipeline.SMALL_FRAME_PIXELS = small
    result["bench_wall_s"] = time.perf_counter() - t0
    return result


def main(argv=None) -> int:
    from dainrt.runtime import RunOptions

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=33, help="input frames (12 fps); the output has 2x-1")
    ap.add_argument("--size", default="96x64", help="WxH")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--segment-frames", type=int, default=8)
    ap.add_argument("--weights", help="checkpoint (default: the bundled model)")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    configs = {"single, 2 threads": None, "single, default": None, "cluster local:2": "local:2"}
    with tempfile.TemporaryDirectory(prefix="dainrt-cluster-bench-") as tmp:
        clip = _film(Path(tmp), args.frames, width, height)
        _once("single, default", RunOptions(clip, str(Path(tmp) / "warm.mkv"), factor=2, weights=args.weights,
                                            max_frames=3, progress=False))    # imports, model load: untimed
        runs: dict[str, list[dict]] = {name: [] for name in configs}
        for rep in range(args.repeats):
            for name, cluster in configs.items():
                opts = RunOptions(clip, str(Path(tmp) / f"out-{rep}.mkv"), factor=2, weights=args.weights,
                                  segment_frames=args.segment_frames, cluster=cluster, overwrite=True, progress=False)
                r = _once(name, opts)
                runs[name].append(r)
                print(f"  run {rep + 1}/{args.repeats} {name}: {r['bench_wall_s']:.1f} s", flush=True)
    frames = runs["single, default"][0]["output"]["frames"]
    base = statistics.median(r["bench_wall_s"] for r in runs["single, 2 threads"])
    print(f"\n{args.frames} input frames {width}x{height} -> {frames} output frames, --factor 2, segments of "
          f"{args.segment_frames} output frames, median of {args.repeats}; load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores at the end")
    print(f"{'configuration':<22} {'wall s':>8} {'frames/s':>9} {'vs single, 2 threads':>21}")
    for name, rs in runs.items():
        wall = statistics.median(r["bench_wall_s"] for r in rs)
        print(f"{name:<22} {wall:>8.1f} {frames / wall:>9.2f} {base / wall:>20.2f}x")
    cl = [r["cluster"] for r in runs["cluster local:2"]]
    segs = [s for c in cl for s in c["segments"]]
    overhead = [s["seconds"] - s["inference_s"] for s in segs]
    first = [min(c["segments"], key=lambda s: s["index"]) for c in cl]
    print(f"cluster: {len(cl[0]['segments'])} segments on {cl[0]['workers']} workers; Ray start-up (connect_s) "
          f"{statistics.median(c['connect_s'] for c in cl):.1f} s, planning pass {statistics.median(c['plan_s'] for c in cl):.2f} s, "
          f"per segment: {statistics.median(s['seconds'] for s in segs):.2f} s in the task, of which "
          f"{statistics.median(overhead):.2f} s outside the model (median; segment 0, with the worker's "
          f"model and backend set-up: {statistics.median(s['seconds'] - s['inference_s'] for s in first):.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
