"""Issue 19: no command loses a user's file, and the bad inputs of a 163-case sweep end in one
line. Each test names the issue item it covers. Small inputs, options that fail before model
work; the few real runs use a 4-frame 64x48 clip and the small test checkpoint."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dainrt.cli import main
from dainrt.runtime.synthetic import pictures, write_clip

ROOT = Path(__file__).resolve().parents[1]
BUNNY = ROOT / "tests" / "data" / "video" / "big_buck_bunny_11s-21s_scenecuts.mkv"   # Vorbis audio
MIDDLEBURY = ROOT / "tests" / "data" / "middlebury"
QUICK = ["--factor", "2", "--no-progress"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _err(capsys, rc, *words) -> str:
    """The one error line; `rc` non-zero; every word in it."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc not in (0, None), err
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """IN (4 frames, AAC audio) and OUT, a second clip standing for the interpolated film."""
    folder = tmp_path_factory.mktemp("clips")
    src = write_clip(folder / "in.mp4", pictures(4, 64, 48, seed=3), rate=12, audio_seconds=0.3)
    out = write_clip(folder / "out.mp4", pictures(8, 64, 48, seed=4), rate=24)
    return Path(src), Path(out)


@pytest.fixture
def work(tmp_path, clips):
    for c in clips:
        shutil.copy(c, tmp_path / c.name)
    return tmp_path, tmp_path / "in.mp4", tmp_path / "out.mp4"


# -- 1, 2: data loss ------------------------------------------------------------------------

def test_1_compare_never_writes_over_its_inputs(work, capsys):
    folder, src, out = work
    before = _snapshot(folder)
    for target in (src, out):
        for extra in ([], ["-y"]):
            rc = main(["compare", str(src), str(out), "-o", str(target), *extra])
            _err(capsys, rc, "is an input of this command")
    assert _snapshot(folder) == before


def test_1_compare_replaces_an_existing_clip_only_with_y(work, capsys):
    folder, src, out = work
    sbs = folder / "sbs.mkv"
    sbs.write_bytes(b"mine")
    _err(capsys, main(["compare", str(src), str(out), "-o", str(sbs)]), "exists", "-y/--overwrite")
    assert sbs.read_bytes() == b"mine"
    assert main(["compare", str(src), str(out), "-o", str(sbs), "-y"]) == 0
    assert sbs.read_bytes() != b"mine"


def test_2_8_run_report_is_checked_before_any_work(work, small_ckpt, capsys):
    folder, src, _ = work
    before = _snapshot(folder)
    film = folder / "film.mkv"
    cases = [(["--report", str(src)], "is an input"), (["--report", str(film)], "also the --output"),
             (["--report", str(folder / "nowhere" / "r.json")], "does not exist"),       # item 8
             (["--report", str(folder / "out.mp4")], "exists")]
    for extra, words in cases:
        rc = main(["run", str(src), "-o", str(film), "--weights", str(small_ckpt), *QUICK, *extra])
        _err(capsys, rc, words)
    rc = main(["run", str(src), "-o", str(src), "-y", "--weights", str(small_ckpt), *QUICK])
    _err(capsys, rc, "is an input")
    assert _snapshot(folder) == before                         # nothing written, no work folder


def test_overwrite_rule_for_films_resume_and_picture_patterns(work, small_ckpt, capsys):
    folder, src, _ = work
    film = folder / "film.mkv"
    args = ["run", str(src), "-o", str(film), "--weights", str(small_ckpt), *QUICK]
    assert main(args) == 0
    first = film.read_bytes()
    _err(capsys, main(args), "exists", "-y/--overwrite")
    _err(capsys, main(args + ["--resume"]), "exists")          # --resume is no licence to overwrite
    assert film.read_bytes() == first
    assert main(args + ["-y"]) == 0
    # picture pattern: any picture it names makes it exist; with -y the folder holds exactly the new run
    pics = folder / "pics"
    pics.mkdir()
    for i in range(1, 12):
        Image.new("RGB", (4, 4)).save(pics / f"{i:05d}.png")
    (pics / "notes.txt").write_text("mine")
    pattern = ["run", str(src), "-o", str(pics / "%05d.png"), "--weights", str(small_ckpt), *QUICK]
    _err(capsys, main(pattern), "pictures of this pattern exist", "-y")
    assert main(pattern + ["-y"]) == 0
    names = sorted(p.name for p in pics.iterdir())
    assert names == [f"{i:05d}.png" for i in range(1, len(names))] + ["notes.txt"] and len(names) < 12


# -- 3-6: silent wrong results ----------------------------------------------------------------

def test_3_greyscale_pictures_keep_their_depth_and_stay_grey(tmp_path, small_ckpt, capsys):
    rng = np.random.default_rng(0)
    for depth, dtype in ((16, np.uint16), (8, np.uint8)):
        top = 65535 if depth == 16 else 255
        a = (rng.random((48, 64)) * top * 0.5).astype(dtype)
        for name in ("g0.png", "g1.png"):
            Image.fromarray(a).save(tmp_path / name)
        out = tmp_path / f"out{depth}"
        assert main(["interpolate", str(tmp_path / "g0.png"), str(tmp_path / "g1.png"), "-o", str(out),
                     "--weights", str(small_ckpt)]) == 0
        (result,) = out.iterdir()
        with Image.open(result) as img:
            assert img.mode == ("I;16" if depth == 16 else "L"), img.mode
            got = np.asarray(img).astype(np.float64)
        assert abs(got.mean() - a.mean()) < 0.1 * top, (got.mean(), a.mean())   # not clipped to white


def test_4_interpolate_factor_0_is_refused(tmp_path, capsys):
    f = MIDDLEBURY / "RubberWhale"
    for bad in ("0", "1", "-3"):
        rc = main(["interpolate", str(f / "frame10.png"), str(f / "frame11.png"), "-o", str(tmp_path / "o"), "--factor", bad])
        _err(capsys, rc, "--factor", "2 or more")
    assert list(tmp_path.iterdir()) == []


def test_5_crf_is_checked_against_the_encoder_before_starting(work, capsys):
    folder, src, _ = work
    for crf, words in (("99", "0..51 for libx264"), ("-5", "0 or more")):
        rc = main(["run", str(src), "-o", str(folder / "f.mkv"), "--crf", crf, *QUICK])
        _err(capsys, rc, "--crf", words)
    rc = main(["run", str(src), "-o", str(folder / "f.mkv"), "--codec", "libvpx-vp9", "--crf", "64", *QUICK])
    _err(capsys, rc, "0..63 for libvpx-vp9")
    assert not (folder / "f.mkv.dainrt-partial").exists()


def test_6_vorbis_into_mp4_is_refused_with_a_suggestion(tmp_path, capsys):
    rc = main(["run", str(BUNNY), "-o", str(tmp_path / "b.mp4"), "--max-frames", "2", *QUICK])
    _err(capsys, rc, "vorbis", ".mkv")
    assert list(tmp_path.iterdir()) == []


# -- 7, 8: failures that block the next try ---------------------------------------------------

def test_7_a_run_that_fails_before_its_first_frame_leaves_nothing(work, small_ckpt, capsys):
    folder, src, _ = work
    film = folder / "film.mkv"
    base = ["run", str(src), "-o", str(film), "--weights", str(small_ckpt), *QUICK]
    _err(capsys, main(base + ["--backend", "bogus"]), "--backend")
    _err(capsys, main(base + ["--backend", "tensorrt"]))          # no GPU / TensorRT here (or a real build)
    assert not (folder / "film.mkv.dainrt-partial").exists()
    # a work folder with no finished segment (an older dainrt, a crash) never blocks a fresh start
    from dainrt.runtime.resume import RunState

    stale = folder / "film.mkv.dainrt-partial"
    stale.mkdir()
    RunState(stale, {"backend": "bogus"}, 8, 2).save()
    assert main(base) == 0 and film.is_file() and not stale.exists()


# -- 9-13: tracebacks for user mistakes -------------------------------------------------------

def test_9_an_existing_file_with_percent_in_its_name_is_a_file(work, capsys):
    folder, src, _ = work
    for name in ("100%done.mp4", "clip%d.mp4"):
        odd = folder / name
        shutil.copy(src, odd)
        assert main(["run", str(odd), "--dry-run", *QUICK]) == 0
    capsys.readouterr()                 # the dry runs' own lines (plan, memory estimate)
    rc = main(["run", str(folder / "missing%d.mp4"), "-o", str(folder / "f.mkv"), *QUICK])
    _err(capsys, rc, "cannot read")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write into: mode 0555, or for root (who ignores modes) a read-only tmpfs."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("root, and no read-only mount possible here")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_10_read_only_output_folders_are_refused_first(work, read_only_folder, capsys):
    folder, src, out = work
    ro = read_only_folder
    f = MIDDLEBURY / "RubberWhale"
    _err(capsys, main(["interpolate", str(f / "frame10.png"), str(f / "frame11.png"), "-o", str(ro)]), "not writable")
    _err(capsys, main(["compare", str(src), str(out), "-o", str(ro / "c.mp4")]), "not writable")
    _err(capsys, main(["run", str(src), "-o", str(ro / "f.mkv"), *QUICK]), "not writable")
    # a download there: refused before anything is fetched, and no "partial download kept"
    line = _err(capsys, main(["weights", "download", "--url", "http://127.0.0.1:9/w.pth", "--sha256", "a" * 64,
                              "-o", str(ro / "w.pth")]), "not writable")
    assert "kept" not in line


def test_11_eval_ground_truth_of_another_size_fails_before_the_model(tmp_path, capsys):
    seq = tmp_path / "seq"
    shutil.copytree(MIDDLEBURY / "RubberWhale", seq)
    with Image.open(seq / "frame10i11.png") as img:
        img.resize((img.width // 2, img.height // 2)).save(seq / "frame10i11.png")
    t = time.monotonic()
    _err(capsys, main(["eval", str(seq), "--weights", str(tmp_path / "none.pth")]), "weights")
    _err(capsys, main(["eval", str(seq)]), "differ in size")
    assert time.monotonic() - t < 5


def test_12_weights_download_into_an_existing_folder(tmp_path, capsys):
    rc = main(["weights", "download", "--url", "http://127.0.0.1:9/best.pth", "--sha256", "a" * 64,
               "-o", str(tmp_path), "--no-progress"])
    _err(capsys, rc, "is a folder")
    assert list(tmp_path.iterdir()) == []


def test_13_train_outdir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "outdir"
    f.write_text("mine")
    _err(capsys, main(["train", str(f), "--steps", "1"]), "is a file")
    assert f.read_text() == "mine"


def test_train_never_replaces_a_training_without_y_nor_writes_over_init(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.pth").write_bytes(b"earlier")
    _err(capsys, main(["train", str(out), "--steps", "1"]), "holds a training (best.pth)", "--resume", "-y")
    _err(capsys, main(["train", str(out), "--steps", "1", "--init", str(out / "best.pth"), "-y"]), "is an input")
    assert (out / "best.pth").read_bytes() == b"earlier"


def test_weights_init_and_export_refuse_existing_outputs(tmp_path, capsys):
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"mine")
    _err(capsys, main(["weights", "init", "--width", "0.25", "-o", str(ckpt)]), "exists", "-y")
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    (onnx / "warp.onnx").write_bytes(b"mine")
    _err(capsys, main(["export", "-o", str(onnx)]), "exists", "-y")
    _err(capsys, main(["bench", "--json", str(ckpt)]), "exists", "-y")
    assert ckpt.read_bytes() == b"mine" and (onnx / "warp.onnx").read_bytes() == b"mine"


# -- 14, 15: smaller ----------------------------------------------------------------------------

def test_14_weights_init_file_mode_follows_the_umask(tmp_path):
    from dainrt.base import files

    path = tmp_path / "w.pth"
    assert main(["weights", "init", "--width", "0.25", "-o", str(path)]) == 0
    assert path.stat().st_mode & 0o777 == 0o666 & ~files._UMASK


def test_15_messages_say_what_is_true(tmp_path, work, capsys):
    folder, src, _ = work
    f = MIDDLEBURY / "RubberWhale"
    _err(capsys, main(["interpolate", str(f), str(f / "frame11.png"), "-o", str(tmp_path / "o")]), "is a folder")
    _err(capsys, main(["run", str(src), "-o", str(folder / "single.png"), *QUICK]), "%05d")
    from dainrt.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["run"]
    assert "%05d" in sub.format_help() and "%%05d" not in sub.format_help()


def test_15_full_disk_before_the_first_segment_does_not_suggest_resume(work, small_ckpt):
    import resource

    folder, src, _ = work

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))     # headers and state fit, the first segment does not
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "dainrt", "run", str(src), "-o", str(folder / "f.mkv"),
                           "--weights", str(small_ckpt), *QUICK], env=env, capture_output=True, text=True,
                          timeout=300, preexec_fn=limit)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "cannot write" in lines[0], proc.stderr
    assert "seg-000000" in lines[0] and "run the same command again" in lines[0]
    assert "--resume" not in lines[0]
    assert not (folder / "f.mkv.dainrt-partial").exists()


def test_15_sigterm_exits_143(work, small_ckpt):
    folder, _, _ = work
    src = write_clip(folder / "long.mp4", pictures(24, 64, 48, seed=5), rate=12)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    work_dir = folder / "f.mkv.dainrt-partial"
    proc = subprocess.Popen([sys.executable, "-m", "dainrt", "run", str(src), "-o", str(folder / "f.mkv"),
                             "--weights", str(small_ckpt), "--factor", "4", "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not work_dir.exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err


def test_interpolate_never_writes_one_frame_over_another_nor_over_its_inputs(tmp_path, capsys):
    f = MIDDLEBURY / "RubberWhale"
    rc = main(["interpolate", str(f / "frame10.png"), str(f / "frame11.png"), "-o", str(tmp_path), "--times", "0.5,0.50001"])
    _err(capsys, rc, "also another output")
    # frame1 named as frame0's in-between: -y does not make writing over it right
    shutil.copy(f / "frame10.png", tmp_path / "a.png")
    shutil.copy(f / "frame11.png", tmp_path / "a_t0.5000.png")
    before = _snapshot(tmp_path)
    rc = main(["interpolate", str(tmp_path / "a.png"), str(tmp_path / "a_t0.5000.png"), "-o", str(tmp_path), "-y"])
    _err(capsys, rc, "is an input")
    assert _snapshot(tmp_path) == before
