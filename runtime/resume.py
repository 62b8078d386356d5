"""The work folder and its state file: what makes an interrupted run resumable.

A run writing `film_60.mp4` works in `film_60.mp4.dainrt-partial/` beside it:

* `seg-NNNNNN.mkv` + `seg-NNNNNN.json`: finished segments (encoded video, exact timestamps);
  `*.part`: the segment being written (discarded when a run stops);
* `state.json`: the run's fingerprint (input, options, weights), the finished segments, and
  the *resume point*: the planner, detector and report state from which the next segment can
  be replayed (the input frame it starts from, the next output frame, the scene cuts and held
  frames seen so far). It is rewritten atomically after every finished segment, so a run
  stopped at any moment (Ctrl-C, a full disk, a crash, a power cut) leaves a consistent state.

`--resume` checks the fingerprint (the same input file, the same options, the same weights),
seeks the input to the resume point and continues; the finished segments are not recomputed.
On success the output is assembled, renamed to its final name and the folder is removed.
Disk use during a run: the segments plus, while assembling, the output once more.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from dainrt.base.errors import DainrtError
from dainrt.base.files import write_json

STATE_FORMAT = "dainrt-run-1"
STATE_FILE = "state.json"
WORK_SUFFIX = ".dainrt-partial"


def work_dir_for(output: Path, image_sequence: bool) -> Path:
    """`out.mp4` -> `out.mp4.dainrt-partial`; `frames/%05d.png` -> `frames.dainrt-partial`."""
    target = output.parent if image_sequence else output
    return target.parent / (target.name + WORK_SUFFIX)


def file_identity(path: str | os.PathLike) -> dict:
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass
class RunState:
    work: Path
    fingerprint: dict
    output_frames: int
    segment_frames: int
    segments: list[dict] = field(default_factory=list)
    resume: dict | None = None
    complete: bool = False
    scene_cuts: list[dict] = field(default_factory=list)
    duplicates: list[float] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.work / STATE_FILE

    @property
    def frames_done(self) -> int:
        return sum(s["frames"] for s in self.segments)

    def save(self) -> None:
        write_json(self.path, {
            "format": STATE_FORMAT, "fingerprint": self.fingerprint, "output_frames": self.output_frames,
            "segment_frames": self.segment_frames, "segments": self.segments, "resume": self.resume,
            "complete": self.complete, "scene_cuts": self.scene_cuts, "duplicates": self.duplicates,
        })

    @classmethod
    def load(cls, work: Path) -> "RunState | None":
        path = work / STATE_FILE
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text())
            if d.get("format") != STATE_FORMAT:
                raise ValueError(f"format {d.get('format')!r}")
            return cls(work, d["fingerprint"], int(d["output_frames"]), int(d["segment_frames"]),
                       list(d["segments"]), d["resume"], bool(d["complete"]), list(d["scene_cuts"]),
                       list(d["duplicates"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DainrtError(f"the state of the unfinished run in {work} is unreadable ({err}); "
                              f"delete that folder to start over") from None

    def check(self, fingerprint: dict) -> None:
        """DainrtError naming what differs from the interrupted run."""
        diff = [k for k in sorted(set(fingerprint) | set(self.fingerprint)) if fingerprint.get(k) != self.fingerprint.get(k)]
        if diff:
            shown = "; ".join(f"{k}: was {self.fingerprint.get(k)!r}, now {fingerprint.get(k)!r}" for k in diff[:3])
            raise DainrtError(
                f"cannot resume {self.work}: the input or options differ from the interrupted run ({shown}); "
                f"rerun with the same ones, or delete that folder to start over"
            )


def segment_problem(work: Path, seg: dict) -> str | None:
    """Why the finished segment `seg` (its record in the state) cannot be used as it is, or None
    when it is sound: its file is there and agrees with its record (as many pictures as frames;
    as many packets in the video as its `.json` lists, for as many frames)."""
    import av

    index, name = seg["index"], f"seg-{seg['index']:06d}"
    folder, video, record = work / name, work / (name + ".mkv"), work / (name + ".json")
    if folder.is_dir():
        pictures = sum(1 for _ in folder.iterdir())
        return None if pictures == seg["frames"] else f"segment {index} holds {pictures} of its {seg['frames']} pictures"
    if not (video.is_file() and record.is_file()):
        return f"segment {index} is missing"
    try:
        meta = json.loads(record.read_text())
        with av.open(str(video)) as container:
            packets = sum(1 for p in container.demux(container.streams.video[0]) if p.size)
    except (OSError, ValueError, IndexError, av.error.FFmpegError):
        return f"segment {index} is unreadable"
    if meta.get("frames") != seg["frames"] or len(meta.get("packets", ())) != packets:
        return f"segment {index} does not match its record"
    return None


def prepare_work_dir(work: Path, resume: bool, fingerprint: dict, output_frames: int, segment_frames: int,
                     output: Path, redo_damaged: bool = False) -> tuple[RunState, bool]:
    """The run state to use, and whether it continues an interrupted run. A finished segment that
    does not verify (`segment_problem`) is an error, or with `redo_damaged` (segments that do not
    depend on each other: `--cluster`) forgotten, to be made again."""
    state = RunState.load(work) if work.exists() else None
    if state is not None and not state.segments and not state.complete:
        state = None             # nothing finished in it: it never blocks a fresh start
    if state is not None and not resume:
        raise DainrtError(
            f"{work} holds an unfinished run of {output}: add --resume to continue it, or delete the folder to start over"
        )
    if state is not None:
        state.check(fingerprint)
        sound = []
        for seg in state.segments:
            problem = segment_problem(work, seg)
            if problem is None:
                sound.append(seg)
            elif not redo_damaged:
                raise DainrtError(f"the unfinished run in {work} is damaged ({problem}); delete that folder to start over")
        state.segments = sound
        for leftover in work.glob("*.part"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        return state, True
    if work.exists():
        shutil.rmtree(work)          # a folder without state: nothing finished in it
    try:
        work.mkdir(parents=False)
    except FileNotFoundError:
        raise DainrtError(f"cannot write {output}: folder {work.parent} does not exist") from None
    except OSError as err:
        raise DainrtError(f"cannot write {output}: {err.strerror} ({work.parent})") from None
    state = RunState(work, fingerprint, output_frames, segment_frames)
    try:
        state.save()
    except OSError as err:
        shutil.rmtree(work, ignore_errors=True)
        raise DainrtError(f"cannot write {output}: {err.strerror} ({work})") from None
    return state, False
