"""`dainrt bench`: latency and throughput of every available backend against the PyTorch baseline."""
from __future__ import annotations

import argparse

from dainrt.base.sizes import size_argument

from . import _args as A


def size_text(text: str) -> str:
    """A size as given (the harness parses it again), checked at parse time."""
    size_argument(text)
    return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="latency and throughput vs the PyTorch baseline",
        description="Time the official PyTorch forward (the baseline: eager FP32, the whole network per "
        "output frame) and every backend available here (torch with stage caching; on CUDA also FP16 "
        "autocast and torch.compile; onnxruntime; tensorrt) per stage and end to end on a stream of frames, "
        "with speed-up, TFLOP/s, peak memory and, for reduced precision, PSNR vs FP32 on the Middlebury "
        "pairs. Random official-shape weights unless --weights is given: timing needs no real weights.",
    )
    p.add_argument("--device", type=A.text, default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--size", dest="sizes", type=size_text, nargs="+", action="extend", metavar="SIZE",
                   help="input frame sizes: 256 (256x256), 480p (854x480; give 640x480 for 4:3), 720p (1280x720), "
                   "1080p (1920x1080), 4k (3840x2160) or WxH (default: 128x128 on cpu; 480p 720p 1080p on cuda)")
    p.add_argument("--factor", dest="factors", type=A.int_range(2), nargs="+", action="extend", metavar="N",
                   help="frame-rate factors, N-1 in-between frames per input pair (default: 2 4)")
    p.add_argument("--backends", type=A.text, nargs="+", action="extend", metavar="NAME",
                   help="backend families: torch onnxruntime tensorrt (default: all; the baseline always runs)")
    p.add_argument("--json", type=A.path, metavar="PATH", help="also write the results as JSON to PATH (missing folders are made)")
    A.add_overwrite(p, "the --json file")
    p.add_argument("--weights", type=A.existing_file, metavar="PATH", help="checkpoint to time (default: synthetic official-shape weights)")
    p.add_argument("--width", type=A.float_range(0, 1, lo_open=True), metavar="W", help="width multiplier of the synthetic weights (default 1.0)")
    p.add_argument("--runs", type=A.int_range(1), metavar="N", help="timed runs per measurement (default: 3 on cpu, 20 on cuda)")
    p.add_argument("--warmup", type=A.int_range(0), metavar="N", help="untimed warm-up runs first (default: 1 on cpu, 5 on cuda)")
    p.add_argument("--threads", type=A.int_range(1), metavar="N", help="CPU threads for torch (and onnxruntime where it "
                   "takes the option) during the run (default: torch's default)")
    p.add_argument("--memory", action="store_true",
                   help="instead of timing: the peak memory (CPU: peak RSS) of one interpolation per --size (default "
                   "720p 1080p 4k), for the full-width and the bundled model, whole frames and --tile auto, each in a "
                   "fresh process; what cannot fit is a row. Slow: minutes per row on a CPU, 4K rows far longer")
    p.add_argument("--memory-budget", type=A.float_range(100), default=6000, metavar="MB",
                   help="with --memory: DAINRT_MEMORY_BUDGET_MB for the runs, which --tile auto plans for (default 6000)")
    p.add_argument("--calibration", type=A.existing_folder, metavar="DIR",
                   help="a `dainrt calibrate` folder made for --weights: adds the int8 rows (onnxruntime; tensorrt on a GPU)")
    p.add_argument("--pairs", type=A.existing_folder, metavar="DIR", help="Middlebury folder for the PSNR column (default: tests/data/middlebury)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dainrt.benchmarks.harness import BenchOptions, bench
    from dainrt.base.outputs import check_outputs
    from dainrt.benchmarks.report import format_table, write_json

    check_outputs([("json", args.json)], [args.weights], args.overwrite, make_folders=True)
    if args.memory:
        return _memory(args)
    report = bench(BenchOptions(
        device=args.device, sizes=args.sizes, factors=args.factors or (2, 4), backends=args.backends,
        weights=args.weights, width=args.width, runs=args.runs, warmup=args.warmup, pairs_dir=args.pairs,
        threads=args.threads, calibration=args.calibration,
    ))
    print(format_table(report))
    if args.json:
        print(f"wrote {write_json(report, args.json)}")
    return 0


def _memory(args: argparse.Namespace) -> int:
    """`--memory`: the peak-memory table (`benchmarks/memory_check.py` `memory_rows`)."""
    import sys

    from dainrt.base.errors import DainrtError
    from dainrt.base.files import write_json
    from dainrt.benchmarks.memory_check import format_memory_table, memory_rows

    if args.device != "cpu":
        raise DainrtError("--memory measures on the CPU only (peak RSS); on CUDA the timing rows carry peak memory")
    sizes = [size_argument(s) for s in (args.sizes or ["720p", "1080p", "4k"])]
    widths = [args.width] if args.width else [1.0, 0.5]
    rows = memory_rows(sizes, widths, ["off", "auto"], args.memory_budget, args.threads or 1,
                       progress=lambda r: print(f"{r['size']} width {r['model_width']:g} tile {r['tile']}: {r['status']}",
                                                file=sys.stderr, flush=True))
    print(format_memory_table(rows))
    if args.json:
        write_json(args.json, {"budget_mb": args.memory_budget, "rows": rows})
        print(f"wrote {args.json}")
    return 0
