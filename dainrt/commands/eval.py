"""`dainrt eval DIR` / `dainrt eval --video CLIP --spacing S`: PSNR and SSIM on real frames,
next to the t-weighted blend and ffmpeg's minterpolate."""
from __future__ import annotations

import argparse


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
    p.add_argument("dir", metavar="DIR", nargs="?", help="a sequence folder or a folder of sequence folders")
    p.add_argument("--video", metavar="CLIP", help="evaluate on triplets of this video instead of DIR")
    p.add_argument("--spacing", type=int, metavar="S", help="with --video: inputs i and i+S, S = 2 or 4 (x2 / x4)")
    p.add_argument("--triplets", type=int, metavar="N",
                   help="with --video: how many evenly spaced triplets to try (default 12 for S=2, 8 for S=4)")
    p.add_argument("--no-minterpolate", dest="minterpolate", action="store_false",
                   help="skip the minterpolate baseline")
    p.add_argument("--zero-depth", action="store_true",
                   help="ablation: run the model with its depth net's output zeroed (log-depth 0: "
                   "colliding projections averaged instead of the nearer one winning)")
    p.add_argument("--json", metavar="PATH", help="also write every row and the mean to PATH as JSON")
    p.add_argument("--weights", metavar="PATH", help="checkpoint (default: $DAINRT_WEIGHTS, the cache, then the bundled model)")
    p.add_argument("--backend", default="torch", help="torch (default) or another installed backend")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dainrt.errors import DainrtError
    from dainrt.training import evaluate as E

    if (args.dir is None) == (args.video is None):
        raise DainrtError("give either DIR (Middlebury-layout folders) or --video CLIP, not both or neither")
    if args.video is None and (args.spacing is not None or args.triplets is not None):
        raise DainrtError("--spacing and --triplets go with --video")
    if args.video is not None:
        if args.spacing not in (2, 4):
            raise DainrtError(f"--video needs --spacing 2 or 4, got {args.spacing}")
        if args.triplets is not None and args.triplets < 1:
            raise DainrtError(f"--triplets must be >= 1, got {args.triplets}")
        triplets = E.video_triplets(args.video, args.spacing, args.triplets)     # checks the clip first
    else:
        sequences = E.find_sequences(args.dir)

    from dainrt.api import Interpolator

    weights = args.weights
    if args.zero_depth:
        from dainrt.api import _load

        weights = E.zero_depth(_load(args.weights))
    interp = Interpolator(weights, backend=args.backend, device=args.device)
    if args.video is not None:
        results = E.evaluate_video(triplets, interp, args.minterpolate)
        about = {"video": args.video, "spacing": args.spacing, "triplets": [t.first for t in triplets]}
        print(E.format_table(results, title="triplet frame"))
    else:
        results = E.evaluate(sequences, interp, args.minterpolate)
        about = {"dir": args.dir}
        print(E.format_table(results))
    if args.json:
        E.write_json(args.json, results, **about, weights=args.weights, zero_depth=args.zero_depth, backend=args.backend)
    return 0
