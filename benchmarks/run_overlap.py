"""`dainrt run` throughput against inference-only throughput, and memory over a long clip.

    python benchmarks/run_overlap.py                        # CPU defaults (below), ~2 min
    python benchmarks/run_overlap.py --device cuda --size 1280x720 --frames 120 --threads 0

1. **Overlap.** A synthetic clip (`--frames` pictures of `--size`, lossless FFV1) is first
   decoded into memory and its plan made (`--dry-run` of the same run). *Inference only*
   then times exactly the model work the run has to do: `Runner.interpolate` on every pair
   with its t values, plus the conversion of each result to 8-bit RGB on the host. *Run* times
   `dainrt run` on the same file with the same model (`--codec libx264`, default CRF 16): the
   streaming phase (first decoded frame to the last segment closed; the report's `stream_s`)
   and the whole command (`wall_time_s`: probe, model build, assembly included). The ratio
   inference-only time / run streaming time is the overlap efficiency (goal >= 90 %: the run
   goes at the model's speed; decoding and encoding are hidden behind it).
2. **Memory.** A long synthetic clip (`--long-frames` at `--long-size`, generated lazily, H.264)
   goes through `dainrt run --factor --long-factor` while a thread samples the process's
   resident memory (VmRSS) every 0.1 s. Reported: RSS after the first 10 % of the run, the
   peak in the first half, the peak in the second half and the overall peak. Flat memory:
   second-half peak ~ first-half peak. The default `--long-factor 1` re-times every frame
   without the model (decode -> detect -> plan -> encode -> segments -> assembly); use 2 to
   include the model (slow on a CPU).

`--threads` sets torch's CPU threads (default 1: on a small shared CPU the decode and encode
threads need the other core; 0 keeps torch's default).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from dainrt.base.sizes import size_argument


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler:
    def __init__(self, every: float = 0.1):
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - t0, _rss_mb()))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {}
        end = self.samples[-1][0] or 1.0
        first = [r for t, r in self.samples if t <= end / 2]
        second = [r for t, r in self.samples if t > end / 2] or first
        early = [r for t, r in self.samples if t <= end / 10] or first
        return {"samples": len(self.samples), "rss_at_10pct_mb": round(early[-1], 1),
                "rss_at_50pct_mb": round(first[-1], 1), "rss_at_100pct_mb": round(self.samples[-1][1], 1),
                "peak_first_half_mb": round(max(first), 1), "peak_second_half_mb": round(max(second), 1),
                "peak_mb": round(max(r for _, r in self.samples), 1)}


def _model(args):
    from dainrt.model.checkpoint import load_model, synthetic_state_dict
    from dainrt.model import DAIN, ModelConfig

    if args.weights:
        return load_model(args.weights, "cpu")
    config = ModelConfig(args.width)
    model = DAIN(config)
    model.load_state_dict(synthetic_state_dict(config, seed=0), strict=True)
    return model.eval()


def overlap(args, tmp: Path, model) -> dict:
    import torch

    from dainrt.engine import Runner, create_backend
    from dainrt.runtime import RunOptions, run
    from dainrt.runtime.synthetic import decode_rgb, pictures, write_clip
    from dainrt.runtime.transfer import Transfers

    w, h = args.size
    clip = write_clip(tmp / "overlap.mkv", pictures(args.frames, w, h, seed=1, step=(2, 1)), rate=12,
                      codec="ffv1", pix_fmt="bgr0")
    frames, _, _ = decode_rgb(clip)
    plan = run(RunOptions(input=clip, output=None, factor=args.factor, dry_run=True, progress=False))["plan"]
    groups: list[tuple[int, int, list[float]]] = []
    for _, _, kind, src, dst, t in plan:
        if kind != "interp":
            continue
        if groups and groups[-1][:2] == (src, dst):
            groups[-1][2].append(t)
        else:
            groups.append((src, dst, [t]))
    n_interp = sum(len(g[2]) for g in groups)

    backend = create_backend("torch", model, args.device)
    transfers = Transfers(backend.device, np.uint8)
    runner = Runner(backend)
    with torch.inference_mode():
        runner.interpolate(-1, transfers.image(frames[0]), -2, transfers.image(frames[1]), [0.5])   # warm-up
        runner.clear()
        if backend.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for src, dst, ts in groups:
            # As the run does: each picture converted for the runner (once per pair here).
            outs = runner.interpolate(src, transfers.image(frames[src]), dst, transfers.image(frames[dst]), ts)
            for o in outs:
                p = transfers.download(o)
                if hasattr(p, "result"):
                    p.result()
        if backend.device.type == "cuda":
            torch.cuda.synchronize()
        infer_s = time.perf_counter() - t0

    with RssSampler() as rss:
        r = run(RunOptions(input=clip, output=str(tmp / "overlap_out.mkv"), factor=args.factor, model=model,
                           device=args.device, progress=False))
    out_frames = r["output"]["frames"]
    return {
        "clip": f"{args.frames} frames {w}x{h} x{args.factor} -> {out_frames} output frames ({n_interp} interpolated)",
        "inference_only_s": round(infer_s, 3),
        "inference_only_fps": round(out_frames / infer_s, 3),
        "run_stream_s": r["stream_s"], "run_stream_fps": round(out_frames / r["stream_s"], 3),
        "run_wall_s": r["wall_time_s"], "run_model_s_in_run": r["inference_s"],
        "overlap_efficiency": round(infer_s / r["stream_s"], 3),
        "runner_calls": r["runner_calls"], "rss": rss.summary(),
    }


def memory(args, tmp: Path, model) -> dict:
    from dainrt.runtime import RunOptions, run
    from dainrt.runtime.synthetic import moving, write_clip

    w, h = args.long_size
    t0 = time.perf_counter()
    clip = write_clip(tmp / "long.mp4", moving(args.long_frames, w, h, seed=2), rate=24,
                      options={"preset": "ultrafast"})
    make_s = time.perf_counter() - t0
    with RssSampler() as rss:
        r = run(RunOptions(input=clip, output=str(tmp / "long_out.mp4"), factor=args.long_factor, model=model,
                           device=args.device, progress=False, codec="libx264"))
    return {"clip": f"{args.long_frames} frames {w}x{h} x{args.long_factor}", "clip_written_s": round(make_s, 1),
            "output_frames": r["output"]["frames"], "segments": r["segments"], "run_wall_s": r["wall_time_s"],
            "run_fps": r["output_fps"], "runner_calls": r["runner_calls"], "rss": rss.summary()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=size_argument, default=(160, 96), help="overlap clip WxH (default 160x96)")
    p.add_argument("--frames", type=int, default=24, help="overlap clip frames (default 24)")
    p.add_argument("--factor", type=int, default=2, help="frame-rate factor (default 2)")
    p.add_argument("--width", type=float, default=0.25, help="synthetic model width (default 0.25)")
    p.add_argument("--weights", help="a checkpoint instead of the synthetic model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    p.add_argument("--long-frames", type=int, default=3000, help="long clip frames (default 3000)")
    p.add_argument("--long-size", type=size_argument, default=(320, 180), help="long clip WxH (default 320x180)")
    p.add_argument("--long-factor", type=int, default=1, help="factor for the long clip (default 1: no model)")
    p.add_argument("--skip-long", action="store_true")
    p.add_argument("--json", help="also write the results as JSON")
    args = p.parse_args(argv)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = _model(args)
    results = {"device": args.device, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="dainrt-bench-") as d:
        tmp = Path(d)
        results["overlap"] = overlap(args, tmp, model)
        o = results["overlap"]
        print(f"overlap: {o['clip']}")
        print(f"  inference only : {o['inference_only_s']:8.2f} s  {o['inference_only_fps']:7.2f} frames/s")
        print(f"  dainrt run     : {o['run_stream_s']:8.2f} s  {o['run_stream_fps']:7.2f} frames/s (streaming; "
              f"whole command {o['run_wall_s']:.2f} s)")
        print(f"  efficiency     : {100 * o['overlap_efficiency']:.1f} % of inference-only throughput (goal >= 90 %)")
        print(f"  peak RSS       : {o['rss'].get('peak_mb')} MiB")
        if not args.skip_long:
            results["memory"] = memory(args, tmp, model)
            m = results["memory"]
            print(f"memory: {m['clip']} -> {m['output_frames']} frames in {m['segments']} segments, "
                  f"{m['run_wall_s']:.1f} s ({m['run_fps']} frames/s)")
            s = m["rss"]
            print(f"  RSS at 10 % {s['rss_at_10pct_mb']} MiB, at 50 % {s['rss_at_50pct_mb']} MiB, at 100 % "
                  f"{s['rss_at_100pct_mb']} MiB; peak 1st half {s['peak_first_half_mb']} MiB, "
                  f"peak 2nd half {s['peak_second_half_mb']} MiB, peak {s['peak_mb']} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
