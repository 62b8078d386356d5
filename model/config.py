"""Model configuration: the width multiplier and the channel counts that follow from it.

width = 1.0 is the official DAIN (24,031,656 parameters, loads the official `best.pth`).
Smaller widths scale every internal channel count and keep every interface that carries
meaning: RGB in, 2-channel flows, 16 kernel taps (4x4), 81 correlation channels (max
displacement 4). The context tensor is `3 + 3*c64 + 1` channels (image, three feature blocks,
log-depth last) and the rectify input is `45 + 2*context` channels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

FILTER_SIZE = 4          # adaptive-warp kernels are 4x4 = 16 taps (the only size with weights)
FLOW_SCALE = 20.0        # PWC predicts flow / 20 (div_flow)
MAX_DISPLACEMENT = 4     # PWC correlation: 9x9 = 81 channels


@dataclass(frozen=True)
class ModelConfig:
    """What a checkpoint records about the network's shape. `width` scales channel counts."""

    width: float = 1.0

    def __post_init__(self):
        if not (0.0 < self.width <= 1.0):
            raise ValueError(f"width must be in (0, 1], got {self.width}")

    def ch(self, n: int) -> int:
        """Channel count `n` of the official network, scaled by `width` (at least 1)."""
        return max(1, int(round(n * self.width)))

    @property
    def context_channels(self) -> int:
        """Channels of K = cat(image, ctx features, log-depth): 196 at width 1."""
        return 3 + 3 * self.ch(64) + 1

    @property
    def rectify_channels(self) -> int:
        """Channels of the rectify input: blend, 2 warped images, 2 flows, 2 kernels, 2 contexts (437)."""
        return 3 + 3 + 3 + 2 + 2 + FILTER_SIZE**2 * 2 + 2 * self.context_channels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        unknown = set(d) - {"width"}
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(width=float(d.get("width", 1.0)))

