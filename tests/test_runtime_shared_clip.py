"""`dainrt run` on the shared Big Buck Bunny clip (tests/data/video): cuts, audio, duration.

The clip is 720p; the model is far too slow on a CPU for all of it, so:
* the full file goes through a real run at its own rate (24 -> 24: every frame a copy, no
  model call) that still decodes, detects, encodes, remuxes the audio and writes the report,
  and through a `--dry-run` plan at 60 fps (no model, nothing written);
* frames 12-19 (across the first cut), shrunk to 64x36 with the audio of that span copied,
  go through a real 24 -> 60 run with the small model and a lossless output.
"""
from __future__ import annotations

import json
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import pytest
import torch

from dainrt.model.checkpoint import load_model
from dainrt.cli import main
from dainrt.engine import Runner, create_backend
from dainrt.engine.choice import choose_engine
from dainrt.runtime.transfer import to_tensor

CLIP = Path(__file__).parent / "data" / "video" / "big_buck_bunny_11s-21s_scenecuts.mkv"
CUTS = (F(16, 24), F(109, 24))          # 0.667 s and 4.542 s


pytestmark = pytest.mark.usefixtures("one_thread")

def _packets(path, kind):
    import av

    with av.open(str(path)) as c:
        s = [x for x in c.streams if x.type == kind][0]
        extradata = s.codec_context.extradata
        return [(p.pts, bytes(p)) for p in c.demux(s) if p.size], extradata


def test_shared_clip_plan_at_60fps_finds_both_cuts(tmp_path):
    report = tmp_path / "plan.json"
    assert main(["run", str(CLIP), "--fps", "60", "--dry-run", "--report", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["input"]["frames"] == 237 and r["input"]["rate"] == "24/1"
    times = [c["time"] for c in r["scene_cuts"]]
    assert len(times) == 2
    for t, cut in zip(times, CUTS):
        assert abs(t - float(cut)) < 1 / 24                        # within one input frame
    assert [c["frame"] for c in r["scene_cuts"]] == [16, 109]
    assert r["output"]["frames"] == 593 and r["output"]["rate"] == "60/1"
    assert 0 <= r["output"]["duration"] - 9.875 < 1 / 60           # duration kept
    # across each cut the frames repeat (2 each at 24 -> 60); nothing is morphed across it
    plan = r["plan"]
    assert r["frames"]["repeat"] == 4 and r["frames"]["interp"] == 468
    for cut_frame in (16, 109):
        assert not any(kind == "interp" and (src, dst) == (cut_frame - 1, cut_frame) for _, _, kind, src, dst, _ in plan)
    assert [p[2] for p in plan if p[3] == 15 and p[2] != "interp"] == ["repeat", "repeat"]


def test_shared_clip_full_run_keeps_audio_bit_exact_and_duration(tmp_path, small_ckpt):
    import av

    out, report = tmp_path / "bbb.mkv", tmp_path / "bbb.json"
    assert main(["run", str(CLIP), "-o", str(out), "--fps", "24", "--weights", str(small_ckpt),
                 "--report", str(report), "--no-progress"]) == 0
    r = json.loads(report.read_text())
    assert [c["frame"] for c in r["scene_cuts"]] == [16, 109]
    assert r["runner_calls"]["warp"] == 0 and r["frames"]["copy"] == 237
    assert r["copied_streams"] == ["audio vorbis"]
    audio_in, extra_in = _packets(CLIP, "audio")
    audio_out, extra_out = _packets(out, "audio")
    assert len(audio_in) == r["copied_packets"] == len(audio_out) > 400
    assert [b for _, b in audio_in] == [b for _, b in audio_out]   # bit for bit
    assert [p for p, _ in audio_in] == [p for p, _ in audio_out]   # and at the same times
    assert extra_in == extra_out                                   # same Vorbis headers
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        pts = [f.pts for f in c.decode(v)]
        tb = F(v.time_base)
        assert (v.width, v.height, v.codec_context.name) == (1280, 720, "h264")
    assert len(pts) == 237
    duration = (pts[-1] - pts[0]) * tb + F(1, 24)
    assert abs(duration - F(237, 24)) < F(1, 24)                   # within one output frame
    assert not (tmp_path / "bbb.mkv.dainrt-partial").exists()


def _small_copy(path: Path, first: int = 12, last: int = 19) -> list[np.ndarray]:
    """Frames first..last of the clip at 64x36 (lossless FFV1 RGB, original timestamps) with
    the audio packets of that span copied; returns the frames as written."""
    import av

    src = av.open(str(CLIP))
    vin, ain = src.streams.video[0], src.streams.audio[0]
    frames, stamps = [], []
    for i, f in enumerate(src.decode(vin)):
        if first <= i <= last:
            frames.append(f.reformat(width=64, height=36, format="rgb24", interpolation="AREA").to_ndarray())
            stamps.append(f.pts)
    src.close()
    t0, t1 = stamps[0] * F(vin.time_base), (stamps[-1] + 42) * F(vin.time_base)
    src = av.open(str(CLIP))
    out = av.open(str(path), "w")
    vs = out.add_stream("ffv1", rate=24)
    vs.width, vs.height, vs.pix_fmt = 64, 36, "bgr0"
    vs.codec_context.time_base = vs.time_base = F(1, 1000)
    aout = out.add_stream_from_template(src.streams.audio[0])
    for img, p in zip(frames, stamps):
        fr = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="bgr0")
        fr.pts, fr.time_base = p, F(1, 1000)
        for pkt in vs.encode(fr):
            out.mux(pkt)
    for pkt in vs.encode(None):
        out.mux(pkt)
    for pkt in src.demux(src.streams.audio[0]):
        if pkt.size and pkt.pts is not None and t0 <= pkt.pts * F(pkt.time_base) < t1:
            pkt.stream = aout
            out.mux(pkt)
    out.close()
    src.close()
    return frames


def test_shared_clip_across_the_first_cut_with_the_model(tmp_path, small_ckpt):
    import av

    from dainrt.runtime.transfer import quantize

    small, out, report = tmp_path / "small.mkv", tmp_path / "out.mkv", tmp_path / "r.json"
    frames = _small_copy(small)                                    # input frames 12..19; the cut is before 16
    assert main(["run", str(small), "-o", str(out), "--fps", "60", "--weights", str(small_ckpt), "--codec", "ffv1",
                 "--pix-fmt", "bgr0", "--report", str(report), "--no-progress"]) == 0
    r = json.loads(report.read_text())
    assert [round(c["time"], 3) for c in r["scene_cuts"]] == [0.667]
    with av.open(str(out)) as c:
        got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        got_ms = [f.pts for f in av.open(str(out)).decode(video=0)]
    assert len(got) == 20                                          # 8/24 s at 60 fps
    assert got_ms == [round(500 + k * 1000 / 60) for k in range(20)]   # starts at 0.5 s like the input
    # the expected film, computed here: copies, the repeat across the cut, interpolations
    choice = choose_engine(torch.device("cpu"))                   # the engine the run chose
    runner = Runner(create_backend(choice.backend, load_model(small_ckpt), **choice.options))
    for k, image in enumerate(got):
        pos = F(k * 24, 60)                                        # position in input frames
        i, t = int(pos), pos - int(pos)
        if t == 0:
            np.testing.assert_array_equal(image, frames[i], err_msg=f"copy {k}")
        elif i == 3 or i >= 7:                                     # 15 -> 16 is the cut; after 19, hold
            np.testing.assert_array_equal(image, frames[i], err_msg=f"repeat {k}")
        else:
            (ref,) = runner.interpolate(i, to_tensor(frames[i]), i + 1, to_tensor(frames[i + 1]), [float(t)])
            np.testing.assert_array_equal(image, quantize(ref, np.uint8).numpy(), err_msg=f"interp {k}")
    assert r["frames"] == {"copy": 4, "still": 0, "interp": 12, "repeat": 2, "fade": 0, "hold": 2}
    a_in, extra_in = _packets(small, "audio")
    a_out, extra_out = _packets(out, "audio")
    assert len(a_in) > 10 and a_in == a_out and extra_in == extra_out
