"""`dainrt compare INPUT OUTPUT [CHOSEN] -o SIDE_BY_SIDE [--slow N]`: original next to interpolated."""
from __future__ import annotations

import argparse

from . import _args as A
from .run import _rate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="make a side-by-side clip: the original (frames held) next to one or two interpolated films",
        description="Write a clip with the original on the left (each frame held until the next, as it "
        "plays) and the interpolated film next to it, frame by frame at the interpolated rate, "
        "optionally slowed down; with CHOSEN, a third version on the right (say the same film at "
        "--cadence 2), labelled original / full smooth / chosen cadence. No audio. H.264, CRF 18.",
    )
    p.add_argument("original", type=A.text, metavar="INPUT", help="the original video (or picture pattern)")
    p.add_argument("interpolated", type=A.text, metavar="OUTPUT", help="the film `dainrt run` made from it")
    p.add_argument("chosen", nargs="?", type=A.text, metavar="CHOSEN",
                   help="optional third version, e.g. the film made with --cadence 2 or --shots")
    p.add_argument("--labels", type=A.text, metavar="A,B[,C]",
                   help="the labels, comma-separated, one per version (default original,dainrt; "
                   "with CHOSEN: original,full smooth,chosen cadence)")
    p.add_argument("-o", "--output", type=A.text, required=True, metavar="SIDE_BY_SIDE", help="clip to write (.mp4, .mkv, ...)")
    p.add_argument("--slow", type=A.int_range(1, 1000), default=1, metavar="N", help="play N times slower (default 1)")
    p.add_argument("--input-fps", type=_rate, metavar="RATE", help="frame rate of a picture-sequence INPUT (default 24)")
    p.add_argument("-y", "--overwrite", action="store_true",
                   help="replace an existing SIDE_BY_SIDE (never INPUT or OUTPUT)")
    p.add_argument("--no-labels", action="store_true", help="do not write the labels on the pictures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dainrt.runtime import compare

    rate = args.input_fps
    result = compare(args.original, args.interpolated, args.output, slow=args.slow, labels=not args.no_labels,
                     input_fps=rate, overwrite=args.overwrite, chosen=args.chosen,
                     names=args.labels.split(",") if args.labels else None)
    print(f"dainrt: wrote {args.output}: {result['frames']} frames, {result['duration']:.3f} s")
    return 0
