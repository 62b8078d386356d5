"""Exact timing: input timestamps -> output timestamps, and what each output frame is.

All times are `fractions.Fraction` seconds; nothing is rounded until a timestamp is written in a
container's time base. Three pieces:

* `Timeline`: the input's frame times, built from the demuxed packet timestamps (pts x
  time_base). A stream whose timestamps all lie on the grid of its stated rate (within one tick
  of its time base, which absorbs Matroska's millisecond rounding) is constant-rate and its
  frame times are snapped to that exact grid (24 fps -> k/24 s, not 0.042 s); anything else is
  variable-rate and the timestamps are used as they are.
* The output grid: `CfrGrid` for `--fps RATE` (and `--factor N` on constant-rate input, where
  it is the rate N x input rate): output frame k is at `start + k / RATE`, `ceil(duration x RATE)`
  frames, so the output lasts as long as the input within one output frame; or
  `SubdivideGrid` for `--factor N` on variable-rate input: every input interval is cut into N
  equal parts (the output is variable-rate too).
* `Planner`: fed every decoded frame (with the detector's verdict: held, cut), it says what
  every output frame is: an input frame at its time (`copy`), an input picture shown again
  later (`still`: inside a kept hold, in an `off` shot, or a cadence step after a copy), an
  interpolation between two frames at t (`interp`), or, across a scene cut, the previous frame
  again (`repeat`) or a cross-fade (`fade`); after the last input frame, `hold`. It never
  interpolates across a cut. Holds, cadence and per-shot settings (`ShotSettings`, `Shots`)
  are decided here, so the pipeline only executes the plan.
"""
from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Sequence

MAX_RATE = Fraction(1000)


# ----------------------------------------------------------------------------------------------
# Rates


def parse_rate(text: str | int | float | Fraction) -> Fraction:
    """`60`, `59.94`, `60000/1001`, `23.976` -> an exact Fraction (ValueError when invalid).

    Decimals that round an NTSC rate (N x 1000/1001 to within 0.0005: 23.976, 29.97, 47.952,
    59.94, 119.88) mean that NTSC rate, as they do on every camera and editor: `59.94` is
    60000/1001. Other decimals are exact (`12.5` is 25/2).
    """
    if isinstance(text, Fraction):
        rate = text
    else:
        s = str(text).strip()
        try:
            if "/" in s:
                num, den = s.split("/", 1)
                rate = Fraction(int(num), int(den))
            else:
                if not re.fullmatch(r"\d+(\.\d*)?|\.\d+", s):
                    raise ValueError
                rate = Fraction(s)
                if rate.denominator != 1:
                    ntsc = Fraction(round(rate * Fraction(1001, 1000)) * 1000, 1001)
                    if ntsc.denominator != 1 and abs(ntsc - rate) <= Fraction(5, 10000):
                        rate = ntsc
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"not a frame rate: {text!r} (use e.g. 60, 59.94 or 60000/1001)") from None
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"frame rate must be above 0 and at most {MAX_RATE}, got {text!r}")
    return rate


def format_rate(rate: Fraction | None) -> str:
    """60 -> '60', 60000/1001 -> '60000/1001 (59.94)', None -> 'variable'."""
    if rate is None:
        return "variable"
    if rate.denominator == 1:
        return str(rate.numerator)
    return f"{rate.numerator}/{rate.denominator} ({float(rate):.4g})"


def fraction_gcd(a: Fraction, b: Fraction) -> Fraction:
    """The largest Fraction g with a/g and b/g both integers (gcd(0, b) = b)."""
    den = a.denominator * b.denominator // math.gcd(a.denominator, b.denominator)
    return Fraction(math.gcd(a.numerator * (den // a.denominator), b.numerator * (den // b.denominator)), den)


def frac_to_str(x: Fraction) -> str:
    return f"{x.numerator}/{x.denominator}"


def frac_from_str(s: str) -> Fraction:
    return Fraction(s)


# ----------------------------------------------------------------------------------------------
# Input timeline


@dataclass(frozen=True)
class Timeline:
    """Frame times of the input (see the module docstring).

    `rate` is the constant frame rate, or None for variable-rate input. `frames` counts the
    frames the demuxer announced (the decoder may still drop a broken one).
    """

    time_base: Fraction
    start: Fraction
    end: Fraction
    rate: Fraction | None
    frames: int

    @property
    def duration(self) -> Fraction:
        return self.end - self.start

    @property
    def vfr(self) -> bool:
        return self.rate is None

    def time(self, pts: int) -> Fraction:
        """The exact time of a frame with timestamp `pts` (snapped to the grid when constant-rate)."""
        raw = pts * self.time_base
        if self.rate is None:
            return raw
        return self.start + Fraction(round((raw - self.start) * self.rate)) / self.rate

    def grid_index(self, time: Fraction) -> int:
        """Constant-rate input: the frame number on the grid of a (snapped) time."""
        assert self.rate is not None
        return round((time - self.start) * self.rate)

    @classmethod
    def from_timestamps(
        cls,
        pts: Sequence[int],
        time_base: Fraction,
        rate_hint: Fraction | None = None,
        last_duration: int | None = None,
        truncate_after: int | None = None,
    ) -> "Timeline":
        """Build the timeline from the sorted, de-duplicated presentation timestamps.

        `rate_hint` is the stream's stated rate (average/guessed); `last_duration` the last
        packet's duration in time-base ticks (used for variable-rate input only).
        `truncate_after` keeps only the first N frames (the end is then the N-th frame's end).
        """
        if not pts:
            raise ValueError("no timestamps")
        if truncate_after is not None and len(pts) > truncate_after:
            last_duration = pts[truncate_after] - pts[truncate_after - 1]
            pts = pts[:truncate_after]
        tb = Fraction(time_base)
        start = pts[0] * tb
        rate = cls._constant_rate(pts, tb, rate_hint)
        if rate is not None:
            last = round((pts[-1] * tb - start) * rate)
            end = start + Fraction(last + 1) / rate
        else:
            if last_duration and last_duration > 0:
                dur = last_duration
            elif len(pts) >= 2:
                dur = pts[-1] - pts[-2]
            elif rate_hint:
                dur = max(1, round(1 / (rate_hint * tb)))
            else:
                dur = max(1, round(Fraction(1, 25) / tb))
            end = (pts[-1] + dur) * tb
        return cls(tb, start, end, rate, len(pts))

    @staticmethod
    def _constant_rate(pts: Sequence[int], tb: Fraction, rate: Fraction | None) -> Fraction | None:
        if not rate or rate <= 0:
            return None
        rate = Fraction(rate)
        tolerance = min(tb, 1 / (4 * rate))
        start = pts[0] * tb
        previous = -1
        for p in pts:
            offset = p * tb - start
            n = round(offset * rate)
            if n <= previous or abs(offset - n / rate) > tolerance:
                return None
            previous = n
        return rate


# ----------------------------------------------------------------------------------------------
# Output grids


@dataclass(frozen=True)
class Slot:
    """One output frame: index k, exact time, timestamp in the output time base, duration (ticks)."""

    k: int
    time: Fraction
    pts: int
    duration: int


class CfrGrid:
    """Output frames at `start + k / rate` for k < ceil(duration x rate)."""

    def __init__(self, timeline: Timeline, rate: Fraction):
        self.rate = Fraction(rate)
        self.start = timeline.start
        self.end = timeline.end
        self.time_base = fraction_gcd(self.start, 1 / self.rate)
        self.count = max(1, math.ceil((self.end - self.start) * self.rate))
        self._ticks_per_frame = int(1 / (self.rate * self.time_base))
        self._origin = int(self.start / self.time_base)
        self.next = 0

    def slot(self, k: int) -> Slot:
        return Slot(k, self.start + Fraction(k) / self.rate, self._origin + k * self._ticks_per_frame, self._ticks_per_frame)

    def note_input(self, time: Fraction, pts: int) -> None:
        """Every decoded input frame passes here (the constant grid does not depend on them)."""

    def until(self, limit: Fraction) -> Iterator[Slot]:
        """The not yet emitted output frames strictly before `limit`."""
        while self.next < self.count:
            s = self.slot(self.next)
            if s.time >= limit:
                return
            self.next += 1
            yield s

    def finish(self) -> Iterator[Slot]:
        while self.next < self.count:
            s = self.slot(self.next)
            self.next += 1
            yield s

    def state(self) -> dict:
        return {"next": self.next}

    def restore(self, state: dict) -> None:
        self.next = int(state["next"])


class SubdivideGrid:
    """`--factor N` on variable-rate input: each input interval cut into N equal parts.

    Time base: the input's divided by N, so every output timestamp is an integer.
    """

    rate = None

    def __init__(self, timeline: Timeline, factor: int):
        self.factor = int(factor)
        self.in_time_base = timeline.time_base
        self.time_base = timeline.time_base / self.factor
        self.end = timeline.end
        self.end_pts = int(timeline.end / timeline.time_base)
        self.count = self.factor * timeline.frames
        self.next = 0
        self._last: int | None = None          # input pts of the last noted frame
        self._pending: deque[tuple[int, int]] = deque()   # (pts0, pts1) intervals not yet emitted
        self._j = 0                              # next subdivision of _pending[0]

    def note_input(self, time: Fraction, pts: int) -> None:
        if self._last is not None and pts > self._last:
            self._pending.append((self._last, pts))
        if self._last is None or pts > self._last:
            self._last = pts

    def _emit(self, limit: Fraction | None) -> Iterator[Slot]:
        n = self.factor
        while self._pending:
            p0, p1 = self._pending[0]
            while self._j < n:
                pts = p0 * n + self._j * (p1 - p0)
                time = pts * self.time_base
                if limit is not None and time >= limit:
                    return
                self._j += 1
                k, self.next = self.next, self.next + 1
                yield Slot(k, time, pts, p1 - p0)
            self._pending.popleft()
            self._j = 0

    def until(self, limit: Fraction) -> Iterator[Slot]:
        return self._emit(limit)

    def finish(self) -> Iterator[Slot]:
        if self._last is not None and self.end_pts > self._last:
            self._pending.append((self._last, self.end_pts))
            self._last = self.end_pts
        return self._emit(None)

    def state(self) -> dict:
        return {"next": self.next, "last": self._last, "pending": [list(p) for p in self._pending], "j": self._j}

    def restore(self, state: dict) -> None:
        self.next = int(state["next"])
        self._last = state["last"]
        self._pending = deque(tuple(p) for p in state["pending"])
        self._j = int(state["j"])


def make_grid(timeline: Timeline, fps: Fraction | None = None, factor: int | None = None):
    """The output grid for `--fps RATE` or `--factor N` (exactly one of them)."""
    if (fps is None) == (factor is None):
        raise ValueError("give exactly one of fps and factor")
    if fps is not None:
        return CfrGrid(timeline, fps)
    if factor < 1:
        raise ValueError(f"factor must be 1 or more, got {factor}")
    if timeline.rate is not None:
        return CfrGrid(timeline, timeline.rate * factor)
    return SubdivideGrid(timeline, factor)


# ----------------------------------------------------------------------------------------------
# Planner

COPY, STILL, INTERP, REPEAT, FADE, HOLD = "copy", "still", "interp", "repeat", "fade", "hold"
KINDS = (COPY, STILL, INTERP, REPEAT, FADE, HOLD)
DEFAULT_KEEP_HOLDS = 4


@dataclass(frozen=True)
class ShotSettings:
    """How smooth one stretch of the film is (the command line's, or a `--shots` rule's).

    `cadence`: a new picture every `cadence` output frames (1: every frame; 2 at 60 fps: "30 on
    60"). `keep_holds`: with held frames dropped (`--dedup`), a picture held for more than this
    many input frames stays a hold (None: every hold is interpolated through). `off`: originals
    only, each output frame shows the input picture on screen at its time.
    """

    cadence: int = 1
    keep_holds: int | None = DEFAULT_KEEP_HOLDS
    off: bool = False


class Shots:
    """Settings by moment: `at(time, scene)` -> (rule key, settings). Without rules, the same
    settings everywhere (`runtime/shots.py` builds the per-shot kind from a `--shots` file)."""

    def __init__(self, base: ShotSettings = ShotSettings()):
        self.base = base

    def at(self, time: Fraction, scene: int) -> tuple[int, ShotSettings]:
        return -1, self.base


@dataclass(frozen=True)
class Job:
    """What output frame `slot.k` is. `src`/`dst` are input frame indices (dst only for
    interp/fade), `t` the position between them in (0, 1). `again`: the cadence shows the
    previous new picture once more (the same src/dst/t, computed once)."""

    slot: Slot | None
    kind: str
    src: int
    dst: int | None = None
    t: float | None = None
    t_exact: Fraction | None = None
    again: bool = False


@dataclass(frozen=True)
class Anchor:
    """A kept input frame as the planner sees it."""

    index: int
    time: Fraction
    pts: int


def _anchor_state(a: Anchor | None):
    return None if a is None else [a.index, frac_to_str(a.time), a.pts]


def _anchor_from(s) -> Anchor | None:
    return None if s is None else Anchor(int(s[0]), frac_from_str(s[1]), int(s[2]))


class Planner:
    """Turns input frames into output jobs on `grid` (see module docstring).

    `push(frame, cut, duplicate)` for each decoded frame in order (`cut`: a scene cut lies
    between the previous kept frame and this one; `duplicate`: the detector found it held),
    `finish()` at the end. Call `grid.note_input` for every decoded frame before pushing it.

    Without `dedup` every frame is an anchor. With it, a picture and its held frames are one
    unit: a picture held for at most `keep_holds` frames is interpolated through to the next
    picture (on twos become smooth); a longer one is kept: its output frames show the picture
    (`still`), and the motion out of it starts at its last held frame. `shots` gives the
    settings (cadence, keep_holds, off) by moment; the cadence restarts at each shot and scene.
    """

    def __init__(self, grid, scene_mode: str = "repeat", dedup: bool = False, shots: Shots | None = None):
        if scene_mode not in ("repeat", "crossfade"):
            raise ValueError(f"scene mode must be 'repeat' or 'crossfade', got {scene_mode!r}")
        self.grid = grid
        self.scene_mode = scene_mode
        self.dedup = dedup
        self.shots = shots if shots is not None else Shots()
        self.head: Anchor | None = None     # the picture on screen (its first frame)
        self.tail: Anchor | None = None     # its last held frame (dedup), else None
        self.held = 1                       # frames showing the picture so far
        self.kept = False                   # it is a kept hold (decided once it is long enough)
        self.prev: Anchor | None = None     # the last frame pushed
        self.scene = 1
        self.holds: list[dict] = []         # kept holds, for the report
        self._shot: list | None = None      # [rule, scene] of the last output frame
        self._phase = 0                     # output frame where its cadence started
        self._base: Job | None = None       # the cadence's last new picture
        self._anchors: dict[int, Anchor] = {}

    # -- input -----------------------------------------------------------------------------

    def push(self, cur: Anchor, cut: bool = False, duplicate: bool = False) -> list[Job]:
        self.prev = cur
        self._anchors[cur.index] = cur
        if self.head is None:
            # Nothing lies before the first frame (the grids start at it); kept for safety.
            self.head = cur
            return self._out([Job(s, HOLD, cur.index) for s in self.grid.until(cur.time)])
        if duplicate and self.dedup:
            self.tail, self.held = cur, self.held + 1
            limit = self.shots.at(self.head.time, self.scene)[1].keep_holds
            self.kept = self.kept or (limit is not None and self.held > limit)
            if not self.kept:
                return []                   # decided when the picture ends
            return self._out([self._still(s) for s in self.grid.until(cur.time)])
        jobs = self._close(cur, cut)
        if cut:
            self.scene += 1
        self.head, self.tail, self.held, self.kept = cur, None, 1, False
        self._prune()
        return jobs

    def finish(self) -> list[Job]:
        if self.head is None:
            return []
        jobs = self._close(None, False)
        self._prune()
        return jobs

    def _still(self, slot: Slot) -> Job:
        head = self.head
        return Job(slot, COPY if slot.time == head.time else STILL, head.index)

    def _close(self, cur: Anchor | None, cut: bool) -> list[Job]:
        """The picture on screen ends at `cur` (None: the film ends): its output frames up to
        `cur`. Interpolation starts at the picture's time, or at its last held frame if kept."""
        head = self.head
        start = head
        if self.kept:
            start = self.tail
            end = cur.time if cur is not None else self.grid.end
            self.holds.append({"frame": head.index, "start": float(head.time), "end": float(end),
                               "frames": self.held, "scene": self.scene})
        jobs = []
        slots = self.grid.until(cur.time) if cur is not None else self.grid.finish()
        for slot in slots:
            if slot.time <= start.time:
                jobs.append(self._still(slot))
            elif cur is None:
                jobs.append(Job(slot, HOLD, head.index))
            else:
                t = (slot.time - start.time) / (cur.time - start.time)
                if not cut:
                    jobs.append(Job(slot, INTERP, head.index, cur.index, float(t), t))
                elif self.scene_mode == "crossfade":
                    jobs.append(Job(slot, FADE, head.index, cur.index, float(t), t))
                else:
                    jobs.append(Job(slot, REPEAT, head.index))
        return self._out(jobs)

    # -- output: per-shot settings and cadence ---------------------------------------------

    def _out(self, jobs: list[Job]) -> list[Job]:
        out = []
        for job in jobs:
            rule, settings = self.shots.at(job.slot.time, self.scene)
            if settings.off and job.kind in (INTERP, FADE):
                job = Job(job.slot, STILL, job.src)          # the input picture on screen
            if [rule, self.scene] != self._shot:
                self._shot, self._phase = [rule, self.scene], job.slot.k
            if self._base is None or (job.slot.k - self._phase) % settings.cadence == 0:
                self._base = job
            else:
                b = self._base
                job = Job(job.slot, STILL if b.kind == COPY else b.kind, b.src, b.dst, b.t, b.t_exact, True)
            out.append(job)
        return out

    # -- what later jobs need, and resume --------------------------------------------------

    def needed(self) -> set[int]:
        """Input frame indices that later jobs may still show or interpolate from."""
        need = {self.head.index} if self.head is not None else set()
        if self._base is not None:
            need.add(self._base.src)
            if self._base.dst is not None:
                need.add(self._base.dst)
        return need

    def needed_anchors(self) -> list[Anchor]:
        """The anchors of `needed()`, in order (a resumed run decodes from the first)."""
        return sorted((self._anchors[i] for i in self.needed()), key=lambda a: a.index)

    def _prune(self) -> None:
        keep = self.needed() | ({self.prev.index} if self.prev is not None else set())
        self._anchors = {i: a for i, a in self._anchors.items() if i in keep}

    def state(self) -> dict:
        b = self._base
        return {
            "prev": _anchor_state(self.prev), "head": _anchor_state(self.head), "tail": _anchor_state(self.tail),
            "held": self.held, "kept": self.kept, "scene": self.scene, "holds": list(self.holds),
            "shot": self._shot, "phase": self._phase,
            "base": None if b is None else [b.kind, b.src, b.dst, b.t,
                                            None if b.t_exact is None else frac_to_str(b.t_exact)],
            "anchors": [_anchor_state(a) for a in self._anchors.values()],
            "grid": self.grid.state(),
        }

    def restore(self, state: dict) -> Anchor | None:
        """Restore; returns the last frame pushed (the resumed decode continues after it)."""
        self.grid.restore(state["grid"])
        self.prev, self.head, self.tail = (_anchor_from(state[k]) for k in ("prev", "head", "tail"))
        self.held, self.kept, self.scene = int(state["held"]), bool(state["kept"]), int(state["scene"])
        self.holds = list(state["holds"])
        self._shot, self._phase = state["shot"], int(state["phase"])
        b = state["base"]
        self._base = None if b is None else Job(None, b[0], b[1], b[2], b[3], None if b[4] is None else frac_from_str(b[4]))
        self._anchors = {a.index: a for a in map(_anchor_from, state["anchors"])}
        return self.prev
