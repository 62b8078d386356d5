"""The benchmark configurations and how each is measured (issue 6).

Configurations ("variants"), each skipped with a printed reason where it cannot run:

| backend         | precision | what                                                                     |
|-----------------|-----------|--------------------------------------------------------------------------|
| `baseline`      | fp32      | torch eager, the official monolithic forward per output frame (baseline.py) |
| `torch`         | fp32      | torch eager stages with the runner's frame/pair caching                  |
| `torch`         | fp16      | CUDA only: frame/pair/rectify under autocast FP16, warp FP32             |
| `torch-triton`  | fp16      | CUDA only: the same with the Triton warp kernels (`engine/kernels`)      |
| `torch-compile` | fp16      | CUDA only: torch fp16 with every stage through `torch.compile` (Inductor) |
| `onnxruntime`   | fp32/fp16 | `create_backend("onnxruntime", precision=...)` where registered          |
| `onnxruntime`   | int8      | the Q/DQ stages of `calibration` (a `dainrt calibrate` folder), if given |
| `tensorrt`      | fp16      | `create_backend("tensorrt", precision="fp16")` where registered and CUDA |
| `tensorrt`      | int8      | the same calibration's engines, where TensorRT runs                      |

Measurements, per frame size:

* **end to end** on a stream of distinct input frames (a synthetic camera pan): after a priming
  call (the stream's first two frames and first pair, untimed) and `warmup` untimed steps, each
  timed step pushes one new input frame and produces `factor - 1` output frames, so it costs one
  `frame`, one `pair` and `factor - 1` `warp` + `rectify` calls: the caching counts. Reported per
  output frame (step time / (factor - 1)); fps = 1000 / that.
  The baseline recomputes everything per output frame, so its cost does not depend on the factor
  or the stream: it is measured once per size, one output frame per timed run (t cycling through
  the largest factor's times), and reported under every factor.
* **per stage**: every stage call inside the timed steps of all factors, timed on its own.
* speed-up vs the baseline (end to end) or vs torch FP32 eager of the same stage (stages), from
  this run; achieved TFLOP/s from `macs.py` and % of the device's dense peak where known;
  peak memory of the timed runs; PSNR of every reduced-precision variant vs torch FP32 on the
  Middlebury pairs.
"""
from __future__ import annotations

import gc
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from dainrt.base.errors import DainrtError
from dainrt.base.metrics import psnr
from dainrt.base.sizes import parse_size
from dainrt.runtime.transfer import to_tensor

from . import report as rep
from .macs import ModelMacs, count_model_macs
from .timing import Measurement, Stats, StageClock, measure

# Defaults per device type: small enough for a 2-core CPU to finish in a few minutes.
DEFAULTS = {
    "cpu": {"sizes": ["128x128"], "runs": 3, "warmup": 1},
    "cuda": {"sizes": ["480p", "720p", "1080p"], "runs": 20, "warmup": 5},
}
FAMILIES = ("torch", "onnxruntime", "tensorrt")
PSNR_PAIRS = ("RubberWhale", "Dimetrodon", "Venus")
PSNR_T = 0.5

# Spec-sheet dense peaks in TFLOP/s: (FP32 on CUDA cores, FP16 tensor cores with FP32
# accumulation, no sparsity). First substring match of the device name wins. CPUs: None.
DEVICE_PEAKS: tuple[tuple[str, float, float], ...] = (
    ("H200", 67.0, 989.4),
    ("H100 NVL", 60.0, 835.0),
    ("H100 PCIe", 51.2, 756.0),
    ("H100", 67.0, 989.4),       # SXM5 (HBM3)
    ("A100", 19.5, 312.0),
    ("L40S", 91.6, 362.1),
    ("L4", 30.3, 121.0),
    ("RTX 4090", 82.6, 165.2),
    ("T4", 8.1, 65.0),
)


def size_label(w: int, h: int) -> str:
    return f"{w}x{h}"


def device_peak_tflops(device_name: str | None, precision: str) -> float | None:
    """Dense peak TFLOP/s of a GPU for `precision` (fp32, fp16/bf16), None if unknown or a CPU."""
    if not device_name:
        return None
    column = {"fp32": 1, "fp16": 2, "bf16": 2}.get(precision)
    if column is None:
        return None
    for key, *peaks in DEVICE_PEAKS:
        if key.lower() in device_name.lower():
            return peaks[column - 1]
    return None


# --------------------------------------------------------------------------------------------
# Variants


@dataclass
class Variant:
    backend: str
    precision: str
    build: Callable[[], object]
    _built: object = None

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    def get(self):
        if self._built is None:
            self._built = self.build()
        return self._built

    def release(self) -> None:
        self._built = None


def plan_variants(model, device: torch.device, families: Sequence[str],
                  threads: int | None = None, calibration=None) -> tuple[list[Variant], list[dict]]:
    """The variants to run for `families` on `device`, and the skipped ones with reasons.
    `calibration`: a `dainrt calibrate` folder for `model`: adds the int8 rows."""
    from dainrt.engine import available_backends
    from dainrt.engine.torch_backend import TorchBackend

    variants: list[Variant] = []
    skipped: list[dict] = []

    def skip(backend: str, precision: str, reason: str) -> None:
        skipped.append({"backend": backend, "precision": precision, "reason": reason})

    cuda = device.type == "cuda"
    registered = set(available_backends())
    if "torch" in families:
        # The PyTorch baseline: the model's own vectorised reference ops, as the official code runs.
        variants.append(Variant("torch", "fp32", lambda: TorchBackend(model, device, kernels="reference")))
        if not cuda:   # the CPU default: the compiled warp kernel (engine/numba_warp.py)
            variants.append(Variant("torch-numba", "fp32", lambda: TorchBackend(model, device, kernels="numba")))
        if cuda:
            from dainrt.engine.kernels import kernels_available

            variants.append(Variant("torch", "fp16",
                                    lambda: TorchBackend(model, device, precision="fp16", kernels="reference")))
            if kernels_available():
                variants.append(Variant("torch-triton", "fp16",
                                        lambda: TorchBackend(model, device, precision="fp16", kernels="triton")))
            else:
                skip("torch-triton", "fp16", "triton is not installed (pip install 'dainrt[triton]')")
            variants.append(Variant("torch-compile", "fp16",
                                    lambda: TorchBackend(model, device, precision="fp16", kernels="reference",
                                                         compile=True)))
        else:
            skip("torch", "fp16", "autocast FP16 is measured on CUDA only (no fast FP16 convolutions on this CPU)")
            skip("torch-triton", "fp16", "the Triton warp kernels need a CUDA GPU")
            skip("torch-compile", "fp16", "torch.compile is measured on CUDA only")
    int8 = ("int8",) if calibration is not None else ()
    for name, precisions in (("onnxruntime", ("fp32", "fp16", *int8)), ("tensorrt", ("fp16", *int8))):
        if name not in families:
            continue
        if name == "tensorrt" and not cuda:
            for p in precisions:
                skip(name, p, "TensorRT needs a CUDA GPU")
            continue
        if name not in registered:
            for p in precisions:
                skip(name, p, f"no '{name}' backend is registered in dainrt.engine on this install")
            continue
        for p in precisions:
            extra = {"calibration": calibration} if p == "int8" else {}
            variants.append(Variant(name, p, lambda name=name, p=p, extra=extra:
                                    _create(name, model, device, p, threads, **extra)))
        if not int8:
            skip(name, "int8", "needs a calibration folder: dainrt calibrate INPUT -o DIR, then --calibration DIR")
    return variants, skipped


def _create(name: str, model, device: torch.device, precision: str, threads: int | None, **options):
    """create_backend with `precision` and `options`, and `threads` when given and the backend
    accepts it."""
    from dainrt.engine import create_backend

    if threads is None:
        return create_backend(name, model, device, precision=precision, **options)
    try:
        return create_backend(name, model, device, precision=precision, threads=threads, **options)
    except TypeError as err:                # the backend has no `threads` option
        if "threads" not in str(err):
            raise
        return create_backend(name, model, device, precision=precision, **options)


# --------------------------------------------------------------------------------------------
# Inputs


def stream_frames(width: int, height: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` HxWx3 uint8 frames of a smooth random texture panning 3 px right and 2 px down
    per frame: distinct frames with plausible motion, so every step of a stream does real work."""
    g = torch.Generator().manual_seed(seed)
    ch, cw = height + 2 * count + 8, width + 3 * count + 8
    canvas = torch.zeros(1, 3, ch, cw)
    for cell, weight in ((64, 0.5), (16, 0.3), (4, 0.2)):
        coarse = torch.rand(1, 3, ch // cell + 2, cw // cell + 2, generator=g)
        canvas += weight * torch.nn.functional.interpolate(coarse, size=(ch, cw), mode="bilinear", align_corners=False)
    canvas = (canvas[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return [np.ascontiguousarray(canvas[2 * k : 2 * k + height, 3 * k : 3 * k + width]) for k in range(count)]


def default_pairs_dir() -> Path | None:
    """tests/data/middlebury of a source checkout, if present."""
    here = Path(__file__).resolve().parents[1] / "tests" / "data" / "middlebury"
    return here if here.is_dir() else None


def load_pairs(directory: Path, max_w: int, max_h: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The Middlebury pairs (frame10, frame11), centre-cropped to at most max_w x max_h."""
    from dainrt.base.images import read_image

    pairs = []
    for name in PSNR_PAIRS:
        paths = [directory / name / f"frame1{i}.png" for i in (0, 1)]
        if not all(p.is_file() for p in paths):
            continue
        imgs = []
        for p in paths:
            img = read_image(p)                    # HxWx3 uint8 (or uint16): both are valid input
            h, w = img.shape[:2]
            ch, cw = min(h, max_h), min(w, max_w)
            top, left = (h - ch) // 2, (w - cw) // 2
            imgs.append(np.ascontiguousarray(img[top : top + ch, left : left + cw, :3]))
        pairs.append((name, imgs[0], imgs[1]))
    return pairs


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class BenchOptions:
    device: str = "cpu"
    sizes: Sequence[str] | None = None
    factors: Sequence[int] = (2, 4)
    backends: Sequence[str] | None = None
    weights: str | None = None
    width: float | None = None
    runs: int | None = None
    warmup: int | None = None
    pairs_dir: str | None = None
    threads: int | None = None
    calibration: str | None = None     # a `dainrt calibrate` folder for these weights: int8 rows
    seed: int = 0
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))


def _load_model(weights: str | None, width: float | None, seed: int):
    from dainrt.model.checkpoint import load_model, synthetic_state_dict
    from dainrt.model import DAIN, ModelConfig

    if weights:
        if width is not None:
            raise DainrtError("--width applies to the synthetic weights only; a checkpoint carries its own width")
        return load_model(weights), str(weights)
    try:
        config = ModelConfig(1.0 if width is None else float(width))
    except ValueError as err:
        raise DainrtError(f"bad --width: {err}") from None
    model = DAIN(config)
    model.load_state_dict(synthetic_state_dict(config, seed=seed), strict=True)
    return model.eval(), f"synthetic (official shapes, width {config.width}, seed {seed})"


def _row(backend, precision, stage, size, factor, stats: Stats | None, fps, peak, runs) -> dict:
    return {
        "backend": backend, "precision": precision, "stage": stage, "size": size, "factor": factor,
        "median_ms": stats.median_ms if stats else None, "p10_ms": stats.p10_ms if stats else None,
        "p90_ms": stats.p90_ms if stats else None, "fps": fps, "speedup_vs_baseline": None,
        "peak_mem_mb": peak, "psnr_vs_fp32": None, "tflops": None, "pct_of_peak": None,
        "gmac": None, "runs": runs,
    }


def bench(opts: BenchOptions) -> dict:
    """Run the benchmark and return the report dict (see report.py for its layout).

    `threads` sets torch's intra-op CPU threads for the run (restored afterwards); backends
    that keep their own thread pools (ONNX Runtime) get it as an option where they accept one.
    """
    if opts.threads is not None and opts.threads < 1:
        raise DainrtError(f"--threads must be >= 1, got {opts.threads}")
    saved = torch.get_num_threads()
    grad = torch.is_grad_enabled()
    try:
        if opts.threads is not None:
            torch.set_num_threads(opts.threads)
        return _bench(opts)
    finally:
        torch.set_num_threads(saved)
        torch.set_grad_enabled(grad)


def _bench(opts: BenchOptions) -> dict:
    from dainrt.base.times import times_for_factor
    from dainrt.engine.backend import resolve_device
    from dainrt.model import padded_size

    log = opts.log
    device = resolve_device(opts.device)
    defaults = DEFAULTS[device.type]
    sizes = [parse_size(s) for s in (opts.sizes or defaults["sizes"])]
    factors = sorted(set(int(f) for f in opts.factors))
    for f in factors:
        times_for_factor(f)                                    # validates (>= 2)
    runs = defaults["runs"] if opts.runs is None else int(opts.runs)
    warmup = defaults["warmup"] if opts.warmup is None else int(opts.warmup)
    if runs < 1 or warmup < 0:
        raise DainrtError(f"--runs must be >= 1 and --warmup >= 0, got {runs} and {warmup}")
    families = list(opts.backends or FAMILIES)
    unknown = [b for b in families if b not in FAMILIES and b != "baseline"]
    if unknown:
        raise DainrtError(f"unknown --backends {unknown}: choose from {', '.join(FAMILIES)} (the baseline always runs)")

    model, weights_desc = _load_model(opts.weights, opts.width, opts.seed)
    model = model.to(device).eval()
    torch.set_grad_enabled(False)
    machine = rep.machine_info(device)
    variants, skipped = plan_variants(model, device, families, opts.threads, opts.calibration)
    for s in skipped:
        log(f"skip {s['backend']} {s['precision']}: {s['reason']}")
    for e in memory_estimates(model.config, sizes, device, variants):
        log(e["line"])
    rows: list[dict] = []
    mem_notes: set[str] = set()

    def progress(what: str, total: int):
        def on_run(i: int, ms: float) -> None:
            log(f"  {what}: run {i + 1}/{total} {ms / 1e3:.2f} s")
        return on_run

    def record_note(m: Measurement) -> None:
        if m.peak_mem_note:
            mem_notes.add(m.peak_mem_note)

    # The runners take float tensors on the device: convert and upload once, outside the timing.
    frames = {(w, h): [to_tensor(f).to(device) for f in stream_frames(w, h, runs + warmup + 2, seed=opts.seed)]
              for w, h in sizes}
    for (w, h), stream in frames.items():
        size = size_label(w, h)
        ph, pw = padded_size(h, w)
        log(f"== baseline fp32 {size} (padded {pw}x{ph}): official forward per output frame, "
            f"warm-up {warmup}, runs {runs}")
        m = _measure_baseline(model, device, stream, times_for_factor(max(factors)), runs, warmup,
                              progress("baseline", runs))
        record_note(m)
        for f in factors:
            rows.append(_row("baseline", "fp32", "end_to_end", size, f, m.stats, 1e3 / m.stats.median_ms, m.peak_mem_mb, runs))
        _release(device)

    # One variant at a time: built, measured at every size, checked for accuracy, released, so
    # that no other variant's sessions or engines sit in memory while it is measured.
    accuracy: list[dict] = []
    reference = _Reference(model, device, sizes, opts.pairs_dir, log)
    for v in variants:
        try:
            backend = v.get()
        except Exception as err:  # noqa: BLE001 - any build failure: skip with the reason
            _skip(skipped, v, f"could not build: {_one_line(err)}", log)
            continue
        try:
            for (w, h), stream in frames.items():
                size = size_label(w, h)
                log(f"== {v.label} {size}, factors {factors}, warm-up {warmup}, runs {runs}")
                try:
                    rows += _measure_variant(v, StageClock(backend), stream, size, factors, runs, warmup, device,
                                             progress, record_note, log)
                except Exception as err:  # noqa: BLE001 - report it and go on
                    _skip(skipped, v, f"failed at {size}: {_one_line(err)}", log)
            if v.precision != "fp32":
                accuracy += reference.compare(v, backend)
        finally:
            backend = None
            v.release()
            _release(device)
    _derive(rows, sizes, factors, model, machine.get("gpu"), accuracy)
    estimates = memory_estimates(model.config, sizes, device, variants)
    if mem_notes:
        machine["peak_memory_note"] = "; ".join(sorted(mem_notes))
    config = {
        "device": str(device), "sizes": [size_label(w, h) for w, h in sizes], "factors": factors,
        "runs": runs, "warmup": warmup, "backends": families, "weights": weights_desc,
        "width": model.config.width, "padding": "official",
    }
    report = rep.make_report(machine, rep.versions(), rep.git_commit(), config, rows, skipped, accuracy)
    report["memory_estimates"] = estimates
    return report


def memory_estimates(config, sizes, device: torch.device, variants: Sequence[Variant]) -> list[dict]:
    """The estimated peak memory (`engine/memory.py`) of each torch precision benchmarked, per
    size: {"size", "backend", "precision", "device", "estimate_mb" (MiB), "line"}. Compare it with
    the measured `peak_mem_mb` (CPU: the process's whole RSS, libraries included)."""
    from dainrt.engine.memory import estimate_memory, memory_line

    out = []
    precisions = sorted({v.precision for v in variants if v.backend.startswith("torch")})
    for w, h in sizes:
        for precision in precisions:
            est = estimate_memory(config, h, w, device.type, precision)
            out.append({"size": size_label(w, h), "backend": "torch", "precision": precision,
                        "device": device.type, "estimate_mb": est.total / 2**20,
                        "line": memory_line(config, h, w, device.type, "torch", precision)})
    return out


def _one_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _skip(skipped: list[dict], v: Variant, reason: str, log) -> None:
    skipped.append({"backend": v.backend, "precision": v.precision, "reason": reason})
    log(f"skip {v.label}: {reason}")


def _measure_baseline(model, device, frames, times, runs, warmup, on_run) -> Measurement:
    """The official forward, one output frame per run, over consecutive pairs of `frames`,
    t cycling through `times`."""
    from .baseline import OfficialRunner

    official = OfficialRunner(model, device)
    counter = iter(range(10**9))

    def one_frame() -> None:
        i = next(counter)
        k = i % (len(frames) - 1)
        official.interpolate(k, frames[k], k + 1, frames[k + 1], [times[i % len(times)]])

    return measure(one_frame, runs, warmup, device, on_run)


def _measure_variant(v: Variant, clock: StageClock, frames, size, factors, runs, warmup, device,
                     progress, record_note, log) -> list[dict]:
    """End-to-end rows (per factor) and stage rows of one variant at one size, on a stream."""
    from dainrt.base.times import times_for_factor
    from dainrt.engine import Runner

    rows, stage_ms, peaks = [], {}, []
    for f in factors:
        times = times_for_factor(f)
        runner = Runner(clock)
        runner.interpolate(0, frames[0], 1, frames[1], [])        # prime: frames 0, 1 and pair (0, 1)
        step_no = iter(range(1, 10**9))

        def step() -> None:
            k = next(step_no)
            runner.interpolate(k, frames[k], k + 1, frames[k + 1], times)

        def timed_step() -> None:
            clock.enabled = True
            try:
                step()
            finally:
                clock.enabled = False

        log(f"{v.label} {size} x{f}: stream, {f - 1} output frame(s) per step")
        for _ in range(warmup):
            step()
        clock.take()
        m = measure(timed_step, runs, 0, device, progress(f"{v.label} x{f}", runs))
        record_note(m)
        for stage, samples in clock.take().items():
            stage_ms.setdefault(stage, []).extend(samples)
        per_frame = m.stats.scaled(f - 1)
        rows.append(_row(v.backend, v.precision, "end_to_end", size, f, per_frame, 1e3 / per_frame.median_ms,
                         m.peak_mem_mb, runs))
        peaks.append(m.peak_mem_mb)
    peak = max((p for p in peaks if p is not None), default=None)
    for stage in ("frame", "pair", "warp", "rectify"):
        if stage in stage_ms:
            rows.append(_row(v.backend, v.precision, stage, size, None, Stats(stage_ms[stage]), None, peak,
                             len(stage_ms[stage])))
    return rows


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class _Reference:
    """PSNR vs torch FP32 on the Middlebury pairs (t = 0.5), centre-cropped to the largest
    benchmarked size. The FP32 frames are computed on first use and kept (they are small)."""

    def __init__(self, model, device, sizes, pairs_dir: str | None, log):
        self.model, self.device, self.log = model, device, log
        self.max_w = max(w for w, _ in sizes)
        self.max_h = max(h for _, h in sizes)
        self.directory = Path(pairs_dir) if pairs_dir else default_pairs_dir()
        self._pairs = None
        self._frames: dict[str, torch.Tensor] = {}

    def _load(self) -> list:
        if self._pairs is None:
            self._pairs = []
            if self.directory is None or not self.directory.is_dir():
                self.log("no PSNR: the Middlebury pairs were not found (pass --pairs DIR)")
            else:
                self._pairs = [(name, to_tensor(f0).to(self.device), to_tensor(f1).to(self.device))
                               for name, f0, f1 in load_pairs(self.directory, self.max_w, self.max_h)]
                if not self._pairs:
                    self.log(f"no PSNR: no Middlebury pairs under {self.directory}")
        return self._pairs

    def _reference(self, name: str, f0, f1) -> torch.Tensor:
        if name not in self._frames:
            from dainrt.engine import Runner
            from dainrt.engine.torch_backend import TorchBackend

            runner = Runner(TorchBackend(self.model, self.device, kernels="reference"))
            self._frames[name] = runner.interpolate(0, f0, 1, f1, [PSNR_T])[0].cpu()
        return self._frames[name]

    def compare(self, v: Variant, backend) -> list[dict]:
        from dainrt.engine import Runner

        out = []
        for name, f0, f1 in self._load():
            self.log(f"PSNR {v.label} vs torch fp32: {name} {f0.shape[2]}x{f0.shape[1]}")
            try:
                frame = Runner(backend).interpolate(0, f0, 1, f1, [PSNR_T])[0]
            except Exception as err:  # noqa: BLE001 - no PSNR for this pair, say why
                self.log(f"no PSNR for {v.label} on {name}: {_one_line(err)}")
                continue
            out.append({"backend": v.backend, "precision": v.precision, "pair": name,
                        "size": size_label(f0.shape[2], f0.shape[1]), "t": PSNR_T,
                        "psnr_db": psnr(frame.clamp(0, 1), self._reference(name, f0, f1).clamp(0, 1))})
        return out


def _derive(rows: list[dict], sizes, factors, model, gpu_name: str | None, accuracy: list[dict]) -> None:
    """Fill speed-ups, GMAC, TFLOP/s, % of peak and PSNR into the rows, in place."""
    from dainrt.model import padded_size

    macs: dict[str, ModelMacs] = {}
    for w, h in sizes:
        ph, pw = padded_size(h, w)
        macs[size_label(w, h)] = count_model_macs(model.config, ph, pw)
    base = {(r["size"], r["factor"]): r["median_ms"] for r in rows if r["backend"] == "baseline"}
    torch_stage = {(r["size"], r["stage"]): r["median_ms"] for r in rows
                   if r["backend"] == "torch" and r["precision"] == "fp32" and r["stage"] != "end_to_end"}
    psnr_by_variant: dict[tuple[str, str], list[float]] = {}
    for a in accuracy:
        psnr_by_variant.setdefault((a["backend"], a["precision"]), []).append(a["psnr_db"])
    for r in rows:
        mm = macs[r["size"]]
        if r["stage"] == "end_to_end":
            n = float(mm.official) if r["backend"] == "baseline" else mm.streamed(r["factor"])
            ref = base.get((r["size"], r["factor"]))
        else:
            n = float(mm.stage(r["stage"]))
            ref = torch_stage.get((r["size"], r["stage"]))
        r["gmac"] = n / 1e9
        if r["median_ms"]:
            r["tflops"] = 2 * n / (r["median_ms"] / 1e3) / 1e12
            peak = device_peak_tflops(gpu_name, r["precision"])
            r["pct_of_peak"] = 100 * r["tflops"] / peak if peak else None
            if r["backend"] == "baseline":
                r["speedup_vs_baseline"] = 1.0
            elif ref:
                r["speedup_vs_baseline"] = ref / r["median_ms"]
        values = psnr_by_variant.get((r["backend"], r["precision"]))
        if values:
            r["psnr_vs_fp32"] = float(np.mean(values))
