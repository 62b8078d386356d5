"""Depth supervision: the generator's layer truth, the depth-order metric, the `depth` phase."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dainrt.training import synthetic as S
from dainrt.training.train import (TrainConfig, _groups, depth_loss, depth_order_accuracy, layer_means,
                                  recalibrate_batchnorm, train)


@pytest.fixture(autouse=True)
def _grad_on_one_thread():
    """conftest turns autograd off for every test; training needs it. One thread (busy 2-core CI)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.enable_grad():
        yield
    torch.set_num_threads(threads)


def _texture(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bicubic").clamp(0, 1)[0]


def _two_layer_clip():
    """A 64x64 background (depth 100) and a 24x24 opaque square (depth 5) moving 8 px right."""
    bg = S.Layer(_texture(64, 64, 0), None, 100.0, S.Pose(32.0, 32.0), S.Pose(32.0, 32.0))
    square = S.Layer(_texture(24, 24, 1), torch.ones(1, 24, 24), 5.0, S.Pose(24.0, 30.0), S.Pose(32.0, 30.0))
    return S.Scene(64, 64, [bg, square])


def test_layer_truth_of_a_hand_made_two_layer_clip():
    scene = _two_layer_clip()
    image, depth, truth = S.render_layers(scene, 0.0)
    assert torch.equal(image, S.render(scene, 0.0)[0])
    index = truth.index[0]
    assert index.dtype == torch.long and index.shape == (64, 64)
    assert int(index[30, 24]) == 1 and int(index[2, 2]) == 0          # square centre, background
    assert int(index[30, 12]) == -1                                   # the square's soft left edge
    assert ((index == 1).sum() - 23 * 23).abs() <= 2 * 24              # about the square's area
    assert truth.overlap.tolist() == [[False, True], [True, False]]


def test_depth_order_metric_on_a_hand_made_two_layer_clip():
    """Right when the square (near) gets the smaller log-depth, wrong when inverted or constant."""
    scene = _two_layer_clip()
    _, depth, truth = S.render_layers(scene, 0.0)
    index, overlap = truth.index[None], truth.overlap[None]
    layer_depth = torch.tensor([[100.0, 5.0]])
    log_true = torch.log(depth)[None]                                  # (1,1,H,W)
    assert depth_order_accuracy(log_true, index, layer_depth, overlap) == (1, 1)
    assert depth_order_accuracy(-log_true, index, layer_depth, overlap) == (0, 1)
    assert depth_order_accuracy(torch.zeros_like(log_true), index, layer_depth, overlap) == (0, 1)
    # noisy but right on average still counts; layers under `min_pixels` do not
    noisy = log_true + 0.5 * torch.randn(log_true.shape, generator=torch.Generator().manual_seed(0))
    assert depth_order_accuracy(noisy, index, layer_depth, overlap) == (1, 1)
    assert depth_order_accuracy(log_true, index, layer_depth, overlap, min_pixels=10_000) == (0, 0)
    # no overlap, no pair
    assert depth_order_accuracy(log_true, index, layer_depth, torch.zeros_like(overlap)) == (0, 0)
    means, counts = layer_means(log_true, index, 2)
    assert means[0].tolist() == pytest.approx([math.log(100.0), math.log(5.0)], abs=0.02)   # solid = alpha >= 0.98
    assert int(counts[0, 1]) == int((index == 1).sum())


def test_depth_loss_prefers_the_true_order_and_ignores_an_offset():
    scene = _two_layer_clip()
    _, depth, truth = S.render_layers(scene, 1.0)
    index, overlap = truth.index[None], truth.overlap[None]
    layer_depth = torch.tensor([[100.0, 5.0]])
    log_true = torch.log(depth)[None]
    right = depth_loss(log_true, index, layer_depth, overlap)
    assert float(right) == pytest.approx(0.0, abs=1e-4)
    assert float(depth_loss(log_true + 3.0, index, layer_depth, overlap)) < 0.2 * 9      # offset mostly forgiven
    assert float(depth_loss(-log_true, index, layer_depth, overlap)) > 1.0
    pred = torch.zeros_like(log_true, requires_grad=True)
    depth_loss(pred, index, layer_depth, overlap).backward()
    g = pred.grad[0, 0]
    assert float(g[index[0, 0] == 1].sum()) > 0 > float(g[index[0, 0] == 0].sum())    # square pushed nearer


def test_generator_large_motion_quarter_gaps_and_layer_fields():
    st = S.ClipSettings(max_motion=80, pan_scale=1.0, centred=True, quarter_chance=1.0)
    clips = S.SyntheticClips(128, seed=1, images=[], settings=st)
    batch = [clips[i] for i in range(12)]
    assert {c.t for c in batch} <= {0.25, 0.5, 0.75} and len({c.t for c in batch}) >= 2
    moves = [math.hypot(layer.end.x - layer.start.x, layer.end.y - layer.start.y)
             for i in range(24) for layer in clips.scene(i)[0].layers]
    assert max(moves) >= 64 and sum(m >= 32 for m in moves) >= 4
    # centred: a sprite is on screen half-way through its motion
    for i in range(24):
        for layer in clips.scene(i)[0].layers[1:]:
            mid = S.pose_at(layer.start, layer.end, 0.5)
            assert 0 <= mid.x <= 128 and 0 <= mid.y <= 128
    c = S.collate(batch[:3])
    assert c.layers0.shape == (3, 1, 128, 128) and c.layers0.dtype == torch.long
    assert c.layer_depth.shape == (3, st.max_sprites + 1) and c.overlap1.shape == (3, 5, 5)
    assert bool((c.layer_depth[:, 0] == 100.0).all())
    # the defaults draw exactly as before the new settings existed
    plain, same = S.SyntheticClips(64, seed=2, images=[])[4], S.SyntheticClips(64, seed=2, images=[], settings=S.ClipSettings(quarter_chance=0.0))[4]
    assert torch.equal(plain.frame_t, same.frame_t) and plain.t == same.t


def test_wide_pans_put_camera_motion_near_the_largest():
    def pans(wide: float) -> list[float]:
        st = S.ClipSettings(max_motion=96, pan_scale=1.25, pan_chance=1.0, wide_pan_chance=wide)
        clips = S.SyntheticClips(128, seed=5, images=[], settings=st)
        out = []
        for i in range(200):
            scene = clips.scene(i)[0]
            bg = scene.layers[0]
            if bg.start != bg.end:       # a held frame moves nothing
                out.append(math.hypot(bg.end.x - bg.start.x, bg.end.y - bg.start.y))
        return out

    plain, wide = pans(0.0), pans(1.0)
    # the log-uniform draw leaves pans above 60 px rare; every wide pan is in [48, 120] px
    # (the background may add its own drift of up to 96 px on 30 % of clips, hence the share)
    assert sum(m > 60 for m in plain) / len(plain) < 0.25
    assert sum(m > 60 for m in wide) / len(wide) > 0.6
    # and a zero share draws exactly as before the setting existed
    same = S.SyntheticClips(64, seed=2, images=[], settings=S.ClipSettings(wide_pan_chance=0.0))[4]
    assert torch.equal(same.frame_t, S.SyntheticClips(64, seed=2, images=[])[4].frame_t)



def test_perspective_makes_nearer_sprites_larger():
    clips = S.SyntheticClips(128, seed=4, images=[], settings=S.ClipSettings(perspective=True))
    agree = pairs = 0
    for i in range(60):
        sprites = [(layer.depth, layer.start.scale * layer.texture.shape[-1]) for layer in clips.scene(i)[0].layers[1:]]
        assert [d for d, _ in sprites] == sorted((d for d, _ in sprites), reverse=True)     # drawn far to near
        assert all(8.0 <= d <= 68.0 for d, _ in sprites)
        for a in range(len(sprites)):
            for b in range(a + 1, len(sprites)):
                pairs += 1
                agree += sprites[b][1] > sprites[a][1]          # the nearer one is the larger one
    # a factor-2 jitter on the depth leaves some pairs the other way round, most the lens's way
    assert pairs >= 60 and 0.75 <= agree / pairs < 1.0

def test_depth_phase_trains_only_the_depth_net_and_scores_depth_order(tmp_path):
    from dainrt.model import DAIN, ModelConfig

    model = DAIN(ModelConfig(0.25))
    groups, frozen = _groups(model, TrainConfig(out="unused", phase="depth"))
    assert [g["name"] for g in groups] == ["depthNet"] and model.flownets in frozen
    cfg = TrainConfig(out=str(tmp_path / "run"), phase="depth", width=0.25, size=64, batch=2, steps=2,
                      val_clips=3, bn_clips=8, val_every=2, log_every=1, images=[], quarter_chance=0.5)
    metrics = train(cfg, log=lambda line: None)
    assert 0.0 <= metrics["val_depth_order"] <= 1.0 and metrics["val_depth_pairs"] >= 1
    assert (tmp_path / "run" / "best.pth").is_file()
    # validation ran the depth net on running statistics measured over generated pictures
    # (`recalibrate_batchnorm`), not a new model's 0 and 1
    from dainrt.model.checkpoint import load_model

    trained = load_model(tmp_path / "run" / "best.pth")
    var = trained.state_dict()["depthNet.1.running_var"]
    assert not torch.equal(var, model.state_dict()["depthNet.1.running_var"]) and float(var.min()) > 0


def test_a_fresh_rectify_net_ignores_depth_so_depth_acts_only_in_the_projection():
    """Without motion no projections collide, so a depth, learned or not, must not change the
    output; it did while the rectify net read log-depth through untrained random weights."""
    from dainrt.model import DAIN, ModelConfig
    from dainrt.training.evaluate import zero_depth
    from dainrt.training.train import start_as_warped_blend

    torch.manual_seed(0)
    model = start_as_warped_blend(DAIN(ModelConfig(0.25))).eval()      # PWC starts at zero flow
    frames = S.SyntheticClips(64, seed=3, images=[])[0]
    with torch.no_grad():
        torch.nn.init.normal_(model.depthNet[-1].weight, std=0.5)      # some depth, far from 0
        torch.nn.init.normal_(model.rectifyNet.block5[0].weight, std=0.01)    # a residual, as once trained
        model.depthNet[-1].bias.fill_(1.0)
        run = lambda m: m(frames.frame0[None], frames.frame1[None], torch.tensor([0.5]))
        learned = run(model)
        assert float(model.depthNet(frames.frame0[None]).std()) > 0.05
        assert torch.allclose(learned, run(zero_depth(model)), atol=1e-5)


def test_depth_phase_from_an_untrained_depth_zeroes_the_rectify_nets_depth_weights(tmp_path):
    from dainrt.model import DAIN, ModelConfig
    from dainrt.model.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = DAIN(ModelConfig(0.25))            # PyTorch's init: random rectify weights everywhere
    ctx = model.config.context_channels
    depth_channels = [model.config.rectify_channels - ctx - 1, model.config.rectify_channels - 1]
    runs = {}
    for name, depth_weight in (("untrained", 0.0), ("trained", 0.01)):
        with torch.no_grad():
            model.depthNet[-1].weight.fill_(depth_weight)
        save_checkpoint(model.state_dict(), model.config, tmp_path / f"{name}.pth")
        cfg = TrainConfig(out=str(tmp_path / name), phase="depth", init=str(tmp_path / f"{name}.pth"), size=64,
                          batch=2, steps=1, val_clips=2, bn_clips=8, val_every=1, log_every=1, images=[])
        train(cfg, log=lambda line: None)
        runs[name] = load_checkpoint(tmp_path / name / "best.pth")[0]
    before = model.state_dict()["rectifyNet.block1.0.weight"]
    untrained, trained = (runs[n]["rectifyNet.block1.0.weight"].float() for n in ("untrained", "trained"))
    others = [c for c in range(before.shape[1]) if c not in depth_channels]
    assert float(before[:, depth_channels].abs().min()) > 0
    assert not untrained[:, depth_channels].any()                      # zeroed ...
    assert torch.allclose(untrained[:, others], before[:, others], atol=1e-3)   # ... and nothing else
    assert torch.allclose(trained, before, atol=1e-3)                   # a trained depth keeps them


def test_recalibrated_batchnorm_matches_the_batch_statistics():
    """After recalibration on a set, inference-mode outputs on it are the batch-statistics ones:
    exactly for one chunk, and closely for several (each chunk's statistics averaged)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8, affine=False), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    images = S.SyntheticClips(32, seed=1, images=[])
    x = torch.stack([images[i].frame0 for i in range(16)]) * 3 + 1      # far from the default 0 / 1
    with torch.no_grad():
        batch_stats = net.train()(x)
        net.eval()
        recalibrate_batchnorm(net, x, chunk=16)
        assert not net[1].training and net[1].momentum == 0.1         # mode and momentum kept
        assert torch.allclose(net.eval()(x), batch_stats, atol=1e-3)
        recalibrate_batchnorm(net, x, chunk=4)
        assert torch.allclose(net.eval()(x), batch_stats, atol=0.25)
        assert (net(x) - batch_stats).abs().mean() < 0.02


def test_defocus_blurs_the_layers_behind_the_nearest_and_keeps_the_sharp_draws():
    sharp = S.SyntheticClips(128, seed=5, images=[], settings=S.ClipSettings(perspective=True))
    blurred = S.SyntheticClips(128, seed=5, images=[], settings=S.ClipSettings(perspective=True, defocus=4.0))
    assert torch.equal(S.SyntheticClips(64, seed=2, images=[])[3].frame0,
                       S.SyntheticClips(64, seed=2, images=[], settings=S.ClipSettings(defocus=0.0))[3].frame0)

    def detail(image, index, k):     # mean |Laplacian| on the pixels that show layer k
        lap = (4 * image[:, 1:-1, 1:-1] - image[:, :-2, 1:-1] - image[:, 2:, 1:-1] - image[:, 1:-1, :-2] - image[:, 1:-1, 2:]).abs().mean(0)
        mask = index[0, 1:-1, 1:-1] == k
        return float(lap[mask].mean()) if int(mask.sum()) > 200 else None

    ratios = []
    for i in range(12):
        a = sharp[i]
        scene_a, t = sharp.scene(i)
        scene_b, t_b = blurred.scene(i)
        assert t == t_b and [l.depth for l in scene_a.layers] == [l.depth for l in scene_b.layers]
        near = len(scene_a.layers) - 1
        assert torch.equal(scene_b.layers[near].texture, scene_a.layers[near].texture)      # in focus
        if near == 0:
            continue
        # on the rendered frames: the inputs' sensor noise would add detail of its own
        bg_sharp, bg_blur = detail(S.render(scene_a, 0.0)[0], a.layers0, 0), detail(S.render(scene_b, 0.0)[0], a.layers0, 0)
        if bg_sharp is not None:
            ratios.append(bg_blur / bg_sharp)
    # the background (depth 100) lost detail in every clip, half of it on average (smooth
    # textures lose less)
    assert len(ratios) >= 5 and max(ratios) < 0.9 and sum(ratios) / len(ratios) < 0.6


def test_depth_check_scores_a_constant_depth_zero_and_its_ablation_equal(tmp_path, small_model):
    """`python -m dainrt.training.depth_check` on a model whose depth is zeroed: no pair ordered
    right in any kind of scene, the same PSNR with and without depth; the model itself (random
    depth) changes the PSNR."""
    import copy
    import json

    from dainrt.model.checkpoint import save_checkpoint
    from dainrt.training.depth_check import main
    from dainrt.training.evaluate import zero_depth

    flat = save_checkpoint(zero_depth(copy.deepcopy(small_model)), None, tmp_path / "flat.pth")
    assert main(["--weights", str(flat), "--clips", "3", "--ablation-clips", "2", "--json", str(tmp_path / "flat.json")]) == 0
    report = json.loads((tmp_path / "flat.json").read_text())
    assert set(report["depth_order"]) == {"sharp", "perspective", "depth of field"}
    for row in report["depth_order"].values():
        assert row["pairs"] >= 3 and row["accuracy"] == 0.0
        assert row["background_pairs"] + row["sprite_pairs"] == row["pairs"]
    for row in report["ablation"].values():
        assert row["clips"] == 2 and row["learned_depth"] == row["zeroed_depth"] and math.isfinite(row["blend"])
    live = save_checkpoint(small_model, None, tmp_path / "live.pth")
    assert main(["--weights", str(live), "--clips", "1", "--ablation-clips", "2", "--json", str(tmp_path / "live.json")]) == 0
    rows = json.loads((tmp_path / "live.json").read_text())["ablation"].values()
    assert any(r["learned_depth"] != r["zeroed_depth"] for r in rows)
