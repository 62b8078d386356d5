"""`dainrt eval --video`: the triplet builder, the minterpolate baseline, the command's output."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dainrt.training import evaluate as E

VIDEO = Path(__file__).parent / "data" / "video"
BUNNY = VIDEO / "big_buck_bunny_11s-21s_scenecuts.mkv"     # cuts at frames 16 and 109, 237 frames
CAR = VIDEO / "davis_car-turn.mp4"                          # 81 frames, no cut


@pytest.fixture(autouse=True)
def _one_thread():
    """Two OpenMP threads run these small convolutions several times slower on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pick_triplets_counts_spacing_and_cuts():
    # shared/data/README.md's reference sets: step (n - s) // N from frame 0
    assert E.pick_triplets(81, 2, 12) == list(range(0, 72, 6))
    assert E.pick_triplets(81, 4, 8) == list(range(0, 72, 9))
    # a triplet whose span (i, i+s] holds a cut is skipped, not replaced; a cut at i is fine
    assert E.pick_triplets(42, 2, 10, cuts=[5]) == [0] + list(range(8, 40, 4))
    assert E.pick_triplets(42, 2, 10, cuts=[4, 38]) == list(range(0, 36, 4))
    assert E.pick_triplets(6, 4, 5) == [0, 1]                 # step at least 1, spans inside the clip
    assert E.pick_triplets(3, 4, 2) == []
    with pytest.raises(Exception, match="spacing"):
        E.pick_triplets(10, 1, 2)


def test_video_triplets_skip_the_bunny_clips_cuts():
    n, cuts = E.scan_video(BUNNY)
    assert n == 237 and cuts == [16, 109]
    triplets = E.video_triplets(BUNNY, 4, 16)                 # step 14: 14..18 spans the cut at 16
    firsts = [t.first for t in triplets]
    assert firsts == [i for i in range(0, 16 * 14, 14) if i != 14]
    assert all(len(t.frames) == 5 and t.spacing == 4 and t.frames[0].shape == (720, 1280, 3)
               and t.frames[0].dtype == np.uint8 for t in triplets)
    assert all(not any(t.first < k <= t.first + 4 for k in cuts) for t in triplets)


class _Recorder:
    """An Interpolator stand-in: the t-weighted float blend; records the times asked for."""

    def __init__(self):
        self.calls = []

    def interpolate(self, frame0, frame1, times):
        self.calls.append(list(times))
        return [((1 - t) * frame0 + t * frame1).astype(np.float32) / 255 for t in times]


def test_evaluate_video_rows_times_and_json(tmp_path):
    triplets = E.video_triplets(_small_clip(tmp_path / "small.mkv"), 4, 2)     # 6 frames: step 1
    assert [t.first for t in triplets] == [0, 1]
    rec = _Recorder()
    rows = E.evaluate_video(triplets, rec, minterpolate_baseline=False)
    assert rec.calls == [[0.25, 0.5, 0.75]] * 2
    assert [r.name for r in rows] == [f"{i}->{i + 4} t={k}/4" for i in (0, 1) for k in (1, 2, 3)]
    assert [r.t for r in rows] == [0.25, 0.5, 0.75] * 2
    for r in rows:      # the stand-in is the blend, up to rounding
        assert r.psnr == pytest.approx(r.blend_psnr, abs=0.1) and np.isnan(r.mi_psnr)
    E.write_json(tmp_path / "rows.json", rows, spacing=4)
    data = json.loads((tmp_path / "rows.json").read_text())
    assert data["spacing"] == 4 and len(data["rows"]) == 6 and data["rows"][0]["mi_psnr"] is None
    assert data["mean"]["psnr"] == pytest.approx(np.mean([r.psnr for r in rows]))


def test_minterpolate_beats_the_blend_on_a_synthetic_pan():
    """A textured picture panning 12 px right and 4 px down per frame: x2 and x4."""
    g = torch.Generator().manual_seed(0)
    big = sum(w * F.interpolate(torch.rand(1, 3, 160 // c, 224 // c, generator=g), size=(160, 224), mode="bicubic",
                                align_corners=False) for w, c in ((0.6, 16), (0.4, 4)))[0]
    picture = (big.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    def view(k, dx, dy):      # the camera moves right/down by (dx, dy) px per frame
        return picture[16 + k * dy:16 + k * dy + 96, 32 + k * dx:32 + k * dx + 128]

    for s in (2, 4):
        dx, dy = 12 // s, 4 // s                                # (12, 4) px between the two inputs
        f0, f1 = view(0, dx, dy), view(s, dx, dy)
        mids = E.minterpolate(f0, f1, s)
        assert len(mids) == s - 1 and all(m.shape == f0.shape and m.dtype == np.uint8 for m in mids)
        for k, mid in enumerate(mids, start=1):
            gt = view(k, dx, dy)
            inner = (slice(8, -8), slice(16, -16))             # away from the borders
            assert E.psnr(mid[inner], gt[inner]) > E.psnr(E.blend(f0, f1, k / s)[inner], gt[inner]) + 6


def _small_clip(path: Path, frames: int = 6) -> Path:
    """Car-turn's first frames at 128x72 (area-averaged), lossless FFV1: the model runs in ~1 s."""
    import av

    with av.open(str(CAR)) as src:
        small = [f.reformat(width=128, height=72, format="rgb24", interpolation="AREA").to_ndarray()
                 for _, f in zip(range(frames), src.decode(video=0))]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 72, "bgr0"
        for rgb in small:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="bgr0")))
        out.mux(stream.encode(None))
    return path


def test_eval_command_on_video_triplets(capsys, tmp_path, monkeypatch):
    """Rows for every ground-truth frame and the mean, with both baselines, and the JSON."""
    from dainrt.cli import main

    clip = _small_clip(tmp_path / "car-small.mkv")
    monkeypatch.delenv("DAINRT_WEIGHTS", raising=False)
    monkeypatch.setenv("DAINRT_CACHE", str(tmp_path / "empty-cache"))
    out_json = tmp_path / "car.json"
    assert main(["eval", "--video", str(clip), "--spacing", "4", "--triplets", "1", "--json", str(out_json)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-4:] == ["mi", "PSNR", "mi", "SSIM"]
    assert [line.split()[0] for line in lines[1:]] == ["0->4"] * 3 + ["mean"]
    triplets = E.video_triplets(clip, 4, 1)
    data = json.loads(out_json.read_text())
    assert data["spacing"] == 4 and data["triplets"] == [0] and len(data["rows"]) == 3
    for line, row, (tri, k) in zip(lines[1:], data["rows"], [(t, k) for t in triplets for k in (1, 2, 3)]):
        model_psnr, model_ssim, blend_psnr, blend_ssim, mi_psnr, mi_ssim = map(float, line.split()[2:])
        f0, f1, gt = tri.frames[0], tri.frames[-1], tri.frames[k]
        assert row["t"] == k / 4 and row["psnr"] == pytest.approx(model_psnr, abs=0.005)
        assert blend_psnr == pytest.approx(E.psnr(E.blend(f0, f1, k / 4), gt), abs=0.005)
        assert mi_psnr == pytest.approx(E.psnr(E.minterpolate(f0, f1, 4)[k - 1], gt), abs=0.005)
        assert 0 < model_ssim <= 1 and 0 < mi_ssim <= 1 and blend_ssim <= 1
    mean_row = lines[-1].split()
    assert float(mean_row[1]) == pytest.approx(data["mean"]["psnr"], abs=0.005)


@pytest.mark.parametrize("argv, message", [
    (["eval", "--video", str(CAR)], "--spacing 2 or 4"),
    (["eval", "--video", str(CAR), "--spacing", "3"], "--spacing 2 or 4"),
    (["eval"], "either DIR"),
    (["eval", "--video", "no-such-clip.mp4", "--spacing", "2"], "no such file"),
    (["eval", str(VIDEO), "--spacing", "2"], "go with --video"),
])
def test_eval_command_user_mistakes(capsys, argv, message):
    from dainrt.cli import main

    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("dainrt: error: ") and message in err and len(err.splitlines()) == 1


def test_zero_depth_ablation_gives_log_depth_zero():
    from dainrt.model import DAIN, ModelConfig

    torch.manual_seed(0)
    model = DAIN(ModelConfig(0.25)).eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert float(model.depthNet(image).abs().max()) > 0
        assert E.zero_depth(model) is model
        assert float(model.depthNet(image).abs().max()) == 0.0
