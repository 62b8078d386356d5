"""DAIN's two custom layers as opaque torch ops, so that export writes them as custom nodes.

`torch.ops.dain.depth_flow_projection` and `torch.ops.dain.adaptive_warp` run the PyTorch
references of `dainrt.model.ops` in eager mode; `register_fake` gives their output shapes to
torch.export; `ONNX_TRANSLATIONS` maps each to one ONNX node in the `dain` domain:

| torch op                          | ONNX node                     | inputs -> output                      |
|-----------------------------------|-------------------------------|---------------------------------------|
| `dain::depth_flow_projection`     | `dain::DepthFlowProjection`   | flow (B,2,H,W), weight (B,1,H,W) -> (B,2,H,W), hole filling on |
| `dain::adaptive_warp`             | `dain::AdaptiveWarp`          | image (B,C,H,W), flow (B,2,H,W), kernel (B,16,H,W) -> (B,C,H,W) |

The node names and the `plugin_namespace` / `plugin_version` attributes are a stable interface:
TensorRT's ONNX parser binds a plugin to a node by (op_type, plugin_version, plugin_namespace).
The standard-op bodies that let ONNX Runtime run these nodes are added after export as
model-local functions (`onnx_functions.py`).

Only inference is exported: the projection always fills its holes (the official layer skips
that only when gradients are on), so `project(..., fill=False)` refuses to export.
"""
from __future__ import annotations

import onnxscript
import torch
from onnxscript import FLOAT
from torch import Tensor

from dainrt.model import CustomOps
from dainrt.model.ops import adaptive_warp as _adaptive_warp_ref
from dainrt.model.ops import depth_flow_projection as _dfp_ref

DOMAIN = "dain"
DOMAIN_VERSION = 1
PLUGIN_NAMESPACE = "dain"
PLUGIN_VERSION = "1"
DFP_OP = "DepthFlowProjection"
AW_OP = "AdaptiveWarp"


@torch.library.custom_op("dain::depth_flow_projection", mutates_args=())
def depth_flow_projection(flow: Tensor, weight: Tensor) -> Tensor:
    """Depth-aware flow projection with hole filling (docs/dain-spec.md §6.1): (B,2,H,W), (B,1,H,W) -> (B,2,H,W) fp32."""
    return _dfp_ref(flow, weight, fill=True)


@depth_flow_projection.register_fake
def _(flow: Tensor, weight: Tensor) -> Tensor:
    return torch.empty_like(flow, dtype=torch.float32)


@torch.library.custom_op("dain::adaptive_warp", mutates_args=())
def adaptive_warp(image: Tensor, flow: Tensor, kernel: Tensor) -> Tensor:
    """Adaptive warping layer (docs/dain-spec.md §6.3): (B,C,H,W), (B,2,H,W), (B,16,H,W) -> (B,C,H,W) fp32."""
    return _adaptive_warp_ref(image, flow, kernel)


@adaptive_warp.register_fake
def _(image: Tensor, flow: Tensor, kernel: Tensor) -> Tensor:
    return torch.empty_like(image, dtype=torch.float32)


def _project(flow: Tensor, weight: Tensor, fill: bool = True) -> Tensor:
    if not fill:
        raise ValueError("only the inference form (fill=True) of DepthFlowProjection is exported")
    return depth_flow_projection(flow, weight)




# --- ONNX translations: one custom-domain node each --------------------------------------------

_dain = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)


@onnxscript.script(_dain)
def _dfp_onnx(flow: FLOAT, weight: FLOAT) -> FLOAT:
    out = _dain.DepthFlowProjection(flow, weight, plugin_namespace="dain", plugin_version="1")
    return out


@onnxscript.script(_dain)
def _aw_onnx(image: FLOAT, flow: FLOAT, kernel: FLOAT) -> FLOAT:
    out = _dain.AdaptiveWarp(image, flow, kernel, plugin_namespace="dain", plugin_version="1")
    return out


ONNX_TRANSLATIONS = {
    torch.ops.dain.depth_flow_projection.default: _dfp_onnx,
    torch.ops.dain.adaptive_warp.default: _aw_onnx,
}


# --- Correlation: opaque during tracing, plain standard ops in the ONNX file -----------------
# torch.export needs minutes to reason about the 81 shifted slices of every cost volume with
# symbolic shapes (10 cost volumes in the pair stage); as one opaque op it takes no time, and its
# translation below writes the same 81 Slice/Mul/ReduceMean directly.

@torch.library.custom_op("dain::correlation", mutates_args=())
def correlation(f1: Tensor, f2: Tensor, max_displacement: int = 4) -> Tensor:
    """PWC cost volume (docs/dain-spec.md §6.4): (B,C,h,w) x2 -> (B,(2d+1)^2,h,w), input dtype."""
    from dainrt.model.ops import correlation as ref

    return ref(f1, f2, max_displacement)


@correlation.register_fake
def _(f1: Tensor, f2: Tensor, max_displacement: int = 4) -> Tensor:
    n = (2 * max_displacement + 1) ** 2
    return f1.new_empty((f1.shape[0], n, f1.shape[2], f1.shape[3]))


_INT64_MAX = 2**63 - 1


def _correlation_onnx(f1: FLOAT, f2: FLOAT, max_displacement: int = 4) -> FLOAT:
    """Traced (not scripted) translation: Pad, then per offset Slice + Mul + ReduceMean(C)."""
    from onnxscript import opset18 as op

    d = int(max_displacement)
    n = 2 * d + 1
    padded = op.Pad(f2, op.Constant(value_ints=[0, 0, d, d, 0, 0, d, d]), mode="constant")  # zeros outside
    axes = op.Constant(value_ints=[2, 3])
    channel = op.Constant(value_ints=[1])
    # The window at offset k of the (size + 2d) padded axis is [k, k - 2d): negative ends count
    # from the end, so every Slice has constant starts/ends and no shape arithmetic is needed.
    end = [k - 2 * d if k < 2 * d else _INT64_MAX for k in range(n)]
    planes = []
    for dy in range(n):                                    # outer index: vertical offset
        for dx in range(n):
            window = op.Slice(padded, op.Constant(value_ints=[dy, dx]), op.Constant(value_ints=[end[dy], end[dx]]), axes)
            planes.append(op.ReduceMean(op.Mul(f1, window), channel, keepdims=1))
    return op.Concat(*planes, axis=1)


ONNX_TRANSLATIONS[torch.ops.dain.correlation.default] = _correlation_onnx


# The custom layers as the stages call them during export: opaque ops, written as the nodes above.
EXPORT_OPS = CustomOps(correlate=correlation, project=_project, warp=adaptive_warp)
