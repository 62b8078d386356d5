"""Tiling of large frames (engine/tiling.py): the geometry and blending weights, the memory-driven
choice, the motion estimate widening the overlap, per-tile caching, and seams on real frames.

The seam figures run the bundled model on 640x360 frames of the real clips in tests/data
(car-turn whole at its native size; the centre of Big Buck Bunny's 720p frames, native pixels,
cropped for CI time) in 384-px tiles: three tiles across, the full height each, so two vertical
seams per frame.
"""
from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from conftest import DATA
from dainrt import cli
from dainrt.base.errors import OptionError
from dainrt.engine import Runner
from dainrt.engine.memory import estimate_memory
from dainrt.engine.tiling import (DEFAULT_OVERLAP, TileOption, TilePlan, TiledRunner, auto_overlap, axis_starts,
                                  choose_tiles, estimate_motion, memory_budget, parse_tile, plan_memory)
from dainrt.engine.torch_backend import TorchBackend
from dainrt.model import ModelConfig
from dainrt.runtime.transfer import to_tensor

VIDEO = DATA / "video"
MIB = 2**20


def clip_frames(name: str, first: int, count: int = 2) -> list[np.ndarray]:
    with av.open(str(VIDEO / name)) as c:
        out = []
        for i, f in enumerate(c.decode(video=0)):
            if i >= first:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) == count:
                return out
    raise AssertionError(f"{name} has fewer than {first + count} frames")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(0, 1) - b.clamp(0, 1)).double() ** 2).mean())
    return 10 * np.log10(1 / max(mse, 1e-30))


# ------------------------------------------------------------------ geometry and weights

@pytest.mark.parametrize("width,height,tile,overlap", [(640, 360, 256, 128), (1000, 300, 512, 128),
                                                       (3840, 2160, 640, 128), (300, 300, 256, 64)])
def test_tiles_have_one_shape_cover_the_frame_and_weights_sum_to_one(width, height, tile, overlap):
    plan = TilePlan(width, height, tile, tile, overlap)
    th, tw = plan.shape
    total = torch.zeros(height, width)
    for (x, y), w in zip(plan.tiles(), plan.weights()):
        assert w.shape == (1, th, tw) and 0 <= x <= width - tw and 0 <= y <= height - th
        total[y:y + th, x:x + tw] += w[0]
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    for starts, t in ((plan.xs, tw), (plan.ys, th)):
        assert starts[0] == 0 and all(b - a <= t - overlap for a, b in zip(starts, starts[1:]))


def test_weights_are_zero_near_inner_edges_and_full_at_frame_edges():
    plan = TilePlan(640, 256, 384, 384, 128)
    (w0, w1), x1 = plan.weights(), plan.xs[1]
    assert plan.xs == [0, 256] and plan.shape == (256, 384)
    assert float(w0[0, :, -32:].abs().max()) == 0.0       # the outer quarter of the overlap: replicated padding
    assert float(w1[0, :, :32].abs().max()) == 0.0
    assert float(w0[0, :, 0].min()) == 1.0 and float(w1[0, :, -1].min()) == 1.0     # frame edges: no ramp
    ramp = w0[0, 0, x1:]                                   # smooth and monotone across the overlap
    assert bool((ramp[1:] <= ramp[:-1] + 1e-7).all()) and float((ramp[1:] - ramp[:-1]).abs().max()) < 0.03


def test_axis_starts():
    assert axis_starts(500, 800, 128) == [0]
    assert axis_starts(640, 256, 128) == [0, 128, 256, 384]
    with pytest.raises(ValueError):
        axis_starts(640, 128, 128)


@pytest.mark.parametrize("text,overlap,problem", [
    ("abc", None, "--tile must be auto, off or WIDTHxHEIGHT"), ("100", None, "--tile sides must lie in 256"),
    ("256x0", None, "--tile sides must lie in 256"), ("off", 64, "--tile-overlap needs tiles"),
    ("300", 200, "--tile-overlap 200 px is more than half the 300x300 tile"), (None, 8, "--tile-overlap must be"),
])
def test_tile_option_errors_name_the_flag(text, overlap, problem):
    with pytest.raises(OptionError) as err:
        parse_tile(text, overlap)
    assert err.value.as_flag().startswith(problem)
    assert parse_tile("768X512", 96) == TileOption("fixed", (768, 512), 96, quiet=False)
    assert parse_tile(None) == TileOption() and parse_tile("AUTO").mode == "auto"


def test_cli_refuses_tile_combinations_in_one_line(tmp_path, capsys):
    f = DATA / "middlebury" / "RubberWhale"
    for extra in (["--tile", "off", "--tile-overlap", "64"], ["--tile", "300", "--tile-overlap", "200"]):
        code = cli.main(["interpolate", str(f / "frame10.png"), str(f / "frame11.png"), "-o", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("dainrt: error: --tile-overlap"), err
        assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ memory and the auto choice

def test_auto_picks_whole_frames_when_they_fit_and_the_cheapest_fitting_tiles_otherwise():
    config = ModelConfig(1.0)
    whole = estimate_memory(config, 2160, 3840).total
    assert choose_tiles(config, 2160, 3840, whole).whole
    for budget_mb in (6000, 3000, 1500):
        plan = choose_tiles(config, 2160, 3840, budget_mb * MIB)
        assert not plan.whole and plan_memory(config, plan) <= budget_mb * MIB
        bigger = TilePlan(3840, 2160, plan.tile_width + 64, plan.tile_height + 64, plan.overlap, False)
        assert plan_memory(config, bigger) > budget_mb * MIB         # the largest tile that fits
        assert plan.tile_width % 64 == 0 and plan.tile_width >= 256
    # Keeping every tile's frame results costs (count - 1) tiles' caches; a whole-frame cache is
    # about 7 GiB at 4K, so under 6 GB they are not kept, and with room they are.
    assert not choose_tiles(config, 2160, 3840, 6000 * MIB).keep
    assert choose_tiles(config, 720, 1280, 5000 * MIB).keep
    with pytest.raises(OptionError, match="not even 256x256 tiles fit"):
        choose_tiles(config, 2160, 3840, 300 * MIB)
    # ONNX Runtime on the CPU needs about 7x torch's activations: smaller tiles for the same budget.
    torch_plan = choose_tiles(config, 2160, 3840, 6000 * MIB)
    ort_plan = choose_tiles(config, 2160, 3840, 6000 * MIB, backend="onnxruntime")
    assert ort_plan.tile_width * ort_plan.tile_height < torch_plan.tile_width * torch_plan.tile_height
    assert plan_memory(config, ort_plan, backend="onnxruntime") <= 6000 * MIB
    # INT8 on ONNX Runtime holds twice FP32's memory: the bundled width's 720p frame, which fits a
    # 20 GB budget whole in FP32, is tiled in INT8 (planned whole, it was OOM-killed on 24 GB).
    bundled = ModelConfig(0.5)
    assert choose_tiles(bundled, 720, 1280, 20_000 * MIB, backend="onnxruntime").whole
    int8_plan = choose_tiles(bundled, 720, 1280, 20_000 * MIB, backend="onnxruntime", precision="int8")
    assert not int8_plan.whole
    assert plan_memory(bundled, int8_plan, backend="onnxruntime", precision="int8") <= 20_000 * MIB


def test_memory_budget_from_the_environment(monkeypatch):
    monkeypatch.setenv("DAINRT_MEMORY_BUDGET_MB", "6000")
    budget, where = memory_budget("cpu")
    assert where == "DAINRT_MEMORY_BUDGET_MB=6000" and 0 < budget < 6000 * MIB
    monkeypatch.setenv("DAINRT_MEMORY_BUDGET_MB", "lots")
    with pytest.raises(OptionError, match="DAINRT_MEMORY_BUDGET_MB must be a number"):
        memory_budget("cpu")
    monkeypatch.delenv("DAINRT_MEMORY_BUDGET_MB")
    assert memory_budget("cpu")[1] == "available RAM"


# ------------------------------------------------------------------ motion and the overlap

def test_motion_estimate_on_real_frames_and_a_known_shift():
    a, b = (to_tensor(f) for f in clip_frames("davis_car-turn.mp4", 10))
    assert estimate_motion(a, a) == pytest.approx(5.0, abs=5.0)        # still: at most a thumbnail pixel
    assert estimate_motion(a, b) < 32                                  # car-turn: a slow pan, the default covers it
    shift = 48
    moved = estimate_motion(a[:, :, shift:], a[:, :, :-shift])
    assert shift <= moved <= 2 * shift       # errs large: blocks at the edge the content left match poorly
    assert auto_overlap(moved) >= 4 * shift > DEFAULT_OVERLAP


def test_auto_widens_the_overlap_for_a_motion_larger_than_it(small_model, one_thread, capsys):
    """A real frame moved by 48 px, more than the default overlap's 32-px margin: the first still
    pair keeps the default overlap; the moving pair widens it (same tile shape, new tiles)."""
    (frame,) = clip_frames("davis_car-turn.mp4", 10, 1)
    x = to_tensor(frame)[:, 52:308]                               # 640x256
    shift = 48
    moved = torch.cat([x[:, :, shift:], x[:, :, -shift:].flip(-1)], dim=2)
    runner = TiledRunner(TorchBackend(small_model, torch.device("cpu")), parse_tile("512"), small_model.config)
    runner.interpolate(0, x, 1, x, [0.5])
    assert runner.plan.overlap == DEFAULT_OVERLAP and runner.plan.shape == (256, 512)
    capsys.readouterr()
    (out,) = runner.interpolate(1, x, 2, moved, [0.5])
    err = capsys.readouterr().err
    assert runner.plan.overlap > DEFAULT_OVERLAP and runner.plan.overlap >= 4 * shift, err
    assert runner.plan.shape == (256, 512) and "overlap widened to" in err and len(err.strip().splitlines()) == 1
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


# ------------------------------------------------------------------ caching per tile

@pytest.mark.parametrize("keep", [True, False])
def test_each_tile_keeps_its_frame_and_pair_results(small_model, one_thread, keep):
    (f0, f1, f2) = clip_frames("davis_car-turn.mp4", 20, 3)
    x = [to_tensor(f)[:, :256, :512] for f in (f0, f1, f2)]
    runner = TiledRunner(TorchBackend(small_model, torch.device("cpu")), parse_tile("320", 64), small_model.config)
    runner._budget = (10**12 if keep else 0, "test")              # room for every tile's cache, or none
    runner.interpolate(0, x[0], 1, x[1], [0.25, 0.5])
    runner.interpolate(1, x[1], 2, x[2], [0.5])
    n = runner.plan.count
    assert n == 2 and runner.plan.keep == keep
    # Kept: one frame stage per input frame per tile; not kept: both frames again for each pair.
    # Either way one pair stage per pair per tile and one warp + rectify per output frame per tile.
    assert runner.calls == {"frame": (3 if keep else 4) * n, "pair": 2 * n, "warp": 3 * n, "rectify": 3 * n}


# ------------------------------------------------------------------ seams on real frames

@pytest.fixture(scope="module")
def bundled_backend():
    from dainrt.model.checkpoint import load_model
    from dainrt.model.weights import default_weights

    model = load_model(default_weights())
    return model, TorchBackend(model, torch.device("cpu"))


@pytest.mark.parametrize("clip,first", [("davis_car-turn.mp4", 40), ("big_buck_bunny_11s-21s_scenecuts.mkv", 160)])
def test_tiled_matches_untiled_on_real_frames(clip, first, bundled_backend, one_thread):
    """>= 45 dB overall and >= 40 dB in the worst 64x64 window along the seams, default overlap
    (from the pair's motion: the car of car-turn frame 40 moves about 35 px, Big Buck Bunny
    frame 160 about 55 px in the crop)."""
    model, backend = bundled_backend
    f0, f1 = clip_frames(clip, first)
    h, w = f0.shape[:2]
    y, x = (h - 360) // 2, (w - 640) // 2
    x0, x1 = (to_tensor(f)[:, y:y + 360, x:x + 640] for f in (f0, f1))
    whole = Runner(backend).interpolate(0, x0, 1, x1, [0.5])[0]
    runner = TiledRunner(backend, parse_tile("384"), model.config)
    tiled = runner.interpolate(0, x0, 1, x1, [0.5])[0]
    plan = runner.plan
    assert len(plan.xs) >= 2 and plan.overlap > DEFAULT_OVERLAP          # widened for the motion
    windows = [(a, s + plan.overlap // 2 - 32) for s in plan.xs[1:] for a in range(0, 360 - 63, 8)]
    worst = min(psnr(tiled[:, a:a + 64, b:b + 64], whole[:, a:a + 64, b:b + 64]) for a, b in windows)
    overall = psnr(tiled, whole)
    print(f"{clip} frames {first}-{first + 1}, 640x360, {plan.describe()}: "
          f"tiled vs untiled {overall:.2f} dB, worst 64x64 seam window {worst:.2f} dB")
    assert overall >= 45.0 and worst >= 40.0, (overall, worst)


# ------------------------------------------------------------------ other backends, build-engine, bench

def test_onnxruntime_runs_tiles_of_one_shape(tmp_path_factory, small_model, one_thread):
    """ONNX Runtime through the tiled runner: every stage call sees the one padded tile shape,
    and the blended frame matches the torch backend's."""
    from dainrt.engine.onnxruntime_backend import OnnxRuntimeBackend
    from test_export import shared_export

    directory, _ = shared_export(tmp_path_factory, small_model)
    ort_backend = OnnxRuntimeBackend(small_model, torch.device("cpu"), onnx_dir=directory, progress=None)
    shapes = set()
    run = ort_backend.run
    ort_backend.run = lambda stage, inputs: (shapes.add((stage, tuple(inputs[0].shape[-2:]))), run(stage, inputs))[1]
    (f0, f1) = clip_frames("davis_car-turn.mp4", 20)
    x0, x1 = (to_tensor(f)[:, :256, :448] for f in (f0, f1))
    outs = {}
    for name, backend in (("ort", ort_backend), ("torch", TorchBackend(small_model, torch.device("cpu")))):
        runner = TiledRunner(backend, parse_tile("320", 64), small_model.config)
        outs[name] = runner.interpolate(0, x0, 1, x1, [0.5])[0]
        assert runner.plan.count == 2
    assert {s for _, s in shapes} == {(320, 384)}            # 320x256 tiles, padded by the official rule
    assert psnr(outs["ort"], outs["torch"]) > 50


def test_build_engine_sizes_are_the_tile_shape():
    from dainrt.engine.tiling import engine_sizes

    config = ModelConfig(1.0)
    assert engine_sizes([(3840, 2160), (1920, 1080)], parse_tile("768"), config) == [(768, 768)]
    assert engine_sizes([(640, 360)], parse_tile("768"), config) == [(640, 360)]         # fits one tile: whole
    assert engine_sizes([(1920, 1080)], parse_tile("off"), config) == [(1920, 1080)]
    assert engine_sizes([(1920, 1080)], parse_tile("auto"), config, budget=10**12) == [(1920, 1080)]
    small = engine_sizes([(3840, 2160)], parse_tile("auto"), config, budget=3000 * MIB)
    assert len(small) == 1 and small[0][0] == small[0][1] < 2160


def test_bench_memory_rows_record_what_does_not_fit(monkeypatch):
    from dainrt.benchmarks.memory_check import format_memory_table, memory_rows

    rows = memory_rows([(3840, 2160)], [1.0], ["off"], 6000)          # 4K whole frames: ~50 GB, never started
    assert rows[0]["status"] == "does not fit" and "whole frames need about" in rows[0]["error"]
    assert "does not fit" in format_memory_table(rows)


def test_bench_memory_measures_tiled_and_whole(small_model, tmp_path, capsys):
    """`dainrt bench --memory` on a tiny size: both rows measured in fresh processes."""
    code = cli.main(["bench", "--memory", "--size", "320x256", "--width", "0.25", "--json", str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    import json

    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert code == 0 and [r["tile"] for r in rows] == ["off", "auto"] and all(r["status"] == "ok" for r in rows), out
    assert all(r["peak_rss"] > r["measured"] > 0 for r in rows) and "peak RSS MiB" in out


def test_api_interpolator_tiles_and_computes_each_pair_once_per_tile(small_model, one_thread):
    from dainrt.api import Interpolator

    (f0, f1) = clip_frames("davis_car-turn.mp4", 20)
    interp = Interpolator(small_model, tile="320", tile_overlap=64)
    mids = interp.interpolate(f0[:256, :448], f1[:256, :448], [0.25, 0.5, 0.75])
    n = interp.runner.plan.count
    assert n == 2 and len(mids) == 3 and mids[0].shape == (256, 448, 3)
    assert interp.runner.calls["pair"] == n and interp.runner.calls["warp"] == 3 * n
    with pytest.raises(OptionError, match="tile must be auto, off or WIDTHxHEIGHT"):
        Interpolator(small_model, tile="big")


def test_run_streams_a_film_in_tiles_keeping_each_tiles_frames(small_ckpt, tmp_path, one_thread):
    """`dainrt run --tile`: one frame stage per input frame per tile (the tiles' caches work
    across pairs), one pair stage per pair per tile; the film is written whole."""
    import json

    clip = tmp_path / "clip.mkv"
    with av.open(str(clip), "w") as out:
        s = out.add_stream("libx264", rate=12)
        s.width, s.height, s.pix_fmt = 320, 256, "yuv420p"
        for f in clip_frames("davis_car-turn.mp4", 20, 3):
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:256, :320]), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    code = cli.main(["run", str(clip), "-o", str(tmp_path / "out.mkv"), "--factor", "2", "--weights", str(small_ckpt),
                     "--tile", "256", "--tile-overlap", "64", "--report", str(tmp_path / "r.json"), "--no-progress"])
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and report["output"]["frames"] == 6 and report["frames"]["interp"] == 2
    assert report["runner_calls"] == {"frame": 3 * 2, "pair": 2 * 2, "warp": 2 * 2, "rectify": 2 * 2}
