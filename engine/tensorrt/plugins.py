"""TensorRT plugins for the `dain::` nodes of the warp stage, through `tensorrt.plugin` (QDP).

The export writes each custom layer as one node (export/custom_ops.py): op_type
`DepthFlowProjection` or `AdaptiveWarp`, attributes `plugin_namespace="dain"` and
`plugin_version="1"`. TensorRT's ONNX parser looks a plugin up by exactly (op_type,
plugin_version, plugin_namespace), so registering `dain::DepthFlowProjection` and
`dain::AdaptiveWarp` here binds them; without the registration the parser inlines the node's
model-local function (standard ops) instead.

How each plugin runs (both from the Triton kernels of `dainrt.engine.kernels`):

* `dain::AdaptiveWarp` -- AOT (`@trtp.aot_impl`): one Triton kernel compiled to PTX for the
  SM of the GPU the engine is built on; the engine then runs it without Python. A JIT
  implementation (`@trtp.impl`, same kernel launched from Python) exists for debugging;
  the builder asks for AOT (`PREFER_AOT_PYTHON_PLUGINS`).
* `dain::DepthFlowProjection` -- JIT (`@trtp.impl`): the projection needs zeroed FP32
  accumulators and two kernels with a grid-wide barrier between them (atomic splat, then
  normalise + bounded hole scans). A QDP AOT implementation is exactly one kernel launch with
  no workspace, which cannot express that, so this plugin runs its kernels from Python on
  TensorRT's stream (the engine needs this module imported to deserialize, which
  `TensorRTBackend` does).

Nothing here imports tensorrt or triton until `register_plugins()` is called; the tests run
the registration against a stand-in `tensorrt.plugin` and check it against the export's nodes.
"""
import hashlib
from pathlib import Path
from typing import Dict, Optional, Tuple

NAMESPACE = "dain"
PARSER_PLUGIN_VERSION = "1"   # the node's plugin_version attribute (QDP creators are version "1")
IMPL_VERSION = "1"            # bump when the plugin glue changes meaning; kernels are hashed
DFP_OP = "DepthFlowProjection"
AW_OP = "AdaptiveWarp"


def plugin_version() -> str:
    """Version of the plugin implementation for the engine cache key: IMPL_VERSION plus a hash
    of the kernel sources and of this file, so any change to them invalidates cached engines."""
    here = Path(__file__).resolve()
    kernels = here.parent.parent / "kernels"
    h = hashlib.sha256()
    for p in [here, *sorted(kernels.glob("*.py"))]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return f"{IMPL_VERSION}+{h.hexdigest()[:12]}"


# ------------------------------------------------------------------------- registration

_REGISTERED = False
_COMPILED: Dict[Tuple[str, int], object] = {}


def current_sm() -> int:
    """SM number (e.g. 90) of the current CUDA device, through torch."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor


def compiled_kernel(kernel: str, arch: Optional[int] = None):
    """The `CompiledKernel` for `kernel` on sm_`arch` (default: the current GPU), memoised."""
    from dainrt.engine.kernels.aot import compile_ptx

    arch = current_sm() if arch is None else int(arch)
    if (kernel, arch) not in _COMPILED:
        _COMPILED[(kernel, arch)] = compile_ptx(kernel, arch)
    return _COMPILED[(kernel, arch)]


def register_plugins(arch: Optional[int] = None) -> None:
    """Register `dain::DepthFlowProjection` and `dain::AdaptiveWarp` with TensorRT's plugin
    registry (idempotent). `arch`: the SM the AOT kernel is compiled for (e.g. 90), default the
    current GPU's, read when an engine is built. Needs tensorrt >= 10.9 (AOT QDP) and triton."""
    global _REGISTERED
    if _REGISTERED:
        return
    import tensorrt as trt
    import tensorrt.plugin as trtp

    if not hasattr(trtp, "aot_impl"):
        raise RuntimeError(f"TensorRT {trt.__version__} has no tensorrt.plugin.aot_impl (needs 10.9 or newer)")
    from dainrt.engine.kernels import aw as aw_kernels

    # --- DepthFlowProjection: JIT ----------------------------------------------------------
    @trtp.register(f"{NAMESPACE}::{DFP_OP}")
    def _dfp_desc(flow: trtp.TensorDesc, weight: trtp.TensorDesc) -> trtp.TensorDesc:
        return flow.like()  # (B,2,H,W) FP32: the autotune below admits FP32 only

    @trtp.autotune(f"{NAMESPACE}::{DFP_OP}")
    def _dfp_autotune(flow: trtp.TensorDesc, weight: trtp.TensorDesc, outputs: Tuple[trtp.TensorDesc]):
        return [trtp.AutoTuneCombination("FP32, FP32, FP32", "LINEAR")]

    @trtp.impl(f"{NAMESPACE}::{DFP_OP}")
    def _dfp_impl(flow: trtp.Tensor, weight: trtp.Tensor, outputs: Tuple[trtp.Tensor], stream: int) -> None:
        import torch

        from dainrt.engine.kernels import ops

        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            f = torch.as_tensor(flow, device="cuda")
            w = torch.as_tensor(weight, device="cuda")
            out = torch.as_tensor(outputs[0], device="cuda")
            ops.depth_flow_projection(f, w, fill=True, out=out)

    # --- AdaptiveWarp: AOT (plus JIT for debugging) ----------------------------------------
    @trtp.register(f"{NAMESPACE}::{AW_OP}")
    def _aw_desc(image: trtp.TensorDesc, flow: trtp.TensorDesc, kernel: trtp.TensorDesc) -> trtp.TensorDesc:
        return image.like()  # (B,C,H,W) FP32

    @trtp.autotune(f"{NAMESPACE}::{AW_OP}")
    def _aw_autotune(image: trtp.TensorDesc, flow: trtp.TensorDesc, kernel: trtp.TensorDesc,
                     outputs: Tuple[trtp.TensorDesc]):
        return [trtp.AutoTuneCombination("FP32, FP32, FP32, FP32", "LINEAR")]

    @trtp.aot_impl(f"{NAMESPACE}::{AW_OP}")
    def _aw_aot(image: trtp.TensorDesc, flow: trtp.TensorDesc, kernel: trtp.TensorDesc,
                outputs: Tuple[trtp.TensorDesc], tactic: int):
        ck = compiled_kernel("adaptive_warp_kernel", arch)
        B, C, H, W = (image.shape_expr[i] for i in range(4))
        params = trtp.KernelLaunchParams()
        params.grid_x = trtp.cdiv(H * W, aw_kernels.BLOCK)
        params.grid_y = B
        params.block_x = ck.threads
        params.shared_mem = ck.shared
        # Scalars sit between the tensor inputs and the outputs: (image, flow, kernel, C, H, W, out).
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(C), trtp.SymInt32(H), trtp.SymInt32(W)])
        return ck.name, ck.ptx, params, extra

    @trtp.impl(f"{NAMESPACE}::{AW_OP}")
    def _aw_impl(image: trtp.Tensor, flow: trtp.Tensor, kernel: trtp.Tensor, outputs: Tuple[trtp.Tensor],
                 stream: int) -> None:
        import torch

        from dainrt.engine.kernels import ops

        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            ops.adaptive_warp(torch.as_tensor(image, device="cuda"), torch.as_tensor(flow, device="cuda"),
                              torch.as_tensor(kernel, device="cuda"), out=torch.as_tensor(outputs[0], device="cuda"))

    _REGISTERED = True
