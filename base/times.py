"""In-between times as users give them: a factor, or a list of t values in (0, 1)."""
from __future__ import annotations

from typing import Sequence

from .errors import DainrtError, OptionError


def times_for_factor(factor: int) -> list[float]:
    """The in-between times of a frame-rate multiplication: factor 4 -> [0.25, 0.5, 0.75]."""
    if factor < 2:
        raise OptionError("factor", f"must be 2 or more, got {factor}")
    return [k / factor for k in range(1, factor)]


def check_times(times: Sequence[float]) -> list[float]:
    """`times` as floats, each strictly between 0 and 1 (DainrtError otherwise)."""
    times = [float(t) for t in times]
    if not times:
        raise DainrtError("no time steps given")
    bad = [t for t in times if not 0.0 < t < 1.0]
    if bad:
        raise DainrtError(f"time steps must lie strictly between 0 and 1, got {bad}")
    return times
