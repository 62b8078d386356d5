"""Long-film safety: interrupted + resumed == uninterrupted, Ctrl-C, a full disk, and every
user error ending in one line, a non-zero exit and nothing under the final name."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dainrt.cli import main
from dainrt.runtime.synthetic import decode_rgb, pictures, write_clip

ROOT = Path(__file__).resolve().parent.parent
CLIP = Path(__file__).parent / "data" / "video" / "big_buck_bunny_11s-21s_scenecuts.mkv"


pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def film(tmp_path_factory):
    """8 frames, 12 fps, keyframe every 2 frames (so a resume really seeks), with audio."""
    path = tmp_path_factory.mktemp("film") / "film.mp4"
    return write_clip(path, pictures(8, 64, 48, seed=21), rate=12, options={"g": "2", "keyint_min": "2"},
                      audio_seconds=0.7)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _packets(path):
    import av

    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux() if p.size]


def _one_line_error(capsys, rc, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("dainrt: error: "), err
    for w in words:
        assert w in err[0], err
    return err[0]


ARGS = ["--factor", "2", "--segment-frames", "2", "--no-progress"]


def _ctrl_c_after_a_segment(args: list[str], work: Path) -> str:
    """`dainrt run ARGS` in a child, sent Ctrl-C once a segment is safe in `work`; returns its
    stderr after checking it exited 130."""
    # A shell's background job ignores SIGINT, and so would the child: give it the default back.
    proc = subprocess.Popen([sys.executable, "-m", "dainrt", "run", *args],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads((work / "state.json").read_text())["segments"]:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    return err


def test_ctrl_c_then_resume_equals_an_uninterrupted_run(tmp_path, small_ckpt, film, capsys):
    full = tmp_path / "full.mp4"
    assert main(["run", film, "-o", str(full), "--weights", str(small_ckpt), "--report", str(tmp_path / "full.json"), *ARGS]) == 0

    out = tmp_path / "part.mp4"
    work = tmp_path / "part.mp4.dainrt-partial"
    err = _ctrl_c_after_a_segment([film, "-o", str(out), "--weights", str(small_ckpt), *ARGS], work)
    assert "--resume" in err.strip().splitlines()[-1]
    assert not out.exists()                                     # nothing under the final name
    state = json.loads((work / "state.json").read_text())
    done = sum(s["frames"] for s in state["segments"])
    assert 2 <= done < 16 and state["resume"] is not None

    rc = main(["run", film, "-o", str(out), "--weights", str(small_ckpt), *ARGS])
    _one_line_error(capsys, rc, "--resume")                     # refuses to start over silently
    rc = main(["run", film, "-o", str(out), "--weights", str(small_ckpt), "--resume", "--crf", "20", *ARGS])
    _one_line_error(capsys, rc, "differ", "crf")                # refuses other options

    assert main(["run", film, "-o", str(out), "--weights", str(small_ckpt), "--resume",
                 "--report", str(tmp_path / "part.json"), *ARGS]) == 0
    a, pa, _ = decode_rgb(full)
    b, pb, _ = decode_rgb(out)
    assert len(a) == len(b) == 16 and pa == pb
    assert all(np.array_equal(x, y) for x, y in zip(a, b))      # the same decoded frames
    assert _packets(full) == _packets(out)                      # in fact the same bitstream
    r_full, r_part = (json.loads((tmp_path / n).read_text()) for n in ("full.json", "part.json"))
    assert r_part["resumed_from_frame"] == done
    assert r_part["runner_calls"]["warp"] < r_full["runner_calls"]["warp"]   # finished work not redone
    assert r_part["frames"] == r_full["frames"]
    assert not work.exists()


def test_interrupted_run_with_kept_holds_and_cadence_resumes_to_the_same_film(tmp_path, small_ckpt):
    """Pictures held 2, 7, 2 and 3 frames at 12 fps -> 60 fps with --keep-holds 4 --cadence 3,
    7 output frames a segment: segment boundaries fall inside the kept hold and inside cadence
    steps; Ctrl-C then --resume gives the frames of an uninterrupted run."""
    a, b, c, d = pictures(4, 64, 48, seed=23, step=(4, 2))
    clip = write_clip(tmp_path / "held.mkv", [a] * 2 + [b] * 7 + [c] * 2 + [d] * 3, rate=12, codec="ffv1",
                      pix_fmt="bgr0")
    args = [clip, "--fps", "60", "--keep-holds", "4", "--cadence", "3", "--segment-frames", "7",
            "--weights", str(small_ckpt), "--codec", "ffv1", "--pix-fmt", "bgr0", "--no-progress"]
    full, out, work = tmp_path / "full.mkv", tmp_path / "part.mkv", tmp_path / "part.mkv.dainrt-partial"
    assert main(["run", *args, "-o", str(full)]) == 0
    _ctrl_c_after_a_segment([*args, "-o", str(out)], work)
    done = sum(s["frames"] for s in json.loads((work / "state.json").read_text())["segments"])
    assert 7 <= done < 70
    report = tmp_path / "part.json"
    assert main(["run", *args, "-o", str(out), "--resume", "--report", str(report)]) == 0
    assert json.loads(report.read_text())["resumed_from_frame"] == done
    x, px, _ = decode_rgb(full)
    y, py, _ = decode_rgb(out)
    assert len(x) == len(y) == 70 and px == py
    assert all(np.array_equal(p, q) for p, q in zip(x, y))
    # the kept hold (output frames 10-40) shows b itself from the first cadence step in it (12)
    assert all(np.array_equal(x[k], b) for k in range(12, 41))


def _limit_file_size(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # writes fail with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_fails_cleanly_and_resumes(tmp_path, small_ckpt, film):
    out = tmp_path / "out.mkv"
    cmd = [sys.executable, "-m", "dainrt", "run", film, "-o", str(out), "--weights", str(small_ckpt), *ARGS]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size(12_000))   # segments fit, the whole film does not
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("dainrt: error: cannot write"), lines
    assert not out.exists()
    assert (tmp_path / "out.mkv.dainrt-partial" / "state.json").is_file()
    assert main(["run", film, "-o", str(out), "--weights", str(small_ckpt), "--resume", *ARGS]) == 0
    assert len(decode_rgb(out)[0]) == 16


def test_empty_zero_frame_truncated_and_garbage_inputs(tmp_path, small_ckpt, capsys):
    import av

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(b"not a video at all " * 100)
    zeros = [tmp_path / "zero.mkv", tmp_path / "zero.mp4"]
    for zero in zeros:                                         # valid files with a video stream and no frames
        with av.open(str(zero), "w") as c:
            s = c.add_stream("libx264", rate=24)
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            c.start_encoding()
    whole = write_clip(tmp_path / "whole.mkv", pictures(48, 64, 48, seed=3), rate=24)
    data = Path(whole).read_bytes()
    truncated = tmp_path / "truncated.mkv"
    truncated.write_bytes(data[: len(data) // 2])
    cases = [(empty, "empty"), (garbage, "cannot read"), (zeros[0], "no video frames"), (zeros[1], "no video"), (truncated, "truncated"),
             (tmp_path / "missing.mp4", "no such file")]
    for path, words in cases:
        out = tmp_path / f"out-{path.stem}.mp4"
        rc = main(["run", str(path), "-o", str(out), "--fps", "60", "--weights", str(small_ckpt), "--no-progress"])
        _one_line_error(capsys, rc, words)
        assert not out.exists() and not Path(str(out) + ".dainrt-partial").exists()


def test_output_and_option_errors_write_nothing(tmp_path, small_ckpt, capsys):
    src = write_clip(tmp_path / "odd.mkv", pictures(2, 67, 45), rate=12, codec="ffv1", pix_fmt="yuv444p")
    cases = [
        (["-o", str(tmp_path / "nowhere" / "out.mp4")], "does not exist"),
        (["-o", str(tmp_path)], "is a folder"),
        (["-o", str(tmp_path / "out.xyz")], "unknown output format"),
        (["-o", str(tmp_path / "out.mp4"), "--pix-fmt", "yuv420p"], "yuv444p"),
        (["-o", str(tmp_path / "out.mp4"), "--codec", "nosuchcodec"], "unknown encoder"),
        (["-o", str(tmp_path / "out.mp4"), "--weights", str(tmp_path / "missing.pth")], "missing.pth: no such file"),
        (["-o", str(tmp_path / "out.mp4"), "--device", "cuda:7"] if not torch.cuda.is_available() else
         ["-o", str(tmp_path / "out.mp4"), "--backend", "nosuchbackend"], "cuda" if not torch.cuda.is_available() else "backend"),
    ]
    for extra, words in cases:
        args = ["run", src, "--factor", "2", "--no-progress", *extra]
        if "--weights" not in extra:
            args += ["--weights", str(small_ckpt)]
        rc = main(args)
        _one_line_error(capsys, rc, words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mkv"]


def test_streams_the_output_format_cannot_hold_fail_before_any_work(tmp_path, small_ckpt, capsys):
    out = tmp_path / "bbb.mov"                                 # Vorbis audio cannot go into QuickTime
    rc = main(["run", str(CLIP), "-o", str(out), "--fps", "60", "--weights", str(small_ckpt), "--no-progress"])
    _one_line_error(capsys, rc, ".mkv")
    assert list(tmp_path.iterdir()) == []
