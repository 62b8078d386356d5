"""Launch wrappers: the Triton kernels behind the signatures of `dainrt.model.ops`.

`depth_flow_projection`, `splat`, `fill_holes` and `adaptive_warp` take and return the same
tensors as the PyTorch references, so they drop into `WarpStage(project=..., warp=...)` for a
fast torch-CUDA path. They run on CUDA tensors, or on CPU tensors under Triton's interpreter
(`TRITON_INTERPRET=1` set before triton is first imported). Outputs are float32, contiguous,
on the inputs' device; inputs are never modified. Not differentiable (inference only).
"""
from __future__ import annotations

import torch
import triton
from torch import Tensor

from . import aw, dfp


def interpreting() -> bool:
    """True when triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return not isinstance(dfp.dfp_splat_kernel, triton.runtime.jit.JITFunction)


def _prepare(name: str, t: Tensor, shape: tuple) -> Tensor:
    if t.dim() != 4 or any(e is not None and e != g for e, g in zip(shape, t.shape)):
        want = "x".join("*" if e is None else str(e) for e in shape)
        raise ValueError(f"{name}: expected a tensor of shape {want}, got {tuple(t.shape)}")
    if t.device.type != "cuda" and not interpreting():
        raise ValueError(
            f"{name} is on {t.device}: the Triton kernels need CUDA tensors "
            "(or TRITON_INTERPRET=1 set before triton is imported, for the CPU interpreter)"
        )
    return t.detach().to(torch.float32).contiguous()


def _check_size(B: int, C: int, H: int, W: int) -> None:
    # Kernel offsets within one batch item are int32.
    if max(C, 16, 3) * H * W >= 2**31:
        raise ValueError(f"image too large for the Triton kernels: {C}x{H}x{W}")


def splat(flow: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Equal-weight 2x2 forward splat: (weighted_sum (B,2,H,W), weight_sum (B,1,H,W)), FP32
    atomics (the summation order, hence the last bits, varies from run to run on a GPU)."""
    B, _, H, W = flow.shape
    flow = _prepare("flow", flow, (B, 2, H, W))
    weight = _prepare("weight", weight, (B, 1, H, W))
    _check_size(B, 3, H, W)
    num = torch.zeros((B, 2, H, W), dtype=torch.float32, device=flow.device)
    den = torch.zeros((B, 1, H, W), dtype=torch.float32, device=flow.device)
    if B and H and W:
        grid = (triton.cdiv(H * W, dfp.BLOCK), B)
        dfp.dfp_splat_kernel[grid](flow, weight, H, W, num, den, BLOCK=dfp.BLOCK)
    return num, den


def _fill(num: Tensor, den: Tensor, normalise: bool, fill: bool, out: Tensor | None = None) -> Tensor:
    B, _, H, W = num.shape
    if out is None:
        out = torch.empty((B, 2, H, W), dtype=torch.float32, device=num.device)
    if B and H and W:
        grid = (triton.cdiv(H * W, dfp.BLOCK), B)
        dfp.dfp_fill_kernel[grid](num, den, H, W, out, NORMALISE=normalise, FILL=fill, BLOCK=dfp.BLOCK)
    return out


def fill_holes(projected: Tensor, weight_sum: Tensor) -> Tensor:
    """Replace every hole (weight_sum <= 0) of `projected` (B,2,H,W) by the unweighted mean of
    its nearest non-holes left, right, up and down (0 when none); non-holes unchanged."""
    B, C, H, W = projected.shape
    if C != 2:
        raise ValueError(f"projected: the Triton fill handles 2 channels (a flow), got {C}")
    projected = _prepare("projected", projected, (B, 2, H, W))
    weight_sum = _prepare("weight_sum", weight_sum, (B, 1, H, W))
    return _fill(projected, weight_sum, normalise=False, fill=True)


def depth_flow_projection(flow: Tensor, weight: Tensor, fill: bool = True, out: Tensor | None = None) -> Tensor:
    """``Ft0(p) = -sum_q w(q) F(q) / sum_q w(q)`` with hole filling: see
    `dainrt.model.ops.depth_flow_projection`. `out` (B,2,H,W) FP32 contiguous, if given, receives
    the result (the TensorRT plugin writes into TensorRT's buffer this way)."""
    num, den = splat(flow, weight)
    return _fill(num, den, normalise=True, fill=fill, out=out)


def adaptive_warp(image: Tensor, flow: Tensor, kernel: Tensor, out: Tensor | None = None) -> Tensor:
    """Backward warp of `image` (B,C,H,W) along `flow` (B,2,H,W) with per-pixel 4x4 `kernel`
    (B,16,H,W): see `dainrt.model.ops.adaptive_warp`. Returns (B,C,H,W) FP32."""
    B, C, H, W = image.shape
    image = _prepare("image", image, (B, C, H, W))
    flow = _prepare("flow", flow, (B, 2, H, W))
    kernel = _prepare("kernel", kernel, (B, 16, H, W))
    _check_size(B, C, H, W)
    if out is None:
        out = torch.empty((B, C, H, W), dtype=torch.float32, device=image.device)
    if B and C and H and W:
        grid = (triton.cdiv(H * W, aw.BLOCK), B)
        aw.adaptive_warp_kernel[grid](image, flow, kernel, C, H, W, out, BLOCK=aw.BLOCK)
    return out
