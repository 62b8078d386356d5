"""PyTorch stages -> ONNX (docs/architecture.md §4): custom layers as `dain::` nodes with standard-op
function bodies, an FP16 cast pass, a manifest, and the export cache the ONNX Runtime backend
and the TensorRT builder use. Needs onnx and onnxscript (and torch); nothing here imports onnxruntime."""
from .exporter import (
    MANIFEST, OPSET, IR_VERSION, PRECISIONS, cached_export_dir, check_precision, ensure_exported, export_onnx,
    export_stages, manifest_problem, read_manifest, stage_files, stage_precision,
)

__all__ = [
    "IR_VERSION", "MANIFEST", "OPSET", "PRECISIONS", "cached_export_dir", "check_precision", "ensure_exported",
    "export_onnx", "export_stages", "manifest_problem", "read_manifest", "stage_files", "stage_precision",
]
