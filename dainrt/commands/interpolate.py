"""`dainrt interpolate FRAME0 FRAME1 -o OUTDIR`: the in-between pictures of two pictures."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from dainrt.base.errors import DainrtError

from . import _args as A
from .engine_args import add_engine_arguments, engine_choice


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpolate",
        help="write the in-between frames of two pictures as PNG",
        description="Interpolate between two pictures and write the in-between frames as PNG "
        "(8-bit in -> 8-bit out, 16-bit in -> 16-bit out; two greyscale pictures give greyscale "
        "frames; alpha is dropped with a warning). OUTDIR may exist; a frame already in it is "
        "replaced only with -y, and never when it is one of the two pictures.",
    )
    p.add_argument("frame0", type=A.path, help="first picture (t = 0)")
    p.add_argument("frame1", type=A.path, help="second picture (t = 1)")
    p.add_argument("-o", "--output", type=A.path, required=True, metavar="OUTDIR", help="folder for the in-between frames")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--times", type=_parse_times, metavar="T,T,...", help="time steps in (0,1), e.g. 0.25,0.5,0.75")
    when.add_argument("--factor", type=A.int_range(2), metavar="N", help="N-1 evenly spaced frames (N=4: t = 0.25, 0.5, 0.75); default 2")
    p.add_argument("-y", "--overwrite", action="store_true", help="replace in-between frames already in OUTDIR")
    p.add_argument("--weights", type=A.existing_file, metavar="PATH", help="checkpoint (default: $DAINRT_WEIGHTS, then the cache, then the bundled model)")
    add_engine_arguments(p)
    p.add_argument("--onnx-dir", type=A.path, metavar="DIR",
                   help="with --backend onnxruntime: use (or export into) this folder instead of the cache")
    p.set_defaults(func=run)


def _parse_times(text: str) -> list[float]:
    try:
        times = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not times:
        raise argparse.ArgumentTypeError("is empty")
    bad = [t for t in times if not 0.0 < t < 1.0]
    if bad:
        raise argparse.ArgumentTypeError(f"time steps must lie strictly between 0 and 1, got {bad[0]:g}")
    return times


def output_name(frame0: Path, t: float) -> str:
    """`frame10.png`, t=0.25 -> `frame10_t0.2500.png`."""
    return f"{frame0.stem}_t{t:.4f}.png"


def run(args: argparse.Namespace) -> int:
    from dainrt.api import Interpolator, check_times, times_for_factor
    from dainrt.base.errors import OptionError
    from dainrt.base.progress import progress_bar
    from dainrt.base.images import is_greyscale, read_image, to_dtype, write_image
    from dainrt.base.outputs import check_outputs

    # Options first (one line each, before any picture is read or folder made).
    times = check_times(args.times if args.times is not None else times_for_factor(
        args.factor if args.factor is not None else 2))
    choice = engine_choice(args)      # a path this machine cannot run fails before anything is read or written
    options = dict(choice.options)
    if args.onnx_dir is not None:
        if choice.backend != "onnxruntime":
            raise DainrtError("--onnx-dir only applies to --backend onnxruntime")
        if args.onnx_dir.exists() and not args.onnx_dir.is_dir():
            raise OptionError("onnx_dir", f"{args.onnx_dir} is a file, not a folder")
        if not args.onnx_dir.exists() and not args.onnx_dir.parent.is_dir():
            raise OptionError("onnx_dir", f"{args.onnx_dir}: folder {args.onnx_dir.parent} does not exist")
        options["onnx_dir"] = args.onnx_dir
    if args.output.exists() and not args.output.is_dir():
        raise OptionError("output", f"{args.output} is a file; give a folder for the in-between frames")
    paths = [args.output / output_name(args.frame0, t) for t in times]
    folder_exists = args.output.is_dir()
    check_outputs([("output", p) for p in paths] if folder_exists else [],
                  [args.frame0, args.frame1, args.weights], args.overwrite)

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
    grey = is_greyscale(args.frame0) and is_greyscale(args.frame1)
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DainrtError(f"cannot create output folder {args.output}: {err.strerror}") from None
    if not folder_exists:
        check_outputs([("output", p) for p in paths], [args.frame0, args.frame1], args.overwrite)

    interp = Interpolator(args.weights, backend=choice.backend, device=args.device, **options)
    frames = interp.iter_interpolate(frame0, frame1, times)
    bar = progress_bar(times, desc="interpolating", unit="frame")
    for t, path, frame in zip(bar, paths, frames):     # the bar first: it ends (2/2) when zip asks again
        if grey:
            frame = frame.mean(axis=2)      # greyscale in, greyscale out (the model works in RGB)
        write_image(path, to_dtype(frame, out_dtype))
        bar.write(str(path), file=sys.stdout)        # stays clear of the bar on a terminal
    return 0
