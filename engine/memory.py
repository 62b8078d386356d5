"""Peak memory of interpolating a film, answered before the run, from the stage tensor shapes.

`estimate_memory(config, height, width, ...)` adds up, in **bytes**, what is alive at the
moment of the run's peak. Every figure is a tensor shape of `model/stages.py` (`STAGE_IO`)
times its element size: tensors are NCHW at the **padded** size (official padding,
`model/padding.py`), batch 1, float32 (4 bytes) unless said otherwise. With P = padded
height x padded width pixels, Ck = `ModelConfig.context_channels` (196 at width 1) and
R = `ModelConfig.rectify_channels` = 45 + 2 Ck (437 at width 1):

* **weights**: every parameter and buffer of `DAIN(config)`, float32 (24.0 M values, 96 MB at
  width 1). FP16 autocast adds a half-precision copy of them (autocast's weight cache).
* **frames kept** by the `Runner` (`FRAMES_KEPT` = 2 frames): per frame the padded image
  (3 P), the context (Ck P) and the PWC pyramid (levels 2..6, c(32), c(64), c(96), c(128),
  c(196) channels at P/16 .. P/4096 pixels).
* **pair kept**: flow01 and flow10 (2 x 2 at P/16), kernel0 and kernel1 (2 x 16 P).
* **stage activations**: the largest transient set of any stage, measured by tracing live
  tensors through the stages (`benchmarks/memory_check.py --trace`): it is the warp stage, at its
  final concatenation, where the warped images, projected flows, both warped contexts
  (2 Ck P), the upsampled flows and depth weights (19 P in all besides the contexts) are alive
  together with the new rectify input (R P): (R + 2 Ck + 19) P. The frame stage peaks at
  about 2 Ck P (the context concatenations), MegaDepth and PWC stay below it, the pair stage at
  about 100 P, the rectify stage at its input R P + 3 P plus three c(128)-channel maps, so the
  warp dominates on CUDA in FP32. With FP16 autocast the warp still runs in FP32; the rectify
  stage then also holds an FP16 copy of its input (R P x 2 bytes) and FP16 activations, which
  brings it level with the warp's set (within 1 % at width 1); the larger of the two counts.
  On the **CPU** the convolutions run through oneDNN, which reorders a conv's NCHW input into
  its blocked layout: the first rectify conv then holds a second copy of its input, and the
  rectify stage peaks at (R + 3 + R + c(128) + 3) P, above the warp (measured: the RSS rises by
  R + c(128) + 8 values per pixel during that conv).
* **caller's frames**: the two unpadded input frames and one output frame, 3 x h x w each.

Not counted: `dainrt run`'s host-side decode and encode queues (up to 2 x 8 pictures of
3 x h x w bytes at 8 bit, about 50 MB at 1080p) and the encoder's own buffers.

On CUDA the estimate is what torch's allocator holds at the peak (compare
`torch.cuda.max_memory_allocated`); the device also needs the CUDA context and cuDNN/cuBLAS
workspaces, added as `overhead_bytes` (`CUDA_OVERHEAD_BYTES`, a typical figure, not a shape).
On the CPU the estimate is the growth of the process's resident memory (RSS) over what it held
before the model was loaded (libraries, interpreter); `benchmarks/memory_check.py` checks it
against the measured peak RSS.

The torch backend is estimated from shapes. ONNX Runtime on the CPU is the torch figure with the
activations times `ORT_CPU_ACTIVATION_FACTOR` and the weights twice (ONNX Runtime holds its own
copy of the initializers next to the loaded model): a fit to measurements, not a derivation.
ONNX Runtime on CUDA and TensorRT plan memory with their own allocators and are not estimated
(`estimate_memory` raises `ValueError` for them; `memory_line` says so).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from dainrt.model import ModelConfig, padded_size
from dainrt.model.config import FILTER_SIZE

from .runner import FRAMES_KEPT

FLOAT32 = 4
FLOAT16 = 2
PYRAMID_CHANNELS = (32, 64, 96, 128, 196)   # PWC levels 2..6 at width 1 (model/pwcnet.py), scaled by width
PYRAMID_LEVELS = (2, 3, 4, 5, 6)            # level l is at H/2^l x W/2^l
# Channels alive in the warp stage at its final concatenation besides the two warped contexts
# and the new rectify input: blend, warped0, warped1 (3 each), ft0, ft1 (2 each), the two
# upsampled flows (2 each) and the two depth weights (1 each).
WARP_EXTRA_CHANNELS = 3 * 3 + 2 * 2 + 2 * 2 + 2 * 1
# The CUDA context plus cuDNN/cuBLAS handles and workspaces: outside torch's allocator
# statistics, but on the card. A typical figure for recent drivers, not derived from shapes.
CUDA_OVERHEAD_BYTES = 600 * 2**20
ESTIMATED_BACKENDS = ("torch", "onnxruntime")
# ONNX Runtime's CPU peak is torch's kept results plus a multiple of torch's activation term (the
# AdaptiveWarp function bodies' per-tap temporaries, engine/onnxruntime_backend.py, and ORT's
# arena). Measured with the bundled model, growth of the peak RSS over the loaded process: one
# interpolation 816 MiB at 256x256 (3.3x), 1638 MiB at 512x256 (3.7x); `dainrt interpolate` of a
# 720p pair in 15 tiles of 384x384 about 3.2 GiB (7x: the estimate with 4x, 2.0 GiB, let it
# exceed a 3000 MB budget at 3.7 GiB peak RSS), in 45 tiles of 256x256 1.45 GiB (5.5x). The
# largest is used, so a tile plan stays within its budget (with 7x: 45 tiles, 1.9 GiB peak RSS).
ORT_CPU_ACTIVATION_FACTOR = 7
# A calibrated INT8 graph (Q/DQ nodes) on ONNX Runtime's CPU provider holds about twice the FP32
# graph's memory (its quantized tensors next to the FP32 ones around each Q/DQ pair): peak RSS of
# `dainrt interpolate --tile off` with the bundled model and its car-turn calibration, INT8
# against FP32, 6.29 / 3.06 GB at 640x360 and 2.50 / 1.28 GB at 320x180. Without it, auto tiles
# planned a 720p INT8 frame whole (16 GiB) and the run was OOM-killed on a 24 GB machine.
ORT_CPU_INT8_FACTOR = 2


@dataclass(frozen=True)
class MemoryEstimate:
    """The parts of the peak, in bytes (see the module docstring for each)."""

    height: int                 # input frame size, pixels
    width: int
    padded_height: int          # what the network runs on
    padded_width: int
    model_width: float
    device: str                 # "cpu" or "cuda"
    precision: str
    weights: int
    frames_kept: int
    pair_kept: int
    activations: int            # the largest stage's transient tensors (the warp stage)
    io: int                     # caller's input and output frames
    overhead_bytes: int         # CUDA context and library workspaces (0 on the CPU)

    @property
    def tensors(self) -> int:
        """What torch allocates at the peak, bytes (CPU: the RSS growth over the loaded libraries)."""
        return self.weights + self.frames_kept + self.pair_kept + self.activations + self.io

    @property
    def total(self) -> int:
        """Peak device memory in bytes: `tensors` plus the CUDA overhead on a GPU."""
        return self.tensors + self.overhead_bytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(tensors=self.tensors, total=self.total)
        return d


def _pyramid_values(config: ModelConfig, ph: int, pw: int) -> int:
    """Float values of one frame's PWC pyramid (feat2..feat6) at padded size ph x pw."""
    return sum(config.ch(c) * (ph >> lvl) * (pw >> lvl) for c, lvl in zip(PYRAMID_CHANNELS, PYRAMID_LEVELS))


def weight_values(config: ModelConfig) -> int:
    """Parameters and buffers of `DAIN(config)` (values, float32 in memory)."""
    from dainrt.model.checkpoint import expected_shapes

    return sum(math.prod(shape) for shape in expected_shapes(config).values())


def warp_activation_channels(config: ModelConfig) -> int:
    """Channels (at P pixels) alive at the warp stage's peak: R + 2 Ck + 19."""
    return config.rectify_channels + 2 * config.context_channels + WARP_EXTRA_CHANNELS


def estimate_memory(config: ModelConfig, height: int, width: int, device: str = "cpu", precision: str = "fp32",
                    backend: str = "torch", kernels: str = "reference", compile: bool = False,
                    padding: str = "official") -> MemoryEstimate:
    """Peak memory of interpolating `width` x `height` input frames (pixels) with `DAIN(config)`
    on `backend` (torch; onnxruntime on the CPU), `device` type ("cpu", "cuda", "cuda:N"),
    `precision` fp32|fp16, or int8 on onnxruntime (a calibrated graph).

    `kernels` (reference|numba|triton) and `compile` do not change the estimate: the Numba and
    Triton kernels keep the same tensors alive at the warp's concatenation (they only drop the
    reference's per-tap temporaries, so the estimate stays an upper bound), and for `torch.compile` the eager
    figure is an upper bound (Inductor may fuse the concatenation). Returns bytes per part.
    """
    if backend not in ESTIMATED_BACKENDS or (backend == "onnxruntime" and str(device).split(":")[0] != "cpu"):
        raise ValueError(f"no memory estimate for the {backend} backend on {device} "
                         "(it plans memory with its own allocator)")
    asked, int8 = precision, precision == "int8" and backend == "onnxruntime"
    if int8:
        precision = "fp32"                  # the figure below, then ORT_CPU_INT8_FACTOR
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16 (int8 on onnxruntime), got {precision!r}")
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    device_type = str(device).split(":")[0]
    ph, pw = padded_size(height, width, padding)
    P = ph * pw
    ck, rect = config.context_channels, config.rectify_channels
    weights = weight_values(config) * FLOAT32
    if precision == "fp16":
        weights += weight_values(config) * FLOAT16
    frame = (3 + ck) * P + _pyramid_values(config, ph, pw)
    pair = 2 * 2 * (ph // 4) * (pw // 4) + 2 * FILTER_SIZE**2 * P
    warp = warp_activation_channels(config) * P * FLOAT32
    rectify_peak = (rect + 3 + 3 * config.ch(128) + 3) * P * FLOAT32
    if precision == "fp16":
        rectify_peak += rect * P * FLOAT16 - 3 * config.ch(128) * P * (FLOAT32 - FLOAT16)
    if device_type == "cpu":
        # oneDNN (mkldnn) runs the CPU convs on its blocked layout: the first rectify conv holds
        # a reordered copy of its R-channel input next to the input and its c(128) output.
        rectify_peak = (rect + 3 + rect + config.ch(128) + 3) * P * FLOAT32
    activations = max(warp, rectify_peak)
    if backend == "onnxruntime":
        activations *= ORT_CPU_ACTIVATION_FACTOR * (ORT_CPU_INT8_FACTOR if int8 else 1)
        weights *= 2
    io = 3 * 3 * height * width * FLOAT32
    return MemoryEstimate(
        height=height, width=width, padded_height=ph, padded_width=pw, model_width=config.width,
        device=device_type, precision=asked, weights=weights, frames_kept=FRAMES_KEPT * frame * FLOAT32,
        pair_kept=pair * FLOAT32, activations=activations, io=io,
        overhead_bytes=CUDA_OVERHEAD_BYTES if device_type == "cuda" else 0,
    )


def format_bytes(n: int) -> str:
    """`n` bytes as GiB (>= 1 GiB) or MiB, e.g. "3.4 GiB"."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def memory_line(config: ModelConfig, height: int, width: int, device: str = "cpu", backend: str = "torch",
                precision: str = "fp32", **options) -> str:
    """One line for the user: the estimated peak for this size and path, or why there is none."""
    device_type = str(device).split(":")[0]
    try:
        est = estimate_memory(config, height, width, device_type, precision, backend, **options)
    except ValueError as err:
        return f"estimated peak memory: none ({err})"
    where = "device memory" if device_type == "cuda" else "RAM (resident, beyond the loaded libraries)"
    line = (f"estimated peak {where}: {format_bytes(est.total)} at {width}x{height} "
            f"(padded {est.padded_width}x{est.padded_height}), model width {config.width:g}, "
            f"{backend} {precision} on {device_type}")
    if est.overhead_bytes:
        line += f" (tensors {format_bytes(est.tensors)} + CUDA context/workspaces {format_bytes(est.overhead_bytes)})"
    return line
