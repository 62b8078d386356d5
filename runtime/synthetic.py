"""Synthetic clips with known content and timestamps, written with PyAV.

For the tests, the overlap benchmark and bug reports: `pictures()` makes a smooth moving
texture (each frame a shifted window of one seeded random field, blurred, so consecutive
frames differ by motion, not by noise); `write_clip()` encodes frames with exact timestamps
(constant rate or given pts), a codec, pixel format and colour tags, optionally with an audio
track of a seeded tone.
"""
from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Iterable, Iterator, Sequence

import numpy as np


def texture(width: int, height: int, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """A smooth random RGB field (2 * width x 2 * height) to cut frames from."""
    rng = np.random.default_rng(seed)
    big = rng.random((height // 12 + 3, width // 12 + 3, 3)).astype(np.float32)
    # bilinear upsampling (about x24) of a coarse field -> smooth blobs
    ys = np.linspace(0, big.shape[0] - 1.001, 2 * height + 8)
    xs = np.linspace(0, big.shape[1] - 1.001, 2 * width + 8)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    a = big[y0][:, x0]
    b = big[y0][:, x0 + 1]
    c = big[y0 + 1][:, x0]
    d = big[y0 + 1][:, x0 + 1]
    field = (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy
    hi = 255 if np.dtype(dtype) == np.uint8 else 65535
    return np.round(field * hi).astype(dtype)


def pictures(n: int, width: int, height: int, seed: int = 0, step: tuple[int, int] = (2, 1),
             dtype=np.uint8) -> list[np.ndarray]:
    """`n` frames of a texture moving by `step` pixels (x, y) per frame."""
    field = texture(width + abs(step[0]) * n, height + abs(step[1]) * n, seed, dtype)
    out = []
    for i in range(n):
        x, y = abs(step[0]) * i, abs(step[1]) * i
        out.append(np.ascontiguousarray(field[y:y + height, x:x + width]))
    return out


def moving(n: int, width: int, height: int, seed: int = 0, step: tuple[int, int] = (2, 1)) -> Iterator[np.ndarray]:
    """Like `pictures` but generated lazily, for long clips: the window wraps around a field
    4x the frame size, so memory does not grow with `n`."""
    field = texture(2 * width, 2 * height, seed)
    fh, fw = field.shape[:2]
    for i in range(n):
        x, y = (abs(step[0]) * i) % (fw - width), (abs(step[1]) * i) % (fh - height)
        yield np.ascontiguousarray(field[y:y + height, x:x + width])


def write_clip(path: str, frames: Iterable[np.ndarray], rate: Fraction | int = 24, pts: Sequence[int] | None = None,
               time_base: Fraction | None = None, codec: str = "libx264", pix_fmt: str = "yuv420p",
               options: dict | None = None, color: dict | None = None, audio_seconds: float = 0.0,
               audio_codec: str = "aac", container_format: str | None = None) -> str:
    """Encode `frames` (HxWx3 uint8 or uint16 RGB) into `path`; returns the path.

    `pts`/`time_base` give exact timestamps (variable rate); by default frame i is at i/rate.
    `color`: {"color_range", "colorspace", "color_primaries", "color_trc"} (AVCOL numbers).
    """
    import av

    frames = iter(frames)
    first = next(frames, None)
    rate = Fraction(rate)
    tb = Fraction(time_base) if time_base is not None else 1 / rate
    container = av.open(str(path), "w", format=container_format)
    h, w = first.shape[:2] if first is not None else (16, 16)
    stream = container.add_stream(codec, rate=rate, options=options or {})
    stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
    stream.codec_context.time_base = tb
    stream.time_base = tb
    color = color or {}
    for k, v in color.items():
        setattr(stream.codec_context, k, v)
    astream = None
    if audio_seconds > 0:
        astream = container.add_stream(audio_codec, rate=48000)
        astream.layout = "stereo"
    matrix = {1: 1, 5: 5, 6: 5, 9: 9}.get(color.get("colorspace"))
    for i, image in enumerate(itertools.chain([first] if first is not None else [], frames)):
        fmt = "rgb48le" if image.dtype == np.uint16 else "rgb24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
        frame = frame.reformat(format=pix_fmt, dst_colorspace=matrix, dst_color_range=color.get("color_range"))
        for k, v in color.items():
            setattr(frame, k, v)
        frame.pts = pts[i] if pts is not None else i
        frame.time_base = tb
        for p in stream.encode(frame):
            container.mux(p)
    for p in stream.encode(None):
        container.mux(p)
    if astream is not None:
        rng = np.random.default_rng(1)
        freq = 220 + 220 * rng.random()
        n = int(audio_seconds * 48000)
        t = np.arange(n) / 48000.0
        wave = (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        fs = astream.codec_context.frame_size or 1024
        for start in range(0, n, fs):
            chunk = wave[start:start + fs]
            if len(chunk) < fs:
                chunk = np.pad(chunk, (0, fs - len(chunk)))
            data = np.stack([chunk, chunk])
            fmt = astream.codec_context.format.name
            if fmt == "fltp":
                aframe = av.AudioFrame.from_ndarray(data, format="fltp", layout="stereo")
            elif fmt == "s16":
                aframe = av.AudioFrame.from_ndarray((data.T.reshape(1, -1) * 32767).astype(np.int16), format="s16",
                                                    layout="stereo")
            else:
                aframe = av.AudioFrame.from_ndarray(data.T.reshape(1, -1).astype(np.float32), format="flt",
                                                    layout="stereo")
            aframe.sample_rate = 48000
            aframe.pts = start
            aframe.time_base = Fraction(1, 48000)
            for p in astream.encode(aframe):
                container.mux(p)
        for p in astream.encode(None):
            container.mux(p)
    container.close()
    return str(path)


def decode_rgb(path: str, fmt: str = "rgb24") -> tuple[list[np.ndarray], list[int], Fraction]:
    """All frames of the first video stream as RGB arrays, with their pts and the time base."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames, pts = [], []
        for f in c.decode(s):
            frames.append(f.to_ndarray(format=fmt))
            pts.append(f.pts)
        return frames, pts, Fraction(s.time_base)
