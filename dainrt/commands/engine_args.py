"""The options that choose how the model runs, shared by `run`, `interpolate` and `eval`."""
from __future__ import annotations

import argparse
import sys

from dainrt.base.errors import OptionError

from . import _args as A


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """--backend, --device, --precision, --calibration, --kernels, --compile (see dainrt.engine.choice)."""
    # Values are checked by dainrt.engine.choice, which names the problem in one line.
    p.add_argument("--backend", type=A.text, default=None, metavar="NAME",
                   help="torch (default), onnxruntime, or tensorrt (NVIDIA GPU with TensorRT)")
    p.add_argument("--device", type=A.text, default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--precision", type=A.text, default=None, metavar="fp32|fp16|int8",
                   help="fp16: frame, pair and rectify in FP16, warp always FP32 (default: fp16 on CUDA, fp32 on the CPU; "
                   "torch fp16 needs CUDA); int8: onnxruntime or tensorrt with --calibration")
    p.add_argument("--calibration", type=A.existing_folder, default=None, metavar="DIR",
                   help="onnxruntime/tensorrt: run the stages of a `dainrt calibrate` folder (int8, or fp16 with "
                   "measured FP32 islands); refused if made for other weights or another dainrt")
    p.add_argument("--kernels", type=A.text, default=None, metavar="reference|numba|triton",
                   help="torch backend: the warping layers as vectorised PyTorch ops (reference), the compiled CPU "
                   "warp (numba; the CPU default) or Triton kernels (CUDA; default there when triton is installed)")
    p.add_argument("--compile", action="store_true",
                   help="torch backend: torch.compile every stage (minutes of compilation first, then faster)")
    p.add_argument("--tile", type=tile_text, default=None, metavar="auto|off|WxH",
                   help="cut large frames into overlapping tiles of one shape, blended without seams: auto (the "
                   "default) tiles only when whole frames would not fit the free memory (CUDA free memory, the "
                   "available RAM, or $DAINRT_MEMORY_BUDGET_MB) and says so; WxH fixes the tile (sides >= 256 px)")
    p.add_argument("--tile-overlap", type=A.int_range(16, 4096), default=None, metavar="PX",
                   help="pixels neighbouring tiles share (default: 128, widened to 4x the motion of each pair)")


def tile_text(text: str) -> str:
    """`--tile` checked at parse time (auto, off or WxH); `tile_option` builds the TileOption."""
    from dainrt.engine.tiling import parse_tile

    try:
        parse_tile(text)
    except OptionError as err:
        raise argparse.ArgumentTypeError(err.problem.replace("{option} ", "")) from None
    return text


def tile_option(args: argparse.Namespace):
    """The TileOption of `--tile` and `--tile-overlap` (dainrt.engine.tiling), or a one-line error."""
    from dainrt.engine.tiling import parse_tile

    return parse_tile(args.tile, args.tile_overlap)


def engine_choice(args: argparse.Namespace):
    """The EngineChoice for the parsed options; says in one line what dainrt picked on CUDA."""
    from dainrt.engine.backend import resolve_device
    from dainrt.engine.choice import choose_engine

    device = resolve_device(args.device)
    choice = choose_engine(device, args.backend, args.precision, args.kernels, args.compile, args.calibration)
    if choice.picked:
        print(f"dainrt: on {device}: {choice.describe()} (the fastest path here; --backend, --precision, "
              f"--kernels choose another)", file=sys.stderr)
    return choice


def planned_choice(args: argparse.Namespace):
    """The choice a real run would make, for a dry run's plan and memory estimate: the same
    defaults, but this machine is not checked (a dry run may plan for another machine's GPU)."""
    import torch

    from dainrt.base.errors import OptionError
    from dainrt.engine.choice import BACKEND_PRECISION, EngineChoice, choose_engine

    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        raise OptionError("device", f"{args.device!r} is not a device: {err}") from None
    if args.backend in (None, "torch"):
        return choose_engine(device, "torch", args.precision, args.kernels, args.compile, args.calibration)
    if args.backend not in BACKEND_PRECISION:
        raise OptionError("backend", f"{args.backend!r} is unknown; choose one of: torch, "
                                     f"{', '.join(sorted(BACKEND_PRECISION))}")
    options = {"precision": args.precision or BACKEND_PRECISION[args.backend]}
    if args.calibration is not None:
        options["calibration"] = args.calibration
    return EngineChoice(args.backend, options)
