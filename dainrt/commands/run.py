"""`dainrt run INPUT -o OUTPUT (--fps RATE | --factor N)`: interpolate a whole film."""
from __future__ import annotations

import argparse
import signal
import sys
from fractions import Fraction


def _rate(text: str) -> Fraction:
    from dainrt.runtime.timing import parse_rate

    try:
        return parse_rate(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    from dainrt.runtime.scenes import DEDUP_THRESHOLD, SCENE_THRESHOLD

    p = sub.add_parser(
        "run",
        help="interpolate a video (or picture sequence) to a higher frame rate",
        description="Interpolate a whole film to a new frame rate: every output frame is an input frame "
        "or a DAIN in-between at its exact time. Scene cuts are never morphed across; held frames "
        "('on twos') can be interpolated through (--dedup). Audio and subtitles are copied untouched, "
        "colour metadata and bit depth are kept. The output appears under its name only when complete; "
        "an interrupted run (Ctrl-C, full disk) continues with --resume.",
        epilog="Pictures: INPUT or OUTPUT may be a pattern such as frames/%%05d.png (output numbered "
        "from 1; 16-bit PNG for deeper input). Rates: 60, 59.94 (= 60000/1001), 60000/1001.",
    )
    p.add_argument("input", metavar="INPUT", help="video file, or picture pattern such as frames/%%05d.png")
    p.add_argument("-o", "--output", metavar="OUTPUT", help="output video (.mp4, .mov, .mkv, ...) or picture pattern")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--fps", type=_rate, metavar="RATE", help="output frame rate: 60, 59.94, 60000/1001, ...")
    when.add_argument("--factor", type=_positive_int, metavar="N", help="N times the input frame rate")
    p.add_argument("--backend", default="torch", help="torch (default) or another installed backend")
    p.add_argument("--weights", metavar="PATH", help="checkpoint (default: $DAINRT_WEIGHTS, then the cache, then the bundled model)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--report", metavar="PATH", help="write a JSON report (frame counts, rates, scene cuts, held frames, timing)")
    p.add_argument("--dedup", action="store_true",
                   help="drop held frames (stop-motion 'on twos') and interpolate through them at their proper times")
    p.add_argument("--dedup-threshold", type=_number, default=DEDUP_THRESHOLD, metavar="X",
                   help=f"a frame is held when no thumbnail pixel changes by more than X %% (default {DEDUP_THRESHOLD:g})")
    p.add_argument("--scene-threshold", type=_number, default=SCENE_THRESHOLD, metavar="X",
                   help=f"scene-cut score threshold in %% of full scale (default {SCENE_THRESHOLD:g}; 0 turns detection off)")
    p.add_argument("--scene-mode", choices=("repeat", "crossfade"), default="repeat",
                   help="across a scene cut: repeat the last frame (default) or cross-fade")
    p.add_argument("--codec", metavar="NAME", help="video encoder (default libx264)")
    p.add_argument("--crf", type=int, metavar="N", help="constant quality for encoders that have it (default 16)")
    p.add_argument("--pix-fmt", metavar="FMT", help="output pixel format (default: the input's, where the encoder takes it)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run of the same command")
    p.add_argument("--input-fps", type=_rate, metavar="RATE", help="frame rate of picture-sequence input (default 24)")
    p.add_argument("--max-frames", type=_positive_int, metavar="N", help="only the first N input frames (a quick preview)")
    p.add_argument("--segment-frames", type=_positive_int, metavar="N",
                   help="output frames per resumable segment (default: 10 seconds of output)")
    p.add_argument("--dry-run", action="store_true",
                   help="decode, detect and plan only (no model, no output) and print the estimated peak memory; "
                   "with --report, the plan and the estimate are in it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from dainrt.runtime import RunOptions, run as run_film, summary_line

    opts = RunOptions(
        input=args.input, output=args.output, fps=args.fps, factor=args.factor, backend=args.backend,
        weights=args.weights, device=args.device, report=args.report, dedup=args.dedup,
        dedup_threshold=args.dedup_threshold, scene_threshold=args.scene_threshold, scene_mode=args.scene_mode,
        codec=args.codec, crf=args.crf, pix_fmt=args.pix_fmt, resume=args.resume,
        segment_frames=args.segment_frames, input_fps=args.input_fps, max_frames=args.max_frames,
        dry_run=args.dry_run, progress=False if args.no_progress else None,
    )
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        result = run_film(opts)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summary_line(result))
    if result.get("memory"):                     # --dry-run: the estimated peak memory of the real run
        print(f"dainrt: {result['memory']['line']}")
    sys.stdout.flush()
    return 0
