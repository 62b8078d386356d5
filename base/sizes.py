"""Picture sizes as users write them."""
from __future__ import annotations

import argparse

from .errors import DainrtError, OptionError

MAX_SIDE = 16384      # pixels: larger than any film frame (8K is 7680x4320)

# Common names of frame sizes, (width, height) in pixels.
SIZE_ALIASES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160),
                "2160p": (3840, 2160)}


def parse_size(text: str) -> tuple[int, int]:
    """`256` (256x256), `480p`, `720p`, `1080p`, `4k`/`2160p`, or `WxH` -> (width, height) in pixels."""
    key = str(text).strip().lower()
    if key in SIZE_ALIASES:
        return SIZE_ALIASES[key]
    parts = key.split("x")
    try:
        w, h = (int(p) for p in parts) if len(parts) == 2 else (int(key), int(key))
    except ValueError:
        raise OptionError("size", f"bad {{option}} {text!r}: use 256, 480p, 720p, 1080p, 4k or WIDTHxHEIGHT") from None
    if w < 1 or h < 1:
        raise OptionError("size", f"bad {{option}} {text!r}: sides must be 1 or more")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise OptionError("size", f"bad {{option}} {text!r}: sides must be at most {MAX_SIDE}")
    return w, h


def size_argument(text: str) -> tuple[int, int]:
    """`parse_size` as an argparse `type=`: a bad size is argparse's usage error."""
    try:
        return parse_size(text)
    except DainrtError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
