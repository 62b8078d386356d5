"""Writing files so that a reader sees the old file or the whole new one, never a part; digests.

Every file dainrt writes in one go (checkpoints, ONNX files and manifests, engines, pictures,
JSON reports, training state) goes through `atomic_output`: a temporary file in the same folder,
fsync, rename over the final name, fsync of the folder. A crash, a full disk or Ctrl-C leaves the
previous file (or none), and no temporary file behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

CHUNK = 1 << 20   # bytes per read when hashing (1 MiB)

# Read once, at import (single-threaded): os.umask can only be read by setting it.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on a clean exit it becomes `path`, else it is deleted.

    The folder must exist. The file gets a normal file's permissions (0666 minus the umask).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass            # some file systems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` (str as UTF-8) to `path` atomically (see `atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def write_json(path: str | os.PathLike, data) -> None:
    """Write `data` as indented JSON, atomically; paths in it are written as strings."""
    atomic_write(path, json.dumps(data, indent=1, default=_path_as_str) + "\n")


def _path_as_str(value):
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()
