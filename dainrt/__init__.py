"""dainrt: DAIN video frame interpolation, fast enough for real films.

    import dainrt
    frames = dainrt.interpolate(frame0, frame1, [0.25, 0.5, 0.75], weights="best.pth")
"""
from dainrt.base import __version__  # noqa: E402  (one version, read by every layer)

from dainrt.api import Interpolator, interpolate, times_for_factor  # noqa: E402
from dainrt.base.errors import DainrtError  # noqa: E402

__all__ = ["DainrtError", "Interpolator", "__version__", "interpolate", "times_for_factor"]
