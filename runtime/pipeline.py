"""The run: decode thread -> planner -> runner -> encode thread, resumable, with a report.

```
Decoder (thread) --queue(8)--> detector + planner + Runner (this thread) --queue(8)--> SegmentedEncoder (thread)
```

Decoding (and RGB conversion, and on CUDA the upload) happens ahead in its thread; encoding
(colour conversion, the encoder, muxing, segment bookkeeping) behind in its own; the calling
thread does only the model, so a run goes at the model's speed when it is the slowest stage.
The queues are bounded, so memory does not grow with the film's length.

The output is written into segments in a work folder beside it (see `resume.py`) and renamed
to its final name only when complete. Ctrl-C, a full disk or any error stops the run with the
finished segments kept; `--resume` continues from there and produces the same frames.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from dainrt.base.errors import DainrtError, OptionError
from dainrt.base.files import write_json
from dainrt.base.outputs import check_outputs, pattern_matches
from dainrt.base.progress import progress_bar
from dainrt.engine.host_memory import HeapTrimmer

from . import encode as enc
from . import preview
from .decode import Decoder, InputInfo, is_image_sequence, probe
from .resume import file_identity, prepare_work_dir, work_dir_for
from .scenes import DEDUP_THRESHOLD, SCENE_THRESHOLD, Detector
from .shots import RuleShots, read_rules, scene_list
from .timing import (DEFAULT_KEEP_HOLDS, FADE, INTERP, KINDS, Anchor, Planner, Shots, ShotSettings, format_rate,
                     frac_to_str, make_grid)

SEGMENT_SECONDS = 10
PICTURE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


class Interrupted(DainrtError):
    """Ctrl-C: the finished segments are kept for --resume."""

    exit_code = 130


@dataclass
class RunOptions:
    input: str
    output: str | None
    fps: Fraction | None = None
    factor: int | None = None
    backend: str = "torch"
    weights: str | None = None
    model: object = None                 # a dainrt.model.DAIN instead of weights (Python API)
    device: str = "cpu"
    report: str | None = None
    dedup: bool = False
    dedup_threshold: float = DEDUP_THRESHOLD
    scene_threshold: float = SCENE_THRESHOLD
    scene_mode: str = "repeat"
    keep_holds: int | None = DEFAULT_KEEP_HOLDS   # with dedup: holds longer than this stay holds
    cadence: int = 1                     # a new picture every N output frames
    shots: str | None = None             # a --shots file (runtime/shots.py)
    codec: str | None = None
    crf: int | None = None
    pix_fmt: str | None = None
    resume: bool = False
    segment_frames: int | None = None
    input_fps: Fraction | None = None
    max_frames: int | None = None
    preview: float | None = None         # seconds: a small excerpt, written as NAME.preview.EXT (runtime/preview.py)
    dry_run: bool = False
    overwrite: bool = False              # replace an existing output / report (-y); never an input
    progress: bool | None = None         # None: when stderr is a terminal
    cluster: str | None = None           # a Ray cluster address (`runtime/cluster.py`); None: this process
    backend_options: dict = field(default_factory=dict)
    tile: object = None                  # a dainrt.engine.tiling.TileOption; None: auto, silent while frames fit


def _warn(message: str) -> None:
    print(f"dainrt: warning: {message}", file=sys.stderr)


def _check_paths(opts: RunOptions) -> tuple[Path | None, bool]:
    """Every path the run writes, checked before anything is read (`base/outputs.py`): the output
    and the report are not inputs, not each other, in existing writable folders, and new unless
    `overwrite`. `resume` does not change this: an unfinished run never has its final name."""
    report = [("report", opts.report)] if opts.report is not None else []
    inputs = [opts.input, opts.weights]
    if opts.dry_run:
        check_outputs(report, inputs, opts.overwrite)
        return None, False                       # nothing else is written
    if opts.output is None:
        raise DainrtError("no output given: add -o OUTPUT (or --dry-run to only plan)")
    out = Path(opts.output)
    images = is_image_sequence(out)
    if not images:
        if out.is_dir():
            raise DainrtError(f"{out} is a folder; give a file name (e.g. {out}/film.mp4) or a picture pattern")
        if out.suffix.lower() in PICTURE_SUFFIXES:
            raise DainrtError(f"{out}: picture output needs a numbered pattern such as "
                              f"{out.with_name(out.stem + '_%05d' + out.suffix)}")
        if out.suffix == "":
            raise DainrtError(f"{out}: give the output a file extension (.mp4, .mov, .mkv) or a pattern like out/%05d.png")
    elif out.suffix.lower() not in PICTURE_SUFFIXES:
        raise DainrtError(f"{out}: picture output needs a .png (or .tif/.jpg) pattern such as out/%05d.png")
    check_outputs([("output", out)] + report, inputs, opts.overwrite, patterns=["output"] if images else [])
    return out, images


def _fingerprint(opts: RunOptions, info: InputInfo, settings: enc.VideoSettings, segment_frames: int,
                 weights_id) -> dict:
    if info.image_sequence:
        src = {"pattern": os.path.abspath(info.path), "frames": info.timeline.frames, "pts": [info.pts[0], info.pts[-1]]}
    else:
        src = file_identity(info.path)
    return {
        "input": src, "fps": frac_to_str(opts.fps) if opts.fps is not None else None, "factor": opts.factor,
        "input_fps": frac_to_str(opts.input_fps) if opts.input_fps else None, "max_frames": opts.max_frames,
        "preview": opts.preview, "size": [info.width, info.height],
        "dedup": opts.dedup, "dedup_threshold": opts.dedup_threshold, "scene_threshold": opts.scene_threshold,
        "scene_mode": opts.scene_mode, "keep_holds": opts.keep_holds, "cadence": opts.cadence,
        "shots": [r.describe() for r in read_rules(opts.shots)] if opts.shots else None, "codec": settings.codec, "pix_fmt": settings.pix_fmt, "crf": settings.crf,
        "segment_frames": segment_frames, "backend": opts.backend,
        "tile": _tile_key(opts.tile),
        "backend_options": _options_key(opts.backend_options),
        "device": str(opts.device).split(":")[0],
        "weights": weights_id, "output": os.path.abspath(opts.output),
    }


def _options_key(options: dict) -> dict:
    """The fingerprint's backend options, as JSON values; a calibration folder by its content
    (`calibration_digest`), so a folder calibrated again is not resumed into the same film."""
    from dainrt.export.calibrated import calibration_digest

    key = {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v) for k, v in sorted(options.items())}
    if options.get("calibration") is not None:
        key["calibration"] = calibration_digest(options["calibration"])
    return key


def _tile_key(tile) -> str | None:
    """The fingerprint's `tile`: None for the default (so work folders from before tiling resume)."""
    from dainrt.engine.tiling import TileOption

    return None if tile in (None, TileOption()) else tile.describe()


def _load_model(opts: RunOptions):
    from dainrt.model.checkpoint import fingerprint, load_model

    if opts.model is not None:
        return opts.model, {"in_memory_sha256": fingerprint(opts.model.state_dict())[0]}
    from dainrt.model.weights import resolve_weights

    path = resolve_weights(opts.weights)
    return load_model(path, device="cpu"), file_identity(path)


def _blend(a: np.ndarray, b: np.ndarray, t: float, dtype) -> np.ndarray:
    x = (1.0 - t) * a.astype(np.float32) + t * b.astype(np.float32)
    hi = 255 if np.dtype(dtype) == np.uint8 else 65535
    return np.clip(np.round(x), 0, hi).astype(dtype)


class _Report:
    """What the run saw and did; becomes the JSON report."""

    def __init__(self):
        self.cuts: list[dict] = []
        self.duplicates: list[float] = []
        self.kinds = {k: 0 for k in KINDS}
        self.again = 0                  # output frames that repeat the previous new picture (cadence)
        self.holds: list[dict] = []     # the kept holds (the planner's)


# Frames below this many pixels give torch one core less on the CPU (`_cpu_threads`).
SMALL_FRAME_PIXELS = 320 * 180


@contextlib.contextmanager
def _cpu_threads(opts: RunOptions, info: InputInfo):
    """torch's CPU threads while the film streams in this process.

    torch's default is every core. At the preview's size (320x180) and above the model is nearly
    all the work, and every core goes to it: the Big Buck Bunny preview took 132 s with 2 torch
    threads against 227 s with 1 on 2 idle cores. Smaller frames give torch one core less so the
    decode and encode threads are not starved (64x48 on 2 shared cores: a pair took 0.5 s with 1
    torch thread, 3 s with 2 fighting the encoder). An explicit `torch.set_num_threads` /
    `OMP_NUM_THREADS` below the core count is left alone.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    lower = (str(opts.device).startswith("cpu") and cores > 1 and threads >= cores
             and info.width * info.height < SMALL_FRAME_PIXELS)
    if lower:
        torch.set_num_threads(cores - 1)
    try:
        yield torch.get_num_threads()
    finally:
        if lower:
            torch.set_num_threads(threads)


def _check_options(opts: RunOptions) -> None:
    """One-line errors for option values that no run can use, before anything is read."""
    if (opts.fps is None) == (opts.factor is None):
        raise DainrtError("give exactly one of --fps RATE or --factor N")
    for name, value in (("factor", opts.factor), ("max_frames", opts.max_frames),
                        ("segment_frames", opts.segment_frames)):
        if value is not None and value < 1:
            raise OptionError(name, f"must be 1 or more, got {value}")
    if opts.cadence < 1:
        raise OptionError("cadence", f"must be 1 or more, got {opts.cadence}")
    if opts.keep_holds is not None and opts.keep_holds < 1:
        raise OptionError("keep_holds", f"must be 1 or more (or None: keep no hold), got {opts.keep_holds}")
    if opts.shots is not None:
        read_rules(opts.shots)                   # a mistake in the file is a one-line error now
    if opts.scene_mode not in ("repeat", "crossfade"):
        raise OptionError("scene_mode", f"must be repeat or crossfade, got {opts.scene_mode!r}")
    if not 0 <= opts.scene_threshold <= 100:
        raise OptionError("scene_threshold", f"must lie in [0, 100] (0 turns detection off), got {opts.scene_threshold}")
    if not 0 <= opts.dedup_threshold <= 100:
        raise OptionError("dedup_threshold", f"must lie in [0, 100], got {opts.dedup_threshold}")
    for name in ("output", "report", "weights", "codec", "pix_fmt"):
        if getattr(opts, name) == "":
            raise OptionError(name, "is empty")
    if opts.input_fps is not None and opts.input_fps <= 0:
        raise OptionError("input_fps", f"must be above 0, got {opts.input_fps}")
    if opts.preview is not None and not opts.preview > 0:
        raise OptionError("preview", f"must be above 0 seconds, got {opts.preview}")
    if opts.cluster is not None and not opts.dry_run:
        from .cluster import parse_address, require_ray

        try:
            parse_address(opts.cluster)
        except ValueError as err:
            raise OptionError("cluster", str(err)) from None
        require_ray()
    if opts.model is None and not opts.dry_run:
        from dainrt.engine.backend import available_backends, resolve_device

        if opts.backend not in available_backends():
            raise OptionError("backend", f"{opts.backend!r} is unknown; choose one of: {', '.join(available_backends())}")
        if opts.cluster is None:                 # on a cluster the device is the workers'
            resolve_device(opts.device)


def run(opts: RunOptions) -> dict:
    """Run `dainrt run` with `opts`; returns the report (also written to `opts.report`)."""
    t_start = time.perf_counter()
    _check_options(opts)
    if opts.preview is not None and opts.output is not None:
        opts = dataclasses.replace(opts, output=preview.preview_output(opts.output))
    output, images_out = _check_paths(opts)
    info = probe(opts.input, opts.input_fps, opts.max_frames, opts.preview)
    for note in info.notes:
        _warn(note)
    if opts.preview is not None:
        info = _preview_info(opts, info)
    grid = make_grid(info.timeline, opts.fps, opts.factor)
    settings = enc.choose_video_settings(info, grid, opts.codec, opts.pix_fmt, opts.crf, image_sequence=images_out,
                                         suffix=Path(opts.output).suffix if opts.output else "")
    for note in settings.notes:
        _warn(note)
    shots = _shots(opts, info, grid)
    seg_frames = opts.segment_frames or max(1, math.ceil(SEGMENT_SECONDS * float(settings.rate or settings.average_rate)))
    if opts.dry_run:
        return _dry_run(opts, info, grid, settings, shots, t_start)
    if opts.cluster is not None:
        from .cluster import ClusterRun as Film
    else:
        Film = _FilmRun
    film = Film(opts, info, grid, settings, shots, seg_frames, output, images_out)
    try:
        if not film.state.complete:
            with _cpu_threads(opts, info) as film.torch_threads:
                film.stream()
        film.assemble()
        return film.result(time.perf_counter() - t_start)
    finally:
        film.close()


def run_tiles(opts: RunOptions):
    """The run's tile option (engine/tiling.py): the user's, else auto (silent while whole frames fit)."""
    from dainrt.engine.tiling import parse_tile

    return opts.tile if opts.tile is not None else parse_tile(None)


class FrameMaker:
    """The output pictures of planned jobs, from the decoded frames they name (`frames`, by input
    index): `copy`, `still`, `repeat` and `hold` show an original (`_original`), `fade` blends
    two, `interp` asks the runner, consecutive interpolations of one pair in one call so the
    pair's work is done once, and each (pair, t) computed once when a cadence shows it again.
    The single-process run and every cluster worker (`runtime/cluster.py`) make their frames here.
    `pix_fmt` is the output's pixel format; `alpha`: the film has an alpha channel (RGBA)."""

    def __init__(self, runner, dtype, images_out: bool, pix_fmt: str, alpha: bool):
        from .transfer import Transfers

        self.runner = runner                     # a Runner, or a TiledRunner (engine/tiling.py)
        self.transfers = Transfers(runner.backend.device, dtype)
        self.dtype, self.images_out, self.pix_fmt, self.alpha = dtype, images_out, pix_fmt, alpha
        self.frames: dict[int, object] = {}      # decoded frames the jobs may still use, by index
        self._images: dict[int, object] = {}     # their float tensors for the runner (see _image)
        self._last = None                        # ((src, dst), t, payload) of the last interpolation
        self.inference_s = 0.0
        self.trim_heap = HeapTrimmer()           # resident memory stays flat over a long film

    def make(self, jobs) -> Iterator[tuple[object, object]]:
        """(job, encoder payload) for each of `jobs`, in order."""
        i = 0
        while i < len(jobs):
            job = jobs[i]
            if job.kind == INTERP:
                group = [job]
                while i + len(group) < len(jobs) and jobs[i + len(group)].kind == INTERP \
                        and (jobs[i + len(group)].src, jobs[i + len(group)].dst) == (job.src, job.dst):
                    group.append(jobs[i + len(group)])
                yield from zip(group, self._pair(group))
                i += len(group)
                continue
            if job.kind == FADE:
                yield job, _blend(self.frames[job.src].image, self.frames[job.dst].image, job.t, self.dtype)
            else:
                yield job, self._original(job.src)
            i += 1

    def _pair(self, group) -> list:
        """The payloads of consecutive interpolations of one pair. A cadence shows a t more than
        once, also across calls (the last interpolation is kept): each is computed once."""
        pair = (group[0].src, group[0].dst)
        last = self._last if self._last is not None and self._last[0] == pair else None
        times = [t for t in dict.fromkeys(g.t for g in group) if last is None or t != last[1]]
        computed = dict(zip(times, self._interpolate(*pair, times))) if times else {}
        if last is not None:
            computed.setdefault(last[1], last[2])
        self._last = (pair, group[-1].t, computed[group[-1].t])
        return [computed[g.t] for g in group]

    def _original(self, index: int):
        """An input picture as an encoder payload. It is passed through untouched (bit for bit
        up to the encoder) when it already is in the output's pixel format; otherwise it takes
        the interpolated frames' colour path (RGB -> output format), so the two never differ
        by a conversion."""
        df = self.frames[index]
        if self.images_out or df.frame.format.name != self.pix_fmt:
            return df.image
        return df.frame

    def _interpolate(self, src: int, dst: int, times: list[float]) -> list:
        """The frames at `times` between decoded frames `src` and `dst`, as encoder payloads."""
        a, b = self.frames[src], self.frames[dst]
        t0 = time.perf_counter()
        if self.alpha:
            from .transfer import premultiply, unpremultiply

            # premultiplied colour through the model, alpha warped with the same flows and kernels
            (c0, a0), (c1, a1) = premultiply(self._image(a)), premultiply(self._image(b))
            outs = self.runner.interpolate(a.index, c0, b.index, c1, times)
            alphas = self.runner.interpolate_alpha(a.index, a0, b.index, a1, times)
            outs = [unpremultiply(o, al) for o, al in zip(outs, alphas)]
        else:
            outs = self.runner.interpolate(a.index, self._image(a), b.index, self._image(b), times)
        payloads = [self.transfers.download(o) for o in outs]
        self.inference_s += time.perf_counter() - t0
        self.trim_heap()
        return payloads

    def _image(self, df) -> "torch.Tensor":
        """The runner's float tensor of a decoded frame, converted once: a frame serves the pairs
        on both sides of it. Only frames the jobs may still use are kept."""
        if df.index not in self._images:
            self._images = {k: v for k, v in self._images.items() if k in self.frames}
            self._images[df.index] = self.transfers.image(df.staged)
        return self._images[df.index]


def _preview_info(opts: RunOptions, info: InputInfo) -> InputInfo:
    """The preview's input: decoded at the preview size; says in one line what the preview is."""
    small = info.scaled(*preview.preview_size(info.width, info.height))
    print("dainrt: " + preview.describe(opts.preview, info.timeline.frames, info.frames_in_file, (small.width, small.height),
                                        (info.width, info.height), opts.output or "(dry run)"), file=sys.stderr)
    return small


def _doing(job) -> str:
    """What the run is doing for `job`, for the progress bar: `interpolating 14->15`, `copying 16`."""
    if job.kind == INTERP:
        return f"interpolating {job.src}->{job.dst}"
    if job.kind == FADE:
        return f"cross-fading {job.src}->{job.dst}"
    return f"{job.kind} {job.src}"


class _FilmRun:
    """One `dainrt run` over a film, in three steps that each read on one screen:

    * `__init__` (setup): the model and backend (a wrong checkpoint fails before anything is
      written), the work folder and its resume state, the detector and planner, restored to
      where a resumed run stopped;
    * `stream()`: decode thread -> detector + planner + Runner (this thread) -> encode thread,
      segment by segment; Ctrl-C or an error keeps the finished segments;
    * `assemble()` and `result()`: the segments joined into the output, the report.
    """

    def __init__(self, opts: RunOptions, info: InputInfo, grid, settings, shots: Shots, seg_frames: int,
                 output: Path, images_out: bool):
        from dainrt.engine import create_backend
        from dainrt.engine.backend import resolve_device
        from dainrt.engine.tiling import make_runner

        self.opts, self.info, self.grid, self.settings = opts, info, grid, settings
        self.seg_frames, self.output, self.images_out = seg_frames, output, images_out
        self.torch_threads: int | None = None      # torch's CPU threads while streaming (`_cpu_threads`)
        # Everything that can fail on a wrong option, backend, device, checkpoint or container is
        # done before the work folder exists, so a failed start leaves nothing behind.
        device = resolve_device(opts.device)
        self.notes = list(info.notes) + list(settings.notes) + self._check_output()
        model, weights_id = _load_model(opts)
        fingerprint = _fingerprint(opts, info, settings, seg_frames, weights_id)
        self.work = work_dir_for(output, images_out)
        self.backend = create_backend(opts.backend, model, device, **opts.backend_options)
        try:
            self.state, self.resuming = prepare_work_dir(self.work, opts.resume, fingerprint, grid.count,
                                                         seg_frames, output)
        except BaseException:
            self.backend.close()
            raise
        runner = make_runner(self.backend, run_tiles(opts), model.config, opts.backend_options)
        self.maker = FrameMaker(runner, info.dtype, images_out, settings.pix_fmt, settings.alpha)
        self.runner, self.transfers, self.frames = self.maker.runner, self.maker.transfers, self.maker.frames
        self.report = _Report()
        self.progress = None                     # the bar, while streaming on a terminal
        for seg in self.state.segments:
            for k, v in seg["kinds"].items():
                if k == "again":
                    self.report.again += v
                else:
                    self.report.kinds[k] += v
        self.detector = Detector(opts.dedup, opts.dedup_threshold, opts.scene_threshold)
        self.planner = Planner(grid, opts.scene_mode, opts.dedup, shots)
        self.k_start = self.state.frames_done
        self.resume_anchor = None                # the last frame the resumed planner saw
        self.ref_index = None                    # the detector's last kept frame
        if self.resuming:
            self.report.cuts, self.report.duplicates = list(self.state.scene_cuts), list(self.state.duplicates)
            if self.state.resume is not None:
                self.resume_anchor = self.planner.restore(self.state.resume["planner"])
                self.detector.restore(self.state.resume["detector"], None)
                self.ref_index = self.state.resume["ref"]
        self.report.holds = self.planner.holds   # the kept holds, as the planner finds them
        self.stream_s = 0.0

    def _check_output(self) -> list[str]:
        """Notes about what the output container can carry (checked in a scratch folder, before
        the work folder exists)."""
        import tempfile

        if self.images_out:
            if any(t in ("audio", "subtitle") for _, t, _ in self.info.other_streams):
                _warn("picture output: the input's audio/subtitles are not written")
                return ["picture output: the input's audio/subtitles are not written"]
            return []
        with tempfile.TemporaryDirectory(prefix="dainrt-check-") as scratch:
            return enc.check_output(self.output, self.settings, self.info, Path(scratch))

    # -- streaming -------------------------------------------------------------------------

    def stream(self) -> None:
        """Decode, plan, interpolate and encode until the film ends; the finished segments are
        recorded in the work folder's state as they complete."""
        import torch

        # a resumed run decodes from the first frame the planner still needs
        first = min(self.planner.needed_anchors() + [self.resume_anchor], key=lambda a: a.index) \
            if self.resume_anchor is not None else None
        progress = self.progress = self._progress_bar()
        decoder = Decoder(self.info, images=True, start=first.pts if first is not None else None,
                          start_index=first.index if first is not None else 0,
                          prepare=self.transfers.upload if self.transfers.cuda else None).start()
        encoder = enc.SegmentedEncoder(self._make_writer, self.seg_frames, self._on_segment,
                                       on_frame=(progress.update if progress is not None else None))
        t_stream = time.perf_counter()
        try:
            with torch.inference_mode():
                self._loop(decoder, encoder)
            encoder.finish()
            self.stream_s = time.perf_counter() - t_stream
        except BaseException as err:
            encoder.cancel()
            decoder.close()
            if progress is not None:
                progress.close()
            self._abandon(err)
            raise
        decoder.close()
        if progress is not None:
            progress.close()
        if decoder.dropped:
            self.notes.append(f"{decoder.dropped} frames with a repeated or backwards timestamp were skipped")
            _warn(self.notes[-1])

    def _loop(self, decoder, encoder) -> None:
        last, planner = self.resume_anchor, self.planner
        snap = self.state.resume if self.resuming and self.state.resume is not None else None
        for df in decoder:
            if last is not None and df.index <= last.index:
                # Seen by the resumed run already: the planner may need its picture, the
                # detector its thumbnail.
                if df.index in planner.needed():
                    self.frames[df.index] = df
                if df.index == self.ref_index:
                    self.detector.ref = df.thumb
                continue
            d = _admit(df, self.grid, self.detector, self.report)
            if not d.drop:
                self.ref_index = df.index
            if snap is None:
                snap = self._snapshot()
            self.frames[df.index] = df
            self._emit(encoder, planner.push(Anchor(df.index, df.time, df.pts), d.cut, d.duplicate), snap)
            needed = planner.needed()
            for key in [key for key in self.frames if key not in needed]:
                del self.frames[key]
            snap = self._snapshot()
        self._emit(encoder, planner.finish(), snap if snap is not None else self._snapshot())

    def _emit(self, encoder, jobs, snap: dict) -> None:
        """Encode the output frames of `jobs` (those not already in a finished segment)."""
        jobs = [job for job in jobs if job.slot.k >= self.k_start]
        if self.progress is not None and jobs:   # the bar's rate is output fps; this, what is being made
            self.progress.set_postfix_str(_doing(next((j for j in jobs if j.kind == INTERP), jobs[0])))
        for job, payload in self.maker.make(jobs):
            encoder.put(job, payload, snap)
            self.report.kinds[job.kind] += 1
            self.report.again += job.again

    def _snapshot(self) -> dict:
        """Where the run stands, for a resume from the next segment boundary."""
        return {"planner": self.planner.state(), "detector": self.detector.state(), "ref": self.ref_index,
                "cuts": len(self.report.cuts), "dups": len(self.report.duplicates)}

    def _make_writer(self, index: int):
        return segment_writer(self.work, index, self.settings, self.images_out, self.output.name)

    def close(self) -> None:
        self.backend.close()

    def _on_segment(self, meta: dict, resume: dict | None) -> None:
        """Encode thread: a segment is finished; record it (and where to resume) in the state."""
        state, report = self.state, self.report
        state.segments.append(meta)
        if resume is None:
            state.resume, state.complete = None, True
            state.scene_cuts, state.duplicates = list(report.cuts), list(report.duplicates)
        else:
            state.resume = resume
            state.scene_cuts = report.cuts[: resume["cuts"]]
            state.duplicates = report.duplicates[: resume["dups"]]
        try:
            state.save()
        except OSError as err:
            raise enc.write_error(state.path, err) from None

    def _progress_bar(self):
        show = self.opts.progress if self.opts.progress is not None else sys.stderr.isatty()
        if not show:
            return None
        # tqdm's rate is the output frame rate the run achieves (frames/s), its ETA the film's end.
        return progress_bar(total=self.grid.count, initial=self.k_start, unit="frame", desc="dainrt run", show=True)

    def _abandon(self, err: BaseException) -> None:
        """After Ctrl-C or an error: keep finished segments for --resume, else remove the work
        folder; Ctrl-C becomes `Interrupted` with what was kept."""
        done = len(self.state.segments)
        if not done and not self.resuming:
            shutil.rmtree(self.work, ignore_errors=True)        # nothing worth resuming
            if isinstance(err, DainrtError) and enc.RESUME_HINT in str(err):
                # nothing was kept: --resume has nothing to continue
                raise DainrtError(str(err).replace(enc.RESUME_HINT, enc.FRESH_HINT)) from None
        if not isinstance(err, KeyboardInterrupt):
            return
        if not done and not self.resuming:
            raise Interrupted("interrupted before the first segment was finished; nothing was kept") from None
        raise Interrupted(
            f"interrupted: {self.state.frames_done} of {self.grid.count} output frames are safe in {self.work} "
            f"({done} segment{'s' if done != 1 else ''}); run the same command with --resume to continue"
        ) from None

    # -- assembly and report ---------------------------------------------------------------

    def assemble(self) -> None:
        """Join the finished segments into the output under its final name; remove the work folder."""
        self.segments = [s["index"] for s in sorted(self.state.segments, key=lambda s: s["index"])]
        self.frames_written = self.state.frames_done
        if self.frames_written != self.grid.count:
            self.notes.append(f"{self.frames_written} output frames written where {self.grid.count} were planned "
                              f"(the decoder delivered fewer frames than the file announced)")
            _warn(self.notes[-1])
        if not self.segments:
            shutil.rmtree(self.work, ignore_errors=True)
            raise DainrtError(f"{self.opts.input}: no frames could be decoded")
        self.copied = {"copied_packets": 0, "copied_streams": []}
        if self.images_out:
            _place_pictures(self.work, self.segments, self.output)
        else:
            tmp = self.work / ("output" + self.output.suffix)
            self.copied = enc.assemble(self.work, self.segments, self.settings, self.info, tmp,
                                       self.info.timeline.end if self.opts.max_frames else None, self.output)
            try:
                os.replace(tmp, self.output)
            except OSError as err:
                raise enc.write_error(self.output, err) from None
        shutil.rmtree(self.work, ignore_errors=True)

    def result(self, wall: float) -> dict:
        """The run's report (also written to --report)."""
        result = _report_dict(self.opts, self.info, self.grid, self.settings, self.report, self.frames_written, wall,
                              self.notes)
        result.update(self._engine_report())
        result.update({
            "resumed_from_frame": self.k_start if self.resuming else None,
            "segments": len(self.segments), "segment_frames": self.seg_frames,
            "copied_streams": self.copied["copied_streams"], "copied_packets": self.copied["copied_packets"],
        })
        _write_report(self.opts.report, result)
        return result

    def _engine_report(self) -> dict:
        """What ran the model: backend, device, runner calls, times."""
        backend = self.backend
        return {
            "backend": backend.name, "device": str(backend.device), "runner_calls": dict(self.runner.calls),
            "inference_s": round(self.maker.inference_s, 3), "stream_s": round(self.stream_s, 3),
            "torch_threads": self.torch_threads if backend.device.type == "cpu" else None,
        }


def segment_writer(work: Path, index: int, settings, images_out: bool, pattern: str):
    """The writer of segment `index` in the work folder: pictures named by `pattern`, or video."""
    if images_out:
        return enc.ImageSegmentWriter(work, index, settings, pattern)
    return enc.VideoSegmentWriter(work, index, settings)


def _place_pictures(work: Path, segments: list[int], output: Path) -> None:
    """Move the segments' pictures to the pattern's folder. Pictures of the pattern that the run
    did not write (a longer earlier sequence, replaced with --overwrite) are removed, so the
    folder holds exactly this run's sequence."""
    folder = output.parent
    try:
        folder.mkdir(exist_ok=True)
        placed = set()
        for index in segments:
            seg = work / enc.segment_name(index)
            for f in sorted(seg.iterdir()):
                os.replace(f, folder / f.name)
                placed.add(f.name)
        for stale in pattern_matches(output):
            if stale.name not in placed:
                stale.unlink()
    except OSError as err:
        raise enc.write_error(folder, err) from None


def _report_dict(opts, info: InputInfo, grid, settings, report: _Report, frames_out: int, wall: float,
                 notes: list[str]) -> dict:
    tl = info.timeline
    out_rate = settings.rate
    out_duration = Fraction(frames_out) / out_rate if out_rate is not None else tl.duration
    return {
        "input": {
            "path": info.path, "frames": tl.frames, "rate": frac_to_str(tl.rate) if tl.rate else None,
            "rate_fps": float(tl.rate) if tl.rate else round(tl.frames / float(tl.duration), 6),
            "vfr": tl.vfr, "start": float(tl.start), "duration": float(tl.duration),
            "width": info.width, "height": info.height, "pix_fmt": info.pix_fmt, "bits": info.bits,
            "color": {"range": info.color_range, "matrix": info.colorspace, "primaries": info.color_primaries,
                      "transfer": info.color_trc},
        },
        "output": {
            "path": opts.output, "frames": frames_out,
            "rate": frac_to_str(out_rate) if out_rate is not None else None,
            "rate_fps": float(out_rate) if out_rate is not None else None,
            "duration": float(out_duration), "time_base": frac_to_str(grid.time_base), **settings.describe(),
        },
        "scene_cuts": report.cuts,
        "scene_threshold": opts.scene_threshold, "scene_mode": opts.scene_mode,
        "duplicates": {"count": len(report.duplicates), "times": report.duplicates, "dropped": opts.dedup,
                       "threshold": opts.dedup_threshold},
        "frames": dict(report.kinds),
        "cadence_repeats": report.again,
        "shots": scene_list(report.cuts, tl.start, tl.end),
        "kept_holds": report.holds,
        "plan_options": {"dedup": opts.dedup, "keep_holds": opts.keep_holds if opts.dedup else None,
                         "cadence": opts.cadence, "shots_file": opts.shots,
                         "rules": [r.describe() for r in read_rules(opts.shots)] if opts.shots else []},
        "wall_time_s": round(wall, 3),
        "output_fps": round(frames_out / wall, 3) if wall > 0 else None,
        "notes": notes,
    }


def _write_report(path: str | None, data: dict) -> None:
    if not path:
        return
    try:
        write_json(Path(path), data)
    except OSError as err:
        raise DainrtError(f"cannot write the report {path}: {err.strerror}") from None


def _admit(df, grid, detector: Detector, report: _Report):
    """Put a decoded frame on the output grid's clock and through the duplicate / cut detector,
    noting duplicates and (kept frames') cuts in the report. Returns the detector's decision:
    `drop` means the frame is skipped."""
    grid.note_input(df.time, df.pts)
    d = detector.check(df.thumb)
    if d.duplicate:
        report.duplicates.append(float(df.time))
    if d.cut and not d.drop:
        report.cuts.append({"time": float(df.time), "frame": df.index, "score": round(d.score, 3)})
    return d


def _shots(opts: RunOptions, info: InputInfo, grid) -> Shots:
    """The settings by moment: the command line's, changed by the rules of a --shots file."""
    base = ShotSettings(opts.cadence, opts.keep_holds)
    if opts.shots is None:
        return Shots(base)
    return RuleShots(base, read_rules(opts.shots), grid.rate, info.timeline.rate, opts.shots)


def plan_film(opts: RunOptions, info: InputInfo, grid,
              shots: Shots | None = None) -> tuple[list, _Report, dict[int, int]]:
    """One decode pass without pictures (thumbnails only): the detector and planner over the
    whole film, as the streaming run does frame by frame, with `opts`' plan options (`shots`:
    by default `opts`' cadence, holds and --shots file). Returns every output frame's job in
    order, the report (cuts, held frames, kinds, cadence repeats, kept holds) and the pts of each
    input frame, by index."""
    shots = shots if shots is not None else _shots(opts, info, grid)
    report = _Report()
    detector = Detector(opts.dedup, opts.dedup_threshold, opts.scene_threshold)
    planner = Planner(grid, opts.scene_mode, opts.dedup, shots)
    jobs: list = []
    anchors: dict[int, int] = {}
    with Decoder(info, images=False) as decoder:
        for df in decoder:
            d = _admit(df, grid, detector, report)
            anchors[df.index] = df.pts
            jobs.extend(planner.push(Anchor(df.index, df.time, df.pts), d.cut, d.duplicate))
        jobs.extend(planner.finish())
    for job in jobs:
        report.kinds[job.kind] += 1
        report.again += job.again
    report.holds = planner.holds
    return jobs, report, anchors


def _dry_run(opts: RunOptions, info: InputInfo, grid, settings, shots: Shots, t_start: float) -> dict:
    """Decode, detect and plan only: no model, nothing written but the report."""
    jobs, report, _ = plan_film(opts, info, grid, shots)
    plan = [[j.slot.k, frac_to_str(j.slot.time), j.kind, j.src, j.dst, j.t] for j in jobs]
    result = _report_dict(opts, info, grid, settings, report, len(plan), time.perf_counter() - t_start, list(info.notes))
    result.update({"dry_run": True, "backend": opts.backend, "device": str(opts.device), "plan": plan})
    result["memory"] = _memory_estimate(opts, info)
    _write_report(opts.report, result)
    return result


def _memory_estimate(opts: RunOptions, info: InputInfo) -> dict:
    """The estimated peak memory of this run (`engine/memory.py`): {"line": one line for the
    user, "bytes": the parts in bytes, or None where the backend has no estimate}. Reads the
    checkpoint's model width (the model itself is not built)."""
    from dainrt.engine.memory import estimate_memory, memory_line

    if opts.model is not None:
        config = opts.model.config
    else:
        from dainrt.model.checkpoint import load_checkpoint
        from dainrt.model.weights import resolve_weights

        try:
            config = load_checkpoint(resolve_weights(opts.weights))[1]
        except DainrtError as err:            # the plan stands without it; the real run will say the same
            return {"line": f"estimated peak memory: none ({err})", "bytes": None}
    device = str(opts.device).split(":")[0]
    options = {k: opts.backend_options[k] for k in ("precision", "kernels", "compile") if k in opts.backend_options}
    try:
        parts = estimate_memory(config, info.height, info.width, device, backend=opts.backend, **options).to_dict()
    except ValueError:
        parts = None
    return {"line": memory_line(config, info.height, info.width, device, opts.backend, **options), "bytes": parts}


def summary_line(result: dict) -> str:
    """One line for the end of a run."""
    i, o, k = result["input"], result["output"], result["frames"]
    rate_in = format_rate(Fraction(i["rate"])) if i["rate"] else "variable rate"
    rate_out = format_rate(Fraction(o["rate"])) if o["rate"] else "variable rate"
    cuts = len(result["scene_cuts"])
    dups = result["duplicates"]["count"]
    holds = len(result["kept_holds"])
    kept = f", {holds} hold{'s' if holds != 1 else ''} kept" if holds else ""
    what = "planned" if result.get("dry_run") else f"wrote {o['path']}:"
    held = f"{dups} held frame{'s' if dups != 1 else ''}" + (" dropped" if result["duplicates"]["dropped"] else "")
    return (f"dainrt: {what} {o['frames']} frames at {rate_out} fps ({o['duration']:.3f} s) from {i['frames']} "
            f"at {rate_in} fps ({i['duration']:.3f} s); {k['interp']} interpolated, {k['copy'] + k['still']} copied, "
            f"{k['repeat'] + k['fade']} at {cuts} scene cut{'s' if cuts != 1 else ''}, {held}{kept}; "
            f"{result['wall_time_s']:.1f} s ({result['output_fps'] or 0:.2f} frames/s)")
