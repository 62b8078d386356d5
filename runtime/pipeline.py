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

import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from dainrt.errors import DainrtError

from . import encode as enc
from .decode import Decoder, InputInfo, is_image_sequence, probe
from .resume import file_identity, model_identity, prepare_work_dir, work_dir_for
from .scenes import DEDUP_THRESHOLD, SCENE_THRESHOLD, Detector
from .timing import FADE, INTERP, KINDS, Anchor, Planner, format_rate, frac_to_str, make_grid

SEGMENT_SECONDS = 10


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
    codec: str | None = None
    crf: int | None = None
    pix_fmt: str | None = None
    resume: bool = False
    segment_frames: int | None = None
    input_fps: Fraction | None = None
    max_frames: int | None = None
    dry_run: bool = False
    progress: bool | None = None         # None: when stderr is a terminal
    backend_options: dict = field(default_factory=dict)


def _warn(message: str) -> None:
    print(f"dainrt: warning: {message}", file=sys.stderr)


def _check_paths(opts: RunOptions) -> tuple[Path | None, bool]:
    if opts.dry_run:
        return None, False                       # nothing is written
    if opts.output is None:
        raise DainrtError("no output given: add -o OUTPUT (or --dry-run to only plan)")
    out = Path(opts.output)
    images = is_image_sequence(out)
    if not images:
        if out.is_dir():
            raise DainrtError(f"{out} is a folder; give a file name (e.g. {out}/film.mp4) or a picture pattern")
        if out.suffix == "":
            raise DainrtError(f"{out}: give the output a file extension (.mp4, .mov, .mkv) or a pattern like out/%05d.png")
        if not is_image_sequence(opts.input) and os.path.exists(opts.input) and os.path.exists(out) \
                and os.path.samefile(opts.input, out):
            raise DainrtError(f"the output {out} is the input; choose another name")
    else:
        if out.suffix.lower() not in (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"):
            raise DainrtError(f"{out}: picture output needs a .png (or .tif/.jpg) pattern such as out/%05d.png")
        if os.path.abspath(out.parent) == os.path.abspath(Path(opts.input).parent) and is_image_sequence(opts.input):
            raise DainrtError(f"write the pictures into another folder than the input's ({out.parent})")
    parent = out.parent.parent if images else out.parent
    if not parent.is_dir():
        raise DainrtError(f"cannot write {out}: folder {parent} does not exist")
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
        "dedup": opts.dedup, "dedup_threshold": opts.dedup_threshold, "scene_threshold": opts.scene_threshold,
        "scene_mode": opts.scene_mode, "codec": settings.codec, "pix_fmt": settings.pix_fmt, "crf": settings.crf,
        "segment_frames": segment_frames, "backend": opts.backend, "device": str(opts.device).split(":")[0],
        "weights": weights_id, "output": os.path.abspath(opts.output),
    }


def _load_model(opts: RunOptions):
    if opts.model is not None:
        return opts.model, {"in_memory_sha256": model_identity(opts.model)}
    from dainrt.checkpoint import load_model
    from dainrt.weights import resolve_weights

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


def run(opts: RunOptions) -> dict:
    """Run `dainrt run` with `opts`; returns the report (also written to `opts.report`).

    On the CPU, when torch would use every core (its default), the run gives it one core less
    so the decode and encode threads are not starved (measured on 2 shared cores: a 64x48
    pair takes 0.5 s with 1 torch thread, 3 s with 2 fighting the encoder); an explicit
    `torch.set_num_threads` / `OMP_NUM_THREADS` below the core count is left alone.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    lower = not opts.dry_run and str(opts.device).startswith("cpu") and cores > 1 and threads >= cores
    if lower:
        torch.set_num_threads(cores - 1)
    try:
        return _run(opts)
    finally:
        if lower:
            torch.set_num_threads(threads)


def _run(opts: RunOptions) -> dict:
    t_start = time.perf_counter()
    if (opts.fps is None) == (opts.factor is None):
        raise DainrtError("give exactly one of --fps RATE or --factor N")
    if opts.factor is not None and opts.factor < 1:
        raise DainrtError(f"--factor must be 1 or more, got {opts.factor}")
    if opts.max_frames is not None and opts.max_frames < 1:
        raise DainrtError(f"--max-frames must be 1 or more, got {opts.max_frames}")
    if opts.scene_mode not in ("repeat", "crossfade"):
        raise DainrtError(f"--scene-mode must be repeat or crossfade, got {opts.scene_mode!r}")
    if not 0 <= opts.scene_threshold <= 100:
        raise DainrtError(f"--scene-threshold must lie in [0, 100] (0 turns detection off), got {opts.scene_threshold}")
    if not 0 <= opts.dedup_threshold <= 100:
        raise DainrtError(f"--dedup-threshold must lie in [0, 100], got {opts.dedup_threshold}")
    output, images_out = _check_paths(opts)

    info = probe(opts.input, opts.input_fps, opts.max_frames)
    for note in info.notes:
        _warn(note)
    grid = make_grid(info.timeline, opts.fps, opts.factor)
    settings = enc.choose_video_settings(info, grid, opts.codec, opts.pix_fmt, opts.crf, image_sequence=images_out)
    for note in settings.notes:
        _warn(note)
    if opts.segment_frames is not None and opts.segment_frames < 1:
        raise DainrtError(f"--segment-frames must be 1 or more, got {opts.segment_frames}")
    seg_frames = opts.segment_frames or max(1, math.ceil(SEGMENT_SECONDS * float(settings.rate or settings.average_rate)))

    if opts.dry_run:
        return _dry_run(opts, info, grid, settings, t_start)

    # The model first: a wrong checkpoint should fail before anything is written.
    import torch

    from dainrt.engine import Runner, create_backend
    from dainrt.engine.backend import resolve_device

    device = resolve_device(opts.device)
    model, weights_id = _load_model(opts)
    fingerprint = _fingerprint(opts, info, settings, seg_frames, weights_id)
    work = work_dir_for(output, images_out)
    state, resuming = prepare_work_dir(work, opts.resume, fingerprint, grid.count, seg_frames, output)
    notes = list(info.notes) + list(settings.notes)
    if not images_out:
        try:
            notes += enc.check_output(output, settings, info, work)
        except DainrtError:
            if not resuming and not state.segments:
                shutil.rmtree(work, ignore_errors=True)
            raise
    elif any(t in ("audio", "subtitle") for _, t, _ in info.other_streams):
        notes.append("picture output: the input's audio/subtitles are not written")
        _warn(notes[-1])

    backend = create_backend(opts.backend, model, device, **opts.backend_options)
    runner = Runner(backend)
    from .transfer import Transfers

    transfers = Transfers(backend.device, info.dtype)
    report = _Report()
    for seg in state.segments:
        for k, v in seg["kinds"].items():
            report.kinds[k] += v
    detector = Detector(opts.dedup, opts.dedup_threshold, opts.scene_threshold)
    planner = Planner(grid, opts.scene_mode)
    k_start = state.frames_done
    resume_anchor = None
    start_pts = None
    if resuming and state.resume is not None:
        snap = state.resume
        resume_anchor = planner.restore(snap["planner"])
        detector.restore(snap["detector"], None)
        report.cuts = list(state.scene_cuts)
        report.duplicates = list(state.duplicates)
        start_pts = resume_anchor.pts if resume_anchor is not None else None
    elif resuming:
        report.cuts, report.duplicates = list(state.scene_cuts), list(state.duplicates)

    progress = None
    show = opts.progress if opts.progress is not None else sys.stderr.isatty()
    if show:
        from tqdm import tqdm

        progress = tqdm(total=grid.count, initial=k_start, unit="frame", desc="dainrt run", dynamic_ncols=True,
                        smoothing=0.1, file=sys.stderr)

    def make_writer(index: int):
        if images_out:
            return enc.ImageSegmentWriter(work, index, settings, output.name)
        return enc.VideoSegmentWriter(work, index, settings)

    def on_segment(meta: dict, resume: dict | None) -> None:
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

    inference_s = 0.0
    stream_s = 0.0
    calls_before = dict(runner.calls)
    if not state.complete:
        decoder = Decoder(info, images=True, start=start_pts,
                          start_index=resume_anchor.index if resume_anchor is not None else 0,
                          prepare=transfers.upload if transfers.cuda else None).start()
        encoder = enc.SegmentedEncoder(make_writer, seg_frames, on_segment,
                                       on_frame=(progress.update if progress is not None else None))
        frames: dict[int, object] = {}

        def snapshot() -> dict:
            return {"planner": planner.state(), "detector": detector.state(),
                    "cuts": len(report.cuts), "dups": len(report.duplicates)}

        def emit(jobs, snap) -> None:
            nonlocal inference_s
            i = 0
            while i < len(jobs):
                job = jobs[i]
                if job.slot.k < k_start:
                    i += 1
                    continue
                if job.kind == INTERP:
                    group = [job]
                    while i + len(group) < len(jobs) and jobs[i + len(group)].kind == INTERP \
                            and jobs[i + len(group)].src == job.src and jobs[i + len(group)].dst == job.dst:
                        group.append(jobs[i + len(group)])
                    a, b = frames[job.src], frames[job.dst]
                    t0 = time.perf_counter()
                    outs = runner.interpolate(a.index, transfers.image(a.staged), b.index, transfers.image(b.staged),
                                              [g.t for g in group])
                    payloads = [transfers.download(o) for o in outs]
                    inference_s += time.perf_counter() - t0
                    for g, p in zip(group, payloads):
                        encoder.put(g, p, snap)
                        report.kinds[INTERP] += 1
                    i += len(group)
                    continue
                if job.kind == FADE:
                    payload = _blend(frames[job.src].image, frames[job.dst].image, job.t, info.dtype)
                elif images_out:
                    payload = frames[job.src].image
                else:
                    payload = frames[job.src].frame
                encoder.put(job, payload, snap)
                report.kinds[job.kind] += 1
                i += 1

        t_stream = time.perf_counter()
        try:
            with torch.inference_mode():
                snap = state.resume if resuming and state.resume is not None else None
                for df in decoder:
                    if resume_anchor is not None and df.pts == resume_anchor.pts and df.index == resume_anchor.index \
                            and planner.prev is resume_anchor:
                        detector.ref = df.thumb
                        frames[df.index] = df
                        continue
                    d = _admit(df, grid, detector, report)
                    if d.drop:
                        continue
                    if snap is None:
                        snap = snapshot()
                    frames[df.index] = df
                    jobs = planner.push(Anchor(df.index, df.time, df.pts), d.cut)
                    emit(jobs, snap)
                    for key in [key for key in frames if key != df.index]:
                        del frames[key]
                    snap = snapshot()
                emit(planner.finish(), snap if snap is not None else snapshot())
            encoder.finish()
            stream_s = time.perf_counter() - t_stream
        except KeyboardInterrupt:
            encoder.cancel()
            decoder.close()
            if progress is not None:
                progress.close()
            done = len(state.segments)
            if not done and not resuming:
                shutil.rmtree(work, ignore_errors=True)
                raise Interrupted("interrupted before the first segment was finished; nothing was kept") from None
            raise Interrupted(
                f"interrupted: {state.frames_done} of {grid.count} output frames are safe in {work} "
                f"({done} segment{'s' if done != 1 else ''}); run the same command with --resume to continue"
            ) from None
        except BaseException:
            encoder.cancel()
            decoder.close()
            if progress is not None:
                progress.close()
            if not state.segments and not resuming:
                shutil.rmtree(work, ignore_errors=True)     # nothing worth resuming
            raise
        decoder.close()
        dropped_ts = decoder.dropped
        if dropped_ts:
            notes.append(f"{dropped_ts} frames with a repeated or backwards timestamp were skipped")
            _warn(notes[-1])
    if progress is not None:
        progress.close()

    # Assemble and rename.
    segments = [s["index"] for s in sorted(state.segments, key=lambda s: s["index"])]
    frames_written = state.frames_done
    if frames_written != grid.count:
        notes.append(f"{frames_written} output frames written where {grid.count} were planned "
                     f"(the decoder delivered fewer frames than the file announced)")
        _warn(notes[-1])
    if not segments:
        shutil.rmtree(work, ignore_errors=True)
        raise DainrtError(f"{opts.input}: no frames could be decoded")
    copied = {"copied_packets": 0, "copied_streams": []}
    if images_out:
        _place_pictures(work, segments, output)
    else:
        tmp = work / ("output" + output.suffix)
        copied = enc.assemble(work, segments, settings, info, tmp,
                              info.timeline.end if opts.max_frames else None, output)
        try:
            os.replace(tmp, output)
        except OSError as err:
            raise enc.write_error(output, err) from None
    shutil.rmtree(work, ignore_errors=True)

    wall = time.perf_counter() - t_start
    calls = {k: runner.calls[k] - calls_before.get(k, 0) for k in runner.calls}
    result = _report_dict(opts, info, grid, settings, report, frames_written, wall, notes)
    result.update({
        "backend": backend.name, "device": str(backend.device), "runner_calls": calls,
        "inference_s": round(inference_s, 3), "stream_s": round(stream_s, 3),
        "torch_threads": torch.get_num_threads() if backend.device.type == "cpu" else None,
        "resumed_from_frame": k_start if resuming else None,
        "segments": len(segments), "segment_frames": seg_frames,
        "copied_streams": copied["copied_streams"], "copied_packets": copied["copied_packets"],
    })
    _write_report(opts.report, result)
    return result


def _place_pictures(work: Path, segments: list[int], output: Path) -> None:
    folder = output.parent
    try:
        folder.mkdir(exist_ok=True)
        for index in segments:
            seg = work / enc.segment_name(index)
            for f in sorted(seg.iterdir()):
                os.replace(f, folder / f.name)
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
        "wall_time_s": round(wall, 3),
        "output_fps": round(frames_out / wall, 3) if wall > 0 else None,
        "notes": notes,
    }


def _write_report(path: str | None, data: dict) -> None:
    if not path:
        return
    try:
        enc.write_json_atomic(Path(path), data)
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


def _dry_run(opts: RunOptions, info: InputInfo, grid, settings, t_start: float) -> dict:
    """Decode, detect and plan only: no model, nothing written but the report."""
    report = _Report()
    detector = Detector(opts.dedup, opts.dedup_threshold, opts.scene_threshold)
    planner = Planner(grid, opts.scene_mode)
    plan: list[list] = []

    def take(jobs):
        for j in jobs:
            report.kinds[j.kind] += 1
            plan.append([j.slot.k, frac_to_str(j.slot.time), j.kind, j.src, j.dst, j.t])

    with Decoder(info, images=False) as decoder:
        for df in decoder:
            d = _admit(df, grid, detector, report)
            if d.drop:
                continue
            take(planner.push(Anchor(df.index, df.time, df.pts), d.cut))
        take(planner.finish())
    frames_out = len(plan)
    result = _report_dict(opts, info, grid, settings, report, frames_out, time.perf_counter() - t_start, list(info.notes))
    result.update({"dry_run": True, "backend": opts.backend, "device": str(opts.device), "plan": plan})
    _write_report(opts.report, result)
    return result


def summary_line(result: dict) -> str:
    """One line for the end of a run."""
    i, o, k = result["input"], result["output"], result["frames"]
    rate_in = format_rate(Fraction(i["rate"])) if i["rate"] else "variable rate"
    rate_out = format_rate(Fraction(o["rate"])) if o["rate"] else "variable rate"
    cuts = len(result["scene_cuts"])
    dups = result["duplicates"]["count"]
    what = "planned" if result.get("dry_run") else f"wrote {o['path']}:"
    held = f"{dups} held frame{'s' if dups != 1 else ''}" + (" dropped" if result["duplicates"]["dropped"] else "")
    return (f"dainrt: {what} {o['frames']} frames at {rate_out} fps ({o['duration']:.3f} s) from {i['frames']} "
            f"at {rate_in} fps ({i['duration']:.3f} s); {k['interp']} interpolated, {k['copy']} copied, "
            f"{k['repeat'] + k['fade']} at {cuts} scene cut{'s' if cuts != 1 else ''}, {held}; "
            f"{result['wall_time_s']:.1f} s ({result['output_fps'] or 0:.2f} frames/s)")
