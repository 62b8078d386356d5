"""The video runtime (`dainrt run`): a film of any length, decode -> inference -> encode.

Modules, one concept each:

* `timing`: exact input/output timestamps, the output grid and the planner (what every output
  frame is: an input frame, or a pair and t; kept holds and cadence decided there);
* `shots`: the `--shots FILE` format (per-shot cadence, keep-holds, off) and settings by moment;
* `scenes`: held-frame (duplicate) and scene-cut detection on thumbnails;
* `decode`: probing and the decode thread (PyAV), image-sequence input;
* `encode`: encoder settings, segment writers, the encode thread, final assembly with the
  audio and subtitle packets copied;
* `transfer`: host <-> device copies (pinned memory and separate CUDA streams on a GPU);
* `resume`: the work folder and the state file that make a run resumable;
* `pipeline`: the run itself (threads, bounded queues, progress, report);
* `compare`: the side-by-side clip (`dainrt compare`).
"""
from .compare import compare
from .decode import InputInfo, probe
from .pipeline import Interrupted, RunOptions, run, summary_line
from .timing import Job, Planner, Timeline, make_grid, parse_rate

__all__ = [
    "InputInfo", "Interrupted", "Job", "Planner", "RunOptions", "Timeline", "compare", "make_grid",
    "parse_rate", "probe", "run", "summary_line",
]
