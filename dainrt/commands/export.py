"""`dainrt export [--weights W] -o DIR [--precision fp32|fp16]`: the four stages as ONNX files."""
from __future__ import annotations

import argparse
import sys
import time

from dainrt.base.errors import OptionError

from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export the model's four stages to ONNX (frame, pair, warp, rectify)",
        description="Write frame.onnx, pair.onnx, warp.onnx and rectify.onnx (opset 18, dynamic batch, "
        "height and width) and manifest.json to DIR. The warp stage holds the custom layers as "
        "dain::DepthFlowProjection / dain::AdaptiveWarp nodes with standard-op function bodies, so "
        "ONNX Runtime runs every file as is; TensorRT binds its plugins to those nodes. The same "
        "checkpoint always gives the same files.",
    )
    p.add_argument("-o", "--output", type=A.path, required=True, metavar="DIR",
                   help="folder for the ONNX files (made if missing; files already in it are replaced only with -y)")
    A.add_overwrite(p, "ONNX files and manifest already in DIR")
    p.add_argument("--weights", type=A.existing_file, metavar="PATH", help="checkpoint (default: $DAINRT_WEIGHTS, then the cache)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp32 (default) or fp16: frame, pair and rectify in mixed FP16 with FP32 islands; warp stays FP32")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dainrt.model.checkpoint import load_model
    from dainrt.export import export_stages
    from dainrt.export.exporter import check_writable
    from dainrt.model.weights import resolve_weights

    from dainrt.base.outputs import check_outputs
    from dainrt.export.exporter import MANIFEST, file_name
    from dainrt.model import STAGE_NAMES

    if args.output.exists() and not args.output.is_dir():
        raise OptionError("output", f"{args.output} is a file, not a folder: give a folder for the ONNX files")
    if args.output.is_dir():
        files = [args.output / file_name(s) for s in STAGE_NAMES] + [args.output / MANIFEST]
        check_outputs([("output", f) for f in files], [args.weights], args.overwrite)
    out = check_writable(args.output)       # fail before the minute of tracing, not after
    weights = resolve_weights(args.weights)
    model = load_model(weights, device="cpu")  # DainrtError naming the keys if it does not verify
    start = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - start:5.1f}s] {message}", file=sys.stderr, flush=True)

    manifest = export_stages(model, out, args.precision, progress=progress)
    for stage, entry in manifest["stages"].items():
        print(f"{out / entry['file']}  {entry['bytes'] / 2**20:.1f} MiB  {entry['precision']}")
    print(f"{out / 'manifest.json'}  checkpoint {manifest['checkpoint_sha256'][:16]}...")
    return 0
