"""`dainrt calibrate INPUT [-o DIR] [--precision int8|fp16] ...`: reduced precision chosen by
measurement on the user's own film (dainrt.calibration)."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import _args as A


def _film_or_folder(value: str) -> Path:
    p = A.path(value)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{value}: no such film or picture folder")
    return p


def register(sub: argparse._SubParsersAction) -> None:
    from dainrt.calibration import GATE_DB

    p = sub.add_parser(
        "calibrate",
        help="choose FP16 islands or INT8 layers by measurement on your film; gated by PSNR",
        description="Sample frame pairs spread over INPUT (a film or a folder of pictures; scene cuts and held "
        "frames skipped), measure each layer's sensitivity (the PSNR drop on held-out triplets when that layer "
        "alone runs in reduced precision) and write DIR: the four stages as ONNX (INT8 as Q/DQ nodes, or FP16 "
        "with FP32 islands; warp always FP32) and calibration.json (sensitivities, choice, gate, samples, time). "
        "INT8 quantizes rectify, then frame and pair where it is faster here; a configuration must stay within "
        "--gate-db of FP32 PSNR, else the most sensitive layers go back to FP32 one by one. Use it with "
        "`--backend onnxruntime --precision int8 --calibration DIR` or `dainrt build-engine --precision int8 "
        "--calibration DIR`. Slow on a CPU: each trial reruns the held-out triplets (README: 47 minutes for "
        "the whole search on 8 pairs of a 640x360 film with the bundled model, one thread).",
    )
    p.add_argument("input", type=_film_or_folder, metavar="INPUT", help="a film, or a folder of pictures in order")
    p.add_argument("-o", "--output", type=A.path, default=None, metavar="DIR",
                   help="calibration folder to write (default: calibration-PRECISION in the current folder)")
    A.add_overwrite(p, "an earlier calibration in DIR")
    p.add_argument("--weights", type=A.existing_file, metavar="PATH", help="checkpoint (default: $DAINRT_WEIGHTS, then the cache)")
    p.add_argument("--pairs", type=A.int_range(1, 1000), default=8, metavar="N",
                   help="frame pairs to calibrate on (default 8); a quarter as many triplets (at least 2) judge")
    p.add_argument("--precision", choices=("int8", "fp16"), default="int8",
                   help="int8 (default): Q/DQ convolutions; fp16: FP16 with measured FP32 islands")
    p.add_argument("--gate-db", type=A.float_range(0, 100, lo_open=True), default=GATE_DB, metavar="X",
                   help=f"largest PSNR drop against FP32 on the held-out triplets that is accepted (default {GATE_DB} dB)")
    p.add_argument("--threads", type=A.int_range(1), metavar="N", help="ONNX Runtime threads (default: all cores)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dainrt.calibration import calibrate, format_report
    from dainrt.calibration.calibrate import check_output_dir
    from dainrt.model.checkpoint import load_model
    from dainrt.model.weights import resolve_weights

    out = check_output_dir(args.output or Path(f"calibration-{args.precision}"), args.input, args.overwrite)
    model = load_model(resolve_weights(args.weights), device="cpu")
    report = calibrate(model, args.input, out, args.precision, args.pairs, args.gate_db, threads=args.threads,
                       overwrite=args.overwrite)
    print(format_report(report))
    print(f"wrote {out} ({report['precision']}); use it with --calibration {out}")
    return 0
