"""`dainrt compare`: the original next to one or two interpolated films, the clip an animator shares.

The first interpolated film sets the clock: each of its frames is placed second from the left;
on the left, the original frame that is on screen at that moment (held until the next one, so
the original's stutter shows); on the right, when given, a second version (say the chosen
cadence) as it is on screen at that moment. So an animator sees original, full smooth and the
chosen cadence side by side, frame for frame. `slow` plays the result N times slower
(timestamps x N, the rate / N). The clip has no audio. Labels ("original", "dainrt"; with three:
"original", "full smooth", "chosen cadence", or the caller's) are drawn with Pillow's built-in
font. H.264 (libx264, CRF 18, yuv420p) in whatever container the name asks for; written under a
temporary name and renamed.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from dainrt.base.errors import DainrtError, OptionError

from dainrt.base.outputs import check_outputs

from .decode import Decoder, colour_flags, is_image_sequence, probe, to_rgb
from .encode import write_error

LABELS = ("original", "dainrt")
LABELS3 = ("original", "full smooth", "chosen cadence")


def _label(image: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    pic = Image.fromarray(image)
    draw = ImageDraw.Draw(pic)
    x, y = 4, 4
    box = draw.textbbox((x, y), text)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
    draw.text((x, y), text, fill=(255, 255, 255))
    return np.asarray(pic)


def _frames(info):
    with Decoder(info, images=False) as decoder:
        for df in decoder:
            yield df


class _OnScreen:
    """The frames of a film, asked for in time order: `at(t)` is the one on screen at t (the
    last starting at or before t), as RGB `width` x `height`."""

    def __init__(self, info, width: int, height: int):
        self.frames = _frames(info)
        self.width, self.height = width, height
        self.current = next(self.frames, None)
        self.upcoming = next(self.frames, None)

    def at(self, time: Fraction) -> np.ndarray:
        while self.upcoming is not None and self.upcoming.time <= time:
            self.current, self.upcoming = self.upcoming, next(self.frames, None)
        return to_rgb(self.current.frame.reformat(width=self.width, height=self.height), "rgb24")


def compare(original: str, interpolated: str, output: str, slow: int = 1, labels: bool = True,
            input_fps: Fraction | None = None, overwrite: bool = False, chosen: str | None = None,
            names: list[str] | None = None) -> dict:
    """Write the side-by-side clip; returns {"frames", "rate", "duration"}.

    `chosen`: a second interpolated film shown on the right; `names`: the labels, one per
    version (default `LABELS`, or `LABELS3` with `chosen`). `output` is never one of the
    inputs; an existing `output` is replaced only with `overwrite`."""
    import av

    versions = 2 if chosen is None else 3
    names = list(names) if names is not None else list(LABELS if chosen is None else LABELS3)
    if len(names) != versions or not all(n.strip() for n in names):
        raise OptionError("labels", f"give {versions} non-empty labels, one per version (got {len(names)})")
    if slow < 1:
        raise OptionError("slow", f"must be 1 or more, got {slow}")
    if input_fps is not None and input_fps <= 0:
        raise OptionError("input_fps", f"must be above 0, got {input_fps}")
    out = Path(output)
    check_outputs([("output", out)], [original, interpolated] + ([chosen] if chosen else []), overwrite)
    if out.suffix == "":
        raise DainrtError(f"{out}: give the output a file extension such as .mp4")
    if is_image_sequence(out) or out.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        raise DainrtError(f"{out}: the side-by-side clip is a video; give a .mp4, .mov or .mkv name")
    a = probe(original, input_fps)
    b = probe(interpolated)
    c = probe(chosen) if chosen is not None else None
    h = b.height
    wa = max(2, round(a.width * h / a.height))
    wc = max(2, round(c.width * h / c.height)) if c is not None else 0
    width = wa + b.width + wc
    width += width % 2
    height = h + h % 2
    # exact times: a constant-rate film is re-timed on its own grid, a variable one by its pts
    rate = (b.timeline.rate / slow) if b.timeline.rate else None
    tb = 1 / rate if rate is not None else b.timeline.time_base * slow
    tmp = out.with_name(f".{out.name}.part{out.suffix}")
    n = 0
    try:
        container = av.open(str(tmp), "w")
    except ValueError:
        raise DainrtError(f"{out}: unknown output format {out.suffix!r}") from None
    except (av.error.FFmpegError, OSError) as err:
        raise write_error(out, err) from None
    try:
        stream = container.add_stream("libx264", rate=(rate or Fraction(b.timeline.frames) / b.timeline.duration).limit_denominator(1_000_000),
                                      options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = tb
        stream.time_base = tb
        beside = [_OnScreen(a, wa, h)] + ([_OnScreen(c, wc, h)] if c is not None else [])
        for df in _frames(b):
            # each other version as it is on screen at this moment of the first interpolated film
            shown = [beside[0].at(df.time), to_rgb(df.frame, "rgb24")] + [v.at(df.time) for v in beside[1:]]
            canvas = np.zeros((height, width, 3), np.uint8)
            x = 0
            for picture, name in zip(shown, names):
                canvas[:h, x:x + picture.shape[1]] = _label(picture, name) if labels else picture
                x += picture.shape[1]
            frame = av.VideoFrame.from_ndarray(canvas, format="rgb24").reformat(format="yuv420p",
                                                                               interpolation=colour_flags())
            if rate is not None:
                frame.pts = round((df.time - b.timeline.start) * b.timeline.rate)
            else:
                frame.pts = df.pts - b.pts[0]
            frame.time_base = tb
            for p in stream.encode(frame):
                container.mux(p)
            n += 1
        for p in stream.encode(None):
            container.mux(p)
        container.close()
        os.replace(tmp, out)
    except DainrtError:
        _discard(container, tmp)
        raise
    except (av.error.FFmpegError, OSError) as err:
        _discard(container, tmp)
        raise write_error(out, err) from None
    except BaseException:
        _discard(container, tmp)
        raise
    return {"frames": n, "rate": rate, "duration": float(b.timeline.duration * slow)}


def _discard(container, tmp: Path) -> None:
    try:
        container.close()
    except Exception:  # noqa: BLE001
        pass
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass            # a folder that refuses the write refuses the clean-up: the write error is what counts
