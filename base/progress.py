"""Progress bars for long work: a tqdm bar with rate and ETA on stderr when it is a terminal,
nothing otherwise (logs and CI output stay clean)."""
from __future__ import annotations

import sys


def progress_bar(iterable=None, *, total: int | None = None, desc: str, unit: str, show: bool | None = None,
                 initial: int = 0):
    """A tqdm bar over `iterable` (or updated by hand up to `total`); `show` None: only when
    stderr is a terminal. Print other lines through `bar.write` while it is open."""
    from tqdm import tqdm

    if show is None:
        show = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=not show,
                dynamic_ncols=True, smoothing=0.1, file=sys.stderr)
