"""The `tensorrt` backend: the four stages as TensorRT engines on torch CUDA tensors.

* One engine per (stage, shape profile), from the engine cache or built on first use (and said
  so on stderr); `build=False` turns a miss into a one-line error naming the command to run.
* One execution context and one non-default torch CUDA stream per stage. Inputs and outputs
  are torch CUDA tensors bound with `set_tensor_address(name, tensor.data_ptr())`;
  `execute_async_v3` is enqueued on the stage's stream after it waits for the caller's
  current stream, and the current stream then waits for the stage's stream: no host
  synchronisation and no host copies between stages. Tensors used by a stage's stream are
  marked with `record_stream` so torch's allocator does not reuse them too early.
* One CUDA binding in the process: torch's (no pycuda/cuda-python contexts).
* `cuda_graph=True`: `warp_rectify(inputs)`, the per-t part (warp + rectify) as one call, is
  captured into one CUDA graph at a fixed shape and replayed for each t; it is recaptured when
  the pair's tensors change (new addresses or shapes), i.e. once per input pair. It returns a
  copy of the frame, so nothing the caller holds is overwritten by the next replay. `run()`
  always runs a single stage plainly.

Written against the TensorRT 10.9+/11 Python API; it has not run in this repository's CI
(no GPU, no TensorRT there): tests/gpu/test_tensorrt_gpu.py exercises it on a GPU machine.
"""
from __future__ import annotations

import sys

import torch

from dainrt.base.errors import DainrtError, OptionError
from dainrt.model import STAGE_IO

from . import require_tensorrt
from .builder import BuildSettings, EngineBuilder, profile_for_sizes
from .cache import EngineCache, ShapeProfile


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if dtype not in table:
        raise DainrtError(f"engine tensor type {dtype} is not supported by the tensorrt backend")
    return table[dtype]


class _StageEngine:
    """One deserialised engine with its execution context and stream."""

    def __init__(self, trt, runtime, data: bytes, stage: str, device: torch.device):
        self.stage = stage
        self.device = device
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise DainrtError(f"TensorRT could not load the cached {stage} engine; run `dainrt engines clear` "
                              "and build again")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = {n: self.engine.get_tensor_mode(n) for n in names}
        want_in, want_out = STAGE_IO[stage]
        have_in = [n for n in names if mode[n] == trt.TensorIOMode.INPUT]
        have_out = [n for n in names if mode[n] == trt.TensorIOMode.OUTPUT]
        if set(have_in) != set(want_in) or set(have_out) != set(want_out):
            raise DainrtError(f"the {stage} engine's tensors {sorted(have_in)} -> {sorted(have_out)} do not match "
                              f"the stage interface; run `dainrt engines clear` and build again")
        self.inputs, self.outputs = list(want_in), list(want_out)
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}

    def bind(self, inputs: tuple[torch.Tensor, ...], outputs: list[torch.Tensor] | None = None):
        """Set shapes and addresses; returns (inputs as bound, outputs)."""
        if len(inputs) != len(self.inputs):
            raise ValueError(f"{self.stage}: {len(self.inputs)} inputs expected, got {len(inputs)}")
        bound = []
        for name, t in zip(self.inputs, inputs):
            if t.device != self.device:
                raise ValueError(f"{self.stage}: input {name} is on {t.device}, the engine on {self.device}")
            t = t.to(self.dtypes[name]).contiguous()
            if not self.context.set_input_shape(name, tuple(t.shape)):
                raise DainrtError(f"{self.stage}: input {name} of shape {tuple(t.shape)} is outside the engine's "
                                  "shape profile")
            self.context.set_tensor_address(name, t.data_ptr())
            bound.append(t)
        if outputs is None:
            outputs = [torch.empty(tuple(self.context.get_tensor_shape(n)), dtype=self.dtypes[n], device=self.device)
                       for n in self.outputs]
        for name, o in zip(self.outputs, outputs):
            self.context.set_tensor_address(name, o.data_ptr())
        return bound, outputs

    def enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to enqueue the {self.stage} engine")

    def run(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        current = torch.cuda.current_stream(self.device)
        bound, outputs = self.bind(inputs)
        self.stream.wait_stream(current)
        self.enqueue()
        for t in (*bound, *outputs):
            t.record_stream(self.stream)
        current.wait_stream(self.stream)
        return tuple(o if o.dtype == torch.float32 else o.float() for o in outputs)


class TensorRTBackend:
    """Backend `tensorrt`: `run(stage, inputs)` on torch CUDA tensors through TensorRT engines.

    Options: precision fp16|fp32|int8 (warp is always FP32), calibration (a `dainrt calibrate`
    folder to build from; needed for int8), build (build missing engines on first
    use; else a one-line error naming `dainrt build-engine ...`), dynamic (a ShapeProfile, or
    True for `profile_for_sizes` of the first shape seen, instead of a static engine per
    shape), cuda_graph (capture warp + rectify for `warp_rectify`), plugins, opt_level,
    workspace_mib, cache (EngineCache).
    """

    name = "tensorrt"

    def __init__(self, model, device: torch.device, precision: str = "fp16", build: bool = True,
                 dynamic: bool | ShapeProfile = False, cuda_graph: bool = False, plugins: bool = True,
                 opt_level: int = 3, workspace_mib: int | None = None, cache: EngineCache | None = None,
                 verbose: bool = False, calibration=None):
        require_tensorrt("the tensorrt backend", plugins=plugins)
        device = torch.device(device)
        if device.type != "cuda":
            raise OptionError("device", "must be a CUDA device for the tensorrt backend")
        import tensorrt as trt

        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        self.device = device
        self.trt = trt
        self.build = build
        self.dynamic = dynamic
        self.cuda_graph = cuda_graph
        self.settings = BuildSettings(optimization_level=opt_level, workspace_mib=workspace_mib, plugins=plugins,
                                      verbose=verbose)
        self.builder = EngineBuilder(model, precision, cache=cache, settings=self.settings, device=device,
                                     calibration=calibration)
        self._logger = trt.Logger(trt.Logger.WARNING)
        if hasattr(trt, "init_libnvinfer_plugins"):
            trt.init_libnvinfer_plugins(self._logger, "")
        if plugins:
            from .plugins import register_plugins

            register_plugins()  # the JIT projection plugin must be registered to deserialise
        self._runtime = trt.Runtime(self._logger)
        self._engines: dict[tuple[str, str], _StageEngine] = {}
        self._graph = None

    # ------------------------------------------------------------------------ engines
    def _profile(self, batch: int, height: int, width: int) -> ShapeProfile:
        if isinstance(self.dynamic, ShapeProfile):
            if not self.dynamic.covers(batch, height, width):
                raise DainrtError(f"{width}x{height} is outside the dynamic engine's range {self.dynamic.describe()}")
            return self.dynamic
        if self.dynamic:  # True: a range up to the first (padded) size seen
            self.dynamic = profile_for_sizes([(width, height)], dynamic=True, batch=batch, padded=True)
            return self.dynamic
        return ShapeProfile.static(height, width, batch)

    def _engine(self, stage: str, inputs: tuple[torch.Tensor, ...]) -> _StageEngine:
        first = inputs[0]  # every stage's first input is full resolution (B, C, H, W)
        profile = self._profile(first.shape[0], first.shape[-2], first.shape[-1])
        slot = (stage, profile.tag())
        if slot not in self._engines:
            key, data = self.builder.ensure(stage, profile, build=self.build)
            if self.build:
                print(f"dainrt: TensorRT {stage} engine ready ({key.describe()})", file=sys.stderr, flush=True)
            self._engines[slot] = _StageEngine(self.trt, self._runtime, data, stage, self.device)
        return self._engines[slot]

    # --------------------------------------------------------------------------- run
    @torch.inference_mode()
    def run(self, stage: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if stage not in STAGE_IO:
            raise ValueError(f"unknown stage {stage!r}")
        return self._engine(stage, inputs).run(inputs)

    def close(self) -> None:
        """Drop the graph, contexts and engines (TensorRT frees their device memory)."""
        self._graph = None
        self._engines.clear()

    # -------------------------------------------------------------------- CUDA graph
    @torch.inference_mode()
    def warp_rectify(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The frame for the warp stage's `inputs`: warp then rectify, replayed from one CUDA
        graph with `cuda_graph=True` (captured once per pair), else the two stages plainly.
        Returns a tensor of the caller's own (FP32)."""
        if not self.cuda_graph:
            rectify_input, blend = self.run("warp", inputs)
            return self.run("rectify", (rectify_input, blend))[0]
        signature = tuple((t.data_ptr(), tuple(t.shape), t.dtype) for t in inputs[:-1])
        g = self._graph
        if g is None or g["signature"] != signature:
            g = self._capture(inputs, signature)
        current = torch.cuda.current_stream(self.device)
        g["t"].copy_(inputs[-1])
        g["stream"].wait_stream(current)
        with torch.cuda.stream(g["stream"]):
            g["graph"].replay()
        current.wait_stream(g["stream"])
        frame = g["frame"]
        return frame.float() if frame.dtype != torch.float32 else frame.clone()

    def _capture(self, inputs: tuple[torch.Tensor, ...], signature) -> dict:
        warp = self._engine("warp", inputs)
        full = inputs[0]
        rect_probe = (torch.empty((full.shape[0], 1, full.shape[-2], full.shape[-1]), device=self.device),)
        rectify = self._engine("rectify", rect_probe)
        t_static = inputs[-1].to(warp.dtypes[warp.inputs[-1]]).clone()
        bound, warp_out = warp.bind((*inputs[:-1], t_static))
        _, (frame,) = rectify.bind(tuple(warp_out))
        stream = warp.stream
        current = torch.cuda.current_stream(self.device)
        stream.wait_stream(current)
        # TensorRT needs one enqueue outside capture before a captured one.
        for eng in (warp, rectify):
            if not eng.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to enqueue the {eng.stage} engine")
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            for eng in (warp, rectify):
                if not eng.context.execute_async_v3(stream.cuda_stream):
                    raise RuntimeError(f"TensorRT failed to enqueue the {eng.stage} engine during capture")
        self._graph = {"graph": graph, "stream": stream, "signature": signature, "t": t_static,
                       "inputs": bound, "warp_out": warp_out, "frame": frame}
        return self._graph
