"""argparse `type=` functions shared by the sub-commands: a bad value is a one-line usage error
at parse time, before any work (`tests/test_cli_options.py` feeds every option bad values)."""
from __future__ import annotations

import argparse
import math
from pathlib import Path


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"is not a whole number: {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"is not a finite number: {text!r}")
    return value


def int_range(lo: int, hi: int | None = None):
    """A whole number in [lo, hi] (hi None: no upper end)."""
    def parse(text: str) -> int:
        value = _int(text)
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must lie in {lo}..{hi}, got {value}" if hi is not None
                                             else f"must be {lo} or more, got {value}")
        return value
    return parse


def float_range(lo: float, hi: float | None = None, lo_open: bool = False):
    """A finite number >= lo (> lo when `lo_open`) and <= hi."""
    def parse(text: str) -> float:
        value = _float(text)
        if value < lo or (lo_open and value == lo) or (hi is not None and value > hi):
            low = f"above {lo:g}" if lo_open else f"{lo:g} or more"
            raise argparse.ArgumentTypeError(f"must be {low}" + (f" and at most {hi:g}" if hi is not None else "")
                                             + f", got {value:g}")
        return value
    return parse


def text(value: str) -> str:
    """Any non-empty text."""
    if not value.strip():
        raise argparse.ArgumentTypeError("is empty")
    return value


def path(value: str) -> Path:
    """A non-empty path (Path('') would silently mean the current folder)."""
    return Path(text(value))


def existing_file(value: str) -> Path:
    p = path(value)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder, not a file")
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return p


def existing_folder(value: str) -> Path:
    p = path(value)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: no such folder" if not p.exists() else f"{value} is not a folder")
    return p


def add_overwrite(parser: argparse.ArgumentParser, what: str) -> None:
    """The ffmpeg habit: `-y/--overwrite` replaces existing outputs (never the command's inputs)."""
    parser.add_argument("-y", "--overwrite", action="store_true", help=f"replace {what} if it exists (never an input)")
