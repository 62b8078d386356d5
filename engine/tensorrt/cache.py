"""The on-disk cache of TensorRT engines (docs/architecture.md §7). Pure Python: no TensorRT, no GPU.

An engine is only valid for the GPU, TensorRT build, plugin code, stage, precision, shape
profile, builder settings (optimisation level, workspace) and ONNX file it was built from.
`EngineKey` holds exactly those fields; its digest names the files:

    <cache>/engines/<stage>-<precision>-<digest16>.engine   the serialized engine
    <cache>/engines/<stage>-<precision>-<digest16>.json     its key, size and SHA-256
    <cache>/engines/timing-<gpu>-sm<cc>-trt<version>.cache  TensorRT's timing cache
    <cache>/engines/logs/                                   logs of failed builds

`<cache>` is `dainrt.base.paths.cache_dir()`. Both files are written atomically (temporary file,
fsync, rename), the engine first and its record last, so a crash leaves at worst an engine
without a record, which is never loaded. `EngineCache.load` returns the engine bytes only when
the record exists, its key equals the wanted key field by field, and the bytes on disk have
the recorded size and SHA-256; anything else (another GPU, another TensorRT, changed plugin
code or ONNX, a truncated or corrupted file) is a miss, never a load.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from dainrt.base.errors import DainrtError
from dainrt.base.files import atomic_write, sha256_file
from dainrt.base.paths import cache_dir
from dainrt.export import PRECISIONS

RECORD_FORMAT = "dainrt-engine-3"
KEY_PRECISIONS = (*PRECISIONS, "int8")   # int8: the Q/DQ stages of a calibration


@dataclass(frozen=True)
class ShapeProfile:
    """Batch and padded image size an engine accepts: min, opt and max as (batch, height, width).

    Static when min == opt == max (the fastest engine, built for one resolution)."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    def __post_init__(self):
        for name in ("min", "opt", "max"):
            v = tuple(int(x) for x in getattr(self, name))
            if len(v) != 3 or min(v) < 1:
                raise ValueError(f"shape profile {name} must be 3 positive ints (batch, height, width), got {v}")
            object.__setattr__(self, name, v)
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(f"shape profile needs min <= opt <= max, got {self.min}, {self.opt}, {self.max}")

    @classmethod
    def static(cls, height: int, width: int, batch: int = 1) -> "ShapeProfile":
        s = (batch, height, width)
        return cls(s, s, s)

    @property
    def is_static(self) -> bool:
        return self.min == self.opt == self.max

    def covers(self, batch: int, height: int, width: int) -> bool:
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (batch, height, width), self.max))

    def tag(self) -> str:
        """Canonical text: `static:1x1152x1984` or `dynamic:1x256x256-1x1152x1984-1x2176x3840`."""
        fmt = lambda s: "x".join(map(str, s))  # noqa: E731
        if self.is_static:
            return f"static:{fmt(self.opt)}"
        return f"dynamic:{fmt(self.min)}-{fmt(self.opt)}-{fmt(self.max)}"

    def describe(self) -> str:
        """For people: `1984x1152` or `256x256..3840x2176 (opt 1984x1152)` (width x height)."""
        wh = lambda s: f"{s[2]}x{s[1]}" + (f" batch {s[0]}" if s[0] != 1 else "")  # noqa: E731
        if self.is_static:
            return wh(self.opt)
        return f"{wh(self.min)}..{wh(self.max)} (opt {wh(self.opt)})"

    @classmethod
    def from_tag(cls, tag: str) -> "ShapeProfile":
        kind, _, body = tag.partition(":")
        parts = [tuple(int(x) for x in p.split("x")) for p in body.split("-")]
        if kind == "static" and len(parts) == 1:
            return cls(parts[0], parts[0], parts[0])
        if kind == "dynamic" and len(parts) == 3:
            return cls(*parts)
        raise ValueError(f"not a shape profile tag: {tag!r}")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Any field that differs means another engine."""

    gpu_name: str            # torch.cuda.get_device_name(), e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: str  # "9.0"
    tensorrt_version: str    # tensorrt.__version__
    plugin_version: str      # dainrt.engine.tensorrt.plugins.plugin_version()
    stage: str               # frame | pair | warp | rectify
    precision: str           # fp16 | fp32 | int8 (the stage's own: fp32 for warp)
    profile: str             # ShapeProfile.tag()
    optimization_level: str  # builder optimisation level, "0".."5"
    workspace: str           # workspace memory limit: "default" (TensorRT's) or "<N>MiB"
    onnx_sha256: str         # SHA-256 of the ONNX file the engine is built from
    calibration: str = "none"  # digest of the calibration folder the ONNX comes from (export.calibrated), or none

    def __post_init__(self):
        if self.precision not in KEY_PRECISIONS:
            raise ValueError(f"precision must be one of {KEY_PRECISIONS}, got {self.precision!r}")
        for f in fields(self):
            if not isinstance(getattr(self, f.name), str) or not getattr(self, f.name):
                raise ValueError(f"engine key field {f.name} must be a non-empty string")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of all fields (hex)."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def basename(self) -> str:
        return f"{self.stage}-{self.precision}-{self.digest()[:16]}"

    def describe(self) -> str:
        prof = ShapeProfile.from_tag(self.profile).describe()
        return (f"{self.stage} {self.precision} {prof} on {self.gpu_name} (sm {self.compute_capability}), "
                f"TensorRT {self.tensorrt_version}")


@dataclass(frozen=True)
class CacheEntry:
    """One engine found on disk, as `dainrt engines list` shows it."""

    engine: Path
    record: Path
    key: EngineKey | None      # None when the record is missing or unreadable
    size: int                  # bytes of the engine file (0 if missing)
    problem: str               # "" when the files are consistent, else what is wrong
    built_at: float = 0.0
    build_seconds: float = 0.0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


def default_root() -> Path:
    return cache_dir() / "engines"


class EngineCache:
    """Engines and timing caches under `root` (default `<cache_dir()>/engines`)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    # ----------------------------------------------------------------------------- paths
    def engine_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.basename}.engine"

    def record_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.basename}.json"

    def timing_cache_path(self, gpu_name: str, compute_capability: str, tensorrt_version: str) -> Path:
        return self.root / f"timing-{_slug(gpu_name)}-sm{_slug(compute_capability)}-trt{_slug(tensorrt_version)}.cache"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    # ------------------------------------------------------------------------- engines
    def store(self, key: EngineKey, engine: bytes, build_seconds: float = 0.0) -> Path:
        """Write `engine` for `key` atomically (engine file first, then its record)."""
        path = self.engine_path(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(path, bytes(engine))
            record = {
                "format": RECORD_FORMAT,
                "key": key.as_dict(),
                "digest": key.digest(),
                "engine": path.name,
                "size": len(engine),
                "sha256": hashlib.sha256(engine).hexdigest(),
                "built_at": time.time(),
                "build_seconds": round(float(build_seconds), 3),
            }
            atomic_write(self.record_path(key), (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
        except OSError as err:
            raise DainrtError(f"cannot write the engine cache in {self.root}: {err.strerror or err}") from None
        return path

    def check(self, key: EngineKey) -> str:
        """'' when a loadable engine for exactly `key` is on disk, else why not ('missing', ...)."""
        engine, record_path = self.engine_path(key), self.record_path(key)
        if not record_path.is_file():
            return "missing" if not engine.exists() else "no record (unfinished write?)"
        record, problem = _read_record(record_path)
        if record is None:
            return problem
        if record.get("key") != key.as_dict():
            changed = sorted(k for k in key.as_dict() if record.get("key", {}).get(k) != getattr(key, k))
            return "stale: " + ", ".join(changed) + " differ"
        if not engine.is_file():
            return "engine file missing"
        size = engine.stat().st_size
        if size != record.get("size"):
            return f"engine file has {size} bytes, the record says {record.get('size')} (partial or replaced)"
        if sha256_file(engine) != record.get("sha256"):
            return "engine file is corrupt (SHA-256 differs from its record)"
        return ""

    def load(self, key: EngineKey) -> bytes | None:
        """The engine bytes for exactly `key`, or None (missing, stale, partial or corrupt)."""
        engine, record_path = self.engine_path(key), self.record_path(key)
        if not record_path.is_file() or not engine.is_file():
            return None
        record, _ = _read_record(record_path)
        if record is None or record.get("key") != key.as_dict():
            return None
        try:
            data = engine.read_bytes()
        except OSError:
            return None
        # Check the bytes we actually return, not the file at some other moment.
        if len(data) != record.get("size") or hashlib.sha256(data).hexdigest() != record.get("sha256"):
            return None
        return data

    def entries(self) -> list[CacheEntry]:
        """Every engine or record under the root, sorted by name, with what is wrong with it."""
        if not self.root.is_dir():
            return []
        names = sorted({p.stem for p in self.root.glob("*.engine")} | {p.stem for p in self.root.glob("*.json")})
        out = []
        for stem in names:
            engine, record_path = self.root / f"{stem}.engine", self.root / f"{stem}.json"
            size = engine.stat().st_size if engine.is_file() else 0
            key, problem, built_at, seconds = None, "", 0.0, 0.0
            if not record_path.is_file():
                problem = "no record (unfinished write?): never loaded"
            else:
                record, problem = _read_record(record_path)
                if record is not None:
                    try:
                        key = EngineKey(**record["key"])
                    except (TypeError, ValueError, KeyError):
                        problem = "record has a bad key"
                    else:
                        built_at = float(record.get("built_at", 0.0))
                        seconds = float(record.get("build_seconds", 0.0))
                        if key.basename != stem:
                            problem = "record does not match its file name"
                        elif not engine.is_file():
                            problem = "engine file missing"
                        elif size != record.get("size"):
                            problem = f"partial engine file ({size} of {record.get('size')} bytes)"
            out.append(CacheEntry(engine, record_path, key, size, problem, built_at, seconds))
        return out

    def timing_caches(self) -> list[Path]:
        return sorted(self.root.glob("timing-*.cache")) if self.root.is_dir() else []

    def clear(self) -> list[Path]:
        """Delete every engine, record, timing cache, build log and leftover temporary file.
        Returns the paths removed."""
        removed = []
        if not self.root.is_dir():
            return removed
        patterns = ("*.engine", "*.json", "timing-*.cache", ".*.tmp", "logs/*.log")
        for pattern in patterns:
            for p in sorted(self.root.glob(pattern)):
                try:
                    p.unlink()
                    removed.append(p)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    raise DainrtError(f"cannot delete {p}: {err.strerror or err}") from None
        return removed

    # ---------------------------------------------------------------------- timing cache
    def load_timing_cache(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError:
            return b""

    def store_timing_cache(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, bytes(data))
        except OSError as err:
            raise DainrtError(f"cannot write the timing cache {path}: {err.strerror or err}") from None


def _read_record(path: Path) -> tuple[dict | None, str]:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, "record unreadable (corrupt JSON)"
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or not isinstance(record.get("key"), dict):
        return None, "record has an unknown format"
    return record, ""
