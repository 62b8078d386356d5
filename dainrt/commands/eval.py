"""`dainrt eval DIR`: PSNR and SSIM on Middlebury-layout folders, next to the 50/50 blend."""
from __future__ import annotations

import argparse

from . import _args as A
from .engine_args import add_engine_arguments, engine_choice


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="PSNR/SSIM on folders of frame10.png, frame11.png, frame10i11.png",
        description="Interpolate the middle frame of every sequence folder (frame10.png, frame11.png; "
        "ground truth frame10i11.png, the Middlebury layout) under DIR, or of DIR itself, and print "
        "full-RGB PSNR (dB, 8-bit output) and SSIM per sequence and their mean, next to the plain "
        "50/50 blend of the two frames.",
    )
    p.add_argument("dir", type=A.path, metavar="DIR", help="a sequence folder or a folder of sequence folders")
    p.add_argument("--weights", type=A.existing_file, metavar="PATH", help="checkpoint (default: $DAINRT_WEIGHTS, the cache, then the bundled model)")
    add_engine_arguments(p)
    p.add_argument("--json", type=A.path, metavar="PATH", help="also write the results as JSON to PATH")
    A.add_overwrite(p, "the --json file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dainrt.api import Interpolator
    from dainrt.base.errors import OptionError
    from dainrt.base.files import write_json
    from dainrt.base.outputs import check_outputs
    from dainrt.training.evaluate import FRAME0, FRAME1, MIDDLE, check_sizes, evaluate, find_sequences, format_table

    choice = engine_choice(args)         # a path this machine cannot run fails before anything else
    sequences = find_sequences(args.dir)
    inputs = [d / f for d in sequences for f in (FRAME0, FRAME1, MIDDLE)] + [args.weights]
    check_outputs([("json", args.json)], inputs, args.overwrite)
    check_sizes(sequences)
    interp = Interpolator(args.weights, backend=choice.backend, device=args.device, **choice.options)
    results = evaluate(sequences, interp)
    print(format_table(results))
    if args.json is not None:
        try:
            write_json(args.json, [r._asdict() for r in results])
        except OSError as err:
            raise OptionError("json", f"{args.json}: cannot write: {err.strerror or err}") from None
        print(f"wrote {args.json}")
    return 0
