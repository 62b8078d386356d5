"""dainrt's cache folder (weights, ONNX exports, TensorRT engines and timing caches live below it)."""
from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "DAINRT_CACHE"


def cache_dir() -> Path:
    """`$DAINRT_CACHE`, else `$XDG_CACHE_HOME/dainrt`, else `~/.cache/dainrt`.

    Empty variables count as unset. The folder is not created here.
    """
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "dainrt"
    return Path.home() / ".cache" / "dainrt"
