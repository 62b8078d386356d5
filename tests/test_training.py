"""Training: the clip generator, the training loop, the bundled model and `dainrt eval`."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dainrt.training import synthetic as S
from dainrt.training.evaluate import find_sequences, psnr, ssim
from dainrt.training.train import (FlowLevels, TrainConfig, center_features, charbonnier, displacement_target,
                                   VAL_SEED_OFFSET, feature_loss, pwc_flow, start_as_warped_blend, train,
                                   score, sprite_edges, training_settings, validate, validation_sets)

MIDDLEBURY = Path(__file__).parent / "data" / "middlebury"
CARD = Path(__file__).resolve().parents[1] / "model" / "data" / "MODEL_CARD.md"


@pytest.fixture(autouse=True)
def _grad_on_one_thread():
    """conftest turns autograd off for every test; training needs it. One thread: these small
    ops run several times slower with two OpenMP threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.enable_grad():
        yield
    torch.set_num_threads(threads)


def _texture(h=96, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(1, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bicubic", align_corners=False)
    return (0.5 * smooth[0] + 0.5 * torch.rand(3, h, w, generator=g)).clamp(0, 1)


# ----------------------------------------------------------------------------------------------
# Generator


def test_clip_shapes_and_ranges():
    clips = S.SyntheticClips((64, 128), seed=3, images=[])
    c = clips[0]
    for name in ("frame0", "frame1", "frame_t"):
        x = getattr(c, name)
        assert x.shape == (3, 64, 128) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert c.flow01.shape == c.flow10.shape == (2, 64, 128)
    assert c.depth0.shape == c.depth1.shape == (1, 64, 128)
    assert 0.0 < c.t < 1.0
    batch = S.collate([clips[i] for i in range(3)])
    assert batch.frame0.shape == (3, 3, 64, 128) and batch.t.shape == (3,)


def test_clips_are_deterministic_and_varied():
    a = S.SyntheticClips(64, seed=5, images=[])
    b = S.SyntheticClips(64, seed=5, images=[])
    for i in (0, 7):
        for x, y in zip(a[i], b[i]):
            assert torch.equal(torch.as_tensor(x), torch.as_tensor(y))
    assert not torch.equal(a[0].frame0, a[1].frame0)
    assert not torch.equal(a[0].frame0, S.SyntheticClips(64, seed=6, images=[])[0].frame0)
    # over a few clips: real motion, sometimes large, and the middle time is common
    clips = [a[i] for i in range(24)]
    peak = [float(c.flow01.norm(dim=0).max()) for c in clips]
    assert max(peak) > 10 and sum(p > 0.05 for p in peak) >= 18
    assert sum(c.t == 0.5 for c in clips) >= 8


def test_pictures_are_loaded_and_used(tmp_path):
    from PIL import Image

    picture = (_texture(200, 240, seed=1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(picture).save(tmp_path / "photo.png")
    Image.fromarray(picture).save(tmp_path / "motorcycle_left.png")      # Middlebury: skipped
    Image.fromarray(picture[:50, :50]).save(tmp_path / "tiny.png")         # too small: skipped
    (tmp_path / "notes.txt").write_text("not a picture")
    images = S.load_images([tmp_path])
    assert len(images) == 1 and images[0].shape == (3, 200, 240) and images[0].dtype == torch.uint8
    with_photo = S.SyntheticClips(64, seed=0, images=images)
    without = S.SyntheticClips(64, seed=0, images=[])
    assert any(not torch.equal(with_photo[i].frame0, without[i].frame0) for i in range(4))


def test_translating_layer_middle_frame_is_the_shifted_texture():
    """One opaque layer moving (+6, -4) px: the frame at t=0.5 is frame 0 moved (+3, -2) px."""
    tex = _texture()
    scene = S.Scene(48, 64, [S.Layer(tex, None, 100.0, S.Pose(30.0, 20.0), S.Pose(36.0, 16.0))])
    f0, _ = S.render(scene, 0.0)
    fm, _ = S.render(scene, 0.5)
    f1, _ = S.render(scene, 1.0)
    # frame_t(x, y) = frame0(x - 3, y + 2); frame1(x, y) = frame0(x - 6, y + 4)
    assert torch.allclose(fm[:, 2:-4, 6:], f0[:, 4:-2, 3:-3], atol=1e-5)
    assert torch.allclose(f1[:, 0:-4, 6:], f0[:, 4:, 0:-6], atol=1e-5)
    flow = S.flow(scene, 0.0, 1.0)
    assert torch.allclose(flow[0], torch.full_like(flow[0], 6.0), atol=1e-4)
    assert torch.allclose(flow[1], torch.full_like(flow[1], -4.0), atol=1e-4)
    assert torch.allclose(S.flow(scene, 1.0, 0.0), -flow, atol=1e-4)


def test_sprite_motion_flow_and_depth_agree_with_rendering():
    """A rotating, scaling sprite over a still background: sampling frame 1 along the true flow
    gives frame 0 back inside the sprite; flow is zero and depth far on the background."""
    bg = S.Layer(_texture(seed=2), None, 100.0, S.Pose(32.0, 32.0), S.Pose(32.0, 32.0))
    alpha = torch.ones(1, 40, 40)
    sprite = S.Layer(_texture(40, 40, seed=3), alpha, 5.0, S.Pose(30.0, 30.0, 0.0, 1.0), S.Pose(34.5, 27.0, 0.2, 1.1))
    scene = S.Scene(64, 64, [bg, sprite])
    f0, d0 = S.render(scene, 0.0)
    f1, _ = S.render(scene, 1.0)
    flow = S.flow(scene, 0.0, 1.0)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    grid = torch.stack(((xs + flow[0] + 0.5) / 32 - 1, (ys + flow[1] + 0.5) / 32 - 1), -1)[None]
    back = F.grid_sample(f1[None], grid, mode="bilinear", align_corners=False)[0]
    inner = (slice(None), slice(22, 38), slice(22, 38))        # well inside the sprite
    assert float((back - f0)[inner].abs().mean()) < 0.02
    assert float(d0[0, 30, 30]) == pytest.approx(5.0) and float(d0[0, 2, 2]) == pytest.approx(100.0)
    assert float(flow[:, 2, 2].abs().max()) < 1e-5
    assert 3.0 < float(flow[:, 30, 30].norm()) < 8.0


def test_flat_layers_have_one_colour_each():
    clips = S.SyntheticClips(64, seed=4, images=[], settings=S.ClipSettings(flat_chance=1.0))
    for i in range(4):
        scene, _ = clips.scene(i)
        for layer in scene.layers:
            assert float(layer.texture.flatten(1).std(1).max()) == 0.0
    some = S.SyntheticClips(64, seed=4, images=[], settings=S.ClipSettings(flat_chance=0.3))
    flat = [float(layer.texture.flatten(1).std(1).max()) == 0.0 for i in range(12) for layer in some.scene(i)[0].layers]
    assert 0.1 < sum(flat) / len(flat) < 0.6


def test_motion_blur_smears_along_the_motion_only():
    """A layer moving 12 px to the right, exposed for half the interval: the frame is the mean of
    renders across 6 px of motion. Stripes across the motion are smeared, stripes along it kept."""
    def moving(tex):
        return S.Scene(48, 64, [S.Layer(tex, None, 100.0, S.Pose(32.0, 24.0), S.Pose(44.0, 24.0))])

    scene = moving(_texture(seed=4))
    blurred = S.exposed(scene, 0.5, 0.5, 4)
    renders = [S.render(scene, u)[0] for u in (0.25, 0.25 + 1 / 6, 0.25 + 2 / 6, 0.75)]
    assert torch.allclose(blurred, torch.stack(renders).mean(0), atol=1e-6)
    wave = 0.5 + 0.4 * torch.sin(torch.arange(96.0) * 2 * math.pi / 8)          # period 8 px
    across, along = moving(wave.expand(3, 96, 96).clone()), moving(wave.view(96, 1).expand(3, 96, 96).clone())
    contrast = lambda x: float(x[:, 8:-8, 8:-8].std())
    assert contrast(S.exposed(across, 0.5, 0.5, 7)) < 0.3 * contrast(S.render(across, 0.5)[0])
    assert torch.allclose(S.exposed(along, 0.5, 0.5, 7), S.render(along, 0.5)[0], atol=1e-5)


def test_clips_with_a_shutter_blur_the_frames_and_keep_the_truth():
    sharp = S.SyntheticClips(64, seed=8, images=[], settings=S.ClipSettings(max_motion=32))
    blurry = S.SyntheticClips(64, seed=8, images=[], settings=S.ClipSettings(max_motion=32, shutter=0.3))
    assert all(sharp.exposures(i) == (0.0, 0.0, 0.0) for i in range(8))
    exposures = [blurry.exposures(i) for i in range(8)]
    assert exposures == [blurry.exposures(i) for i in range(8)]           # seeded
    assert all(0.0 <= e <= 0.3 for es in exposures for e in es) and max(map(max, exposures)) > 0.2
    for i in range(8):
        a, b = sharp[i], blurry[i]
        assert torch.equal(a.flow01, b.flow01) and torch.equal(a.depth0, b.depth0) and a.t == b.t
        assert torch.equal(a.layers0, b.layers0)
        moving = float(a.flow01.norm(dim=0).max()) > 2 and blurry.exposures(i)[0] > 0.05
        assert (not torch.equal(a.frame0, b.frame0)) == moving or not moving


# ----------------------------------------------------------------------------------------------
# Training


def test_warped_blend_start_and_a_few_steps_reduce_the_loss():
    from dainrt.model import DAIN, ModelConfig

    torch.manual_seed(0)
    model = start_as_warped_blend(DAIN(ModelConfig(0.25)))
    clips = S.collate([S.SyntheticClips(64, seed=1, images=[], t=0.5)[i] for i in range(2)])
    model.eval()
    with torch.no_grad():
        rectify_input, blend = model.stages().warp(*_warp_inputs(model, clips))
        out = model.stages().rectify(rectify_input, blend)
        assert torch.equal(out, blend)                                  # rectify starts at zero
        assert float(model.depthNet(clips.frame0).abs().max()) == 0.0    # equal depth weights

    # a few supervised flow steps on these clips (the `flow` phase's loss) reduce the loss
    levels = FlowLevels(model.flownets)
    opt = torch.optim.Adamax(model.flownets.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        loss = levels.loss(pwc_flow(model, clips.frame0, clips.frame1), clips.flow01)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < losses[0] * 0.9, losses
    # and so do end-to-end steps with the official Charbonnier loss from a rectify net that
    # starts off the blend (from the blend itself a few steps cannot beat it reliably)
    with torch.no_grad():
        model.rectifyNet.block5[0].weight.normal_(0, 0.02)
    model.depthNet.requires_grad_(False).eval()
    model.flownets.requires_grad_(False)
    opt = torch.optim.Adamax([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    losses = []
    for _ in range(6):
        loss = charbonnier(model(clips.frame0, clips.frame1, clips.t), clips.frame_t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-2:]) < losses[0] * 0.9, losses


def test_robust_flow_loss_keeps_a_few_huge_errors_from_outweighing_the_rest():
    """One 4x4 block of a 16x16 quarter-res flow off by 50 px (a wide pan the net misses), the
    rest off by 1 px: in the mean EPE the block is most of the loss; at power 0.4 a small part,
    and the loss is exactly the mean of (error + eps) ** 0.4."""
    from dainrt.model import DAIN, ModelConfig

    model = DAIN(ModelConfig(0.25))
    gt = torch.zeros(1, 2, 64, 64)
    pred = torch.zeros(1, 2, 16, 16)
    pred[:, 0] = 1.0
    pred[:, 0, :4, :4] = 50.0
    block = 16 / 256
    shares = {}
    for power in (1.0, 0.4):
        loss = float(FlowLevels(model.flownets, power).loss(pred, gt))
        huge, small = block * 50.0 ** power, (1 - block) * 1.0 ** power
        if power == 1:
            assert loss == pytest.approx(huge + small, rel=1e-6)
        else:
            assert loss == pytest.approx(block * 50.01**power + (1 - block) * 1.01**power, rel=1e-6)
        shares[power] = huge / (huge + small)
    assert shares[1.0] > 0.75 and shares[0.4] < 0.25, shares


def test_displacement_target_expects_the_flow_and_masks_the_window():
    flow = torch.tensor([[[[0.0, 1.25, -3.5, 4.2]], [[0.0, -0.75, 2.0, 0.0]]]])      # (1,2,1,4) grid px
    target, mask = displacement_target(flow, d=4)
    assert target.shape == (1, 81, 1, 4)
    assert torch.allclose(target.sum(1), torch.ones(1, 1, 4))
    offsets = torch.arange(-4, 5, dtype=torch.float32)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")          # dy is the outer index
    expected = torch.stack(((target * dx.reshape(1, 81, 1, 1)).sum(1), (target * dy.reshape(1, 81, 1, 1)).sum(1)), 1)
    assert torch.allclose(expected[..., :3], flow[..., :3], atol=1e-6)
    assert mask.tolist() == [[[1.0, 1.0, 1.0, 0.0]]]                  # 4.2 px leaves the window
    assert float(target[0, 4 * 9 + 4, 0, 0]) == 1.0                 # zero flow: the centre, one-hot


def test_features_phase_steps_sharpen_the_cost_volume():
    """The `features` phase's loss falls in a few steps, and only the pyramid below level 5 moves."""
    from dainrt.model import DAIN, ModelConfig

    torch.manual_seed(0)
    model = start_as_warped_blend(DAIN(ModelConfig(0.25)))
    clips = S.collate([S.SyntheticClips(64, seed=3, images=[], settings=S.ClipSettings(max_motion=8))[i] for i in range(4)])
    center_features(model.flownets, torch.cat((clips.frame0, clips.frame1)))
    cfg = TrainConfig(out="unused", phase="features")
    from dainrt.training.train import _groups
    groups, frozen = _groups(model, cfg)
    trained = {id(p) for g in groups for p in g["params"]}
    names = [n for n, p in model.flownets.named_parameters() if id(p) in trained]
    assert names and all(re.fullmatch(r"conv[1-4](a|aa|b)\.0\.(weight|bias)", n) for n in names)
    assert len(names) == 4 * 3 * 2 and model.depthNet in frozen
    opt = torch.optim.Adam([p for g in groups for p in g["params"]], lr=1e-3)
    losses = []
    for _ in range(12):
        loss = feature_loss(model.flownets, clips.frame0, clips.frame1, clips.flow01)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < losses[0] * 0.9, losses


def _warp_inputs(model, clips):
    s = model.stages()
    c0, *p0 = s.frame(clips.frame0)
    c1, *p1 = s.frame(clips.frame1)
    flows = s.pair(clips.frame0, clips.frame1, *p0, *p1)
    return clips.frame0, clips.frame1, c0, c1, *flows, clips.t


def test_validation_keeps_the_default_motions_and_adds_a_training_like_and_a_flat_set():
    from dataclasses import replace

    cfg = TrainConfig(out="unused", phase="flow", size=64, max_motion=48, pan_scale=1, wide_pan_chance=1.0,
                      quarter_chance=1.0, flat_chance=0.5, val_clips=4)
    held_out = lambda k, settings: S.SyntheticClips(64, seed=cfg.seed + VAL_SEED_OFFSET + k, images=[], t=0.5,
                                                    settings=settings)
    alone, both = validation_sets(cfg, []), validation_sets(replace(cfg, val_like_training=True), [])
    assert list(validation_sets(replace(cfg, flat_chance=0.0), [])) == ["val"]
    assert list(alone) == ["val", "val_flat"] and list(both) == ["val", "val_train", "val_flat"]
    default, like, flat = both["val"], both["val_train"], both["val_flat"]
    for i in range(4):
        assert default[i].t == like[i].t == flat[i].t == 0.5
        assert torch.equal(alone["val"][i].frame0, default[i].frame0)
        assert torch.equal(alone["val_flat"][i].frame0, flat[i].frame0)
        # the default motions with the training's scene content (here: flat layers)
        assert torch.equal(default[i].frame0, held_out(0, S.ClipSettings(flat_chance=0.5))[i].frame0)
        assert torch.equal(like[i].frame0, held_out(1, training_settings(cfg))[i].frame0)
        assert torch.equal(flat[i].frame0, held_out(2, S.ClipSettings(flat_chance=1.0))[i].frame0)
    # wide pans: the largest validation motion grows with the training's
    largest = lambda clips: max(float(c.flow01.norm(dim=0).max()) for c in clips)
    assert largest(like) > largest(default)
    # the flat set: every layer one colour, so the frame holds as many colours as layers (before noise)
    for i in range(4):
        scene, _ = S.SyntheticClips(64, seed=cfg.seed + VAL_SEED_OFFSET + 2, images=[], t=0.5,
                                    settings=S.ClipSettings(flat_chance=1.0)).scene(i)
        assert all(float(layer.texture.std(dim=(1, 2)).max()) == 0 for layer in scene.layers)


def test_sprite_edges_are_the_band_inside_each_sprite_at_quarter_resolution():
    layers = torch.zeros(1, 1, 64, 64, dtype=torch.int64)
    layers[0, 0, 2:62, 2:42] = 1            # a big sprite: quarter pixels rows 1-14, cols 1-9 wholly on it
    layers[0, 0, 8:24, 48:64] = 2           # a small one at the right border: rows 2-5, cols 12-15
    layers[0, 0, 40:44, 20:24] = -1         # a hole in the big one: quarter pixel (10, 5)
    where = sprite_edges(layers, band=2)[0]
    big = torch.zeros(16, 16, dtype=torch.bool)
    big[1:15, 1:10] = True
    big[10, 5] = False                      # the hole is on no sprite
    inner = torch.zeros_like(big)
    inner[3:13, 3:8] = True                 # more than 2 quarter pixels from the big sprite's edge
    inner[8:13, 3:8] = False                # ... and from the hole's
    assert torch.equal(where[:, :10], big[:, :10] & ~inner[:, :10])
    # the small sprite: all of it lies within 2 of its edge, the frame's border is no edge
    assert where[2:6, 12:16].all() and where[:, 10:12].sum() == 0 and where[:2, 12:].sum() == 0


def test_flat_set_scores_the_flow_on_its_sprites_alone():
    from dainrt.model import DAIN, ModelConfig

    torch.manual_seed(0)
    model = start_as_warped_blend(DAIN(ModelConfig(0.25)))
    flat = S.SyntheticClips(64, seed=3, images=[], t=0.5, settings=S.ClipSettings(flat_chance=1.0))
    clips = [flat[i] for i in range(6)]
    everywhere, sprites = (validate(model, clips, torch.device("cpu"), batch=4, output=False, sprites_only=s)["val_epe"]
                           for s in (False, True))
    c = S.collate(clips)
    with torch.no_grad():
        error = (pwc_flow(model.eval(), c.frame0, c.frame1) - F.avg_pool2d(c.flow01, 4)).norm(dim=1)
    where = sprite_edges(c.layers0)
    assert 0 < where.sum() < where.numel()
    assert sprites == pytest.approx(float(error[where].mean()), rel=1e-5)       # pooled over the set's sprite edges
    assert everywhere == pytest.approx(float(error.mean()), rel=1e-5)
    assert sprites != pytest.approx(everywhere, rel=1e-3)


def test_score_is_the_smallest_gain_over_the_start():
    start = {"val_epe": 2.0, "val_train_epe": 10.0}
    # EPE 2 -> 1.8 (10 % better) and 10 -> 8 (20 % better): the smaller gain, 10 %
    assert score({"val_epe": 1.8, "val_train_epe": 8.0}, "flow", start) == pytest.approx(0.1)
    # a large gain on the wide pans cannot hide a loss on the default motions
    assert score({"val_epe": 2.2, "val_train_epe": 5.0}, "flow", start) == pytest.approx(-0.1)
    assert score({"val_epe": 2.2, "val_train_epe": 5.0}, "flow", start) < score({"val_epe": 2.0, "val_train_epe": 9.9}, "flow", start)
    # three sets: a flat sprite's flow 5 % longer in error cannot hide behind gains on the other two
    three = {**start, "val_flat_epe": 1.0}
    assert score({"val_epe": 1.8, "val_train_epe": 8.0, "val_flat_epe": 1.05}, "flow", three) == pytest.approx(-0.05)
    assert score({"val_epe": 1.9, "val_train_epe": 8.0, "val_flat_epe": 0.8}, "flow", three) == pytest.approx(0.05)
    # a depth net that starts ordering nothing right: finite, and still the smaller gain
    zero = {"val_depth_order": 0.0, "val_train_depth_order": 0.5}
    assert score({"val_depth_order": 0.2, "val_train_depth_order": 0.4}, "depth", zero) == pytest.approx(-0.2)
    # one set: the phase's metric itself
    assert score({"val_epe": 1.5}, "flow") == -1.5
    assert score({"val_psnr": 30.0, "val_train_psnr": 33.0}, "full", {"val_psnr": 30.0, "val_train_psnr": 30.0}) == 0.0


def test_train_writes_checkpoints_and_resumes(tmp_path):
    from PIL import Image
    from dainrt.model.checkpoint import load_model

    (tmp_path / "pictures").mkdir()
    picture = (_texture(200, 200, seed=2) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(picture).save(tmp_path / "pictures" / "photo.png")
    cfg = TrainConfig(out=str(tmp_path / "run"), phase="flow", width=0.25, size=64, batch=2, steps=2,
                      val_clips=2, val_every=2, log_every=1, images=[str(tmp_path / "pictures")])
    lines = []
    first = train(cfg, log=lines.append)
    assert math.isfinite(first["val_epe"]) and "val_psnr" not in first      # the flow net's scores alone
    for name in ("last.pth", "best.pth", "best-fp16.pth", "log.jsonl"):
        assert (tmp_path / "run" / name).is_file()
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert state["step"] == 2
    # resuming takes the recipe from the state, its texture pictures included
    train(TrainConfig(out=cfg.out, steps=3, images=None), resume=True, log=lines.append)
    assert torch.load(tmp_path / "run" / "last.pth", weights_only=True)["step"] == 3
    starts = [line for line in lines if line.startswith("dainrt train: phase")]
    assert "step 0 of 2" in starts[0] and "step 2 of 3" in starts[1]
    assert all("phase flow, width 0.25," in line and " 1 pictures for textures" in line for line in starts)
    half = load_model(tmp_path / "run" / "best-fp16.pth")
    assert next(half.parameters()).dtype == torch.float32 and half.config.width == 0.25


def test_multi_set_run_measures_its_start_and_keeps_it_across_a_resume(tmp_path):
    import json

    cfg = TrainConfig(out=str(tmp_path / "run"), phase="full", width=0.25, size=64, batch=2, steps=2, val_clips=2,
                      val_every=1, log_every=1, val_like_training=True, flat_chance=0.5, max_motion=24, pan_scale=1,
                      images=[])
    metrics = train(cfg, log=lambda line: None)
    assert {"val_psnr", "val_blend_psnr", "val_train_psnr", "val_train_epe", "val_flat_psnr", "val_flat_epe"} <= set(metrics)
    train(TrainConfig(out=cfg.out, steps=3), resume=True, log=lambda line: None)
    log = tmp_path / "run" / "log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    starts = [r for r in records if r.get("reference")]
    assert len(starts) == 1 and starts[0]["step"] == 0          # measured once, kept in the state
    reference = {k: v for k, v in starts[0].items() if k.startswith("val")}
    assert torch.load(tmp_path / "run" / "last.pth", weights_only=True)["reference"] == reference
    scored = [r for r in records if "best_score" in r]
    assert [r["step"] for r in scored] == [1, 2, 3]
    assert scored[-1]["best_score"] == pytest.approx(max(score(r, "full", reference) for r in scored))
    # a state saved before the flat set existed: its reference lacks it, so the resume measures a new one
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    state["reference"] = {k: v for k, v in state["reference"].items() if not k.startswith("val_flat")}
    torch.save(state, tmp_path / "run" / "last.pth")
    train(TrainConfig(out=cfg.out, steps=4), resume=True, log=lambda line: None)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    starts = [r for r in records if r.get("reference")]
    assert [r["step"] for r in starts] == [0, 3] and "val_flat_epe" in starts[1]
    assert torch.load(tmp_path / "run" / "last.pth", weights_only=True)["step"] == 4


# ----------------------------------------------------------------------------------------------
# Evaluation and the bundled model


def test_blend_baseline_matches_the_data_readme():
    from dainrt.base.images import read_image

    expected = {"RubberWhale": 38.48, "Dimetrodon": 32.54, "Venus": 25.06}
    for d in find_sequences(MIDDLEBURY):
        f0, f1, gt = (read_image(d / f) for f in ("frame10.png", "frame11.png", "frame10i11.png"))
        blend = ((f0.astype(np.uint16) + f1 + 1) // 2).astype(np.uint8)
        assert psnr(blend, gt) == pytest.approx(expected[d.name], abs=0.005)
    assert ssim(gt, gt) == pytest.approx(1.0)


def test_bundled_weights_load_and_verify(capsys):
    from dainrt.model.checkpoint import load_checkpoint, load_model, verify_state_dict
    from dainrt.model.weights import default_weights

    path = default_weights()
    assert path is not None and path.stat().st_size <= 25 * 2**20
    state_dict, config = load_checkpoint(path)
    report = verify_state_dict(state_dict, config)
    assert report.ok, report.summary()
    assert config.width == 0.5 and f"width {config.width}" in CARD.read_text()
    model = load_model(path)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


def test_bundled_model_is_the_fallback_and_says_so(monkeypatch, tmp_path, capsys):
    from dainrt.model.weights import default_weights, resolve_weights

    for var in ("DAINRT_WEIGHTS", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path / "empty-cache"))
    assert resolve_weights(None) == default_weights()
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "bundled default model" in err


def test_eval_command_prints_the_documented_number(capsys, monkeypatch, tmp_path):
    from dainrt.cli import main

    documented = re.search(r"^\| RubberWhale \| ([\d.]+) \| ([\d.]+) \|", CARD.read_text(), re.M)
    assert documented, "MODEL_CARD.md has no RubberWhale row"
    monkeypatch.delenv("DAINRT_WEIGHTS", raising=False)
    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path / "empty-cache"))
    assert main(["eval", str(MIDDLEBURY / "RubberWhale")]) == 0
    out = capsys.readouterr().out
    row = re.search(r"^RubberWhale\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert row, out
    assert float(row.group(1)) == pytest.approx(float(documented.group(1)), abs=0.01)
    assert float(row.group(2)) == pytest.approx(float(documented.group(2)), abs=1e-4)
    assert float(row.group(3)) == pytest.approx(38.48, abs=0.005)
    # minterpolate in yuv444p through PyAV (39.70 dB; the card's 37.69 is ffmpeg 5.1 in yuv420p)
    assert float(row.group(5)) == pytest.approx(39.70, abs=0.05)
