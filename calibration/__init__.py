"""Precision calibration (docs/architecture.md §14): FP16 chosen by measured per-layer
sensitivity and INT8 Q/DQ with an accuracy gate, written as a calibration folder that the ONNX
Runtime backend and the TensorRT builder read (dainrt.export.calibrated).

Beside the face: imports runtime and below, never dainrt/ (the face), benchmarks or training."""
from .calibrate import GATE_DB, PRECISIONS, SEARCH_ORDER, calibrate, check_output_dir, format_report

__all__ = ["GATE_DB", "PRECISIONS", "SEARCH_ORDER", "calibrate", "check_output_dir", "format_report"]
