"""`dainrt eval DIR`: PSNR and SSIM on Middlebury-layout folders, next to the 50/50 blend."""
from __future__ import annotations

import argparse


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
    p.add_argument("--backend", default="torch", help="torch (default) or another installed backend")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dainrt.api import Interpolator
    from dainrt.training.evaluate import evaluate, find_sequences, format_table

    sequences = find_sequences(args.dir)
    interp = Interpolator(args.weights, backend=args.backend, device=args.device)
    print(format_table(evaluate(sequences, interp)))
    return 0
