"""`dainrt build-engine`: export the ONNX stages (or reuse them) and build their TensorRT engines."""
from __future__ import annotations

import argparse
import sys
import time

from dainrt.base.errors import DainrtError
from dainrt.base.progress import progress_bar

from . import _args as A
from .bench import size_text
from .engine_args import tile_text


def _stages(text: str) -> str:
    """A comma-separated list of stage names, checked at parse time."""
    from dainrt.model.stages import STAGE_NAMES

    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown or not stages:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(STAGE_NAMES)}")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-engine",
        help="build the TensorRT engines for this GPU (once per GPU, model and size)",
        description="Export the model's four stages to ONNX (or reuse the export) and build one TensorRT "
        "engine per stage for this GPU: FP16 for frame, pair and rectify (with FP32 islands), FP32 for "
        "warp and its plugins. Engines are cached under <cache>/engines and reused while the GPU, "
        "TensorRT, plugin code, precision, size and ONNX stay the same. Needs an NVIDIA GPU, "
        "TensorRT >= 10.9 and triton.",
    )
    p.add_argument("--weights", type=A.existing_file, metavar="PATH", help="checkpoint (default: $DAINRT_WEIGHTS, then the cache)")
    p.add_argument("--size", type=size_text, action="append", metavar="WxH", default=[],
                   help="picture size the engines are for, e.g. 1920x1080 (padded as the runtime pads it). "
                   "Repeat for more sizes: one static engine set per size, or with --dynamic one engine "
                   "covering the range (opt = the first). Default 1920x1080")
    p.add_argument("--tile", type=tile_text, default="off", metavar="auto|off|WxH",
                   help="build for the tile shape the films of --size are cut into, as run/interpolate --tile would "
                   "(auto: as this GPU's free memory allows; default off: whole frames)")
    p.add_argument("--padded", action="store_true",
                   help="the --size values are padded frame sizes (as error messages print them), not picture sizes")
    p.add_argument("--precision", choices=("fp16", "fp32", "int8"), default="fp16",
                   help="fp16 (default; warp stays fp32), fp32 everywhere, or int8 (needs --calibration)")
    p.add_argument("--calibration", type=A.existing_folder, default=None, metavar="DIR",
                   help="build from the ONNX files of a `dainrt calibrate` folder (int8 Q/DQ, or fp16 with measured "
                   "FP32 islands); its hash is part of every engine's cache key")
    p.add_argument("--dynamic", action="store_true",
                   help="one engine per stage with a min/opt/max shape profile instead of static shapes "
                   "(slower, but serves any size in the range; with one --size the range starts at 256x256)")
    p.add_argument("--stages", type=_stages, default="frame,pair,warp,rectify", metavar="LIST",
                   help="comma-separated stages to build (default: all four)")
    p.add_argument("--opt-level", type=A.int_range(0, 5), default=3, metavar="N",
                   help="TensorRT builder optimisation level 0..5 (default 3; 5 builds slower, may run faster)")
    p.add_argument("--workspace-mib", type=A.int_range(1), default=None, metavar="MIB",
                   help="limit TensorRT's builder workspace to MIB mebibytes (default: TensorRT's own limit)")
    p.add_argument("--no-plugins", action="store_true",
                   help="build the warp stage from the ONNX standard-op bodies instead of the Triton plugins")
    p.add_argument("--force", action="store_true", help="rebuild even when a matching engine is cached")
    p.add_argument("--device", type=A.text, default="cuda", help="CUDA device to build for (default cuda)")
    p.add_argument("--verbose", action="store_true", help="show TensorRT warnings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Check the machine first: a missing GPU or TensorRT is one line, before any slow work.
    import torch

    from dainrt.base.errors import OptionError
    from dainrt.engine.tensorrt import require_tensorrt

    # A --device that is no CUDA device at all is named as such; whether this machine has the GPU,
    # TensorRT and triton is said in one line by require_tensorrt.
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise OptionError("device", f"{args.device!r} is not a device (cuda or cuda:N)") from None
    if device.type != "cuda":
        raise OptionError("device", f"must be a CUDA device (cuda or cuda:N) for TensorRT engines, got {args.device!r}")
    if args.precision == "int8" and args.calibration is None:
        raise OptionError("calibration", "is needed for --precision int8: make one with `dainrt calibrate INPUT -o DIR`")
    require_tensorrt("dainrt build-engine", plugins=not args.no_plugins)

    from dainrt.base.sizes import parse_size
    from dainrt.engine.tensorrt.builder import BuildSettings, EngineBuilder, profile_for_sizes
    from dainrt.model import STAGE_NAMES
    from dainrt.model.checkpoint import load_model
    from dainrt.model.weights import resolve_weights

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown or not stages:
        raise DainrtError(f"--stages: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(STAGE_NAMES)}")
    sizes = [parse_size(s) for s in args.size]
    model = load_model(resolve_weights(args.weights))
    if args.tile != "off":
        if args.padded:
            raise DainrtError("--tile plans picture sizes: drop --padded")
        from dainrt.engine.tiling import engine_sizes, memory_budget, parse_tile

        sizes = engine_sizes(sizes or [(1920, 1080)], parse_tile(args.tile), model.config,
                             memory_budget(device)[0], "cuda", args.precision)
        print(f"dainrt: building for {', '.join(f'{w}x{h}' for w, h in sizes)} (--tile {args.tile})", file=sys.stderr)
    if args.dynamic:
        profiles = [profile_for_sizes(sizes, dynamic=True, padded=args.padded)]
    else:
        profiles = [profile_for_sizes([s], padded=args.padded) for s in sizes] or [profile_for_sizes([])]

    settings = BuildSettings(optimization_level=args.opt_level, workspace_mib=args.workspace_mib,
                             plugins=not args.no_plugins, verbose=args.verbose)
    builder = EngineBuilder(model, args.precision, settings=settings, device=args.device, calibration=args.calibration)
    start = time.perf_counter()
    bar = progress_bar(total=len(profiles) * len(stages), desc="building engines", unit="engine")
    for profile in profiles:
        for stage in stages:
            key = builder.key(stage, profile)
            cached = not args.force and builder.cache.load(key) is not None
            if not cached:
                builder.ensure(stage, profile, build=True, force=args.force)
            bar.write(f"{stage:8s} {'cached' if cached else 'built '}  {builder.cache.engine_path(key)}", file=sys.stdout)
            bar.update(1)
    bar.close()
    print(f"done in {time.perf_counter() - start:.1f} s ({builder.identity.name}, TensorRT "
          f"{builder.identity.tensorrt_version})", file=sys.stderr)
    return 0
