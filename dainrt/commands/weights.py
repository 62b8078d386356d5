"""`dainrt weights verify|download|init`: check, fetch and synthesise model checkpoints."""
from __future__ import annotations

import argparse
import sys

from dainrt.base.errors import DainrtError, OptionError
from dainrt.model.weights import OFFICIAL_BLOB_ID

from . import _args as A

SHOWN = 10   # offending keys listed per kind in a failed verify


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="verify, download or create model weights",
        description="Manage DAIN checkpoints. Commands that need weights look for them in this order: "
        "--weights PATH, $DAINRT_WEIGHTS, then <cache>/weights/best.pth where <cache> is "
        "$DAINRT_CACHE, $XDG_CACHE_HOME/dainrt or ~/.cache/dainrt.",
    )
    actions = p.add_subparsers(dest="weights_command", metavar="ACTION")
    actions.required = True

    v = actions.add_parser(
        "verify",
        help="check that a checkpoint has every key and shape of the model",
        description="Check a checkpoint (the official best.pth or a dainrt file) against the DAIN model "
        "of its width: every float key present with the right shape, no unexpected keys. Prints "
        "'OK: N parameters, width W' and exits 0, or lists the offending keys and exits 1.",
    )
    v.add_argument("path", type=A.path, metavar="PATH", help="checkpoint file (.pth)")
    v.set_defaults(func=run_verify)

    d = actions.add_parser(
        "download",
        help="download the official checkpoint (--official), or any checkpoint, with resume and a digest check",
        description="Download a checkpoint over HTTP(S). An interrupted download is resumed by running "
        "the same command again; the file appears under its final name only when its digest matches. "
        "--official fetches the official DAIN best.pth from its copy in the BurguerJohn/Dain-App "
        "repository, checks it by its git blob id (SHA-1 of 'blob <size>\\0' and the bytes, what "
        "`git hash-object` prints), then by the strict key and shape check, and puts it in the weights "
        "cache with its SHA-256 recorded beside it.",
    )
    source = d.add_mutually_exclusive_group(required=True)
    source.add_argument("--official", action="store_true",
                        help=f"the official checkpoint (git blob {OFFICIAL_BLOB_ID[:12]}...) into the weights cache")
    source.add_argument("--url", type=A.text, help="http:// or https:// address of a checkpoint")
    d.add_argument("--mirror", type=A.text, metavar="URL", help="with --official: fetch it from this address instead")
    digest = d.add_mutually_exclusive_group()
    digest.add_argument("--sha256", type=A.text, metavar="HEX", help="expected SHA-256 of the file (64 hex digits)")
    digest.add_argument("--blob-id", type=A.text, metavar="HEX", help="expected git blob id of the file (40 hex digits)")
    d.add_argument("-o", "--output", type=A.path, metavar="PATH",
                   help="with --url: where to save it (default: <cache>/weights/best.pth, which is found "
                   "automatically; missing folders are made)")
    A.add_overwrite(d, "a file of another digest at PATH")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=run_download)

    i = actions.add_parser(
        "init",
        help="write deterministic random weights (for tests and benchmarks, not for real use)",
        description="Write a dainrt checkpoint of deterministic random weights for a DAIN of the given "
        "width. Width 1 with seed 0 is the golden test checkpoint. The pictures it makes are "
        "meaningless blurs: use it for tests, benchmarks and engine builds only.",
    )
    i.add_argument("--width", type=A.float_range(0, 1, lo_open=True), default=1.0, metavar="W",
                   help="channel width multiplier in (0, 1]; 1 is the official network (default 1)")
    i.add_argument("--seed", type=A.int_range(0, 2**32 - 1), default=0, metavar="N", help="random seed, 0 <= N < 2**32 (default 0)")
    i.add_argument("-o", "--output", type=A.path, required=True, metavar="PATH",
                   help="checkpoint file to write (missing folders are made)")
    A.add_overwrite(i, "PATH")
    i.set_defaults(func=run_init)


def run_verify(args: argparse.Namespace) -> int:
    from dainrt.base.files import sha256_file
    from dainrt.model.checkpoint import load_checkpoint, verify_state_dict
    from dainrt.model.weights import git_blob_id, sha256_record

    if args.path.is_file():          # else load_checkpoint says what is wrong with the path
        sha256, blob_id = sha256_file(args.path), git_blob_id(args.path)
        print(f"sha256: {sha256}")
        print(f"git blob id: {blob_id}" + (" (the official checkpoint)" if blob_id == OFFICIAL_BLOB_ID else ""))
        record = sha256_record(args.path)
        if record.is_file():
            recorded = (record.read_text().split() or [""])[0]
            if recorded != sha256:
                print(f"dainrt: error: {args.path} has changed since it was downloaded: its SHA-256 is {sha256}, "
                      f"{record.name} records {recorded}", file=sys.stderr)
                return 1
            print(f"sha256 matches {record.name}")
    state_dict, config = load_checkpoint(args.path)
    report = verify_state_dict(state_dict, config)
    for note in report.notes:
        print(f"note: {note}")
    if report.tolerated:
        print(f"note: {len(report.tolerated)} BatchNorm num_batches_tracked counters are absent (unused at inference)")
    if report.ok:
        print(f"OK: {report.param_count} parameters, width {config.width:g}")
        return 0

    print(f"FAILED: {args.path} does not match the DAIN model of width {config.width:g}")
    _print_keys("missing keys", report.missing)
    _print_keys("unexpected keys", report.unexpected)
    _print_keys(
        "mis-shaped keys",
        [f"{k}: expected {list(e)}, got {'not a tensor' if g is None else list(g)}" for k, e, g in report.mismatched],
    )
    print(
        f"dainrt: error: {args.path}: {len(report.missing)} missing, {len(report.unexpected)} unexpected, "
        f"{len(report.mismatched)} mis-shaped keys",
        file=sys.stderr,
    )
    return 1


def _print_keys(title: str, items: list[str]) -> None:
    if not items:
        return
    print(f"{title} ({len(items)}):")
    for item in items[:SHOWN]:
        print(f"  {item}")
    if len(items) > SHOWN:
        print(f"  ... and {len(items) - SHOWN} more")


def run_download(args: argparse.Namespace) -> int:
    from dainrt.model.weights import OFFICIAL_URL, cached_weights_path, download, download_official

    from dainrt.base.outputs import check_outputs

    if args.official:
        if args.output is not None or args.sha256 is not None:
            raise DainrtError("--official goes to the weights cache and is checked by its git blob id: "
                              "drop -o/--sha256 (--blob-id and --mirror may change the source)")
        path = download_official(args.mirror or OFFICIAL_URL, args.blob_id or OFFICIAL_BLOB_ID,
                                 progress=not args.no_progress)
    else:
        if args.mirror is not None:
            raise DainrtError("--mirror goes with --official; with --url the address is the source")
        if args.sha256 is None and args.blob_id is None:
            raise DainrtError("--url needs the file's expected digest: --sha256 HEX or --blob-id HEX")
        if args.output is not None:
            # a named file's folder must exist (the default cache folder is made); whether the file
            # itself may be replaced is decided by download() once it knows the file's digest
            check_outputs([("output", args.output)], overwrite=True, make_folders=True)
        out = args.output if args.output is not None else cached_weights_path()
        try:
            path = download(args.url, args.sha256, out, progress=not args.no_progress, blob_id=args.blob_id,
                            overwrite=args.overwrite)
        except OptionError as err:
            raise (OptionError("output", err.problem) if err.option == "out" else err) from None
    print(path)
    return 0


def run_init(args: argparse.Namespace) -> int:
    from dainrt.model.checkpoint import save_checkpoint, synthetic_state_dict, verify_state_dict
    from dainrt.model import ModelConfig

    try:
        config = ModelConfig(args.width)
    except ValueError as err:
        raise DainrtError(f"--width: {err}") from None
    if not 0 <= args.seed < 2**32:
        raise DainrtError(f"--seed must be in [0, 2**32), got {args.seed}")
    from dainrt.base.outputs import check_outputs

    check_outputs([("output", args.output)], overwrite=args.overwrite, make_folders=True)
    state_dict = synthetic_state_dict(config, seed=args.seed)
    path = save_checkpoint(state_dict, config, args.output)
    count = verify_state_dict(state_dict, config).param_count
    print(f"{path}: {count} parameters, width {config.width:g}, seed {args.seed} (random weights)")
    return 0
