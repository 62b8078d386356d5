"""The ONNX Runtime backend: the four exported stage graphs run by ONNX Runtime.

On first use the model is exported (dainrt.export) into the cache folder
`<cache>/onnx/<checkpoint sha256[:16]>-<dainrt version>-<precision>/` or into `onnx_dir`; a
cached export whose manifest names another checkpoint, precision or dainrt version is rebuilt
(cache) or refused (explicit folder), never used. `onnxruntime` is imported here only, lazily.

Execution providers (`providers`):
* `None` (default): CPU EP on a CPU device; on a CUDA device the CUDA EP (then CPU).
* `"cpu"`, `"cuda"`, `"tensorrt"`, or an explicit ONNX Runtime provider list (passed through).
Tested here: the CPU EP only. The CUDA path (IOBinding of torch device tensors by `data_ptr`,
outputs allocated by torch, ORT on torch's current stream) and the TensorRT EP options (engine
and timing caches next to the ONNX files; precision comes from the ONNX file itself, as TensorRT
11 has no FP16 flag) are wired but have not run on a GPU yet: GPU machines need
`onnxruntime-gpu` instead of `onnxruntime`.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import torch

from dainrt.base.errors import DainrtError, OptionError


def _say(message: str) -> None:
    print(f"dainrt: {message}", file=sys.stderr)


def _import_ort():
    try:
        import onnxruntime
    except ImportError as err:
        raise DainrtError(f"the onnxruntime backend needs the onnxruntime package ({err}); "
                          "pip install onnxruntime (or onnxruntime-gpu on a CUDA machine)") from None
    return onnxruntime


def _cpu_form(onnx_bytes: bytes) -> bytes:
    """An INT8 Q/DQ graph in the spelling ONNX Runtime's CPU provider fuses fully (uint8
    activations, zero point 128; the same numbers: dainrt.export.qdq); others unchanged."""
    import onnx

    from dainrt.export.qdq import activations_to_uint8, has_int8_activations

    model = onnx.ModelProto.FromString(onnx_bytes)
    return activations_to_uint8(model).SerializeToString() if has_int8_activations(model) else onnx_bytes


_SYM = re.compile(r"^(?:(\d+)\*)?([A-Za-z_]\w*)$")


def _bind_symbols(spec: list, shape: tuple[int, ...], env: dict[str, int]) -> None:
    """Learn symbol values from one input: spec ['batch', 3, '64*h', '64*w'] vs (1,3,128,192)."""
    for s, n in zip(spec, shape):
        m = _SYM.match(s) if isinstance(s, str) else None
        if m:
            env.setdefault(m.group(2), n // int(m.group(1) or 1))


def _resolve(spec: list, env: dict[str, int]) -> tuple[int, ...]:
    out = []
    for s in spec:
        m = _SYM.match(s) if isinstance(s, str) else None
        out.append(int(m.group(1) or 1) * env[m.group(2)] if m else int(s))
    return tuple(out)


class OnnxRuntimeBackend:
    """Runs the exported stages with ONNX Runtime (docs/architecture.md §5). FP32 tensors in and out.

    Args:
        model: a `dainrt.model.DAIN` (its weights are exported; it is not run).
        device: torch.device the inputs and outputs live on (cpu, or cuda with onnxruntime-gpu).
        onnx_dir: folder of an export to use (or to export into if empty); None: the cache.
        precision: "fp32" or "fp16" (frame, pair and rectify in mixed FP16; warp FP32), or "int8"
            (Q/DQ stages of a calibration; needs `calibration`).
        calibration: folder made by `dainrt calibrate` (dainrt.export.calibrated): its ONNX files
            are run instead of the export; refused in one line when made for other weights, another
            dainrt version or another precision.
        providers: see the module docstring.
        threads: ONNX Runtime intra-op threads (None: its default, all cores).
        progress: callable(str) for export messages (default: one line each on stderr).
    """

    name = "onnxruntime"

    def __init__(self, model, device: torch.device = torch.device("cpu"), onnx_dir=None, precision: str = "fp32",
                 providers=None, threads: int | None = None, progress=_say, calibration=None):
        from dainrt.model.checkpoint import fingerprint
        from dainrt.export import ensure_exported
        from dainrt.export.calibrated import load_calibration

        self.device = torch.device(device)
        self.ort = _import_ort()
        self.precision = precision
        self.checkpoint_sha256 = fingerprint(model.state_dict())[0]
        if calibration is not None:
            if onnx_dir is not None:
                raise OptionError("onnx_dir", "cannot be combined with a calibration (its folder holds the ONNX files)")
            cal = load_calibration(calibration, self.checkpoint_sha256, precision)
            self.onnx_dir, self.manifest = cal.directory, cal.manifest
        elif precision == "int8":
            raise OptionError("calibration", "is needed for int8: make one with `dainrt calibrate INPUT -o DIR`, "
                                             "then pass --calibration DIR")
        else:
            self.onnx_dir, self.manifest = ensure_exported(
                model, onnx_dir, precision, checkpoint_sha256=self.checkpoint_sha256, progress=progress)
        self.providers = self._providers(providers)
        self.threads = threads
        self._sessions: dict = {}

    # -- setup ---------------------------------------------------------------------------------

    def _providers(self, providers):
        available = set(self.ort.get_available_providers())
        index = self.device.index or 0
        cuda_opts = {"device_id": index}
        if self.device.type == "cuda":
            # Run ORT's kernels on torch's current stream: no cross-stream races. (Untested here.)
            cuda_opts["user_compute_stream"] = str(torch.cuda.current_stream(self.device).cuda_stream)
        if providers is None:
            providers = "cuda" if self.device.type == "cuda" else "cpu"
        if isinstance(providers, str):
            if providers == "cpu":
                providers = ["CPUExecutionProvider"]
            elif providers == "cuda":
                providers = [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
            elif providers == "tensorrt":
                cache = str(Path(self.onnx_dir) / "trt-cache")
                trt_opts = {
                    "device_id": index,
                    "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
                    # TensorRT 11 takes precision from the ONNX (fp16 export); no builder flag.
                    "trt_fp16_enable": False,
                }
                providers = [("TensorrtExecutionProvider", trt_opts), ("CUDAExecutionProvider", cuda_opts),
                             "CPUExecutionProvider"]
            else:
                raise DainrtError(f"unknown ONNX Runtime providers {providers!r}; use cpu, cuda or tensorrt")
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        missing = [n for n in names if n not in available]
        if missing:
            raise DainrtError(f"ONNX Runtime here has no {missing[0]} (it has: {', '.join(sorted(available))}); "
                              + ("install onnxruntime-gpu instead of onnxruntime" if "CUDA" in missing[0] or "Tensorrt" in missing[0]
                                 else "choose another provider"))
        if self.device.type == "cuda" and names[0] == "CPUExecutionProvider":
            raise OptionError("providers", "cpu cannot run on a CUDA device: use the cpu device, or the cuda/tensorrt providers")
        return providers

    def session(self, stage: str):
        """The ONNX Runtime session of `stage` (created on first use)."""
        if stage not in self._sessions:
            entry = self.manifest["stages"].get(stage)
            if entry is None:
                raise DainrtError(f"unknown stage {stage!r}")
            path = Path(self.onnx_dir) / entry["file"]
            source = self._form(path.read_bytes()) if entry.get("precision") == "int8" else str(path)
            self._sessions[stage] = self._new_session(source, f"{entry['file']} from {self.onnx_dir}")
        return self._sessions[stage]

    def use_graph(self, stage: str, onnx_bytes: bytes | None) -> None:
        """Run `stage` from a serialized ONNX graph with the same inputs and outputs instead of its
        file (a trial variant during calibration); None goes back to the file."""
        self._sessions.pop(stage, None)
        if onnx_bytes is not None:
            self._sessions[stage] = self._new_session(self._form(onnx_bytes), f"a trial {stage} graph")

    def _form(self, onnx_bytes: bytes) -> bytes:
        """INT8 graphs in the CPU provider's fast spelling when the CPU provider runs them; the
        TensorRT provider reads the stored (TensorRT) spelling."""
        first = self.providers[0]
        return _cpu_form(onnx_bytes) if (first[0] if isinstance(first, tuple) else first) == "CPUExecutionProvider" \
            else onnx_bytes

    def session_options(self):
        """The options every session of this backend is made with (threads, optimisation, order)."""
        options = self.ort.SessionOptions()
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Measured, not derived: with ORT's default node order the warp stage (the AdaptiveWarp
        # function bodies' per-tap temporaries) dominates the peak; the priority-based order
        # keeps fewer alive. Bundled model, one interpolation at 512x256: peak RSS growth 2154 ->
        # 1638 MiB, 16.6 -> 14.1 s (the warp stage alone at 256x256: 502 -> 293 MiB).
        options.execution_order = self.ort.ExecutionOrder.PRIORITY_BASED
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
        return options

    def _new_session(self, source: str | bytes, what: str):
        options = self.session_options()
        try:
            return self.ort.InferenceSession(source, options, providers=self.providers)
        except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DainrtError(f"ONNX Runtime cannot load {what}: {first[:300]}") from None

    # -- running -------------------------------------------------------------------------------

    def run(self, stage: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Run `stage` on `inputs` (STAGE_IO order, float32 on `self.device`) -> float32 outputs."""
        entry = self.manifest["stages"][stage]
        if len(inputs) != len(entry["inputs"]):
            raise ValueError(f"stage {stage} takes {len(entry['inputs'])} inputs, got {len(inputs)}")
        sess = self.session(stage)
        if self.device.type == "cpu":
            feeds = {spec["name"]: x.detach().to(torch.float32).contiguous().numpy()
                     for spec, x in zip(entry["inputs"], inputs)}
            return tuple(torch.from_numpy(np.asarray(y)) for y in sess.run(None, feeds))
        return self._run_bound(sess, entry, inputs)

    def close(self) -> None:
        """Drop the sessions (ONNX Runtime frees their memory)."""
        self._sessions.clear()

    def _run_bound(self, sess, entry: dict, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """CUDA: bind torch device tensors by pointer; outputs allocated by torch. (Untested here.)"""
        env: dict[str, int] = {}
        binding = sess.io_binding()
        keep = []
        index = self.device.index or 0
        for spec, x in zip(entry["inputs"], inputs):
            x = x.detach().to(self.device, torch.float32).contiguous()
            keep.append(x)
            _bind_symbols(spec["shape"], tuple(x.shape), env)
            binding.bind_input(spec["name"], "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        outputs = []
        for spec in entry["outputs"]:
            y = torch.empty(_resolve(spec["shape"], env), dtype=torch.float32, device=self.device)
            outputs.append(y)
            binding.bind_output(spec["name"], "cuda", index, np.float32, tuple(y.shape), y.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch are ready
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return tuple(outputs)
