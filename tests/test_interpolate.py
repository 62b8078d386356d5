"""`dainrt.interpolate` and `dainrt interpolate`: real pictures, real files, real checkpoints."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

import dainrt
from conftest import E2E_CASES, GOLDEN, MIDDLEBURY, load_golden
from dainrt.model.checkpoint import save_checkpoint
from dainrt.cli import main
from dainrt.engine import Runner, create_backend
from dainrt.base.images import read_image, to_dtype, write_image
from dainrt.runtime.transfer import to_tensor

INPUTS = GOLDEN / "e2e" / "inputs"


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory, small_model):
    return save_checkpoint(small_model, None, tmp_path_factory.mktemp("w") / "small.pth")


def test_api_matches_official_golden(golden_model):
    z = load_golden(E2E_CASES[1])                                  # t = 0.25 and 0.75
    outs = dainrt.interpolate(z["frame0_u8"], z["frame1_u8"], z["t"].tolist(), weights=golden_model)
    assert len(outs) == 2
    for out, gold in zip(outs, z["out_u8"]):
        assert out.dtype == np.float32 and out.shape == gold.shape
        assert 0.0 <= out.min() and out.max() <= 1.0
        assert np.mean(to_dtype(out, np.uint8) != gold) <= 5e-3


def test_api_equals_runner_and_accepts_float_input(small_model):
    f0, f1 = (read_image(MIDDLEBURY / "Venus" / f"frame1{i}.png") for i in (0, 1))
    interp = dainrt.Interpolator(small_model)
    a = interp.interpolate(f0, f1, [0.5])[0]
    b = interp.interpolate(f0.astype(np.float32) / 255.0, f1.astype(np.float32) / 255.0, [0.5])[0]
    np.testing.assert_array_equal(a, b)                            # uint8 and float [0,1] are the same input
    runner = Runner(create_backend("torch", small_model, **interp.choice.options))   # the engine the API chose
    (ref,) = runner.interpolate("a", to_tensor(f0), "b", to_tensor(f1), [0.5])
    np.testing.assert_array_equal(a, ref.clamp(0, 1).permute(1, 2, 0).numpy())
    assert a.shape == (380, 420, 3)


def test_api_rejects_bad_input(small_model):
    f = np.zeros((64, 64, 3), np.uint8)
    interp = dainrt.Interpolator(small_model)
    with pytest.raises(dainrt.DainrtError, match="strictly between 0 and 1"):
        interp.interpolate(f, f, [1.0])
    with pytest.raises(dainrt.DainrtError, match="differ in size"):
        interp.interpolate(f, np.zeros((64, 65, 3), np.uint8), [0.5])
    with pytest.raises(dainrt.DainrtError, match="HxWx3"):
        interp.interpolate(f[..., 0], f[..., 0], [0.5])


def test_runner_caches_frames_and_pairs(small_model):
    """A stream A, B, C at x4 costs 3 frame runs, 2 pair runs, 6 warp+rectify runs."""
    frames = [np.asarray(Image.open(MIDDLEBURY / "RubberWhale" / f"frame1{i}.png"))[:96, :128] for i in (0, 1)]
    frames.append(frames[0][:, ::-1].copy())
    runner = Runner(create_backend("torch", small_model))
    frames = [to_tensor(f) for f in frames]
    first = runner.interpolate(0, frames[0], 1, frames[1], [0.25, 0.5, 0.75])
    runner.interpolate(1, frames[1], 2, frames[2], [0.25, 0.5, 0.75])
    assert runner.calls == {"frame": 3, "pair": 2, "warp": 6, "rectify": 6}
    fresh = Runner(create_backend("torch", small_model)).interpolate(0, frames[0], 1, frames[1], [0.5])[0]
    assert np.array_equal(first[1].numpy(), fresh.numpy())        # cached == recomputed


def test_cli_matches_official_golden(tmp_path, golden_model):
    ckpt = save_checkpoint(golden_model, None, tmp_path / "synthetic.pth")
    z = load_golden(E2E_CASES[2])                                  # odd size 130x77
    rc = main(["interpolate", str(INPUTS / "rubberwhale_crop130x77_frame10.png"), str(INPUTS / "rubberwhale_crop130x77_frame11.png"),
               "--weights", str(ckpt), "-o", str(tmp_path / "out")])
    assert rc == 0
    out = np.asarray(Image.open(tmp_path / "out" / "rubberwhale_crop130x77_frame10_t0.5000.png"))
    assert out.dtype == np.uint8 and out.shape == (77, 130, 3)
    assert np.mean(out != z["out_u8"][0]) <= 5e-3


def test_cli_factor_and_16_bit(tmp_path, small_ckpt):
    f0, f1 = (read_image(INPUTS / f"rubberwhale_160x96_frame1{i}.png").astype(np.uint16) * 257 for i in (0, 1))
    write_image(tmp_path / "a.png", f0)
    write_image(tmp_path / "b.png", f1)
    assert read_image(tmp_path / "a.png").dtype == np.uint16      # the 16-bit round trip is lossless
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), f0)
    rc = main(["interpolate", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--factor", "4",
               "--weights", str(small_ckpt), "-o", str(tmp_path / "out")])
    assert rc == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["a_t0.2500.png", "a_t0.5000.png", "a_t0.7500.png"]
    mid = read_image(tmp_path / "out" / "a_t0.5000.png")
    assert mid.dtype == np.uint16 and mid.shape == (96, 160, 3)
    # The same model on the 8-bit originals gives the same picture to within 8-bit rounding.
    ref = dainrt.interpolate((f0 // 257).astype(np.uint8), (f1 // 257).astype(np.uint8), [0.5], weights=small_ckpt)[0]
    assert np.abs(mid.astype(np.float64) / 65535 - ref).max() < 1e-3


def test_cli_rgba_warns_and_writes_rgb(tmp_path, small_ckpt, capsys):
    for i in (0, 1):
        rgb = np.asarray(Image.open(INPUTS / f"rubberwhale_crop128x64_frame1{i}.png"))
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])).save(tmp_path / f"f{i}.png")
    rc = main(["interpolate", str(tmp_path / "f0.png"), str(tmp_path / "f1.png"), "--times", "0.5",
               "--weights", str(small_ckpt), "-o", str(tmp_path / "out")])
    assert rc == 0
    assert "alpha channel dropped" in capsys.readouterr().err
    assert Image.open(tmp_path / "out" / "f0_t0.5000.png").mode == "RGB"


@pytest.mark.parametrize(
    "args,message",
    [
        (["missing.png", "{b}"], "no such file"),
        (["{a}", "{b}", "--times", "0.5,1.5"], "strictly between 0 and 1"),
        (["{a}", "{b}", "--factor", "1"], "--factor must be 2 or more"),
        (["{a}", "{c}"], "differ in size"),
        (["{a}", "{b}", "--weights", "nope.pth"], "nope.pth"),
        (["{a}", "{b}", "--device", "cuda"], "cuda"),
        (["{a}", "{txt}"], "not a picture"),
    ],
)
def test_cli_user_errors_are_one_line(tmp_path, small_ckpt, capsys, args, message):
    (tmp_path / "x.txt").write_text("hello")
    paths = dict(a=INPUTS / "rubberwhale_160x96_frame10.png", b=INPUTS / "rubberwhale_160x96_frame11.png",
                 c=INPUTS / "rubberwhale_crop128x64_frame10.png", txt=tmp_path / "x.txt")
    argv = ["interpolate", *[a.format(**paths) for a in args], "-o", str(tmp_path / "out")]
    if "--weights" not in argv:
        argv += ["--weights", str(small_ckpt)]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and err.startswith("dainrt: error:") and message in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dainrt", "interpolate", "a.png", "b.png", "-o", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_help_texts():
    for argv in (["--help"], ["interpolate", "--help"]):
        proc = subprocess.run([sys.executable, "-m", "dainrt", *argv], capture_output=True, text=True)
        assert proc.returncode == 0 and "usage: dainrt" in proc.stdout
