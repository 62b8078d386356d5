"""The `dainrt` command line. Each sub-command lives in `dainrt.commands.<name>` and exposes
`register(subparsers)`, which adds its parser and sets `func(args) -> int`."""
from __future__ import annotations

import argparse
import re
import sys

from dainrt.base.errors import DainrtError, OptionError

COMMANDS = ["interpolate", "weights", "train", "eval", "bench", "build_engine", "engines", "export", "calibrate", "run", "compare"]


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors in one line, like every other dainrt error:
    `dainrt: error: --factor must be 2 or more, got 1 (see dainrt interpolate --help)`.
    Sub-command parsers are of the same class."""

    def error(self, message: str):
        m = re.fullmatch(r"argument ([^:]+): (.*)", message, re.S)
        if m:                                   # "argument --factor/-f: problem" -> "--factor problem"
            message = f"{m.group(1).split('/')[-1]} {m.group(2)}"
        self.exit(2, f"dainrt: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(
        prog="dainrt",
        description="DAIN video frame interpolation: in-between frames for stop-motion and low-frame-rate footage.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"dainrt.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:          # --help (0) or a usage error (2, its one line printed)
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except DainrtError as err:
        # Below the command line an option is named as its Python parameter; here, as its flag.
        message = err.as_flag() if isinstance(err, OptionError) else str(err)
        print(f"dainrt: error: {message}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("dainrt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
