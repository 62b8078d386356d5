"""Reading the input: probe (one demux pass, no decoding), then a decode thread.

`probe(path)` opens the input, demuxes the video stream's packets once to learn every frame's
timestamp (exact timing, the frame count for progress, truncation before any work is done), and
decodes the first frame for the pixel format, bit depth and colour metadata.

`Decoder` is a thread that decodes into a bounded queue (`QUEUE_FRAMES` frames, so memory stays
flat on a feature film): each item carries the `av.VideoFrame`, its exact time, a thumbnail for
the scene/duplicate detector and, when asked, the picture as RGB numpy: `rgb24` (uint8) for
8-bit input, `rgb48le` (uint16) for deeper input. Conversion to RGB follows the frame's own
matrix and range (unspecified matrix: BT.601, FFmpeg's default; unspecified range: limited).

Inputs: any file FFmpeg reads, or an image sequence given as a printf pattern
(`frames/%05d.png`): FFmpeg's image2 demuxer reads it at `--input-fps` (default 24) with the
first number found among 0-4, as `ffmpeg -i` does. Alpha is kept (`keep_alpha`, RGBA pictures:
`rgba` / `rgba64le`) when the run's output can carry it; otherwise the pipeline drops it with a
warning.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import re
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import numpy as np

from dainrt.base.errors import DainrtError

from .scenes import thumbnail
from .timing import Timeline

QUEUE_FRAMES = 8
DEFAULT_SEQUENCE_RATE = Fraction(24)
# Up to this many frames with a missing or repeated timestamp are skipped (with a warning); more,
# and the file's timestamps are rebuilt from the frame order and the stream's nominal rate.
FEW_BROKEN = 2
_PATTERN = re.compile(r"%0?\d*d")
_END = object()


def colour_flags(rgb_out: str | None = None):
    """The swscale flags of every YUV <-> RGB conversion of a run (decode and encode);
    `rgb_out`: the RGB format converted to, None when converting to the output's format.

    swscale's default 8-bit YUV 4:2:0 -> RGB path darkens the pictures by about one code value
    of luma (measured: a YUV -> RGB -> YUV trip takes mean Y from 103.8 to 102.7), so the
    interpolated frames, which make that trip, would flicker darker than the originals, which
    do not. Accurate rounding with full horizontal chroma interpolation makes the trip exact
    in luma; that interpolation is left out for 16-bit RGB, where swscale's path for it is
    wrong (it scrambles 10-bit 4:2:0) and the plain accurate path is exact already."""
    from av.video.reformatter import Interpolation as I

    flags = I.BILINEAR | I.ACCURATE_RND
    if rgb_out in ("rgb24", "rgba"):
        flags |= I.FULL_CHR_H_INT
    return flags


def to_rgb(frame, fmt: str) -> np.ndarray:
    """A decoded `av.VideoFrame` -> RGB numpy in `fmt` (rgb24/rgb48le/rgba/rgba64le), through
    `colour_flags()`; the frame's own matrix and range."""
    return frame.reformat(format=fmt, interpolation=colour_flags(fmt)).to_ndarray()


def is_image_sequence(path: str | os.PathLike) -> bool:
    """True for a printf-style picture pattern such as `frames/%05d.png`; an existing file is a
    file, whatever its name (`100%done.mp4`, `clip%d.mp4`)."""
    text = os.fspath(path)
    return bool(_PATTERN.search(os.path.basename(text))) and not os.path.isfile(text)


def _av_message(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return str(text).split(": '")[0].strip() or type(err).__name__


@dataclass
class InputInfo:
    """What `probe` learnt about the input."""

    path: str
    image_sequence: bool
    sequence_rate: Fraction | None
    format_name: str
    codec: str
    stream_index: int
    width: int
    height: int
    pix_fmt: str
    bits: int
    is_rgb: bool
    has_alpha: bool
    color_range: int
    colorspace: int
    color_primaries: int
    color_trc: int
    timeline: Timeline
    pts: list[int]
    declared_duration: Fraction | None
    other_streams: list[tuple[int, str, str]] = field(default_factory=list)   # (index, type, codec)
    rebuilt_timestamps: bool = False    # pts[i] is frame i's rebuilt timestamp, not the file's
    notes: list[str] = field(default_factory=list)
    source_size: tuple[int, int] | None = None   # (W, H) in the file when decoding scales to width x height
    frames_in_file: int = 0             # video frames in the whole input (before --max-frames / --preview)

    def scaled(self, width: int, height: int) -> "InputInfo":
        """The same input, decoded at `width` x `height` pixels (e.g. `run --preview`)."""
        return dataclasses.replace(self, width=width, height=height,
                                   source_size=self.source_size or (self.width, self.height))
    keep_alpha: bool = False            # decode RGBA (the output carries alpha)

    @property
    def rgb_format(self) -> str:
        """The numpy working format: rgb24 for 8-bit, rgb48le for deeper input; rgba / rgba64le
        when the alpha is kept."""
        if self.keep_alpha:
            return "rgba64le" if self.bits > 8 else "rgba"
        return "rgb48le" if self.bits > 8 else "rgb24"

    @property
    def dtype(self):
        return np.uint16 if self.bits > 8 else np.uint8


def open_input(path: str | os.PathLike, sequence_rate: Fraction | None = None):
    """`av.open` with one-line errors; image-sequence patterns go through image2."""
    import av

    path = os.fspath(path)
    try:
        if is_image_sequence(path):
            rate = sequence_rate or DEFAULT_SEQUENCE_RATE
            folder = os.path.dirname(path) or "."
            if not os.path.isdir(folder):
                raise DainrtError(f"cannot read {path}: folder {folder} does not exist")
            return av.open(path, format="image2", options={"framerate": f"{rate.numerator}/{rate.denominator}"})
        if not os.path.exists(path):
            raise DainrtError(f"cannot read {path}: no such file")
        if os.path.isdir(path):
            raise DainrtError(f"cannot read {path}: it is a folder (for pictures use a pattern like {path}/%05d.png)")
        if os.path.getsize(path) == 0:
            raise DainrtError(f"cannot read {path}: the file is empty")
        return av.open(path)
    except DainrtError:
        raise
    except FileNotFoundError:
        raise DainrtError(f"cannot read {path}: no pictures match that pattern" if is_image_sequence(path)
                          else f"cannot read {path}: no such file") from None
    except PermissionError:
        raise DainrtError(f"cannot read {path}: permission denied") from None
    except EOFError:
        raise DainrtError(f"cannot read {path}: it ends before its first frame (no video frames, or truncated)") from None
    except (av.error.FFmpegError, OSError) as err:
        raise DainrtError(
            f"cannot read {path}: not a video FFmpeg understands, or the file is truncated ({_av_message(err)})"
        ) from None


def _declared_duration(container, stream) -> Fraction | None:
    """The video stream's duration as the file states it (header/index), if it states one."""
    if stream.duration and stream.time_base:
        return stream.duration * Fraction(stream.time_base)
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    if tag:
        m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", tag.strip())
        if m:
            return Fraction(int(m.group(1)) * 3600 + int(m.group(2)) * 60) + Fraction(m.group(3))
    if container.duration and len(container.streams) == 1:
        return Fraction(container.duration, 1_000_000)
    return None


def probe(path: str | os.PathLike, sequence_rate: Fraction | None = None, max_frames: int | None = None,
          max_seconds: float | None = None) -> InputInfo:
    """Open, demux the video packets once and decode the first frame (see module docstring).
    `max_frames` / `max_seconds`: only the first N frames / the frames in the first S seconds."""
    import av

    path = os.fspath(path)
    seq = is_image_sequence(path)
    container = open_input(path, sequence_rate)
    try:
        if not container.streams.video:
            raise DainrtError(f"{path} holds no video (no video stream, or a stream without frames)")
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        rate_hint = None
        for r in (stream.average_rate, stream.guessed_rate, stream.base_rate):
            if r:
                rate_hint = Fraction(r)
                break
        raw: list[int | None] = []          # each packet's timestamp, in file order
        last_duration = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                raw.append(packet.pts if packet.pts is not None else packet.dts)
                last_duration = packet.duration
        except av.error.FFmpegError as err:
            raise DainrtError(
                f"cannot read {path}: damaged after {len(raw)} frames ({_av_message(err)})"
            ) from None
        if not raw:
            raise DainrtError(f"{path} holds no video frames")
        present = [p for p in raw if p is not None]
        broken = len(raw) - len(set(present))            # missing, or repeating another frame's
        rebuilt = broken > FEW_BROKEN
        if rebuilt:
            if rate_hint is None:
                raise DainrtError(f"{path}: {broken} of {len(raw)} frames have missing or repeated timestamps, "
                                  "and the stream states no frame rate to rebuild them from")
            # As ffmpeg's genpts: frame i at i / rate, in the stream's time base (rounded as a muxer does).
            pts = [round(i / (rate_hint * tb)) for i in range(len(raw))]
        else:
            pts = sorted(set(present)) or [0]
        declared = _declared_duration(container, stream)
        other = [(s.index, s.type, s.codec_context.name if s.codec_context else "?")
                 for s in container.streams if s.index != stream.index]
        fmt_name = container.format.name
        codec_name = stream.codec_context.name
    finally:
        container.close()

    first = _first_frame(path, sequence_rate)
    if first is None:
        raise DainrtError(f"{path} has no decodable video frames")
    fmt = first.format
    timeline_full = Timeline.from_timestamps(pts, tb, rate_hint, last_duration)
    if declared is not None and not seq:
        shortfall = declared - timeline_full.duration - timeline_full.start
        limit = max(Fraction(1, 2), 2 / (timeline_full.rate or rate_hint or Fraction(25)))
        if shortfall > limit:
            raise DainrtError(
                f"{path} is truncated: its header says {float(declared):.3f} s of video but the frames end at "
                f"{float(timeline_full.end):.3f} s (re-copy or re-export the file)"
            )
    timeline = timeline_full
    frames_in_file = len(pts)
    if max_seconds is not None:
        within = sum(1 for p in pts if (p - pts[0]) * tb < Fraction(max_seconds)) or 1
        max_frames = within if max_frames is None else min(max_frames, within)
    if max_frames is not None and max_frames < len(pts):
        timeline = Timeline.from_timestamps(pts, tb, rate_hint, last_duration, truncate_after=max_frames)
        pts = pts[:max_frames]
    bits = max(c.bits for c in fmt.components)
    has_alpha = any(c.is_alpha for c in fmt.components)
    info = InputInfo(
        path=path, image_sequence=seq, sequence_rate=(sequence_rate or DEFAULT_SEQUENCE_RATE) if seq else None,
        format_name=fmt_name, codec=codec_name, stream_index=stream.index,
        width=first.width, height=first.height, pix_fmt=fmt.name, bits=bits, is_rgb=fmt.is_rgb,
        has_alpha=has_alpha, color_range=int(first.color_range), colorspace=int(first.colorspace),
        color_primaries=int(first.color_primaries), color_trc=int(first.color_trc),
        timeline=timeline, pts=pts, declared_duration=declared, other_streams=other, rebuilt_timestamps=rebuilt,
        frames_in_file=frames_in_file,
    )
    if rebuilt:
        info.notes.append(f"{broken} of {len(raw)} frames have missing or repeated timestamps: all were rebuilt from "
                          f"the frame order at {float(rate_hint):g} fps")
    return info


def decode_video(container, stream):
    """The decoded frames of `stream`. VP9 with alpha (WebM `alpha_mode` 1) goes through the
    libvpx decoder: FFmpeg's own VP9 decoder ignores the alpha side data."""
    meta = {k.lower(): v for k, v in (stream.metadata or {}).items()}
    if stream.codec_context.name != "vp9" or meta.get("alpha_mode") != "1":
        yield from container.decode(stream)
        return
    import av

    codec = av.CodecContext.create("libvpx-vp9", "r")
    for packet in container.demux(stream):
        for frame in codec.decode(packet if packet.size else None):
            yield frame


def _first_frame(path: str, sequence_rate):
    import av

    container = open_input(path, sequence_rate)
    try:
        for frame in decode_video(container, container.streams.video[0]):
            return frame
    except av.error.FFmpegError as err:
        raise DainrtError(f"cannot decode {path}: {_av_message(err)}") from None
    finally:
        container.close()
    return None


@dataclass
class DecodedFrame:
    index: int
    pts: int
    time: Fraction
    frame: object                   # av.VideoFrame
    thumb: np.ndarray
    image: np.ndarray | None = None  # RGB (uint8 or uint16) when asked for
    staged: object = None            # `prepare(image)`: e.g. the frame on its way to the GPU


class Decoder:
    """A decode thread feeding a bounded queue; iterate it for `DecodedFrame`s in order.

    `start` (an input pts) resumes: the container seeks to the keyframe before it and frames
    before it are skipped; `start_index` is that frame's index. `images` asks for RGB arrays;
    `prepare(image)` may transform each (e.g. upload to the GPU) inside the thread.
    """

    def __init__(self, info: InputInfo, images: bool = True, start: int | None = None, start_index: int = 0,
                 queue_frames: int = QUEUE_FRAMES, prepare=None):
        self.info = info
        self.images = images
        self.start_pts = start
        self.start_index = start_index
        self.prepare = prepare
        self.queue: queue.Queue = queue.Queue(maxsize=queue_frames)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.dropped = 0          # frames with a timestamp out of order or repeated
        self.frames = 0
        self._thread = threading.Thread(target=self._run, name="dainrt-decode", daemon=True)

    def start(self) -> "Decoder":
        self._thread.start()
        return self

    def __enter__(self) -> "Decoder":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.stop.set()
        while self._thread.is_alive():
            try:                              # unblock a put() waiting on a full queue
                self.queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[DecodedFrame]:
        while True:
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                if not self._thread.is_alive() and self.queue.empty():
                    if self.error is not None:
                        raise self.error
                    return
                continue
            if item is _END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def _run(self) -> None:
        import av

        info = self.info
        timeline = info.timeline
        last_pts = None
        index = self.start_index
        limit_pts = info.pts[-1]
        source_size = info.source_size or (info.width, info.height)
        container = None
        try:
            container = open_input(info.path, info.sequence_rate)
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            # Rebuilt timestamps are not the file's: a resumed run decodes from the start instead of seeking.
            if self.start_pts is not None and self.start_pts > info.pts[0] and not info.rebuilt_timestamps:
                try:
                    container.seek(self.start_pts, stream=stream, backward=True, any_frame=False)
                except av.error.FFmpegError:
                    container.close()
                    container = open_input(info.path, info.sequence_rate)
                    stream = container.streams.video[0]
            found_start = self.start_pts is None
            n = 0
            for frame in decode_video(container, stream):
                if self.stop.is_set():
                    return
                if info.rebuilt_timestamps:                 # the n-th frame out has the n-th rebuilt time
                    if n >= len(info.pts):
                        break
                    pts = info.pts[n]
                else:
                    pts = frame.pts if frame.pts is not None else info.pts[min(n, len(info.pts) - 1)]
                n += 1
                if pts > limit_pts:
                    break                                   # --max-frames
                if self.start_pts is not None:
                    if pts < self.start_pts:
                        continue
                    if not found_start:
                        if pts != self.start_pts:
                            raise DainrtError(
                                f"cannot resume: the frame at {float(pts * timeline.time_base):.3f} s of "
                                f"{info.path} is gone (was the input changed?)"
                            )
                        found_start = True
                if last_pts is not None and pts <= last_pts:
                    self.dropped += 1                       # broken or repeated timestamp
                    continue
                if (frame.width, frame.height) != source_size:
                    raise DainrtError(
                        f"{info.path}: the frame size changes at {float(pts * timeline.time_base):.3f} s "
                        f"({source_size[0]}x{source_size[1]} -> {frame.width}x{frame.height}); dainrt needs one size"
                    )
                if info.source_size is not None:
                    frame = frame.reformat(width=info.width, height=info.height, interpolation="AREA")
                time = timeline.time(pts)
                if timeline.rate is not None:
                    index = timeline.grid_index(time)
                elif last_pts is not None:
                    index += 1
                last_pts = pts
                image = staged = None
                if self.images:
                    image = to_rgb(frame, info.rgb_format)
                    staged = self.prepare(image) if self.prepare is not None else image
                item = DecodedFrame(index, pts, time, frame, thumbnail(frame), image, staged)
                self.frames += 1
                if not self._put(item):
                    return
            if self.start_pts is not None and not found_start:
                raise DainrtError(f"cannot resume: {info.path} ends before the point the run stopped at")
        except DainrtError as err:
            self.error = err
        except av.error.FFmpegError as err:
            where = f" after {float(last_pts * timeline.time_base):.3f} s" if last_pts is not None else ""
            self.error = DainrtError(f"cannot decode {info.path}: damaged{where} ({_av_message(err)})")
        except BaseException as err:  # noqa: BLE001 - a bug: re-raised in the consuming thread
            self.error = err
        finally:
            if container is not None:
                container.close()
            self._put(_END)
