"""`dainrt eval DIR`: PSNR and SSIM on Middlebury-layout folders, next to the 50/50 blend."""
from __future__ import annotations

import argparse

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
    p.add_argument("dir", metavar="DIR", help="a sequence folder or a folder of sequence folders")
    p.add_argument("--weights", metavar="PATH", help="checkpoint (default: $DAINRT_WEIGHTS, the cache, then the bundled model)")
    add_engine_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dainrt.api import Interpolator
    from dainrt.training.evaluate import evaluate, find_sequences, format_table

    sequences = find_sequences(args.dir)
    choice = engine_choice(args)
    interp = Interpolator(args.weights, backend=choice.backend, device=args.device, **choice.options)
    print(format_table(evaluate(sequences, interp)))
    return 0
