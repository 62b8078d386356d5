"""Writing the output: encoder settings, segment writers, the encode thread, final assembly.

The output video is encoded in **segments** of `segment_frames` output frames, each by a fresh
encoder into its own file in the work folder (`seg-000003.mkv` + `seg-000003.json`, the exact
timestamps of its packets). A finished segment never changes, so an interrupted run resumes at
the first unfinished segment and produces the same bitstream. `assemble` then muxes the video
packets of all segments, with the input's audio and subtitle packets copied as they are
(interleaved by time, never decoded), into a temporary file that the pipeline renames to the
final name.

Defaults suited to masters: H.264 through the bundled libx264 at CRF 16, the input's pixel
format when the encoder takes it (4:2:0 8-bit stays 4:2:0 8-bit, 10-bit stays 10-bit: High 10),
otherwise the nearest it takes (RGB input -> 4:4:4). Colour range, matrix, primaries and
transfer of the input are written on every frame, in the encoder's VUI and in the container.

Image-sequence output (`out/%05d.png`): one PNG per output frame, numbered from 1, 8-bit for
8-bit input and 16-bit for deeper input (Pillow / FFmpeg's PNG encoder); no audio.

Alpha: input with an alpha channel keeps it where the output can carry it: PNG sequences (RGBA),
and video whose encoder has an alpha pixel format: by default ProRes 4444 (`prores_ks`,
yuva444p10le) for a .mov, VP9 (`libvpx-vp9`, yuva420p) for a .webm; `--codec ffv1` in .mkv too.
Elsewhere (H.264 has no alpha) it is dropped with a note.
"""
from __future__ import annotations

import errno
import heapq
import json
import os
import queue
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from dainrt.base.errors import DainrtError, OptionError
from dainrt.base.files import write_json

from .decode import InputInfo, _av_message, colour_flags, is_image_sequence, open_input, to_rgb

DEFAULT_CODEC = "libx264"
DEFAULT_CRF = 16
QUEUE_FRAMES = 8
SEGMENT_SUFFIX = ".mkv"

# AVColorSpace -> swscale matrix (SWS_CS_*); None: swscale's default (BT.601), as when decoding.
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


RESUME_HINT = " (free some space, then run the same command with --resume)"
FRESH_HINT = " (free some space, then run the same command again)"


def write_error(path: os.PathLike | str, err: BaseException, kept: bool = True) -> DainrtError:
    """A one-line DainrtError for a failed write (disk full, permissions, ...); `kept`: whether
    finished work remains for --resume."""
    text = getattr(err, "strerror", None) or _av_message(err)
    hint = (RESUME_HINT if kept else FRESH_HINT) if "space" in str(text).lower() or \
        getattr(err, "errno", None) in (28, 27) else ""
    return DainrtError(f"cannot write {path}: {text}{hint}")


# ----------------------------------------------------------------------------------------------
# Settings


@dataclass
class VideoSettings:
    """How output frames are encoded. Colour fields hold FFmpeg's AVCOL_* numbers."""

    codec: str
    pix_fmt: str
    crf: int | None
    width: int
    height: int
    rate: Fraction | None          # the stated constant rate, None when variable
    average_rate: Fraction         # for the encoder's rate control when variable
    time_base: Fraction
    rgb_format: str                # rgb24 or rgb48le (rgba / rgba64le with alpha): what numpy payloads hold
    color_range: int
    colorspace: int
    color_primaries: int
    color_trc: int
    image_sequence: bool = False
    alpha: bool = False            # the output carries the input's alpha
    options: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def is_rgb(self) -> bool:
        import av

        return av.VideoFormat(self.pix_fmt).is_rgb

    @property
    def sws_matrix(self) -> int | None:
        return _SWS_MATRIX.get(self.colorspace)

    def describe(self) -> dict:
        return {"codec": self.codec, "pix_fmt": self.pix_fmt, "crf": self.crf, "alpha": self.alpha,
                "color": {"range": self.color_range, "matrix": self.colorspace,
                          "primaries": self.color_primaries, "transfer": self.color_trc}}


def _encoder_formats(codec: str) -> list[str]:
    import av

    return [f.name for f in (av.codec.Codec(codec, "w").video_formats or [])]


def _has_option(codec: str, name: str) -> bool:
    import av

    try:
        opts = av.codec.CodecContext.create(codec, "w").supported_options
        return any(o.name == name for o in list(opts.private) + list(opts.generic))
    except Exception:  # noqa: BLE001 - unknown option tables: assume not
        return False


# Encoders' documented CRF ranges (FFmpeg's option tables say -1..FLT_MAX for some of them).
CRF_RANGES = {"libx264": (0, 51), "libx264rgb": (0, 51), "libx265": (0, 51), "libvpx": (4, 63),
              "libvpx-vp9": (0, 63), "libsvtav1": (1, 63), "libaom-av1": (0, 63)}


def crf_range(codec: str) -> tuple[float, float] | None:
    """The CRF values `codec` takes, or None when it has no CRF mode."""
    import av

    if codec in CRF_RANGES:
        return CRF_RANGES[codec]
    try:
        opts = av.codec.CodecContext.create(codec, "w").supported_options
        found = [o for o in list(opts.private) + list(opts.generic) if o.name == "crf"]
    except Exception:  # noqa: BLE001 - unknown option tables: assume none
        return None
    if not found:
        return None
    return max(0.0, found[0].min), found[0].max


# Audio codecs each container family carries as standard (others are refused, not copied in
# as a file common players will not play): MP4/MOV (ISO BMFF) and the ones with no limit.
STANDARD_AUDIO = {
    ".mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    ".m4v": {"aac", "mp3", "ac3", "eac3", "alac"},
    ".mov": {"aac", "mp3", "ac3", "eac3", "alac"} | {"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be",
                                                     "pcm_s32le", "pcm_f32le", "pcm_u8"},
}


def _subsampled(fmt, width: int, height: int) -> bool:
    """True when `fmt` halves chroma along an odd dimension of a width x height frame."""
    return (width % 2 == 1 and fmt.chroma_width(64) < 64) or (height % 2 == 1 and fmt.chroma_height(64) < 64)


def _default_pix_fmt(info: InputInfo, formats: list[str]) -> str:
    import av

    w, h = info.width, info.height
    if info.pix_fmt in formats and not _subsampled(av.VideoFormat(info.pix_fmt), w, h):
        return info.pix_fmt
    src = av.VideoFormat(info.pix_fmt)
    deep = info.bits > 8
    full_chroma = src.chroma_width(64) == 64 and src.chroma_height(64) == 64
    if src.is_rgb or full_chroma:
        wanted = ["yuv444p10le", "yuv444p", "gbrp10le", "gbrp", "bgr0"] if deep else ["yuv444p", "gbrp", "bgr0", "yuv444p10le"]
    elif src.chroma_height(64) == 64:
        wanted = ["yuv422p10le", "yuv422p", "yuv444p10le", "yuv444p"] if deep else ["yuv422p", "yuv444p"]
    else:
        wanted = ["yuv420p10le", "yuv420p"] if deep else ["yuv420p", "yuv420p10le"]
    wanted += ["yuv444p10le", "yuv444p"] if deep else ["yuv444p", "yuv444p10le"]
    for name in wanted + formats:
        if name in formats and not _subsampled(av.VideoFormat(name), w, h):
            return name
    return formats[0] if formats else "yuv420p"


ALPHA_CODECS = {".mov": "prores_ks", ".webm": "libvpx-vp9"}   # the default encoder for alpha input
ALPHA_FORMATS = ("yuva444p10le", "yuva420p", "yuva444p", "gbrap", "bgra", "rgba")   # ProRes 4444, then WebM's VP9


def _alpha_note(info: InputInfo, where: str) -> str:
    return (f"the input has an alpha channel ({info.pix_fmt}); {where} cannot carry it, so it is dropped "
            f"(use a PNG pattern, a .mov (ProRes 4444) or a .webm (VP9) to keep it)")


def choose_video_settings(info: InputInfo, grid, codec: str | None = None, pix_fmt: str | None = None,
                          crf: int | None = None, image_sequence: bool = False, suffix: str = "") -> VideoSettings:
    """Encoder settings for `info`'s frames on `grid` (see module docstring); one-line errors.
    `suffix`: the output file's extension (picks the alpha encoder). Sets `info.keep_alpha`."""
    settings = _choose(info, grid, codec, pix_fmt, crf, image_sequence, suffix)
    info.keep_alpha = settings.alpha
    if settings.alpha:
        settings.rgb_format = info.rgb_format
    elif info.has_alpha:
        settings.notes.append(_alpha_note(info, f"{settings.codec} ({settings.pix_fmt})"))
    return settings


def _choose(info: InputInfo, grid, codec, pix_fmt, crf, image_sequence, suffix) -> VideoSettings:
    import av

    w, h = info.width, info.height
    rate = grid.rate
    average = rate if rate is not None else Fraction(grid.count) / max(info.timeline.duration, Fraction(1, 1000))
    notes: list[str] = []
    # Colour: keep the input's tags. RGB input encoded as YUV gets BT.709 and limited range,
    # tagged, so players decode it as it was encoded.
    if image_sequence:
        if codec or pix_fmt or crf is not None:
            notes.append("--codec/--pix-fmt/--crf do not apply to picture output (PNG) and are ignored")
        alpha = info.has_alpha
        png = ("rgba64be" if alpha else "rgb48be") if info.bits > 8 else ("rgba" if alpha else "rgb24")
        return VideoSettings("png", png, None, w, h, rate, average,
                             grid.time_base, info.rgb_format, 0, 2, info.color_primaries, info.color_trc,
                             image_sequence=True, alpha=alpha, notes=notes)
    if codec is None and info.has_alpha:
        codec = ALPHA_CODECS.get(suffix.lower())
    codec = codec or DEFAULT_CODEC
    try:
        c = av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - av raises UnknownCodecError / ValueError
        raise DainrtError(f"unknown encoder {codec!r} (try libx264, libx265, libsvtav1, ffv1 or prores_ks)") from None
    if c.type != "video":
        raise DainrtError(f"{codec!r} is not a video encoder")
    formats = _encoder_formats(codec)
    if pix_fmt is None and info.has_alpha:
        pix_fmt = next((f for f in ALPHA_FORMATS if f in formats and not _subsampled(av.VideoFormat(f), w, h)), None)
    if pix_fmt is None:
        pix_fmt = _default_pix_fmt(info, formats)
    else:
        try:
            av.VideoFormat(pix_fmt)
        except Exception:  # noqa: BLE001
            raise DainrtError(f"unknown pixel format {pix_fmt!r}") from None
        if formats and pix_fmt not in formats:
            raise DainrtError(f"{codec} cannot encode {pix_fmt}; it takes: {', '.join(formats)}")
    out_fmt = av.VideoFormat(pix_fmt)
    if _subsampled(out_fmt, w, h):
        raise DainrtError(
            f"{pix_fmt} halves the colour resolution and needs an even frame size, but the video is {w}x{h}: "
            f"use --pix-fmt yuv444p (or another 4:4:4 format)"
        )
    crf_limits = crf_range(codec)
    if crf is not None and crf_limits is None:
        notes.append(f"{codec} has no CRF mode: --crf is ignored")
        crf = None
    elif crf is not None and not crf_limits[0] <= crf <= crf_limits[1]:
        raise OptionError("crf", f"must lie in {crf_limits[0]:g}..{crf_limits[1]:g} for {codec}, got {crf}")
    elif crf is None and crf_limits is not None:
        crf = DEFAULT_CRF
    if out_fmt.is_rgb:
        c_range, c_space = 0, 0
    elif info.is_rgb:
        c_range, c_space = 1, 1
    else:
        c_range, c_space = info.color_range, info.colorspace
    options = {"crf": str(crf)} if crf is not None else {}
    if codec == "libvpx-vp9" and crf is not None:
        options["b:v"] = "0"          # constant-quality mode
    out_bits = max(comp.bits for comp in out_fmt.components)
    if out_bits < info.bits:
        notes.append(f"the input has {info.bits}-bit samples but {pix_fmt} holds {out_bits}")
    alpha = info.has_alpha and any(c.is_alpha for c in out_fmt.components)
    return VideoSettings(codec, pix_fmt, crf, w, h, rate, average, grid.time_base, info.rgb_format,
                         c_range, c_space, info.color_primaries, info.color_trc, alpha=alpha, options=options,
                         notes=notes)


def _encoder_rate(settings: VideoSettings) -> Fraction:
    r = settings.rate or settings.average_rate
    return r.limit_denominator(1_000_000) if r.denominator > 1_000_000 else r


def add_video_stream(container, settings: VideoSettings):
    """An encoder stream in `container` for `settings` (colour tags on the codec context)."""
    stream = container.add_stream(settings.codec, rate=_encoder_rate(settings), options=dict(settings.options))
    cc = stream.codec_context
    cc.width, cc.height, cc.pix_fmt = settings.width, settings.height, settings.pix_fmt
    cc.time_base = settings.time_base
    stream.time_base = settings.time_base
    cc.color_range = settings.color_range
    cc.colorspace = settings.colorspace
    cc.color_primaries = settings.color_primaries
    cc.color_trc = settings.color_trc
    return stream


def to_video_frame(payload, settings: VideoSettings):
    """An output picture (RGB numpy, or a decoded `av.VideoFrame` passed through) -> a frame in
    the output pixel format with the output colour tags."""
    import av

    if isinstance(payload, av.VideoFrame):
        frame = payload
        if frame.format.name != settings.pix_fmt:
            frame = frame.reformat(format=settings.pix_fmt, dst_colorspace=settings.sws_matrix,
                                   dst_color_range=settings.color_range or None,
                                   interpolation=colour_flags())
    else:
        arr = payload.result() if hasattr(payload, "result") else payload
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format=settings.rgb_format)
        if settings.pix_fmt != settings.rgb_format:
            frame = frame.reformat(format=settings.pix_fmt, dst_colorspace=settings.sws_matrix,
                                   dst_color_range=settings.color_range or None,
                                   interpolation=colour_flags())
    frame.pict_type = 0              # never force the decoder's I/P/B types on the encoder
    frame.color_range = settings.color_range
    frame.colorspace = settings.colorspace if not settings.is_rgb else frame.colorspace
    frame.color_primaries = settings.color_primaries
    frame.color_trc = settings.color_trc
    return frame


# ----------------------------------------------------------------------------------------------
# Segment writers


def segment_name(index: int) -> str:
    return f"seg-{index:06d}"


class VideoSegmentWriter:
    """Encodes one segment into `<work>/seg-NNNNNN.mkv` and records exact packet timestamps."""

    def __init__(self, work: Path, index: int, settings: VideoSettings):
        import av

        self.work, self.index, self.settings = work, index, settings
        self.path = work / (segment_name(index) + SEGMENT_SUFFIX)
        self.part = work / (segment_name(index) + SEGMENT_SUFFIX + ".part")
        self.meta_path = work / (segment_name(index) + ".json")
        self.packets: list[list[int]] = []
        self.frames = 0
        self.kinds: dict[str, int] = {}
        try:
            self.container = av.open(str(self.part), "w", format="matroska")
            self.stream = add_video_stream(self.container, settings)
        except (av.error.FFmpegError, OSError) as err:
            raise write_error(self.part, err) from None

    def _mux(self, packets) -> None:
        for p in packets:
            if p.size == 0:
                continue
            self.packets.append([p.pts, p.dts if p.dts is not None else p.pts, p.duration or 0])
            self.container.mux(p)

    def write(self, job, payload) -> None:
        import av

        frame = to_video_frame(payload, self.settings)
        frame.pts = job.slot.pts
        frame.time_base = self.settings.time_base
        frame.duration = job.slot.duration
        try:
            self._mux(self.stream.encode(frame))
        except (av.error.FFmpegError, OSError) as err:
            raise write_error(self.part, err) from None
        self.frames += 1
        self.kinds[job.kind] = self.kinds.get(job.kind, 0) + 1
        if job.again:                   # a cadence step, counted apart (the report's cadence_repeats)
            self.kinds["again"] = self.kinds.get("again", 0) + 1

    def close(self) -> dict:
        import av

        try:
            self._mux(self.stream.encode(None))
            self.container.close()
            _fsync(self.part)
            meta = {"index": self.index, "frames": self.frames, "kinds": self.kinds,
                    "time_base": f"{self.settings.time_base.numerator}/{self.settings.time_base.denominator}",
                    "packets": self.packets}
            write_json(self.meta_path, meta)
            os.replace(self.part, self.path)
        except (av.error.FFmpegError, OSError) as err:
            raise write_error(self.part, err) from None
        return {"index": self.index, "frames": self.frames, "kinds": self.kinds}

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        self.part.unlink(missing_ok=True)


class ImageSegmentWriter:
    """Writes one segment's pictures into `<work>/seg-NNNNNN/` (renamed from `.part` when done)."""

    def __init__(self, work: Path, index: int, settings: VideoSettings, pattern: str):
        self.work, self.index, self.settings, self.pattern = work, index, settings, pattern
        self.path = work / segment_name(index)
        self.part = work / (segment_name(index) + ".part")
        self.frames = 0
        self.kinds: dict[str, int] = {}
        import shutil

        shutil.rmtree(self.part, ignore_errors=True)
        try:
            self.part.mkdir(parents=True)
        except OSError as err:
            raise write_error(self.part, err) from None

    def write(self, job, payload) -> None:
        from dainrt.base.images import write_image

        arr = payload
        if not isinstance(arr, np.ndarray):
            if hasattr(arr, "result"):
                arr = arr.result()
            else:       # a decoded frame passed through
                arr = to_rgb(arr, self.settings.rgb_format)
        write_image(self.part / (self.pattern % (job.slot.k + 1)), np.ascontiguousarray(arr))
        self.frames += 1
        self.kinds[job.kind] = self.kinds.get(job.kind, 0) + 1
        if job.again:                   # a cadence step, counted apart (the report's cadence_repeats)
            self.kinds["again"] = self.kinds.get("again", 0) + 1

    def close(self) -> dict:
        try:
            os.replace(self.part, self.path)
        except OSError as err:
            raise write_error(self.path, err) from None
        return {"index": self.index, "frames": self.frames, "kinds": self.kinds}

    def abort(self) -> None:
        import shutil

        shutil.rmtree(self.part, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# The encode thread

_END = object()


class SegmentedEncoder:
    """A thread that writes jobs into segments of `segment_frames` output frames.

    `put(job, payload, resume)` in output order; `resume` is the planner state from which the
    job's segment can be replayed. When a segment is complete it calls
    `on_segment(meta, resume_of_next_segment)` (None after the last one) from the thread.
    """

    def __init__(self, make_writer: Callable[[int], object], segment_frames: int,
                 on_segment: Callable[[dict, dict | None], None], queue_frames: int = QUEUE_FRAMES,
                 on_frame: Callable[[int], None] | None = None):
        self.make_writer = make_writer
        self.segment_frames = segment_frames
        self.on_segment = on_segment
        self.on_frame = on_frame
        self.queue: queue.Queue = queue.Queue(maxsize=queue_frames)
        self.error: BaseException | None = None
        self.abort = threading.Event()
        self.frames = 0
        self._writer = None
        self._thread = threading.Thread(target=self._run, name="dainrt-encode", daemon=True)
        self._thread.start()

    def put(self, job, payload, resume: dict) -> None:
        while True:
            if self.error is not None:
                raise self.error
            if not self._thread.is_alive():
                raise RuntimeError("the encode thread stopped unexpectedly")
            try:
                self.queue.put((job, payload, resume), timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Flush the last segment and wait for the thread; re-raises its error."""
        while self._thread.is_alive():
            try:
                self.queue.put(_END, timeout=0.1)
                break
            except queue.Full:
                if self.error is not None:
                    break
        self._thread.join()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Stop now; the unfinished segment is discarded (finished ones stay)."""
        self.abort.set()
        while self._thread.is_alive():
            try:
                self.queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)

    def _run(self) -> None:
        try:
            while not self.abort.is_set():
                try:
                    item = self.queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _END:
                    if self._writer is not None:
                        meta = self._writer.close()
                        self._writer = None
                        self.on_segment(meta, None)
                    return
                job, payload, resume = item
                seg = job.slot.k // self.segment_frames
                if self._writer is not None and self._writer.index != seg:
                    meta = self._writer.close()
                    self._writer = None
                    self.on_segment(meta, resume)
                if self._writer is None:
                    self._writer = self.make_writer(seg)
                self._writer.write(job, payload)
                self.frames += 1
                if self.on_frame is not None:
                    self.on_frame(1)
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            self.error = err
        finally:
            if self._writer is not None:
                self._writer.abort()
                self._writer = None


# ----------------------------------------------------------------------------------------------
# Assembly


def _copy_streams(info: InputInfo):
    """The input streams that are copied: audio and subtitles (not for picture sequences)."""
    return [(i, t, c) for i, t, c in info.other_streams if t in ("audio", "subtitle")]


def check_output(path: Path, settings: VideoSettings, info: InputInfo, scratch: Path) -> list[str]:
    """Fail fast (before any inference) when the output format cannot hold the streams.

    Writes a header with the video encoder and the copied streams into `scratch` and removes it.
    Returns notes (streams left out).
    """
    import av

    notes = []
    skipped = [(i, t, c) for i, t, c in info.other_streams if t not in ("audio", "subtitle")]
    if skipped:
        notes.append("not copied (only audio and subtitles are): " + ", ".join(f"#{i} {t} {c}" for i, t, c in skipped))
    ext = path.suffix.lower()
    standard = STANDARD_AUDIO.get(ext)
    odd = [c for _, t, c in _copy_streams(info) if t == "audio" and standard is not None and c not in standard]
    if odd:
        raise DainrtError(f"{path}: {odd[0]} audio (copied from the input) is not standard in a {ext} file and "
                          f"common players will not play it; use .mkv, which carries it")
    scratch_file = scratch / f"check{ext}"
    try:
        for with_copies in (False, True):
            try:
                out = av.open(str(scratch_file), "w")
            except ValueError:
                raise DainrtError(f"{path}: unknown output format {ext!r} (use .mp4, .mov, .mkv, or a "
                                  f"picture pattern such as out/%05d.png)") from None
            except (av.error.FFmpegError, OSError) as err:
                raise write_error(path, err) from None
            inp = None
            try:
                add_video_stream(out, settings)
                if with_copies:
                    copies = _copy_streams(info)
                    if not copies:
                        out.close()
                        break
                    inp = open_input(info.path, info.sequence_rate)
                    for i, _, _ in copies:
                        out.add_stream_from_template(inp.streams[i])
                out.start_encoding()
                out.close()
            except DainrtError:
                raise
            except Exception as err:  # noqa: BLE001 - av raises ValueError, FFmpegError, ... here
                try:
                    out.close()
                except Exception:  # noqa: BLE001
                    pass
                if isinstance(err, OSError) and (not isinstance(err, av.error.FFmpegError)
                                                 or err.errno in (errno.ENOSPC, errno.EFBIG, errno.EACCES, errno.EROFS)):
                    raise write_error(path, err, kept=False) from None
                if not with_copies:
                    raise DainrtError(
                        f"{path}: {settings.codec} ({settings.pix_fmt}) cannot be written in a {ext} file "
                        f"({_av_message(err)}); use .mkv or another --codec"
                    ) from None
                kinds = ", ".join(f"{t} {c}" for _, t, c in _copy_streams(info))
                raise DainrtError(
                    f"{path}: a {ext} file cannot hold the streams copied from the input ({kinds}); "
                    f"use .mkv, which holds almost any codec"
                ) from None
            finally:
                if inp is not None:
                    inp.close()
    finally:
        scratch_file.unlink(missing_ok=True)
    return notes


def _video_packets(work: Path, segments: list[int], ost, settings: VideoSettings) -> Iterator[tuple]:
    """Packets of the segments in order, with exact timestamps rescaled to `ost`'s time base."""
    import av

    out_tb = Fraction(ost.time_base)
    scale = settings.time_base / out_tb
    last_dts = None
    for index in segments:
        meta = json.loads((work / (segment_name(index) + ".json")).read_text())
        stamps = meta["packets"]
        container = av.open(str(work / (segment_name(index) + SEGMENT_SUFFIX)))
        try:
            n = 0
            for packet in container.demux(container.streams.video[0]):
                if packet.size == 0:
                    continue
                if n >= len(stamps):
                    raise DainrtError(f"segment {index} of the unfinished run is damaged; delete {work} and start over")
                pts, dts, duration = stamps[n]
                n += 1
                pts_o, dts_o = round(pts * scale), round(dts * scale)
                # Each segment's encoder starts its decode timestamps before its first frame
                # (B-frame delay): nudge them past the previous segment's, as ffmpeg does.
                if last_dts is not None and dts_o <= last_dts:
                    dts_o = last_dts + 1
                if dts_o > pts_o:
                    raise DainrtError(f"no room for the timestamps of segment {index} in the output "
                                      f"format's time base; use .mp4, .mov or .mkv")
                last_dts = dts_o
                packet.pts, packet.dts = pts_o, dts_o
                packet.duration = round(duration * scale)
                packet.time_base = ost.time_base
                yield (Fraction(dts_o) * out_tb, 0, packet)
            if n != len(stamps):
                raise DainrtError(f"segment {index} of the unfinished run is damaged; delete {work} and start over")
        finally:
            container.close()


def _copied_packets(inp, mapping: dict, end_time: Fraction | None) -> Iterator[tuple]:
    """The input's audio/subtitle packets (bit for bit), in file order; with `end_time` (a
    `--max-frames` preview) only those that start before it."""
    streams = [inp.streams[i] for i in mapping]
    last = Fraction(0)
    for packet in inp.demux(streams):
        if packet.size == 0 or packet.stream.index not in mapping:
            continue
        tb = Fraction(packet.time_base)
        ts = packet.dts if packet.dts is not None else packet.pts
        t = ts * tb if ts is not None else last
        if end_time is not None and packet.pts is not None and packet.pts * tb >= end_time:
            continue
        last = t
        packet.stream = mapping[packet.stream.index]
        yield (t, 1, packet)


def assemble(work: Path, segments: list[int], settings: VideoSettings, info: InputInfo,
             output: Path, end_time: Fraction | None, final_name: Path) -> dict:
    """Mux the finished segments and the copied streams into `output` (a temp name)."""
    import av

    first = av.open(str(work / (segment_name(segments[0]) + SEGMENT_SUFFIX)))
    inp = None
    try:
        try:
            out = av.open(str(output), "w", format=_format_for(final_name))
        except (av.error.FFmpegError, OSError) as err:
            raise write_error(final_name, err) from None
        try:
            vost = out.add_stream_from_template(first.streams.video[0])
            if settings.alpha and settings.codec == "libvpx-vp9":
                vost.metadata["alpha_mode"] = "1"      # WebM's flag that the VP9 carries alpha
            vost.time_base = settings.time_base
            if settings.rate is not None:
                vost.codec_context.framerate = _encoder_rate(settings)
            mapping = {}
            copies = _copy_streams(info)
            if copies and not info.image_sequence:
                inp = open_input(info.path, info.sequence_rate)
                for i, _, _ in copies:
                    mapping[i] = out.add_stream_from_template(inp.streams[i])
                try:
                    out.metadata.update({k: v for k, v in (inp.metadata or {}).items()
                                         if k.lower() not in ("encoder", "duration")})
                except Exception:  # noqa: BLE001 - metadata is a courtesy
                    pass
            out.start_encoding()
            sources = [_video_packets(work, segments, vost, settings)]
            if mapping:
                sources.append(_copied_packets(inp, mapping, end_time))
            copied = 0
            for _, kind, packet in heapq.merge(*sources, key=lambda x: (x[0], x[1])):
                if kind == 0:
                    packet.stream = vost
                else:
                    copied += 1
                out.mux(packet)
            out.close()
        except DainrtError:
            _close_quietly(out)
            raise
        except (av.error.FFmpegError, OSError) as err:
            _close_quietly(out)
            raise write_error(final_name, err) from None
    finally:
        first.close()
        if inp is not None:
            inp.close()
    return {"copied_packets": copied, "copied_streams": [f"{t} {c}" for _, t, c in _copy_streams(info)] if mapping else []}


def _close_quietly(container) -> None:
    try:
        container.close()
    except Exception:  # noqa: BLE001
        pass


def _format_for(path: Path) -> str | None:
    """The muxer for the final name's extension (the temp file may have another name)."""
    ext = path.suffix.lower()
    return {".mkv": "matroska", ".mka": "matroska", ".webm": "webm", ".mp4": "mp4", ".m4v": "mp4",
            ".mov": "mov", ".avi": "avi", ".ts": "mpegts", ".m2ts": "mpegts", ".mts": "mpegts",
            ".nut": "nut", ".mxf": "mxf", ".flv": "flv"}.get(ext)
