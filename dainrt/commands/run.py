"""`dainrt run INPUT -o OUTPUT (--fps RATE | --factor N)`: interpolate a whole film."""
from __future__ import annotations

import argparse
import signal
import sys
from fractions import Fraction

from . import _args as A


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


def _hold_frames(text: str) -> int | str:
    """--keep-holds: a whole number of 1 or more, or 'off'."""
    if text == "off":
        return "off"
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{err} (or 'off')") from None


def _cluster(text: str) -> str:
    from dainrt.runtime.cluster import parse_address

    try:
        parse_address(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text.strip()


def register(sub: argparse._SubParsersAction) -> None:
    from dainrt.runtime.scenes import DEDUP_THRESHOLD, SCENE_THRESHOLD
    from dainrt.runtime.preview import PREVIEW_SECONDS, PREVIEW_SIDE
    from dainrt.runtime.timing import DEFAULT_KEEP_HOLDS

    from .engine_args import add_engine_arguments

    p = sub.add_parser(
        "run",
        help="interpolate a video (or picture sequence) to a higher frame rate",
        description="Interpolate a whole film to a new frame rate: every output frame is an input frame "
        "or a DAIN in-between at its exact time. Scene cuts are never morphed across; held frames "
        "('on twos') can be interpolated through (--dedup). Audio and subtitles are copied untouched, "
        "colour metadata and bit depth are kept. The output appears under its name only when complete; "
        "an interrupted run (Ctrl-C, full disk) continues with --resume.",
        epilog="Pictures: INPUT or OUTPUT may be a pattern such as frames/%05d.png (output numbered "
        "from 1; 16-bit PNG for deeper input); an existing file is always a file, '%' or not. "
        "Rates: 60, 59.94 (= 60000/1001), 60000/1001. Outputs: an existing OUTPUT or --report "
        "(for a pattern: any picture it names) is replaced only with -y; an input never is. "
        "--resume continues the work folder OUTPUT.dainrt-partial/ and follows the same rule.",
    )
    p.add_argument("input", type=A.text, metavar="INPUT", help="video file, or picture pattern such as frames/%%05d.png")
    p.add_argument("-o", "--output", type=A.text, metavar="OUTPUT", help="output video (.mp4, .mov, .mkv, ...) or picture pattern")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--fps", type=_rate, metavar="RATE", help="output frame rate: 60, 59.94, 60000/1001, ...")
    when.add_argument("--factor", type=_positive_int, metavar="N", help="N times the input frame rate")
    p.add_argument("--weights", type=A.existing_file, metavar="PATH", help="checkpoint (default: $DAINRT_WEIGHTS, then the cache, then the bundled model)")
    add_engine_arguments(p)
    p.add_argument("--report", type=A.text, metavar="PATH", help="write a JSON report (frame counts, rates, scene cuts, held frames, timing)")
    p.add_argument("--dedup", action="store_true",
                   help="drop held frames (stop-motion 'on twos') and interpolate through them at their proper times")
    p.add_argument("--dedup-threshold", type=A.float_range(0, 100), default=DEDUP_THRESHOLD, metavar="X",
                   help=f"a frame is held when no thumbnail pixel changes by more than X %% (default {DEDUP_THRESHOLD:g})")
    p.add_argument("--keep-holds", type=_hold_frames, metavar="N",
                   help=f"a picture held for more than N input frames stays a hold: nothing is invented during it, "
                   f"the motion into and out of it is interpolated (implies --dedup; default {DEFAULT_KEEP_HOLDS} "
                   "with --dedup; 'off': interpolate through every hold)")
    p.add_argument("--cadence", type=A.int_range(1, 1000), default=1, metavar="K",
                   help="a new picture every K output frames, at its exact time, held for K frames "
                   "(--fps 60 --cadence 2: '30 on 60'; default 1: every frame new)")
    p.add_argument("--shots", type=A.existing_file, metavar="FILE",
                   help="per-shot settings: lines such as '0-2.5 cadence 4' or 'scene 2 off' "
                   "(see README; --dry-run lists the scenes with their times)")
    p.add_argument("--scene-threshold", type=A.float_range(0, 100), default=SCENE_THRESHOLD, metavar="X",
                   help=f"scene-cut score threshold in %% of full scale (default {SCENE_THRESHOLD:g}; 0 turns detection off)")
    p.add_argument("--scene-mode", choices=("repeat", "crossfade"), default="repeat",
                   help="across a scene cut: repeat the last frame (default) or cross-fade")
    p.add_argument("--codec", type=A.text, metavar="NAME", help="video encoder (default libx264)")
    p.add_argument("--crf", type=A.int_range(0), metavar="N",
                   help="constant quality for encoders that have it (default 16; libx264/libx265 0..51, "
                   "libvpx-vp9/libsvtav1 up to 63), checked against the encoder's range before the run")
    p.add_argument("--pix-fmt", type=A.text, metavar="FMT", help="output pixel format (default: the input's, where the encoder takes it)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run of the same command")
    p.add_argument("-y", "--overwrite", action="store_true",
                   help="replace an existing OUTPUT / --report (never one of the inputs)")
    p.add_argument("--input-fps", type=_rate, metavar="RATE", help="frame rate of picture-sequence input (default 24)")
    p.add_argument("--max-frames", type=_positive_int, metavar="N", help="only the first N input frames")
    p.add_argument("--preview", type=A.float_range(0, 3600, lo_open=True), nargs="?", const=PREVIEW_SECONDS, metavar="SECONDS",
                   help=f"a quick look: the first SECONDS (default {PREVIEW_SECONDS:g}) at most {PREVIEW_SIDE} px wide, "
                   "at the target rate, written as OUTPUT's name + .preview (minutes on a CPU)")
    p.add_argument("--segment-frames", type=_positive_int, metavar="N",
                   help="output frames per resumable segment (default: 10 seconds of output)")
    p.add_argument("--cluster", type=_cluster, metavar="ADDRESS",
                   help="run on a Ray cluster, one task per segment (pip install 'dainrt[cluster]'): local "
                   "(a cluster of this machine's cores), local:N (N workers here), auto (the cluster this machine "
                   "is in) or ray://host:port. The input and OUTPUT's folder must be at the same path on every "
                   "worker; --resume works as without it")
    p.add_argument("--dry-run", action="store_true",
                   help="decode, detect and plan only (no model, no output) and print the estimated peak memory; "
                   "with --report, the plan and the estimate are in it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


class _Terminated(KeyboardInterrupt):
    """SIGTERM: stops the run as Ctrl-C does (finished segments kept), but exits 128 + 15."""


def _sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _Terminated


SIGTERM_EXIT = 128 + signal.SIGTERM      # 143, as a shell reports a process ended by SIGTERM


def run(args: argparse.Namespace) -> int:
    from dainrt.runtime import RunOptions, run as run_film, summary_line
    from dainrt.runtime.pipeline import Interrupted
    from dainrt.runtime.timing import DEFAULT_KEEP_HOLDS

    from .engine_args import engine_choice, planned_choice, tile_option

    # A dry run loads no model: it plans with the choice a real run would make, unchecked; on a
    # cluster the workers' machines run the model, not this one.
    choice = planned_choice(args) if args.dry_run or args.cluster else engine_choice(args)
    keep_holds = {None: DEFAULT_KEEP_HOLDS, "off": None}.get(args.keep_holds, args.keep_holds)
    opts = RunOptions(
        input=args.input, output=args.output, fps=args.fps, factor=args.factor,
        backend=choice.backend, backend_options=choice.options, tile=tile_option(args),
        weights=args.weights, device=args.device, report=args.report,
        dedup=args.dedup or args.keep_holds is not None, keep_holds=keep_holds, cadence=args.cadence,
        shots=str(args.shots) if args.shots else None,
        dedup_threshold=args.dedup_threshold, scene_threshold=args.scene_threshold, scene_mode=args.scene_mode,
        codec=args.codec, crf=args.crf, pix_fmt=args.pix_fmt, resume=args.resume,
        segment_frames=args.segment_frames, input_fps=args.input_fps, max_frames=args.max_frames, preview=args.preview,
        dry_run=args.dry_run, progress=False if args.no_progress else None, overwrite=args.overwrite,
        cluster=args.cluster,
    )
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        result = run_film(opts)
    except Interrupted as err:
        if isinstance(err.__context__, _Terminated):
            err.exit_code = SIGTERM_EXIT
        raise
    except _Terminated:
        err = Interrupted("terminated (SIGTERM) before the run started; nothing was written")
        err.exit_code = SIGTERM_EXIT
        raise err from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summary_line(result))
    if result.get("dry_run"):                    # the scenes, as --shots numbers them
        for shot in result["shots"]:
            print(f"dainrt: scene {shot['scene']}: {shot['start']:.3f}-{shot['end']:.3f} s "
                  f"(from input frame {shot['first_frame']})")
    if result.get("memory"):                     # --dry-run: the estimated peak memory of the real run
        print(f"dainrt: {result['memory']['line']}")
    sys.stdout.flush()
    return 0
