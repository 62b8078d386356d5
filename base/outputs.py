"""The output guard: one check, before any work, of every file a command is about to write.

The rules (every command that writes a file follows them; README "Outputs"):

* a command never writes over one of its own inputs, nor over another output of the same
  command, `overwrite` or not;
* an existing output is replaced only with `overwrite` (`-y/--overwrite` on the command line,
  the ffmpeg habit); otherwise the command refuses, in one line, before doing any work;
* every output's folder must exist and be writable, checked before the work starts (not after
  a long render);
* a picture pattern (`frames/%05d.png`) "exists" when any file in its folder matches it.

Outputs are named by their option as a Python parameter (`report`), so the error is an
`OptionError` the command line spells as its flag (`--report out.mp4 is ...`); `option=None`
(a positional argument) gives a plain `DainrtError`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from .errors import DainrtError, OptionError

OVERWRITE_HINT = "add -y/--overwrite to replace it"
_PATTERN = re.compile(r"%0?(\d*)d")


def _error(option: str | None, problem: str) -> DainrtError:
    return OptionError(option, problem) if option else DainrtError(problem)


def _same(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name the same file (by inode when both exist, else by real path)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def pattern_matches(pattern: str | os.PathLike) -> list[Path]:
    """The existing files in the folder of picture pattern `pattern` that the pattern names."""
    pattern = Path(pattern)
    m = _PATTERN.search(pattern.name)
    folder = pattern.parent
    if m is None or not folder.is_dir():
        return []
    digits = r"\d+" if not m.group(1) else r"\d{%d,}" % int(m.group(1))
    rx = re.compile(re.escape(pattern.name[:m.start()]) + digits + re.escape(pattern.name[m.end():]) + r"\Z")
    return sorted(p for p in folder.iterdir() if rx.match(p.name))


def check_outputs(outputs: Iterable[tuple[str | None, str | os.PathLike | None]],
                  inputs: Iterable[str | os.PathLike | None] = (), overwrite: bool = False,
                  patterns: Iterable[str | None] = (), make_folders: bool = False) -> None:
    """Refuse, in one line, to start a command that would lose a file.

    `outputs`: (option, path) pairs, paths of files to write (None: not written); `inputs`: the
    files the command reads; `patterns`: the options among `outputs` whose path is a picture
    pattern (checked by the files it matches and its folder's parent). With `make_folders` (the
    command creates missing folders) a missing folder is fine when its nearest existing
    ancestor is a writable folder.
    """
    inputs = [Path(p) for p in inputs if p not in (None, "")]
    patterns = set(patterns)
    seen: list[tuple[str | None, Path]] = []
    for option, path in outputs:
        if path is None:
            continue
        if str(path) == "":
            raise _error(option, "is empty: give a file name")
        path = Path(path)
        is_pattern = option in patterns
        if not is_pattern and path.is_dir():
            raise _error(option, f"{path} is a folder; give a file name")
        for src in inputs:
            if not is_pattern and _same(path, src) or is_pattern and src.parent.exists() and \
                    _same(path.parent, src.parent) and _PATTERN.search(src.name):
                raise _error(option, f"{path} is an input of this command: writing it would destroy it; "
                                     f"choose another name")
            if is_pattern and any(_same(m, src) for m in pattern_matches(path)):
                raise _error(option, f"{path} names the input {src}: writing it would destroy it; choose another name")
        for other, earlier in seen:
            if _same(path, earlier):
                also = f"the --{other.replace('_', '-')} file" if other and other != option else "another output"
                raise _error(option, f"{path} is also {also}; give each output its own name")
        seen.append((option, path))
        folder = path.parent.parent if is_pattern else path.parent
        if make_folders:
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            if not folder.is_dir():
                raise _error(option, f"{path}: {folder} is a file, not a folder")
        if folder.exists() and not folder.is_dir():
            raise _error(option, f"{path}: {folder} is a file, not a folder")
        if not folder.is_dir():
            raise _error(option, f"{path}: folder {folder} does not exist")
        writable_folder = path.parent if is_pattern and path.parent.is_dir() else folder
        if path.exists() and not overwrite and not is_pattern:
            raise _error(option, f"{path} exists; {OVERWRITE_HINT}")
        if not os.access(writable_folder, os.W_OK | os.X_OK):
            raise _error(option, f"{path}: folder {writable_folder} is not writable")
        if overwrite:
            continue
        if is_pattern:
            found = pattern_matches(path)
            if found:
                raise _error(option, f"{path}: {len(found)} picture{'s' if len(found) != 1 else ''} of this "
                                     f"pattern exist (e.g. {found[0].name}); {OVERWRITE_HINT}")
        elif path.exists() or path.is_symlink():
            raise _error(option, f"{path} exists; {OVERWRITE_HINT}")
