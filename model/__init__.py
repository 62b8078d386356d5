"""Faithful PyTorch DAIN, split into streaming stages. Imports nothing else of dainrt."""
from .config import OFFICIAL, ModelConfig
from .dain import DAIN
from .padding import Padding, crop, pad, padded_size, padding_for
from .stages import STAGE_IO, STAGE_NAMES, FrameStage, PairStage, RectifyStage, Stages, WarpStage

__all__ = [
    "DAIN", "ModelConfig", "OFFICIAL", "Padding", "crop", "pad", "padded_size", "padding_for",
    "STAGE_IO", "STAGE_NAMES", "FrameStage", "PairStage", "WarpStage", "RectifyStage", "Stages",
]
