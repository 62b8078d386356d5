"""`dainrt run --preview`: the first seconds of the real Big Buck Bunny clip (720p), decoded at
the preview size, through the real model and encoder, written beside the output's name."""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from dainrt.cli import main
from dainrt.runtime.preview import PREVIEW_SIDE, preview_output, preview_size

CLIP = Path(__file__).parent / "data" / "video" / "big_buck_bunny_11s-21s_scenecuts.mkv"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_preview_size_and_name():
    assert preview_size(1280, 720) == (320, 180)
    assert preview_size(1440, 1080) == (320, 240)            # 4:3 stop-motion
    assert preview_size(1080, 1920) == (180, 320)            # portrait: the longer side
    assert preview_size(200, 100) == (200, 100)              # never enlarged
    assert max(preview_size(4096, 2160)) <= PREVIEW_SIDE and all(n % 2 == 0 for n in preview_size(4095, 2161))
    assert preview_output("out/film.mp4") == str(Path("out/film.preview.mp4"))
    assert preview_output("out/%05d.png") == str(Path("out/%05d.preview.png"))


def test_preview_renders_the_first_seconds_small_at_the_target_rate(tmp_path, small_ckpt, capsys):
    out, report = tmp_path / "film.mkv", tmp_path / "r.json"
    code = main(["run", str(CLIP), "-o", str(out), "--factor", "2", "--preview", "0.25", "--weights", str(small_ckpt),
                 "--codec", "ffv1", "--report", str(report), "--no-progress"])
    assert code == 0
    err = capsys.readouterr().err
    assert ("preview: the first 0.25 s (6 of 237 input frames) at 320x180 (the input is 1280x720) -> "
            f"{tmp_path / 'film.preview.mkv'}") in err
    assert not out.exists()                                  # the film's own name stays free
    with av.open(str(tmp_path / "film.preview.mkv")) as c:
        frames = list(c.decode(video=0))
        assert {(f.width, f.height) for f in frames} == {(320, 180)}
        assert [round(float(f.time) * 48) for f in frames] == list(range(12))     # 24 -> 48 fps, exact times
        assert [s.type for s in c.streams] == ["video", "audio"]                 # audio of the span kept
    r = json.loads(report.read_text())
    assert r["runner_calls"]["warp"] == 5                    # 5 pairs, one in-between each; the last frame holds
    # Originals are the input pictures scaled down: the first equals the decoded first frame, scaled.
    with av.open(str(CLIP)) as c:
        first = next(c.decode(video=0)).reformat(width=320, height=180, interpolation="AREA")
    np.testing.assert_array_equal(frames[0].to_ndarray(format="yuv420p"), first.to_ndarray(format="yuv420p"))


def test_preview_must_be_positive(tmp_path, capsys):
    code = main(["run", str(CLIP), "-o", str(tmp_path / "f.mkv"), "--fps", "60", "--preview", "0"])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--preview" in err and "above 0" in err
    assert not list(tmp_path.iterdir())
