"""Conversions between stored videos and the model's tensor layout.

Datasets yield uint8 videos [T, H, W, 3] (cheap to move between processes); models take float
videos [B, T, 3, H, W] in [-1, 1]. These two functions are the only place that converts.
"""

from __future__ import annotations

import torch


def to_model_input(video: torch.Tensor) -> torch.Tensor:
    """uint8 [..., T, H, W, 3] -> float32 [..., T, 3, H, W] in [-1, 1]."""
    if video.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 video, got {video.dtype}")
    return video.movedim(-1, -3).float().div_(127.5).sub_(1.0)


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """float [..., T, 3, H, W] in [-1, 1] -> uint8 [..., T, H, W, 3] (rounded, clamped)."""
    return ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8).movedim(-3, -1)
