"""Per-stage latency: ONNX Runtime (CPU EP) vs PyTorch eager (CPU), same process, same inputs.

    python benchmarks/stage_latency.py                       # full width, 256x256 and 512x384
    python benchmarks/stage_latency.py --sizes 256x256 --runs 5 --width 0.25 --json out.json

Sizes are the stage (padded) sizes, multiples of 64. Weights: the synthetic golden checkpoint
of the given width (speed does not depend on the values). The ONNX files come from the export
cache (exported on first use) or `--onnx-dir`. Each stage runs once per backend to warm up, then
`--runs` times alternating torch / ORT (so background load hits both alike); the table gives the
medians and the ratio ORT / torch (< 1: ORT is faster). Also prints the ONNX file sizes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dainrt.base.sizes import size_argument


def stage_size(text: str) -> tuple[int, int]:
    """A padded frame size (WxH, multiples of 64), as the stages take it."""
    w, h = size_argument(text)
    if w % 64 or h % 64:
        raise argparse.ArgumentTypeError(f"{text}: stage sizes must be multiples of 64")
    return w, h


def stage_inputs(stages, width: int, height: int) -> dict[str, tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(0)
    img0 = torch.rand(1, 3, height, width, generator=g)
    img1 = (0.8 * img0 + 0.2 * torch.rand(1, 3, height, width, generator=g)).roll(4, -1)
    with torch.inference_mode():
        c0, *f0 = stages.frame(img0)
        c1, *f1 = stages.frame(img1)
        pair = stages.pair(img0, img1, *f0, *f1)
        warp_in = (img0, img1, c0, c1, *pair, torch.tensor([0.5]))
        rectify_in = stages.warp(*warp_in)
    return {"frame": (img0,), "pair": (img0, img1, *f0, *f1), "warp": warp_in, "rectify": tuple(rectify_in)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", type=stage_size, default=[(256, 256), (512, 384)], metavar="WxH")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--width", type=float, default=1.0, help="model width multiplier (default 1: the official net)")
    p.add_argument("--onnx-dir", default=None, help="an export to use (default: the export cache)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    from dainrt.model.checkpoint import synthetic_state_dict
    from dainrt.engine import create_backend
    from dainrt.model import DAIN, STAGE_NAMES, ModelConfig

    config = ModelConfig(args.width)
    model = DAIN(config)
    model.load_state_dict(synthetic_state_dict(config, seed=0))
    model.eval()
    torch_backend = create_backend("torch", model, "cpu", kernels="reference")   # the PyTorch baseline
    ort_backend = create_backend("onnxruntime", model, "cpu", onnx_dir=args.onnx_dir)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; onnxruntime {ort_backend.ort.__version__} "
          f"(CPU EP, default threads); width {args.width:g}; median of {args.runs} after 1 warm-up")
    print(f"ONNX files ({ort_backend.onnx_dir}):")
    for stage in STAGE_NAMES:
        entry = ort_backend.manifest["stages"][stage]
        print(f"  {entry['file']:<13} {entry['bytes']:>11,} bytes ({entry['bytes'] / 2**20:.1f} MiB)")
    results = []
    print(f"\n{'size':>9} {'stage':<8} {'torch ms':>10} {'ORT ms':>10} {'ORT/torch':>10}")
    for w, h in args.sizes:
        inputs = stage_inputs(model.stages(), w, h)
        for stage in STAGE_NAMES:
            times = {"torch": [], "onnxruntime": []}
            for i in range(args.runs + 1):
                for name, backend in (("torch", torch_backend), ("onnxruntime", ort_backend)):
                    start = time.perf_counter()
                    backend.run(stage, inputs[stage])
                    if i:  # run 0 warms up (and creates the ORT session)
                        times[name].append(1000 * (time.perf_counter() - start))
            t_ms, o_ms = statistics.median(times["torch"]), statistics.median(times["onnxruntime"])
            results.append({"size": f"{w}x{h}", "stage": stage, "torch_ms": t_ms, "onnxruntime_ms": o_ms,
                            "ratio": o_ms / t_ms, "runs": times})
            print(f"{w:>4}x{h:<4} {stage:<8} {t_ms:10.1f} {o_ms:10.1f} {o_ms / t_ms:10.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"width": args.width, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
