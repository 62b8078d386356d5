"""`dainrt run --preview`: a short, small excerpt of the film at the target rate, to judge the
motion and the chosen options in a few minutes before committing hours to the whole film.

The preview is the first `seconds` of the input (default 2), decoded at a reduced size (the
longer side at most `PREVIEW_SIDE` pixels, aspect kept, even sizes), through the same planner,
model and encoder as the full run, written beside the output as `NAME.preview.EXT` (so it never
takes the final film's name). Cost: the model's arithmetic grows with the pixel count, so a 720p
film's preview costs about 1/16 per frame of the full size (320x180 against 1280x720).
"""
from __future__ import annotations

from pathlib import Path

PREVIEW_SECONDS = 2.0
PREVIEW_SIDE = 320      # pixels, the longer side: a 2 s preview of 720p film takes ~3 min on 2 CPU cores


def preview_size(width: int, height: int, side: int = PREVIEW_SIDE) -> tuple[int, int]:
    """The preview's frame size for a `width` x `height` input: the longer side at most `side`,
    both even (4:2:0 video), never larger than the input."""
    scale = min(1.0, side / max(width, height))
    even = lambda n: max(2, int(round(n * scale / 2)) * 2)   # noqa: E731 - one expression
    return (even(width), even(height)) if scale < 1 else (width, height)


def preview_output(output: str) -> str:
    """`film.mp4` -> `film.preview.mp4`; a pattern `out/%05d.png` -> `out/%05d.preview.png`."""
    path = Path(output)
    return str(path.with_name(f"{path.stem}.preview{path.suffix}"))


def describe(seconds: float, frames: int, total: int, size: tuple[int, int], source: tuple[int, int],
             output: str) -> str:
    """The one line that says what the preview does."""
    (w, h), (sw, sh) = size, source
    scaled = f"at {w}x{h} (the input is {sw}x{sh})" if size != source else f"at the input's {sw}x{sh}"
    return (f"preview: the first {seconds:g} s ({frames} of {total} input frames) {scaled} -> {output}; "
            "run without --preview for the whole film")
