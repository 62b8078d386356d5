"""Subtitles survive `dainrt run`: a generated clip with an SRT subtitle stream comes out with the
same subtitle packets, byte for byte, at the same times (issue 14 item 7)."""
from __future__ import annotations

from fractions import Fraction

import av
import pytest

from dainrt.cli import main
from dainrt.runtime.synthetic import pictures, write_clip

SRT = """1
00:00:00,250 --> 00:00:00,750
first line

2
00:00:01,000 --> 00:00:01,600
second line, with a comma
"""


def _subtitles(path) -> list[tuple[Fraction, Fraction, bytes]]:
    """(start s, duration s, text bytes) of every subtitle packet of `path`."""
    with av.open(str(path)) as c:
        (st,) = c.streams.subtitles
        return [(p.pts * st.time_base, p.duration * st.time_base, bytes(p)) for p in c.demux(st) if p.size]


def _with_subtitles(tmp_path):
    """A 2 s, 12 fps FFV1 clip (64x48) muxed with an SRT subtitle stream into Matroska."""
    video = write_clip(str(tmp_path / "video.mkv"), pictures(24, 64, 48), rate=12, codec="ffv1", pix_fmt="yuv444p")
    srt = tmp_path / "subs.srt"
    srt.write_text(SRT)
    out = tmp_path / "clip.mkv"
    with av.open(video) as v, av.open(str(srt)) as s, av.open(str(out), "w") as o:
        streams = {v.streams.video[0]: o.add_stream_from_template(v.streams.video[0]),
                   s.streams.subtitles[0]: o.add_stream_from_template(s.streams.subtitles[0])}
        for source in (v, s):
            for packet in source.demux():
                if packet.size:
                    packet.stream = streams[packet.stream]
                    o.mux(packet)
    return out


def test_subtitle_packets_come_out_identical_and_in_time(tmp_path, small_ckpt, one_thread, capsys):
    clip = _with_subtitles(tmp_path)
    expected = _subtitles(clip)
    assert [text for *_, text in expected] == [b"first line", b"second line, with a comma"]
    assert expected[0][:2] == (Fraction(1, 4), Fraction(1, 2))
    out = tmp_path / "out.mkv"
    assert main(["run", str(clip), "-o", str(out), "--factor", "2", "--weights", str(small_ckpt),
                 "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert _subtitles(out) == expected
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 48            # 24 pictures at 12 fps -> 24 fps
