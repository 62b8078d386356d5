"""`dainrt train OUTDIR`: train (or fine-tune, or resume) a DAIN on procedural clips."""
from __future__ import annotations

import argparse

from . import _args as A

OUTPUTS = ("last.pth", "best.pth", "best-fp16.pth", "log.jsonl")   # what `train` writes into OUTDIR


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a DAIN on generated clips (seeded, resumable)",
        description="Train a DAIN of the given width on procedurally generated clips with exact "
        "in-between frames (no data sets needed). A new model goes through four phases: 'features' "
        "trains the optical-flow net's feature pyramid so its cost volumes pick the true motion, 'flow' "
        "the optical-flow net against the generator's true motion, 'depth' the depth net against the "
        "generator's layers (nearer layers get smaller log-depth, so they win where projected motions "
        "collide; scored by depth-order accuracy), 'full' the whole network end to end "
        "with the official Charbonnier loss (each phase starting with --init from the last one's "
        "best.pth). OUTDIR gets last.pth (resumable state), best.pth, best-fp16.pth (best by the "
        "phase's validation score on held-out generated clips, loadable with --weights) and "
        "log.jsonl. Uses CUDA when present.",
    )
    p.add_argument("out", type=A.path, metavar="OUTDIR", help="folder for checkpoints and the log")
    p.add_argument("--phase", choices=("features", "flow", "depth", "full"), default="full", help="what to train (default full)")
    p.add_argument("--width", type=A.float_range(0, 1, lo_open=True), default=0.5, help="channel width multiplier of a new model (default 0.5)")
    p.add_argument("--init", type=A.existing_file, metavar="CKPT", help="start from these weights instead of a new model")
    p.add_argument("--resume", action="store_true", help="continue from OUTDIR/last.pth if it exists")
    A.add_overwrite(p, "a training already in OUTDIR (last.pth, best.pth, best-fp16.pth, log.jsonl) with a new one")
    p.add_argument("--steps", type=A.int_range(1), default=1000, help="total optimizer steps (default 1000)")
    p.add_argument("--max-minutes", type=A.float_range(0, lo_open=True), metavar="M", help="stop (and save) after M minutes of this run")
    p.add_argument("--size", type=A.int_range(64, 4096), default=128, help="crop side, a multiple of 64 (default 128)")
    p.add_argument("--batch", type=A.int_range(1), default=4, help="clips per step (default 4)")
    p.add_argument("--lr", type=A.float_range(0, lo_open=True), default=5e-4,
                   help="learning rate (Adam for features/flow, Adamax for full; default 5e-4, official)")
    p.add_argument("--flow-lr-mult", type=A.float_range(0), default=0.01, help="flow net lr multiplier, 0 freezes (default 0.01)")
    p.add_argument("--depth-lr-mult", type=A.float_range(0), default=0.001, help="depth net lr multiplier, 0 freezes (default 0.001)")
    p.add_argument("--flow-loss", type=A.float_range(0), default=0.0, help="full phase: weight of the supervised flow loss (default 0)")
    p.add_argument("--flow-loss-power", type=A.float_range(0, 1, lo_open=True), default=1.0, metavar="Q",
                   help="flow losses count each pixel's end-point error to the power Q (default 1: mean error; "
                        "0.4, PWC-Net's robust loss, keeps a few huge errors from outweighing the small motions)")
    p.add_argument("--max-motion", type=A.float_range(0, lo_open=True), default=40.0, metavar="PX",
                   help="largest layer motion in the training clips, pixels (default 40; validation keeps 40; --val-like-training adds a set that does not)")
    p.add_argument("--pan-scale", type=A.float_range(0), default=0.5, metavar="X",
                   help="camera pans up to X times --max-motion (default 0.5; 1 for large pans)")
    p.add_argument("--wide-pan-chance", type=A.float_range(0, 1), default=0.0, metavar="P",
                   help="share of camera pans drawn between half and all of the largest pan (default 0: "
                        "log-uniform, where pans near the largest are rare)")
    p.add_argument("--perspective", action="store_true",
                   help="sprite depth follows sprite size (nearer = larger), a cue the depth net can learn besides occlusion")
    p.add_argument("--defocus", type=A.float_range(0), default=0.0, metavar="PX",
                   help="depth of field: layers behind the nearest one blurred, the farthest by a Gaussian of std up to PX "
                        "pixels (default 0: all sharp), a cue the depth net can learn")
    p.add_argument("--centred", action="store_true",
                   help="place sprites so they are on screen half-way through their motion (large motions)")
    p.add_argument("--quarter-chance", type=A.float_range(0, 1), default=0.0, metavar="P",
                   help="share of clips at t = 0.25 / 0.5 / 0.75, as in x4 interpolation (default 0)")
    p.add_argument("--flicker-chance", type=A.float_range(0, 1), default=0.3, metavar="P",
                   help="share of clips with brightness flicker between the frames (default 0.3)")
    p.add_argument("--flat-chance", type=A.float_range(0, 1), default=0.0, metavar="P",
                   help="share of layers of one flat colour, as a cut-out puppet on a plain backdrop whose motion only "
                        "its edges show (default 0); above 0 the run also validates on all-flat clips, scoring the "
                        "flow inside the sprites' edges, and keeps a checkpoint by the set it improved least")
    p.add_argument("--shutter", type=A.float_range(0, 1), default=0.0, metavar="E",
                   help="motion blur: each frame exposed for up to E of the time between the two input frames, "
                        "as a camera blurs a pan (default 0: sharp)")
    p.add_argument("--ordinal-loss", type=A.float_range(0), default=1.0, metavar="W",
                   help="depth phase: weight of the pairwise depth-order hinge next to the scale-invariant loss (default 1)")
    p.add_argument("--val-clips", type=A.int_range(1), default=16, metavar="N", help="held-out generated validation clips (default 16)")
    p.add_argument("--val-like-training", action="store_true",
                   help="validate also on clips drawn like the training clips (motions, pans, x4 gaps, flicker), not "
                        "only on the default motions, and keep the checkpoint whose smallest gain of the sets "
                        "over the start is largest: for a run that learns motions the default clips do not hold")
    p.add_argument("--images", type=A.existing_folder, nargs="+", metavar="DIR",
                   help="folders of pictures used as textures (default: sample pictures of installed packages)")
    p.add_argument("--seed", type=A.int_range(0, 2**32 - 1), default=0, help="random seed (default 0)")
    p.add_argument("--val-every", type=A.int_range(1), default=200, help="validate every N steps (default 200)")
    p.add_argument("--save-every", type=A.int_range(1), default=50, help="save the resumable state every N steps (default 50)")
    p.add_argument("--device", type=A.text, default="auto", help="auto (default: cuda if present), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=A.int_range(1), metavar="N",
                   help="CPU threads for training (default: torch's; 1 is much faster on a busy shared machine)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from dainrt.base.errors import DainrtError
    from dainrt.base.outputs import check_outputs
    from dainrt.training.train import TrainConfig, train

    out = args.out
    if out.exists() and not out.is_dir():
        raise DainrtError(f"OUTDIR {out} is a file; give a folder for the checkpoints and the log")
    if args.device != "auto":
        from dainrt.engine.backend import resolve_device

        resolve_device(args.device)
    files = [out / name for name in OUTPUTS]
    resuming = args.resume and (out / "last.pth").is_file()
    if out.is_dir():
        # Continuing with --resume rewrites this training's own files; anything else is a new
        # training that replaces an old one only with -y. --init is never one of the outputs.
        found = [f.name for f in files if f.exists()]
        if found and not (args.overwrite or resuming):
            raise DainrtError(f"{out} holds a training ({', '.join(found)}): add --resume to continue it, "
                              f"or -y/--overwrite to start a new one over it")
        check_outputs([(None, f) for f in files], [args.init], True)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = TrainConfig(
        out=str(args.out), phase=args.phase, width=args.width, size=args.size, batch=args.batch, steps=args.steps,
        lr=args.lr, flow_lr_mult=args.flow_lr_mult, depth_lr_mult=args.depth_lr_mult, flow_loss=args.flow_loss,
        flow_loss_power=args.flow_loss_power, max_motion=args.max_motion,
        pan_scale=args.pan_scale, centred=args.centred, quarter_chance=args.quarter_chance, wide_pan_chance=args.wide_pan_chance, perspective=args.perspective, defocus=args.defocus,
        flicker_chance=args.flicker_chance, flat_chance=args.flat_chance, shutter=args.shutter, ordinal_loss=args.ordinal_loss, val_clips=args.val_clips,
        val_like_training=args.val_like_training,
        seed=args.seed, init=None if args.init is None else str(args.init),
        images=None if args.images is None else [str(d) for d in args.images], val_every=args.val_every,
        save_every=args.save_every, max_minutes=args.max_minutes, device=args.device,
    )
    if not resuming and args.overwrite:
        (out / "log.jsonl").unlink(missing_ok=True)     # a new training starts a new log
    metrics = train(cfg, resume=args.resume, log=lambda line: print(line, flush=True), progress=True)
    if "val_depth_order" in metrics:
        print(f"last validation: depth order {100 * metrics['val_depth_order']:.1f} % of "
              f"{metrics['val_depth_pairs']:.0f} layer pairs; best.pth is the best by it")
        return 0
    output = f"PSNR {metrics['val_psnr']:.2f} dB (blend {metrics['val_blend_psnr']:.2f}), " if "val_psnr" in metrics else ""
    print(f"last validation: {output}flow EPE {metrics['val_epe']:.3f} px; best.pth is the best by the phase's score")
    return 0
