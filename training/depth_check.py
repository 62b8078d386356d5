"""Does the depth net do its job? (issue 12, part 4.) A script, not a test (about 5 min, one thread):

    python -m dainrt.training.depth_check --weights W [--images DIR] [--clips 50] [--json OUT]

1. Depth order: on `--clips` held-out generated clips (128x128, frames 0 and 1 of each), the share
   of overlapping layer pairs whose nearer layer gets the smaller mean log-depth
   (`depth_order_accuracy`), split into sprite-vs-background and sprite-vs-sprite pairs, for
   three kinds of scene: `sharp` (the generator's defaults: every layer in focus, sprite depths
   drawn at random, so occlusion is the only cue), `perspective` (nearer sprites are larger) and
   `depth of field` (perspective, and layers behind the nearest one out of focus, `--defocus 4`).
2. Ablation: mean PSNR (t = 0.5, RGB [0,1]) of the network with its learned depth and with the
   depth zeroed (`zero_depth`: every source pixel weighs alike where projections collide), and of
   the 50/50 blend, on occlusion-heavy generated clips (>= 2 sprites that overlap, >= 8 % of the
   pixels change layer between the frames) of each kind.

The clips come from a seed neither training (0, 1, ...) nor validation (1,000,003) uses. The
real-footage half of the ablation is `dainrt eval ... --zero-depth` (see the model card).
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from dainrt.base.metrics import psnr
from dainrt.model.checkpoint import load_model
from dainrt.training import synthetic as S
from dainrt.training.evaluate import zero_depth
from dainrt.training.train import VAL_SEED_OFFSET, depth_order_accuracy

TEST_SEED = 3 * VAL_SEED_OFFSET
SIZE = 128
KINDS = {
    "sharp": {},
    "perspective": {"perspective": True},
    "depth of field": {"perspective": True, "defocus": 4.0},
}


def depth_order(model, clips: S.SyntheticClips, count: int, chunk: int = 5) -> dict[str, float]:
    """Depth-order accuracy over frames 0 and 1 of clips[0:count]: all pairs, and split."""
    right = pairs = bg_right = bg_pairs = 0
    for i in range(0, count, chunk):
        c = S.collate([clips[j] for j in range(i, min(i + chunk, count))])
        for frames, index, overlap in ((c.frame0, c.layers0, c.overlap0), (c.frame1, c.layers1, c.overlap1)):
            log_depth = model.depthNet(frames)
            r, p = depth_order_accuracy(log_depth, index, c.layer_depth, overlap)
            right, pairs = right + r, pairs + p
            with_background = overlap.clone()
            with_background[:, 1:, 1:] = False          # only the pairs that include layer 0
            r, p = depth_order_accuracy(log_depth, index, c.layer_depth, with_background)
            bg_right, bg_pairs = bg_right + r, bg_pairs + p
    return {"accuracy": right / max(pairs, 1), "pairs": pairs,
            "sprite_vs_background": bg_right / max(bg_pairs, 1), "background_pairs": bg_pairs,
            "sprite_vs_sprite": (right - bg_right) / max(pairs - bg_pairs, 1), "sprite_pairs": pairs - bg_pairs}


def occlusion_clips(images, settings: dict, count: int, tries: int = 400) -> list[S.Clip]:
    """Generated clips where layers hide each other and the hidden parts change."""
    clips = S.SyntheticClips(SIZE, seed=TEST_SEED + 1, images=images, t=0.5,
                             settings=S.ClipSettings(max_motion=40, max_sprites=5, pan_chance=0.3, held_chance=0.0,
                                                     centred=True, **settings))
    chosen = []
    for i in range(tries):
        c = clips[i]
        changed = float(((c.layers0 != c.layers1) & (c.layers0 >= 0) & (c.layers1 >= 0)).float().mean())
        if int((c.layer_depth > 0).sum()) >= 3 and bool(c.overlap0[1:, 1:].any()) and changed >= 0.08:
            chosen.append(c)
            if len(chosen) == count:
                break
    return chosen


def mean_psnr(model, clips: list[S.Clip], chunk: int = 4) -> float:
    values = []
    for i in range(0, len(clips), chunk):
        b = S.collate(clips[i:i + chunk])
        values += [psnr(out, gt) for out, gt in zip(model(b.frame0, b.frame1, b.t).clamp(0, 1), b.frame_t)]
    return sum(values) / len(values)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", required=True, help="dainrt checkpoint")
    p.add_argument("--images", nargs="+", help="texture picture folders (default: the installed packages')")
    p.add_argument("--clips", type=int, default=50, help="held-out clips for the depth order (default 50)")
    p.add_argument("--ablation-clips", type=int, default=24, help="occlusion-heavy clips per kind (default 24)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.weights).eval()
    zeroed = zero_depth(copy.deepcopy(model)).eval()
    images = S.load_images(args.images)
    out = {"weights": args.weights, "clips": args.clips, "size": SIZE, "depth_order": {}, "ablation": {}}
    start = time.monotonic()
    with torch.no_grad():
        print(f"depth order on {args.clips} held-out generated clips ({SIZE}x{SIZE}, frames 0 and 1)")
        print(f"{'scenes':16s} {'all pairs':>16s} {'sprite-background':>18s} {'sprite-sprite':>16s}")
        for kind, settings in KINDS.items():
            r = depth_order(model, S.SyntheticClips(SIZE, seed=TEST_SEED, images=images, settings=S.ClipSettings(**settings)),
                            args.clips)
            out["depth_order"][kind] = r
            print(f"{kind:16s} {100 * r['accuracy']:7.1f} % of {r['pairs']:3d} {100 * r['sprite_vs_background']:9.1f} % of "
                  f"{r['background_pairs']:3d} {100 * r['sprite_vs_sprite']:7.1f} % of {r['sprite_pairs']:3d}", flush=True)
        print(f"\nablation: mean PSNR dB on occlusion-heavy generated clips (t = 0.5)")
        print(f"{'scenes':16s} {'clips':>5s} {'learned depth':>14s} {'depth zeroed':>13s} {'blend':>7s}")
        for kind, settings in KINDS.items():
            clips = occlusion_clips(images, settings, args.ablation_clips)
            b = S.collate(clips)
            r = {"clips": len(clips), "learned_depth": mean_psnr(model, clips), "zeroed_depth": mean_psnr(zeroed, clips),
                 "blend": sum(psnr(x, y) for x, y in zip(0.5 * (b.frame0 + b.frame1), b.frame_t)) / len(clips)}
            out["ablation"][kind] = r
            print(f"{kind:16s} {r['clips']:5d} {r['learned_depth']:14.2f} {r['zeroed_depth']:13.2f} {r['blend']:7.2f}", flush=True)
    out["seconds"] = round(time.monotonic() - start, 1)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
