"""Exponential moving average of the generator's weights (B.3)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters. Buffers (BN running statistics
    per timestep, spectral-norm vectors) are copied, so the EMA generator samples in eval mode
    with the statistics of the generator it averages (appendix D; train.ema_bn_stats="copy")."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


def ema_decay_at(step: int, decay: float, start: int) -> float:
    """B.3: accumulated from step ``start`` on; before that the EMA tracks G exactly."""
    return decay if step >= start else 0.0
