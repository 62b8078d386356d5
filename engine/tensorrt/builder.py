"""Build TensorRT engines from the exported ONNX stages (TensorRT Python API, 10.9+ and 11.x).

Per stage: parse the ONNX file, make a strongly typed network (TensorRT 11 is always strongly
typed and has no FP16 builder flag: an FP16 engine comes from the FP16 ONNX variant the export
writes; docs/architecture.md §4 keeps the warp stage FP32 under any precision), add one optimisation
profile (static by default: min = opt = max; `--dynamic`: a min/opt/max range), use and update
the persistent timing cache, and serialise. Progress phases and the build time are reported;
TensorRT's log is kept in `<cache>/engines/logs/` when a build fails.

`EngineBuilder.ensure()` is the one entry point used by `dainrt build-engine` and by the
TensorRT backend: cache hit -> the bytes; miss -> build (or, when building is not allowed, a
one-line error naming the command to run). The ONNX files come from the one export cache,
`dainrt.export.ensure_exported`.

Pure-Python helpers (`stage_input_shapes`, `profile_for_sizes`) are tested
on the CPU; everything that touches `tensorrt` has only ever been written against its
documented API, never executed in this repository's CI.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dainrt.base.errors import DainrtError, OptionError
from dainrt.base.files import atomic_write, sha256_file
from dainrt.export import check_precision, ensure_exported, stage_files, stage_precision

from .cache import EngineCache, EngineKey, ShapeProfile

DEFAULT_SIZE = (1920, 1080)          # width, height of the picture (padded before building)
DYNAMIC_MIN_SIZE = (256, 256)        # --dynamic with one size: profile from this up to it

Say = Callable[[str], None]


def _say_stderr(msg: str) -> None:
    print(f"dainrt: {msg}", file=sys.stderr, flush=True)


def profile_for_sizes(sizes: list[tuple[int, int]], dynamic: bool = False, padding_mode: str = "official",
                      batch: int = 1, padded: bool = False) -> ShapeProfile:
    """Shape profile for picture sizes (width, height), padded as the runtime pads them (or
    taken as they are with `padded=True`: sizes of padded frames, as error messages print).

    Static: one size (the first). Dynamic: min/max over all sizes per dimension, opt = the
    first; with a single size the range starts at DYNAMIC_MIN_SIZE (or the size, if smaller).
    """
    from dainrt.model import padded_size

    sizes = list(sizes) or [DEFAULT_SIZE]
    pad = (lambda h, w: (h, w)) if padded else (lambda h, w: padded_size(h, w, padding_mode))
    padded = [pad(h, w) for w, h in sizes]  # (H, W)
    opt = (batch, *padded[0])
    if not dynamic:
        return ShapeProfile(opt, opt, opt)
    if len(padded) == 1:
        lo = padded_size(DYNAMIC_MIN_SIZE[1], DYNAMIC_MIN_SIZE[0], padding_mode)
        padded.append((min(lo[0], padded[0][0]), min(lo[1], padded[0][1])))
    hs, ws = [p[0] for p in padded], [p[1] for p in padded]
    return ShapeProfile((batch, min(hs), min(ws)), opt, (batch, max(hs), max(ws)))


_FEATURE = re.compile(r"^feat(?:\d_)?(\d)$")   # feat2..feat6, feat0_2..feat1_6
_QUARTER = {"flow01", "flow10"}


def tensor_scale(name: str) -> int:
    """Spatial down-scale of a stage tensor (by its STAGE_IO name): PWC feature level l is 1/2^l,
    the pair flows are quarter resolution, everything else full resolution."""
    m = _FEATURE.match(name)
    if m:
        return 2 ** int(m.group(1))
    return 4 if name in _QUARTER else 1


def stage_input_shapes(onnx_path: str | Path, profile: ShapeProfile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """{input name: (min, opt, max) shape} for every graph input of an ONNX stage.

    Static dims of the ONNX file are kept (and must agree with the profile where they are
    batch/height/width); symbolic dims are filled from the profile: dim 0 = batch, dims 2 and 3
    = padded height and width divided by the tensor's scale; a 1-D input (t) is (batch,).
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    out = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        scale = tensor_scale(inp.name)
        shapes = []
        for b, h, w in (profile.min, profile.opt, profile.max):
            if h % scale or w % scale:
                raise DainrtError(f"{inp.name}: padded size {w}x{h} is not a multiple of {scale}")
            want = {0: b, 2: h // scale, 3: w // scale} if len(dims) == 4 else {0: b}
            shape = []
            for i, d in enumerate(dims):
                if d.HasField("dim_value") and d.dim_value > 0:
                    if i in want and d.dim_value != want[i]:
                        raise DainrtError(
                            f"{Path(onnx_path).name}: input {inp.name} has fixed dim {i} = {d.dim_value}, "
                            f"but the shape profile needs {want[i]}: export the stages with dynamic shapes"
                        )
                    shape.append(int(d.dim_value))
                elif i in want:
                    shape.append(int(want[i]))
                else:
                    raise DainrtError(f"{Path(onnx_path).name}: input {inp.name} has an unknown dim {i}")
            shapes.append(tuple(shape))
        out[inp.name] = tuple(shapes)
    return out


# ----------------------------------------------------------------------------------- GPU

@dataclass(frozen=True)
class GpuIdentity:
    name: str
    compute_capability: str
    tensorrt_version: str

    @classmethod
    def current(cls, device=None) -> "GpuIdentity":
        import tensorrt as trt
        import torch

        index = torch.device(device).index if device is not None and torch.device(device).index is not None \
            else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return cls(torch.cuda.get_device_name(index), f"{major}.{minor}", trt.__version__)


# ---------------------------------------------------------------------------------- build

@dataclass
class BuildSettings:
    optimization_level: int = 3       # builder_optimization_level, 0..5
    workspace_mib: int | None = None   # workspace memory limit in MiB; None: TensorRT's default
    plugins: bool = True               # bind dain:: nodes to our plugins (else the ONNX bodies)
    verbose: bool = False

    def __post_init__(self):
        if not 0 <= int(self.optimization_level) <= 5:
            raise OptionError("opt_level", f"must be 0..5, got {self.optimization_level}")
        if self.workspace_mib is not None and int(self.workspace_mib) < 1:
            raise OptionError("workspace_mib", f"must be 1 or more, got {self.workspace_mib}")

    @property
    def workspace(self) -> str:
        """The workspace limit as the engine key spells it: "default" or "<N>MiB"."""
        return "default" if self.workspace_mib is None else f"{int(self.workspace_mib)}MiB"


@dataclass
class BuildResult:
    engine: bytes
    seconds: float
    log: list[str] = field(default_factory=list)


def _make_logger(trt, verbose: bool, lines: list[str]):
    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            lines.append(f"[{str(severity).split('.')[-1]}] {msg}")
            if severity <= trt.ILogger.Severity.ERROR or (verbose and severity <= trt.ILogger.Severity.WARNING):
                print(f"dainrt: TensorRT: {msg}", file=sys.stderr, flush=True)

    return _Logger()


def _make_progress(trt, say: Say):
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Progress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._depth: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self._depth[phase_name] = depth
            if depth <= 1:
                say(f"{'  ' * depth}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            self._depth.pop(phase_name, None)

    return _Progress()


def build_engine(onnx_path: Path, stage: str, profile: ShapeProfile, settings: BuildSettings,
                 cache: EngineCache, identity: GpuIdentity, say: Say = _say_stderr) -> BuildResult:
    """Build and serialise one stage's engine. DainrtError (with the log's path) on failure."""
    import tensorrt as trt

    lines: list[str] = []
    logger = _make_logger(trt, settings.verbose, lines)
    if hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger, "")  # standard plugins, e.g. ScatterElements(add)
    if settings.plugins and stage == "warp":
        from .plugins import register_plugins

        register_plugins()

    builder = trt.Builder(logger)
    flags = 0
    NF = trt.NetworkDefinitionCreationFlag
    if hasattr(NF, "STRONGLY_TYPED"):        # 10.x: opt in; 11.x: always on, flag ignored
        flags |= 1 << int(NF.STRONGLY_TYPED)
    if hasattr(NF, "PREFER_AOT_PYTHON_PLUGINS"):
        flags |= 1 << int(NF.PREFER_AOT_PYTHON_PLUGINS)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        lines.extend(f"[PARSER] {e}" for e in errors)
        _fail(cache, stage, lines, f"TensorRT cannot parse {onnx_path.name}: {errors[0] if errors else 'unknown error'}")

    config = builder.create_builder_config()
    config.builder_optimization_level = int(settings.optimization_level)
    if settings.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_mib) << 20)
    progress = _make_progress(trt, say)
    if progress is not None:
        config.progress_monitor = progress

    timing_path = cache.timing_cache_path(identity.name, identity.compute_capability, identity.tensorrt_version)
    timing = config.create_timing_cache(cache.load_timing_cache(timing_path))
    config.set_timing_cache(timing, False)

    shapes = stage_input_shapes(onnx_path, profile)
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        if name not in shapes:
            _fail(cache, stage, lines, f"{onnx_path.name}: network input {name} has no shape in the profile")
        opt_profile.set_shape(name, *shapes[name])
    config.add_optimization_profile(opt_profile)

    say(f"building the {stage} engine ({profile.describe()}, TensorRT {identity.tensorrt_version}, "
        f"{identity.name}); this takes minutes")
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        _fail(cache, stage, lines, f"TensorRT could not build the {stage} engine")
    cache.store_timing_cache(timing_path, memoryview(config.get_timing_cache().serialize()).tobytes())
    say(f"built the {stage} engine in {seconds:.1f} s")
    return BuildResult(memoryview(serialized).tobytes(), seconds, lines)


def _fail(cache: EngineCache, stage: str, lines: list[str], message: str):
    path = cache.log_dir / f"build-{stage}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, ("\n".join(lines) + "\n").encode())
        where = f"; the TensorRT log is in {path}"
    except OSError:
        where = ""
    raise DainrtError(message + where)


# ------------------------------------------------------------------------------- manager

def build_command(profile: ShapeProfile, precision: str, calibration=None) -> str:
    """The `dainrt build-engine` command line that builds engines for `profile` (its sizes are
    padded sizes, hence --padded) from the export, or from a calibration folder."""
    size = lambda s: f"{s[2]}x{s[1]}"  # noqa: E731
    source = f" --calibration {calibration}" if calibration is not None else ""
    if profile.is_static:
        return f"dainrt build-engine --size {size(profile.opt)} --padded --precision {precision}{source}"
    sizes = " ".join(f"--size {size(s)}" for s in (profile.opt, profile.min, profile.max))
    return f"dainrt build-engine {sizes} --padded --precision {precision}{source} --dynamic"


class EngineBuilder:
    """Get-or-build the engines of one model: keys, cache, export, build.

    `calibration`: a `dainrt calibrate` folder (dainrt.export.calibrated) to build from instead of
    the export (needed for int8; its precision must be `precision`); its digest is in every key."""

    def __init__(self, model, precision: str = "fp16", cache: EngineCache | None = None,
                 settings: BuildSettings | None = None, device=None, say: Say = _say_stderr, calibration=None,
                 identity: GpuIdentity | None = None):
        from dainrt.export.calibrated import load_calibration
        from dainrt.model.checkpoint import fingerprint

        self.fingerprint = fingerprint(model.state_dict())[0]
        self.calibration = None
        if calibration is not None:
            self.calibration = load_calibration(calibration, self.fingerprint, precision)
        elif precision == "int8":
            raise OptionError("calibration", "is needed for int8 engines: make one with `dainrt calibrate INPUT -o DIR`, "
                                             "then pass --calibration DIR")
        else:
            check_precision(precision)
        self.model = model
        self.precision = precision
        self.cache = cache or EngineCache()
        self.settings = settings or BuildSettings()
        self.say = say
        self.identity = identity or GpuIdentity.current(device)
        self._onnx: dict[str, dict[str, Path]] = {}

    def stage_precision(self, stage: str) -> str:
        """The precision `stage` is built in: the calibration's label for it, else the export's rule."""
        if self.calibration is not None:
            return self.calibration.manifest["stages"][stage]["precision"]
        return stage_precision(stage, self.precision)

    def onnx_files(self, precision: str) -> dict[str, Path]:
        """stage -> ONNX file of the model's export in `precision`, from the export cache (or the
        calibration folder's files, whatever `precision`)."""
        if self.calibration is not None:
            return stage_files(self.calibration.directory, self.calibration.manifest)
        if precision not in self._onnx:
            directory, manifest = ensure_exported(self.model, None, precision, checkpoint_sha256=self.fingerprint,
                                                  progress=self.say)
            self._onnx[precision] = stage_files(directory, manifest)
        return self._onnx[precision]

    def key(self, stage: str, profile: ShapeProfile) -> EngineKey:
        from .plugins import plugin_version

        precision = self.stage_precision(stage)
        onnx_path = self.onnx_files(precision)[stage]
        uses_plugins = stage == "warp" and self.settings.plugins
        return EngineKey(
            gpu_name=self.identity.name,
            compute_capability=self.identity.compute_capability,
            tensorrt_version=self.identity.tensorrt_version,
            plugin_version=plugin_version() if uses_plugins else "none",
            stage=stage,
            precision=precision,
            profile=profile.tag(),
            optimization_level=str(int(self.settings.optimization_level)),
            workspace=self.settings.workspace,
            onnx_sha256=sha256_file(onnx_path),
            calibration=self.calibration.digest if self.calibration is not None else "none",
        )

    def ensure(self, stage: str, profile: ShapeProfile, build: bool = True, force: bool = False) -> tuple[EngineKey, bytes]:
        """The engine for `stage` at `profile`: from the cache when its key matches exactly,
        else built (when `build`) or a DainrtError naming the build-engine command."""
        key = self.key(stage, profile)
        if not force:
            data = self.cache.load(key)
            if data is not None:
                return key, data
        if not build:
            why = self.cache.check(key) or "missing"
            raise DainrtError(f"no usable TensorRT {stage} engine for {profile.describe()} ({why}); run "
                              f"`{build_command(profile, self.precision, self.calibration and self.calibration.directory)}`")
        onnx_path = self.onnx_files(self.stage_precision(stage))[stage]
        result = build_engine(onnx_path, stage, profile, self.settings, self.cache, self.identity, self.say)
        self.cache.store(key, result.engine, result.seconds)
        return key, result.engine
