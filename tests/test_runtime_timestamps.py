"""Broken timestamps (issue 14 item 5): a file whose frames repeat each other's timestamps is not
silently thinned out. Beyond a few broken frames, dainrt rebuilds every timestamp from the frame
order at the stream's nominal rate (as ffmpeg's genpts) and says so in one warning line."""
from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np

from dainrt.cli import main
from dainrt.runtime.decode import FEW_BROKEN, probe


def _broken_clip(path, frames: int = 30, repeated: range = range(5, 25)) -> str:
    """`frames` FFV1 pictures at 12 fps in Matroska, each brighter than the last; the packets in
    `repeated` all carry the timestamp of frame 5 (a badly muxed file: the muxer accepts it)."""
    out = av.open(str(path), "w")
    v = out.add_stream("ffv1", rate=12)
    v.width, v.height, v.pix_fmt = 64, 48, "yuv444p"
    packets = []
    for i in range(frames):
        f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 8, np.uint8), format="rgb24").reformat(format="yuv444p")
        f.pts, f.time_base = i, Fraction(1, 12)
        packets += v.encode(f)
    packets += v.encode(None)
    for j, p in enumerate(packets):
        if j in repeated:
            p.pts = p.dts = 5
        out.mux(p)
    out.close()
    return str(path)


def test_repeated_timestamps_are_rebuilt_with_one_warning(tmp_path, small_ckpt, one_thread, capsys):
    clip = _broken_clip(tmp_path / "broken.mkv")
    with av.open(clip) as c:
        pts = [p.pts for p in c.demux(video=0) if p.size]
    assert len(pts) == 30 and len(set(pts)) == 11            # 19 frames repeat another's timestamp
    info = probe(clip)
    assert info.rebuilt_timestamps and info.timeline.frames == 30 and info.timeline.rate == 12

    out, report = tmp_path / "out.mkv", tmp_path / "report.json"
    assert main(["run", clip, "-o", str(out), "--factor", "2", "--weights", str(small_ckpt), "--no-progress",
                 "--report", str(report)]) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("dainrt: warning:")]
    assert warnings == ["dainrt: warning: 19 of 30 frames have missing or repeated timestamps: all were rebuilt "
                        "from the frame order at 12 fps"]
    r = json.loads(report.read_text())
    assert r["input"]["frames"] == 30 and r["output"]["frames"] == 60 and r["frames"]["interp"] == 29
    with av.open(str(out)) as c:
        decoded = [f.to_ndarray(format="rgb24")[0, 0, 0] for f in c.decode(video=0)]
    assert len(decoded) == 60
    originals = decoded[::2]          # every input picture, in order, none dropped (pictures differ by 8 levels)
    assert all(abs(int(x) - i * 8) <= 2 for i, x in enumerate(originals)), [int(x) for x in originals]


def test_a_few_repeats_are_skipped_as_before(tmp_path):
    clip = _broken_clip(tmp_path / "few.mkv", repeated=range(5, 5 + FEW_BROKEN + 1))
    info = probe(clip)
    assert not info.rebuilt_timestamps and info.timeline.frames == 30 - FEW_BROKEN
