"""Padding to the network's grid (docs/dain-spec.md §2.2) and cropping back.

The official rule, per axis of length L: if L is not a multiple of 128, pad to the next multiple
of 128 (before = floor(extra/2), after = the rest); if it is, pad 32 on each side. Padding
replicates the edge pixels. The result is always a multiple of 64, which is what the network
needs (PWC /64, kernel net /32, MegaDepth /16). `mode="mod64"` pads to the next multiple of 64
instead (about 9 % less work; border pixels differ slightly from official DAIN).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class Padding(NamedTuple):
    """Pixels added on each side: left, right, top, bottom."""

    left: int
    right: int
    top: int
    bottom: int


def _axis(length: int, mode: str) -> tuple[int, int]:
    if length < 1:
        raise ValueError(f"image side must be >= 1 pixel, got {length}")
    if mode == "official":
        padded = length + 64 if length % 128 == 0 else (length // 128 + 1) * 128
    elif mode == "mod64":
        padded = -(-length // 64) * 64
    else:
        raise ValueError(f"unknown padding mode {mode!r} (use 'official' or 'mod64')")
    extra = padded - length
    return extra // 2, extra - extra // 2


def padding_for(height: int, width: int, mode: str = "official") -> Padding:
    """Padding for an image of `height` x `width` pixels."""
    left, right = _axis(width, mode)
    top, bottom = _axis(height, mode)
    return Padding(left, right, top, bottom)


def padded_size(height: int, width: int, mode: str = "official") -> tuple[int, int]:
    """(padded height, padded width) in pixels."""
    p = padding_for(height, width, mode)
    return height + p.top + p.bottom, width + p.left + p.right


def pad(images: torch.Tensor, padding: Padding) -> torch.Tensor:
    """Edge-replicate (B,C,H,W) images by `padding`."""
    return F.pad(images, tuple(padding), mode="replicate")


def crop(images: torch.Tensor, padding: Padding) -> torch.Tensor:
    """Undo `pad`: (B,C,Hp,Wp) -> (B,C,H,W)."""
    h, w = images.shape[-2:]
    return images[..., padding.top : h - padding.bottom, padding.left : w - padding.right]
