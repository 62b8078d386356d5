"""`dainrt run ... --cluster ADDRESS`: one film across many workers (Ray), by segments.

The driver (this process) does what is done once: check the options and outputs, probe the
input, load the model (a wrong checkpoint fails first), **plan the whole film** in one decode pass
of thumbnails (`pipeline.plan_film`: timestamps, scene cuts, held frames, every output frame's
job, decided exactly as the streaming run decides them, with the same plan options: kept holds,
cadence, --shots), split the plan into segments (`split_plan`), and at the end join the finished
segments by stream copy with the input's audio and subtitles (`_FilmRun.assemble`, the
single-process assembly).

Each segment is one Ray task (one GPU with `--device cuda`, else `CPUS_PER_TASK` CPUs and as many
torch threads). The worker seeks the input to the segment's first input frame and decodes to its
last (no frames travel through the object store), makes the frames with `FrameMaker` (the
single-process run's code) and encodes them into `seg-NNNNNN.mkv` in the run's work folder,
the file a single-process run writes. The input and the work folder must therefore be at the
same path on every worker (shared storage; `docs/cluster.md`).

Faults: a worker that dies is retried by Ray (`MAX_RETRIES`); a finished segment is recorded in
the work folder's `state.json` as soon as the driver hears of it, so Ctrl-C (which cancels the
tasks) or a failed segment leaves a state `--resume` continues, skipping every finished segment
whose file verifies (`resume.segment_problem`); a worker's one-line error names the worker and
its node.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from pathlib import Path

from dainrt.base.errors import DainrtError
from dainrt.engine.tiling import make_runner

from . import encode as enc
from .decode import Decoder, InputInfo
from .pipeline import (FrameMaker, RunOptions, _FilmRun, _fingerprint, _load_model, plan_film, run_tiles,
                       segment_writer)
from .resume import prepare_work_dir, work_dir_for
from .timing import INTERP, Shots

MAX_RETRIES = 3                 # Ray re-runs a segment whose worker process or node died
CPUS_PER_TASK = 1               # CPU runs: one task per core, each with one torch thread
CUT_WINDOW = 4                  # a cut within segment_frames / CUT_WINDOW of the nominal end ends the segment
OBJECT_STORE_BYTES = 256 << 20  # local clusters: the store holds the model and the plan, never frames
RAY_HINT = "--cluster needs Ray: pip install 'dainrt[cluster]' (or pip install 'ray[client]>=2.9')"
SHARED_HINT = "; every worker must see the input and the output's folder at the same path (shared storage)"


def require_ray():
    """The `ray` module, or a one-line DainrtError saying what to install."""
    try:
        import ray
    except ImportError:
        raise DainrtError(RAY_HINT) from None
    return ray


def parse_address(text: str) -> tuple[str, int | None]:
    """`local` (a Ray cluster on this machine, one worker per core), `local:N` (N workers),
    `auto` (the running cluster this machine belongs to), `ray://host:port` (a remote one)
    -> (address, N or None). ValueError with the accepted forms otherwise."""
    text = str(text).strip()
    if text == "local" or text == "auto":
        return text, None
    if text.startswith("local:"):
        n = text[len("local:"):]
        if n.isdigit() and int(n) >= 1:
            return "local", int(n)
    elif text.startswith("ray://"):
        host, _, port = text[len("ray://"):].rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return text, None
    raise ValueError(f"must be local, local:N (N >= 1), auto or ray://host:port, got {text!r}")


# ----------------------------------------------------------------------------------------------
# The split


def _splits_pair(jobs, b: int) -> bool:
    """True when output frames b-1 and b are in-betweens of one pair (a boundary there would
    make both segments compute that pair)."""
    a, c = jobs[b - 1], jobs[b]
    return a.kind == INTERP and c.kind == INTERP and (a.src, a.dst) == (c.src, c.dst)


def split_plan(jobs, segment_frames: int, cuts=()) -> list[tuple[int, int]]:
    """Output frame ranges [first, end) covering `jobs` (the plan, in output order) once each.

    A segment is `segment_frames` long, but ends on a scene cut within `segment_frames //
    CUT_WINDOW` of that (a segment then starts on a new shot and shares no input frame with the one
    before), else at the nearest frame that does not split the in-betweens of one pair (so no
    pair is computed twice), else at the fixed length. A segment that ends inside a shot decodes
    one input frame past its end: the first input frame of the next segment. `cuts` are the input
    frame indices after each scene cut (the report's `scene_cuts[*].frame`).
    """
    n = len(jobs)
    window = segment_frames // CUT_WINDOW
    srcs = [j.src for j in jobs]
    shots = sorted({bisect_left(srcs, c) for c in cuts} - {0, n})    # first output frame of each new shot
    ranges, start = [], 0
    while start < n:
        nominal = start + segment_frames
        if nominal + window >= n:
            ranges.append((start, n))
            break
        lo, hi = max(start + 1, nominal - window), nominal + window
        near = shots[bisect_left(shots, lo):bisect_right(shots, hi)]
        if near:
            end = min(near, key=lambda b: (abs(b - nominal), b))
        else:
            around = [nominal + d * s for d in range(window + 1) for s in ((1, -1) if d else (1,))]
            end = next((b for b in around if lo <= b <= hi and not _splits_pair(jobs, b)), nominal)
        ranges.append((start, end))
        start = end
    return ranges


@dataclass(frozen=True)
class Segment:
    """One task: output frames [first, end) and their jobs; it decodes input frames
    `input_first` (at `input_pts`, where it seeks) to `input_last`."""

    index: int
    first: int
    end: int
    jobs: tuple
    input_first: int
    input_pts: int
    input_last: int


def make_segments(jobs, ranges, anchors: dict[int, int]) -> list[Segment]:
    segments = []
    for index, (first, end) in enumerate(ranges):
        part = tuple(jobs[first:end])
        lo = part[0].src
        hi = max(max(j.src, j.dst if j.dst is not None else j.src) for j in part)
        segments.append(Segment(index, first, end, part, lo, anchors[lo], hi))
    return segments


# ----------------------------------------------------------------------------------------------
# The worker side


@dataclass(frozen=True)
class _Film:
    """What every task of a run shares (put in the object store once)."""

    info: InputInfo
    settings: enc.VideoSettings
    work: str
    images_out: bool
    pattern: str
    backend: str
    backend_options: dict
    device: str
    tiles: object              # the run's TileOption (engine/tiling.py)
    config: object             # the model's ModelConfig, for the tile plan's memory estimate
    engine_key: str            # weights identity + backend + options + device: when a worker may reuse its backend


_WORKER: dict = {}             # per worker process: the last backend, reused by the next task of the same run


def _backend(film: _Film, model):
    import torch

    from dainrt.engine import create_backend
    from dainrt.engine.backend import resolve_device

    if _WORKER.get("key") != film.engine_key:
        if "backend" in _WORKER:
            _WORKER.pop("backend").close()
        device = resolve_device(film.device)
        if device.type == "cpu":
            torch.set_num_threads(CPUS_PER_TASK)
        _WORKER["backend"] = create_backend(film.backend, model, device, **film.backend_options)
        _WORKER["key"] = film.engine_key
    return _WORKER["backend"]


def _make_segment(film: _Film, model, seg: Segment, tally) -> dict:
    """Decode the segment's input range, make its frames, encode them into its segment file."""
    import torch

    backend = _backend(film, model)
    runner = make_runner(backend, film.tiles, film.config, film.backend_options)
    maker = FrameMaker(runner, film.info.dtype, film.images_out, film.settings.pix_fmt, film.settings.alpha)
    metas, done = [], [0]

    def frame_done(n: int) -> None:
        done[0] += n
        if tally is not None:
            tally.note.remote(seg.index, done[0])

    encoder = enc.SegmentedEncoder(lambda index: segment_writer(Path(film.work), index, film.settings,
                                                                film.images_out, film.pattern),
                                   seg.end - seg.first, lambda meta, _: metas.append(meta), on_frame=frame_done,
                                   segment_of=lambda k: seg.index)
    decoder = Decoder(film.info, images=True, start=seg.input_pts, start_index=seg.input_first,
                      prepare=maker.transfers.upload if maker.transfers.cuda else None).start()
    jobs, pos = seg.jobs, 0
    needed = {j.src for j in jobs} | {j.dst for j in jobs if j.dst is not None}
    try:
        with torch.inference_mode():
            for df in decoder:
                if df.index in needed:
                    maker.frames[df.index] = df
                ready = pos
                while ready < len(jobs) and max(jobs[ready].src, jobs[ready].dst or 0) <= df.index:
                    ready += 1
                for job, payload in maker.make(jobs[pos:ready]):
                    encoder.put(job, payload, None)
                pos = ready
                if pos == len(jobs):
                    break
                for key in [key for key in maker.frames if key < jobs[pos].src]:
                    del maker.frames[key]
        if pos < len(jobs):
            raise DainrtError(f"cannot decode {film.info.path}: it ends before input frame {jobs[pos].src} "
                              f"(was the input changed?)")
        encoder.finish()
    except BaseException:
        encoder.cancel()
        raise
    finally:
        decoder.close()
    return {**metas[0], "output_frames": [seg.first, seg.end], "input_frames": [seg.input_first, seg.input_last],
            "inference_s": round(maker.inference_s, 3), "runner_calls": dict(maker.runner.calls)}


def segment_task(film: _Film, model, seg: Segment, tally) -> dict:
    """A Ray task: one segment. A user-facing failure comes back as {"error": one line naming
    the worker and its node}; a bug raises (Ray then shows its traceback)."""
    import ray

    node = ray.util.get_node_ip_address()
    worker = f"pid {os.getpid()} on {socket.gethostname()}"
    t0 = time.perf_counter()
    try:
        meta = _make_segment(film, model, seg, tally)
    except DainrtError as err:
        text = str(err)
        if text.startswith("cannot read") or "No such file" in text:
            text += SHARED_HINT
        return {"index": seg.index, "error": f"worker {worker} (node {node}): {text}"}
    return {**meta, "node": node, "worker": worker, "seconds": round(time.perf_counter() - t0, 3)}


class _Tally:
    """A Ray actor: output frames made so far, per segment (a retried segment starts again)."""

    def __init__(self):
        self.frames: dict[int, int] = {}

    def note(self, index: int, frames: int) -> None:
        self.frames[index] = frames

    def total(self) -> int:
        return sum(self.frames.values())


# ----------------------------------------------------------------------------------------------
# The driver side


def connect(address: str) -> bool:
    """Connect this process to the Ray cluster at `address` (see `parse_address`); True when this
    call started the connection (and `disconnect` should end it). A process already connected
    (the Python API, the tests) keeps its connection."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    where, workers = parse_address(address)
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # Ray's own warnings: the error below says it in one line
            if where == "local":
                ray.init(address="local", num_cpus=workers or len(os.sched_getaffinity(0)), include_dashboard=False,
                         object_store_memory=OBJECT_STORE_BYTES, **quiet)
            else:
                ray.init(address=where, **quiet)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        text = str(err).strip().splitlines()[0].split(". ")[0].rstrip(".") if str(err).strip() else type(err).__name__
        hint = " (start one with `ray start --head`, or use --cluster local)" if where == "auto" else ""
        raise DainrtError(f"cannot reach the Ray cluster at {address}: {text}{hint}") from None
    return True


def disconnect(started: bool) -> None:
    if started:
        require_ray().shutdown()


class ClusterRun(_FilmRun):
    """`dainrt run --cluster`: the single-process run's setup checks, work folder, state and
    assembly, with `stream()` replaced by the plan, the split and one Ray task per segment."""

    def __init__(self, opts: RunOptions, info: InputInfo, grid, settings, shots: Shots, seg_frames: int,
                 output: Path, images_out: bool):
        self.opts, self.info, self.grid, self.settings = opts, info, grid, settings
        self.seg_frames, self.output, self.images_out = seg_frames, output, images_out
        # As in a single-process run, all that can fail on the user's options is checked before
        # the work folder exists. The device is the workers': the driver needs none.
        self.notes = list(info.notes) + list(settings.notes) + self._check_output()
        self.model, weights_id = _load_model(opts)
        fingerprint = _fingerprint(opts, info, settings, seg_frames, weights_id)
        fingerprint["cluster"] = True              # segments end on scene cuts: not the streaming run's
        t0 = time.perf_counter()
        self.started = connect(opts.cluster)
        self.ray = require_ray()
        self.connect_s = time.perf_counter() - t0
        try:
            self._check_resources()
            t0 = time.perf_counter()
            jobs, self.report, anchors = plan_film(opts, info, grid, shots)
            self.plan_s = time.perf_counter() - t0
            ranges = split_plan(jobs, seg_frames, [c["frame"] for c in self.report.cuts])
            self.segments_planned = make_segments(jobs, ranges, anchors)
            self.work = work_dir_for(output, images_out)
            self.state, self.resuming = prepare_work_dir(self.work, opts.resume, fingerprint, grid.count,
                                                         seg_frames, output, redo_damaged=True)
        except BaseException:
            disconnect(self.started)
            raise
        self.engine_key = repr((weights_id, opts.backend, sorted(opts.backend_options.items()), opts.device))
        self.done_before = {s["index"] for s in self.state.segments}
        self.state.complete = len(self.done_before) == len(self.segments_planned)
        self.k_start = self.state.frames_done
        self.stream_s = 0.0

    def _check_resources(self) -> None:
        have = self.ray.cluster_resources()
        want = "GPU" if self._gpu else "CPU"
        if have.get(want, 0) < 1:
            raise DainrtError(f"the Ray cluster at {self.opts.cluster} has no {want}s (it has {have.get('CPU', 0):g} "
                              f"CPUs and {have.get('GPU', 0):g} GPUs)")

    @property
    def _gpu(self) -> bool:
        return str(self.opts.device).startswith("cuda")

    def close(self) -> None:
        disconnect(self.started)

    def stream(self) -> None:
        """One task per unfinished segment; each finished segment is recorded in the state as
        soon as it arrives. Ctrl-C or a failed segment cancels the rest (finished ones stay)."""
        ray, opts = self.ray, self.opts
        film = _Film(self.info, self.settings, str(self.work.resolve()), self.images_out, self.output.name,
                     opts.backend, dict(opts.backend_options), str(opts.device).split(":")[0], run_tiles(opts),
                     self.model.config, self.engine_key)
        task = ray.remote(segment_task).options(num_cpus=1 if self._gpu else CPUS_PER_TASK,
                                                num_gpus=1 if self._gpu else 0, max_retries=MAX_RETRIES)
        progress = self._progress_bar()
        tally = ray.remote(num_cpus=0)(_Tally).remote() if progress is not None else None
        film_ref, model_ref = ray.put(film), ray.put(self.model)   # once, not once per task
        pending = {task.remote(film_ref, model_ref, seg, tally): seg
                   for seg in self.segments_planned if seg.index not in self.done_before}
        t0 = time.perf_counter()
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)   # each one as it arrives
                for ref in ready:
                    self._finished(pending.pop(ref), ref)
                if progress is not None:            # frames done over all workers (tqdm: fps, ETA)
                    progress.update(self.k_start + ray.get(tally.total.remote()) - progress.n)
            self.stream_s = time.perf_counter() - t0
        except BaseException as err:
            for ref in pending:
                ray.cancel(ref, force=True)
            if progress is not None:
                progress.close()
            self._abandon(err)
            raise
        finally:
            if tally is not None:
                ray.kill(tally)
        if progress is not None:
            progress.update(self.grid.count - progress.n)
            progress.close()

    def _finished(self, seg: Segment, ref) -> None:
        ray = self.ray
        try:
            meta = ray.get(ref)
        except ray.exceptions.RayTaskError:
            raise                                   # a bug in a worker: keep its traceback
        except ray.exceptions.RayError as err:       # the worker or its node died, MAX_RETRIES times
            text = str(err).strip().splitlines()[0]
            raise DainrtError(f"segment {seg.index} (output frames {seg.first}-{seg.end - 1}) failed "
                              f"{MAX_RETRIES + 1} times on the cluster ({text}); the finished segments are "
                              f"kept: run the same command with --resume") from None
        if "error" in meta:
            raise DainrtError(meta["error"])
        state = self.state
        state.segments.append(meta)
        state.complete = len(state.segments) == len(self.segments_planned)
        try:
            state.save()
        except OSError as err:
            raise enc.write_error(state.path, err) from None

    def _engine_report(self) -> dict:
        made = [s for s in self.state.segments if s["index"] not in self.done_before]
        calls: dict[str, int] = {}
        for s in made:
            for k, v in s.get("runner_calls", {}).items():
                calls[k] = calls.get(k, 0) + v
        keys = ("index", "output_frames", "input_frames", "frames", "node", "worker", "seconds", "inference_s")
        return {
            "backend": self.opts.backend, "device": str(self.opts.device), "runner_calls": calls,
            "inference_s": round(sum(s.get("inference_s", 0.0) for s in made), 3),
            "stream_s": round(self.stream_s, 3), "torch_threads": None if self._gpu else CPUS_PER_TASK,
            "cluster": {
                "address": self.opts.cluster, "connect_s": round(self.connect_s, 3), "plan_s": round(self.plan_s, 3),
                "workers": len({(s["node"], s["worker"]) for s in made}),
                "nodes": len({s["node"] for s in made}),
                "segments": [{**{k: s.get(k) for k in keys}, "resumed": s["index"] in self.done_before}
                             for s in sorted(self.state.segments, key=lambda s: s["index"])],
            },
        }

