"""Alpha: a generated RGBA sprite moving on a transparent background, through `dainrt run`.

The sprite is an orange disc (radius 10 px, antialiased edge) moving 8 px per frame on a
64x48 transparent picture whose transparent pixels are stored black, as many tools store them.
The bundled model interpolates it (real flow, so the in-betweens sit where the sprite moves).
Checked: originals bit for bit, the in-between's alpha (area, position, range) and its edge
colour: premultiplied handling keeps the edge the sprite's colour, where interpolating the
straight colour darkens it (the fringe this handling prevents).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dainrt.cli import main

X = (16, 24, 32, 40)                    # the sprite's centre in the four input pictures
COLOUR = np.array([250, 200, 40])

pytestmark = pytest.mark.usefixtures("one_thread")


def sprite(x: float, w: int = 64, h: int = 48) -> np.ndarray:
    img = np.zeros((h, w, 4), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    img[..., :3] = COLOUR
    img[..., 3] = np.round(np.clip(10.5 - np.hypot(xx - x, yy - 24), 0, 1) * 255)
    img[img[..., 3] == 0, :3] = 0
    return img


def run(*args) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        report = os.path.join(folder, "report.json")
        assert main(["run", *[str(a) for a in args], "--no-progress", "--report", report]) == 0
        return json.loads(Path(report).read_text())


def figures(picture: np.ndarray) -> dict:
    """Alpha area (px), alpha-weighted centre x, and the edge colour's mean distance from the
    sprite's colour over the partly transparent pixels with alpha >= 1/4 (its fringe)."""
    a = picture[..., 3].astype(float) / 255
    xx = np.mgrid[0:a.shape[0], 0:a.shape[1]][1]
    edge = (a >= 0.25) & (a < 1)
    fringe = np.abs(picture[..., :3][edge].astype(float) - COLOUR).mean()
    return {"area": a.sum(), "x": (a * xx).sum() / a.sum(), "fringe": fringe, "edge_px": int(edge.sum())}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("sprite")
    frames = [sprite(x) for x in X]
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i + 1:05d}.png")
    return folder, frames


def test_rgba_sequence_keeps_alpha_premultiplied_without_fringes(pictures, tmp_path, capsys):
    from PIL import Image

    from dainrt.engine import Runner, create_backend
    from dainrt.model.checkpoint import load_model
    from dainrt.model.weights import resolve_weights
    from dainrt.runtime.transfer import premultiply, quantize, to_tensor

    folder, frames = pictures
    r = run(folder / "%05d.png", "-o", tmp_path / "out" / "%05d.png", "--factor", "2", "--input-fps", "12")
    assert r["output"]["alpha"] is True and r["output"]["pix_fmt"] == "rgba"
    out = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "out").iterdir())]
    assert len(out) == 8 and all(o.shape == (48, 64, 4) for o in out)
    for i, f in enumerate(frames):
        np.testing.assert_array_equal(out[2 * i], f, err_msg=f"original {i}")          # bit for bit
    # the same pairs straight (not premultiplied): colour and alpha interpolated apart
    runner = Runner(create_backend("torch", load_model(resolve_weights(None))))
    area = figures(frames[0])["area"]
    for i in range(3):
        got = figures(out[2 * i + 1])
        t0, t1 = to_tensor(frames[i]), to_tensor(frames[i + 1])
        (straight,) = runner.interpolate(i, t0[:3].contiguous(), i + 1, t1[:3].contiguous(), [0.5])
        (alpha,) = runner.interpolate_alpha(i, premultiply(t0)[1], i + 1, premultiply(t1)[1], [0.5])
        naive = figures(np.dstack([quantize(straight, np.uint8).numpy(), quantize(alpha, np.uint8).numpy()]))
        print(f"in-between {i}: alpha area {got['area']:.1f} px (originals {area:.1f}), centre x {got['x']:.2f} "
              f"(expected {(X[i] + X[i + 1]) / 2}), raw alpha in [{alpha.min().item():.4f}, {alpha.max().item():.4f}], "
              f"edge colour error {got['fringe']:.2f} premultiplied vs {naive['fringe']:.2f} straight "
              f"over {got['edge_px']} edge px")
        assert abs(got["area"] - area) < 0.02 * area                     # the sprite keeps its size
        assert abs(got["x"] - (X[i] + X[i + 1]) / 2) < 0.5               # half-way, by the flow
        assert got["fringe"] < 6 and naive["fringe"] > 4 * got["fringe"]  # no dark fringe
        assert out[2 * i + 1][..., 3].min() == 0 and out[2 * i + 1][..., 3].max() == 255


@pytest.mark.parametrize("suffix,codec,pix_fmt,coding", [(".mov", "prores_ks", "yuva444p10le", 1),
                                                         (".webm", "libvpx-vp9", "yuva420p", 3)])
def test_video_with_alpha_in_and_out(pictures, tmp_path, suffix, codec, pix_fmt, coding):
    """ProRes 4444 in .mov and VP9 with alpha in .webm: written with alpha by default, read back."""
    import av

    from dainrt.runtime.decode import decode_video

    folder, frames = pictures
    src = tmp_path / f"in{suffix}"
    with av.open(str(src), "w") as c:                                   # the sprite as a 12 fps video
        s = c.add_stream(codec, rate=12)
        s.width, s.height, s.pix_fmt = 64, 48, pix_fmt
        if codec == "libvpx-vp9":
            s.metadata["alpha_mode"] = "1"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgba").reformat(format=pix_fmt)):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    out = tmp_path / f"out{suffix}"
    r = run(src, "-o", out, "--factor", "2")
    assert (r["output"]["codec"], r["output"]["pix_fmt"], r["output"]["alpha"]) == (codec, pix_fmt, True)

    def decoded(path):
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgba") for f in decode_video(c, c.streams.video[0])]

    got, inp = decoded(out), decoded(src)
    assert len(got) == 8 and len(inp) == 4
    for i in range(4):                                 # originals: alpha as read, up to the (lossy) encoder
        assert np.abs(got[2 * i][..., 3].astype(int) - inp[i][..., 3]).max() <= coding
    for i in range(3):
        f = figures(got[2 * i + 1])
        assert abs(f["area"] - figures(inp[0])["area"]) < 0.03 * figures(inp[0])["area"]
        assert abs(f["x"] - (X[i] + X[i + 1]) / 2) < 0.6


def test_alpha_is_dropped_with_a_note_where_the_output_cannot_carry_it(pictures, tmp_path, capsys):
    folder, _ = pictures
    r = run(folder / "%05d.png", "-o", tmp_path / "out.mp4", "--factor", "2", "--input-fps", "12", "--dry-run")
    assert r["output"]["alpha"] is False
    err = capsys.readouterr().err
    assert "alpha channel" in err and "ProRes 4444" in err
