"""`dainrt run` on small generated clips: exact timing, the model's frames, stop-motion holds,
VFR, 10-bit, colour, odd sizes, one frame, picture sequences, cross-fades, `dainrt compare`.

Clips are written in the tests with PyAV (known pictures, known timestamps). Pixel checks use
lossless files (FFV1 RGB or PNG) and compare with `Runner.interpolate` on the same frames.
"""
from __future__ import annotations

import json
import os
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import pytest
import torch

from dainrt.model.checkpoint import load_model
from dainrt.cli import main
from dainrt.engine import Runner, create_backend
from dainrt.engine.choice import choose_engine
from dainrt.runtime.synthetic import decode_rgb, pictures, write_clip
from dainrt.runtime.transfer import quantize
from dainrt.runtime.transfer import to_tensor

LOSSLESS = ["--codec", "ffv1", "--pix-fmt", "bgr0"]


pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def reference(small_ckpt):
    """A runner on the same weights and engine as the CLI runs, for the expected in-betweens."""
    choice = choose_engine(torch.device("cpu"))
    return Runner(create_backend(choice.backend, load_model(small_ckpt), **choice.options))


def run(*args) -> dict:
    """`dainrt run ARGS --report R`; returns the report."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:      # a new report: an existing one needs -y
        report = os.path.join(folder, "report.json")
        assert main(["run", *[str(a) for a in args], "--no-progress", "--report", report]) == 0
        return json.loads(Path(report).read_text())


def expect_interp(reference, a, b, t, dtype=np.uint8):
    reference.clear()
    (out,) = reference.interpolate("a", to_tensor(a), "b", to_tensor(b), [float(t)])
    return quantize(out, dtype).numpy().astype(dtype)


# ----------------------------------------------------------------------------------------------
# Timing


@pytest.mark.parametrize("rate_in,fps,rate_out,tb", [
    (15, "60", F(60), F(1, 15360)),
    (24, "60", F(60), F(1, 15360)),
    (F(30000, 1001), "60000/1001", F(60000, 1001), F(1, 60000)),
])
def test_exact_output_rate_and_timestamps_in_mp4(tmp_path, small_ckpt, rate_in, fps, rate_out, tb):
    import av

    src = write_clip(tmp_path / "in.mp4", pictures(2, 64, 48, seed=1), rate=rate_in, audio_seconds=0.3)
    r = run(src, "-o", tmp_path / "out.mp4", "--fps", fps, "--weights", small_ckpt)
    n = -(-2 * rate_out // F(rate_in))                               # ceil(duration x rate)
    assert r["output"]["frames"] == n and r["output"]["rate"] == f"{rate_out.numerator}/{rate_out.denominator}"
    with av.open(str(tmp_path / "out.mp4")) as c:
        v = c.streams.video[0]
        assert F(v.average_rate) == rate_out                            # the container states it exactly
        assert F(v.time_base) == tb
        times = [f.pts * F(v.time_base) for f in c.decode(v)]
    assert times == [F(k) / rate_out for k in range(n)]               # every timestamp exact
    assert r["frames"]["interp"] >= 1 and r["runner_calls"]["pair"] == 1
    assert r["copied_streams"] == ["audio aac"]
    a_in = [bytes(p) for p in av.open(src).demux(audio=0) if p.size]
    a_out = [bytes(p) for p in av.open(str(tmp_path / "out.mp4")).demux(audio=0) if p.size]
    assert a_in == a_out


def test_interpolated_frames_are_the_runners(tmp_path, small_ckpt, reference):
    """15 -> 60 on a lossless clip: copies are the input frames, in-betweens are
    `Runner.interpolate` at t = 1/4, 1/2, 3/4, bit for bit after 8-bit rounding."""
    frames = pictures(3, 64, 48, seed=4, step=(3, 1))
    src = write_clip(tmp_path / "in.mkv", frames, rate=15, codec="ffv1", pix_fmt="bgr0")
    r = run(src, "-o", tmp_path / "out.mkv", "--factor", "4", "--weights", small_ckpt, *LOSSLESS)
    got, _, _ = decode_rgb(tmp_path / "out.mkv")
    assert len(got) == 12 and r["output"]["rate"] == "60/1"
    assert r["runner_calls"] == {"frame": 3, "pair": 2, "warp": 6, "rectify": 6}   # stage caches used
    for k, image in enumerate(got):
        i, j = divmod(k, 4)
        if j == 0:
            np.testing.assert_array_equal(image, frames[i])
        elif i == 2:
            np.testing.assert_array_equal(image, frames[2])          # held after the last frame
        else:
            np.testing.assert_array_equal(image, expect_interp(reference, frames[i], frames[i + 1], j / 4))


def test_on_twos_held_frames_become_timed_interpolations(tmp_path, small_ckpt, reference):
    """Drawings A A B B C C at 24 fps: --dedup drops the holds and interpolates A -> B over
    their two-frame span (t = k/5 at 60 fps), instead of morphing A into A."""
    a, b, c = pictures(3, 64, 48, seed=6, step=(4, 2))
    frames = [a, a, b, b, c, c]
    src = write_clip(tmp_path / "twos.mkv", frames, rate=24, codec="ffv1", pix_fmt="bgr0")
    plan = run(src, "--fps", "60", "--dry-run")
    assert plan["duplicates"]["count"] == 3 and plan["duplicates"]["dropped"] is False
    r = run(src, "-o", tmp_path / "out.mkv", "--fps", "60", "--dedup", "--weights", small_ckpt, *LOSSLESS)
    assert r["duplicates"] == {"count": 3, "times": [1 / 24, 3 / 24, 5 / 24], "dropped": True, "threshold": 3.0}
    assert r["runner_calls"]["pair"] == 2                            # A->B and B->C only
    got, _, _ = decode_rgb(tmp_path / "out.mkv")
    assert len(got) == 15
    anchors = [(0, a), (5, b), (10, c)]                              # output index of each drawing
    for (k0, x), (k1, y) in zip(anchors, anchors[1:]):
        np.testing.assert_array_equal(got[k0], x)
        for k in range(k0 + 1, k1):
            np.testing.assert_array_equal(got[k], expect_interp(reference, x, y, F(k - k0, 5)))
    for k in range(10, 15):
        np.testing.assert_array_equal(got[k], c)                     # the last drawing is held


def test_variable_frame_rate_input(tmp_path, small_ckpt, reference):
    import av

    frames = pictures(5, 64, 48, seed=8)
    pts = [0, 40, 90, 200, 230]                                      # ms: irregular, on no constant grid
    src = write_clip(tmp_path / "vfr.mkv", frames, rate=25, pts=pts, time_base=F(1, 1000), codec="ffv1", pix_fmt="bgr0")
    plan = run(src, "--fps", "50", "--dry-run")
    assert plan["input"]["vfr"] is True and plan["input"]["rate"] is None
    at_100ms = [p for p in plan["plan"] if p[1] == "1/10"][0]
    assert at_100ms[2:5] == ["interp", 2, 3] and F(at_100ms[5]).limit_denominator(1000) == F(1, 11)
    r = run(src, "-o", tmp_path / "out.mkv", "--factor", "2", "--weights", small_ckpt, *LOSSLESS)
    with av.open(str(tmp_path / "out.mkv")) as c:
        out_ms = [f.pts for f in c.decode(video=0)]
    end_ms = r["input"]["duration"] * 1000
    assert out_ms == [0, 20, 40, 65, 90, 145, 200, 215, 230, round((230 + end_ms) / 2)]   # each interval halved
    assert r["output"]["rate"] is None and r["input"]["vfr"] is True
    got, _, _ = decode_rgb(tmp_path / "out.mkv")
    for i in range(4):
        np.testing.assert_array_equal(got[2 * i], frames[i])
        np.testing.assert_array_equal(got[2 * i + 1], expect_interp(reference, frames[i], frames[i + 1], 0.5))


def test_frames_on_a_grid_with_gaps_stay_constant_rate(tmp_path):
    """Timestamps on the 25 fps grid with holes (a VFR-muxed hold) are 25 fps with missing frames:
    the output stays constant-rate and the holes are interpolated across at exact times."""
    src = write_clip(tmp_path / "gaps.mkv", pictures(4, 64, 48, seed=8), rate=25, pts=[0, 40, 160, 200],
                     time_base=F(1, 1000), codec="ffv1", pix_fmt="bgr0")
    plan = run(src, "--factor", "2", "--dry-run")
    assert plan["input"]["rate"] == "25/1" and plan["output"]["rate"] == "50/1"
    assert plan["output"]["frames"] == 12                            # 0 .. 240 ms every 20 ms
    assert [p[5] for p in plan["plan"] if p[3] == 1 and p[2] == "interp"] == [k / 6 for k in range(1, 6)]


# ----------------------------------------------------------------------------------------------
# What goes in comes out


def test_ten_bit_in_ten_bit_out_with_colour_tags(tmp_path, small_ckpt, reference):
    import av

    tags = {"color_range": 1, "colorspace": 1, "color_primaries": 1, "color_trc": 1}     # BT.709, limited
    frames = pictures(2, 64, 48, seed=9, dtype=np.uint16)
    src = write_clip(tmp_path / "in10.mp4", frames, rate=12, pix_fmt="yuv420p10le", color=tags,
                     options={"qp": "0"})
    r = run(src, "-o", tmp_path / "out10.mp4", "--factor", "2", "--weights", small_ckpt)
    assert r["output"]["pix_fmt"] == "yuv420p10le" and r["input"]["bits"] == 10
    with av.open(str(tmp_path / "out10.mp4")) as c:
        v = c.streams.video[0]
        assert v.codec_context.profile == "High 10"
        decoded = list(c.decode(v))
    for f in decoded:
        assert f.format.name == "yuv420p10le"
        assert (f.color_range, f.colorspace, f.color_primaries, f.color_trc) == (1, 1, 1, 1)
    src_rgb, _, _ = decode_rgb(src, "rgb48le")
    mid = decoded[1].to_ndarray(format="rgb48le").astype(np.float64)
    want = expect_interp(reference, src_rgb[0], src_rgb[1], 0.5, np.uint16).astype(np.float64)
    psnr = 10 * np.log10(65535.0 ** 2 / np.mean((mid - want) ** 2))
    assert psnr > 34, psnr                                            # 10-bit H.264 at CRF 16 (measured 37.4)
    assert len(np.unique(mid[..., 1] // 64)) > 256 or len(np.unique(mid)) > 1024   # more than 8 bits of levels


def test_full_range_colour_is_kept(tmp_path, small_ckpt):
    import av

    tags = {"color_range": 2, "colorspace": 5, "color_primaries": 5, "color_trc": 6}     # BT.601 PAL, full
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :16] = 0
    img[:, 16:32] = 255
    img[:, 32:48] = (200, 40, 90)
    img[:, 48:] = (20, 230, 128)
    frames = [img, img[:, ::-1].copy()]
    src = write_clip(tmp_path / "full.mkv", frames, rate=24, pix_fmt="yuv444p", color=tags, options={"qp": "0"})
    run(src, "-o", tmp_path / "out.mkv", "--factor", "2", "--weights", small_ckpt)
    with av.open(str(tmp_path / "out.mkv")) as c:
        s = c.streams.video[0].codec_context
        assert (s.color_range, s.colorspace, s.color_primaries, s.color_trc) == (2, 5, 5, 6)
        got = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    for k, want in ((0, frames[0]), (2, frames[1])):                 # the copies keep black at 0, white at 255
        assert np.abs(got[k] - want).max() <= 3


def test_odd_frame_size(tmp_path, small_ckpt):
    import av

    frames = pictures(2, 67, 45, seed=10)
    src = write_clip(tmp_path / "odd.mkv", frames, rate=12, codec="ffv1", pix_fmt="yuv444p")
    r = run(src, "-o", tmp_path / "odd.mp4", "--factor", "2", "--weights", small_ckpt)
    assert r["output"]["pix_fmt"] == "yuv444p"                        # 4:2:0 cannot hold 67x45
    with av.open(str(tmp_path / "odd.mp4")) as c:
        got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(got) == 4 and got[1].shape == (45, 67, 3)


def test_single_frame_file_is_held_without_the_model(tmp_path, small_ckpt):
    src = write_clip(tmp_path / "one.mp4", pictures(1, 64, 48), rate=24)
    r = run(src, "-o", tmp_path / "one60.mp4", "--fps", "60", "--weights", small_ckpt)
    assert r["output"]["frames"] == 3 and r["frames"]["copy"] == 1 and r["frames"]["hold"] == 2
    assert r["runner_calls"] == {"frame": 0, "pair": 0, "warp": 0, "rectify": 0}
    got, _, _ = decode_rgb(tmp_path / "one60.mp4")
    assert len(got) == 3


def test_scene_cut_repeat_and_crossfade_without_the_model(tmp_path, small_ckpt):
    """A hard cut between two different shots: repeat holds the last frame before the cut;
    crossfade blends linearly. Neither calls the model."""
    a = pictures(1, 64, 48, seed=11)[0]
    b = 255 - pictures(1, 64, 48, seed=12)[0]
    src = write_clip(tmp_path / "cut.mkv", [a, b], rate=24, codec="ffv1", pix_fmt="bgr0")
    rep = run(src, "-o", tmp_path / "rep.mkv", "--fps", "60", "--weights", small_ckpt, *LOSSLESS)
    fade = run(src, "-o", tmp_path / "fade.mkv", "--fps", "60", "--scene-mode", "crossfade", "--weights", small_ckpt, *LOSSLESS)
    assert len(rep["scene_cuts"]) == 1 and rep["scene_cuts"][0]["time"] == pytest.approx(1 / 24)
    assert rep["runner_calls"]["pair"] == fade["runner_calls"]["pair"] == 0
    got_rep, _, _ = decode_rgb(tmp_path / "rep.mkv")
    got_fade, _, _ = decode_rgb(tmp_path / "fade.mkv")
    for k, t in ((1, 0.4), (2, 0.8)):
        np.testing.assert_array_equal(got_rep[k], a)
        want = np.round((1 - t) * a.astype(np.float32) + t * b.astype(np.float32)).astype(np.uint8)
        assert np.abs(got_fade[k].astype(int) - want).max() <= 1
    assert fade["frames"]["fade"] == 2 and rep["frames"]["repeat"] == 2


@pytest.mark.parametrize("bits", [8, 16])
def test_picture_sequence_in_and_out(tmp_path, small_ckpt, reference, capsys, bits):
    from dainrt.base.images import read_image, write_image

    dtype = np.uint16 if bits == 16 else np.uint8
    frames = pictures(2, 64, 48, seed=13, dtype=dtype)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):                                    # RGBA pictures: tests/test_runtime_alpha.py
        write_image(folder / f"{i + 1:05d}.png", f)
    r = run(folder / "%05d.png", "-o", tmp_path / "out" / "%05d.png", "--factor", "2", "--input-fps", "12",
            "--weights", small_ckpt)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["00001.png", "00002.png", "00003.png", "00004.png"]
    assert r["input"]["rate"] == "12/1" and r["output"]["rate"] == "24/1"
    out = [read_image(tmp_path / "out" / n) for n in names]
    assert out[0].dtype == dtype
    np.testing.assert_array_equal(out[0], frames[0])
    np.testing.assert_array_equal(out[2], frames[1])
    np.testing.assert_array_equal(out[1], expect_interp(reference, frames[0], frames[1], 0.5, dtype))
    assert not (tmp_path / "out.dainrt-partial").exists()


def test_compare_side_by_side(tmp_path, small_ckpt):
    import av

    frames = pictures(2, 64, 48, seed=14)
    src = write_clip(tmp_path / "in.mkv", frames, rate=12, codec="ffv1", pix_fmt="bgr0")
    run(src, "-o", tmp_path / "out.mkv", "--fps", "24", "--weights", small_ckpt, *LOSSLESS)   # copies only
    assert main(["compare", str(src), str(tmp_path / "out.mkv"), "-o", str(tmp_path / "sbs.mp4"), "--slow", "2"]) == 0
    with av.open(str(tmp_path / "sbs.mp4")) as c:
        v = c.streams.video[0]
        decoded = list(c.decode(v))
        times = [f.pts * F(v.time_base) for f in decoded]
    assert (decoded[0].width, decoded[0].height) == (128, 48)
    assert times == [F(k, 12) for k in range(4)]                      # 24 fps played 2x slower
    left = decoded[1].to_ndarray(format="rgb24")[20:, :64].astype(int)
    assert np.abs(left - frames[0][20:].astype(int)).mean() < 6       # the original, held


def test_torch_keeps_every_core_from_the_preview_size_up(tmp_path, small_ckpt):
    """At 320x180 and above the model is nearly all the work: torch runs on every core; smaller
    frames leave one core to decode and encode. An explicit lower count is left alone, and the
    caller's count is back after the run (the report says what streamed)."""
    from dainrt.runtime.pipeline import SMALL_FRAME_PIXELS

    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one core: torch's count is never lowered")
    assert SMALL_FRAME_PIXELS == 320 * 180
    small = write_clip(tmp_path / "small.mkv", pictures(2, 64, 48, seed=4), rate=12, codec="ffv1", pix_fmt="bgr0")
    large = write_clip(tmp_path / "large.mkv", pictures(2, 320, 180, seed=4), rate=12, codec="ffv1", pix_fmt="bgr0")
    torch.set_num_threads(cores)
    streamed = [run(clip, "-o", tmp_path / f"{i}.mkv", "--factor", "2", "--weights", small_ckpt, *LOSSLESS)
                ["torch_threads"] for i, clip in enumerate((small, large))]
    assert streamed == [cores - 1, cores] and torch.get_num_threads() == cores
    torch.set_num_threads(1)                    # the test's own setting: below the cores, kept
    assert run(small, "-o", tmp_path / "2.mkv", "--factor", "2", "--weights", small_ckpt)["torch_threads"] == 1
