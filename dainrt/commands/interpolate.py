"""`dainrt interpolate FRAME0 FRAME1 -o OUTDIR`: the in-between pictures of two pictures."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from dainrt.base.errors import DainrtError

from .engine_args import add_engine_arguments, engine_choice


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpolate",
        help="write the in-between frames of two pictures as PNG",
        description="Interpolate between two pictures and write the in-between frames as PNG "
        "(8-bit in -> 8-bit out, 16-bit in -> 16-bit out; alpha is dropped with a warning).",
    )
    p.add_argument("frame0", type=Path, help="first picture (t = 0)")
    p.add_argument("frame1", type=Path, help="second picture (t = 1)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="folder for the in-between frames")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--times", type=_parse_times, metavar="T,T,...", help="time steps in (0,1), e.g. 0.25,0.5,0.75")
    when.add_argument("--factor", type=int, metavar="N", help="N-1 evenly spaced frames (N=4: t = 0.25, 0.5, 0.75); default 2")
    p.add_argument("--weights", metavar="PATH", help="checkpoint (default: $DAINRT_WEIGHTS, then the cache, then the bundled model)")
    add_engine_arguments(p)
    p.add_argument("--onnx-dir", type=Path, metavar="DIR",
                   help="with --backend onnxruntime: use (or export into) this folder instead of the cache")
    p.set_defaults(func=run)


def _parse_times(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


def output_name(frame0: Path, t: float) -> str:
    """`frame10.png`, t=0.25 -> `frame10_t0.2500.png`."""
    return f"{frame0.stem}_t{t:.4f}.png"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dainrt.api import Interpolator, check_times, times_for_factor
    from dainrt.base.images import read_image, to_dtype, write_image

    times = check_times(args.times if args.times is not None else times_for_factor(args.factor or 2))
    choice = engine_choice(args)      # a path this machine cannot run fails before anything is read or written
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame0, frame1 = read_image(args.frame0), read_image(args.frame1)
    for w in caught:
        print(f"dainrt: warning: {w.message}", file=sys.stderr)
    if frame0.shape != frame1.shape:
        raise DainrtError(
            f"the two pictures differ in size: {frame0.shape[1]}x{frame0.shape[0]} vs {frame1.shape[1]}x{frame1.shape[0]}"
        )
    out_dtype = np.uint16 if np.uint16 in (frame0.dtype, frame1.dtype) else np.uint8
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DainrtError(f"cannot create output folder {args.output}: {err.strerror}") from None

    options = dict(choice.options)
    if args.onnx_dir is not None:
        if choice.backend != "onnxruntime":
            raise DainrtError("--onnx-dir only applies to --backend onnxruntime")
        options["onnx_dir"] = args.onnx_dir
    interp = Interpolator(args.weights, backend=choice.backend, device=args.device, **options)
    frames = interp.iter_interpolate(frame0, frame1, times)
    bar = tqdm(times, desc="interpolating", unit="frame", disable=len(times) < 2 or not sys.stderr.isatty())
    for t, frame in zip(bar, frames):
        path = args.output / output_name(args.frame0, t)
        write_image(path, to_dtype(frame, out_dtype))
        print(path)
    return 0
