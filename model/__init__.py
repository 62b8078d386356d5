"""Faithful PyTorch DAIN, split into streaming stages, with its checkpoint I/O (`checkpoint`),
where weights come from (`weights`) and the bundled default model (`data/`). Imports only
`dainrt.base` of the rest of dainrt."""
from .config import ModelConfig
from .dain import DAIN
from .padding import Padding, crop, pad, padded_size, padding_for
from .stages import STAGE_IO, STAGE_NAMES, CustomOps, FrameStage, PairStage, RectifyStage, Stages, WarpStage

__all__ = [
    "DAIN", "ModelConfig", "Padding", "crop", "pad", "padded_size", "padding_for", "CustomOps",
    "STAGE_IO", "STAGE_NAMES", "FrameStage", "PairStage", "WarpStage", "RectifyStage", "Stages",
]
