"""A calibration folder, as the backends read it (made by `dainrt calibrate`, dainrt.calibration).

A calibration folder is an export folder (`manifest.json` in the `dainrt-onnx-1` format and the
four stage files, warp always FP32) whose precision is `int8` (Q/DQ nodes in the ONNX) or `fp16`
(measured FP32 islands), plus `calibration.json`, the report of how it was chosen. Precision lives
in the files themselves, so ONNX Runtime and TensorRT 11 read the same ones.

It serves only the weights and the dainrt version it was made for (the manifest's checkpoint
SHA-256 and `dainrt_version`); anything else is refused in one line. Its identity, `digest`, is
the SHA-256 of `manifest.json`, which lists each ONNX file's SHA-256: the TensorRT engine key
carries it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from dainrt.base.errors import DainrtError

from .exporter import MANIFEST, manifest_problem, read_manifest

REPORT = "calibration.json"
CALIBRATED_PRECISIONS = ("fp16", "int8")


@dataclass(frozen=True)
class Calibration:
    directory: Path
    manifest: dict
    precision: str    # fp16 | int8
    digest: str       # sha256 hex of manifest.json


def load_calibration(directory: str | os.PathLike, checkpoint_sha256: str, precision: str | None = None) -> Calibration:
    """The calibration in `directory` for the weights `checkpoint_sha256` (and `precision`, when
    given), with every file checked against its manifest; DainrtError in one line otherwise."""
    directory = Path(directory).expanduser()
    manifest = read_manifest(directory)
    if manifest is None or not (directory / REPORT).is_file():
        raise DainrtError(f"{directory} is not a calibration folder (it needs {MANIFEST} and {REPORT}); "
                          "make one with `dainrt calibrate INPUT -o DIR`")
    got = manifest.get("precision")
    if got not in CALIBRATED_PRECISIONS:
        raise DainrtError(f"{directory} holds a {got} export, not a calibration (fp16 or int8)")
    if precision is not None and got != precision:
        raise DainrtError(f"the calibration in {directory} is {got}, not {precision}: pass --precision {got} "
                          f"or calibrate again with --precision {precision}")
    problem = manifest_problem(manifest, directory, checkpoint_sha256, got)
    if problem is not None:
        raise DainrtError(f"the calibration in {directory} cannot be used: {problem}; run `dainrt calibrate` "
                          "again with these weights")
    return Calibration(directory, manifest, got, calibration_digest(directory))


def calibration_digest(directory: str | os.PathLike) -> str:
    """A calibration folder's identity: the SHA-256 (hex) of its manifest.json, which lists each
    ONNX file's SHA-256 (`Calibration.digest`; the engine key and a run's fingerprint carry it)."""
    return hashlib.sha256((Path(directory).expanduser() / MANIFEST).read_bytes()).hexdigest()
