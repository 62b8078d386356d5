"""DAIN's custom layers in pure, vectorised PyTorch (CPU and CUDA): the reference semantics of
docs/dain-spec.md §6 that the ONNX bodies and TensorRT plugins are tested against."""
from .adaptive_warp import adaptive_warp
from .correlation import correlation
from .depth_flow_projection import depth_flow_projection, fill_holes, splat

__all__ = ["adaptive_warp", "correlation", "depth_flow_projection", "fill_holes", "splat"]
