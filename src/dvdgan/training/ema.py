"""Exponential moving average of the generator's weights (B.3)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dvdgan.models.layers import TimestepBatchNorm


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


@torch.no_grad()
def standing_bn_stats(generator: nn.Module, draw_inputs: Callable[[int], tuple], batches: int) -> None:
    """BigGAN's "standing statistics" (train.ema_bn_stats="standing"): replace the per-timestep
    BN running statistics of ``generator`` by the plain average of the batch statistics of
    ``batches`` forward passes in train mode, ``generator(*draw_inputs(i))`` for i = 0, 1, ....

    The EMA generator's weights are an average over many updates, so the statistics of the
    generator it averages ("copy") do not quite match its own activations; the standing
    statistics do. With cross-replica BN every replica must call this together.
    """
    bns = [m for m in generator.modules() if isinstance(m, TimestepBatchNorm)]
    momenta = [m.momentum for m in bns]
    was_training = generator.training
    generator.train()
    try:
        for i in range(batches):
            for m in bns:  # running <- running + (batch - running) / (i + 1): the mean of the batches
                m.momentum = 1.0 / (i + 1)
            generator(*draw_inputs(i))
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        generator.train(was_training)
