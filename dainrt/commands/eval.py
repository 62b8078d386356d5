"""`dainrt eval DIR` / `dainrt eval --video CLIP --spacing S`: PSNR and SSIM on real frames,
next to the t-weighted blend and ffmpeg's minterpolate."""
from __future__ import annotations

import argparse
import sys

from . import _args as A
from .engine_args import add_engine_arguments, engine_choice, tile_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="PSNR/SSIM on Middlebury-layout folders or on triplets cut from a video",
        description="Interpolate the middle frame of every sequence folder (frame10.png, frame11.png; "
        "ground truth frame10i11.png, the Middlebury layout) under DIR, or of DIR itself; or, with "
        "--video, the frames between i and i+S of evenly spaced triplets of the clip (frames i+1 .. "
        "i+S-1 are the ground truth at t = k/S; triplets across a scene cut found by the runtime's "
        "detector are skipped). Prints full-RGB PSNR (dB, 8-bit output) and SSIM per frame and their "
        "mean, next to the t-weighted blend of the two inputs and ffmpeg's minterpolate "
        "(mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1, run in yuv444p through PyAV's libavfilter).",
    )
    p.add_argument("dir", type=A.path, metavar="DIR", nargs="?", help="a sequence folder or a folder of sequence folders")
    p.add_argument("--video", type=A.existing_file, metavar="CLIP", help="evaluate on triplets of this video instead of DIR")
    p.add_argument("--spacing", type=A.int_range(2, 4), metavar="S", help="with --video: inputs i and i+S, S = 2 or 4 (x2 / x4)")
    p.add_argument("--triplets", type=A.int_range(1), metavar="N",
                   help="with --video: how many evenly spaced triplets to try (default 12 for S=2, 8 for S=4)")
    p.add_argument("--no-minterpolate", dest="minterpolate", action="store_false",
                   help="skip the minterpolate baseline")
    p.add_argument("--zero-depth", action="store_true",
                   help="ablation: run the model with its depth net's output zeroed (log-depth 0: "
                   "colliding projections averaged instead of the nearer one winning)")
    p.add_argument("--json", type=A.path, metavar="PATH", help="also write every row and the mean to PATH as JSON")
    A.add_overwrite(p, "the --json file")
    p.add_argument("--weights", type=A.existing_file, metavar="PATH", help="checkpoint (default: $DAINRT_WEIGHTS, the cache, then the bundled model)")
    add_engine_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dainrt.api import Interpolator
    from dainrt.base.errors import DainrtError
    from dainrt.base.outputs import check_outputs
    from dainrt.training import evaluate as E

    if (args.dir is None) == (args.video is None):
        raise DainrtError("give either DIR (Middlebury-layout folders) or --video CLIP, not both or neither")
    if args.video is None and (args.spacing is not None or args.triplets is not None):
        raise DainrtError("--spacing and --triplets go with --video")
    if args.video is not None and args.spacing not in (2, 4):
        raise DainrtError(f"--video needs --spacing 2 or 4, got {args.spacing}")
    choice = engine_choice(args)         # a path this machine cannot run fails before anything else
    tile_option(args)
    if args.video is not None:
        inputs = [args.video]
    else:
        sequences = E.find_sequences(args.dir)
        inputs = [d / f for d in sequences for f in (E.FRAME0, E.FRAME1, E.MIDDLE)]
    check_outputs([("json", args.json)], inputs + [args.weights], args.overwrite)
    if args.video is not None:
        triplets = E.video_triplets(args.video, args.spacing, args.triplets)     # checks the clip first
    else:
        E.check_sizes(sequences)

    weights = args.weights
    if args.zero_depth:
        from dainrt.api import _load

        weights = E.zero_depth(_load(args.weights))
    interp = Interpolator(weights, backend=choice.backend, device=args.device, tile=args.tile,
                          tile_overlap=args.tile_overlap, **choice.options)
    if args.video is not None:
        results = E.evaluate_video(triplets, interp, args.minterpolate)
        about = {"video": str(args.video), "spacing": args.spacing, "triplets": [t.first for t in triplets]}
        print(E.format_table(results, title="triplet frame"))
    else:
        results = E.evaluate(sequences, interp, args.minterpolate)
        about = {"dir": str(args.dir)}
        print(E.format_table(results))
    if args.json is not None:
        E.write_json(args.json, results, **about, weights=str(args.weights) if args.weights else None,
                     zero_depth=args.zero_depth, backend=choice.backend, **choice.options,
                     tile=args.tile, tile_overlap=args.tile_overlap)
        print(f"dainrt: wrote {args.json}", file=sys.stderr)
    return 0
