"""The straightforward formulation of DVD-GAN's blocks: the oracle that tests and ``dvdgan bench``
compare the networks of this package against.

Each class overrides one block's ``forward`` with the literal sequence of operations: the ConvGRU
equations of B.2 frame by frame (three spectrally normed convolutions on concatenated tensors),
nearest upsampling then the 3x3 convolution, the 3x3 convolution then average pooling, gains
and biases repeated per frame. Same function, same parameters and buffers (state-dict keys are
identical, so ``load_state_dict`` works both ways), slower. Whole networks are the networks of
this package with every block switched to its straightforward class (:func:`make_straightforward`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dvdgan.config import ModelConfig
from dvdgan.models.discriminators import DualDiscriminator
from dvdgan.models.generator import Generator
from dvdgan.models.layers import ConditionalBatchNorm, ConvGRU, DBlock, GBlock
from dvdgan.models.prediction import build_generator


class StraightforwardConditionalBatchNorm(ConditionalBatchNorm):
    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gain = (1 + self.gain(cond)).repeat_interleave(self.frames, 0)  # one row per frame
        bias = self.bias(cond).repeat_interleave(self.frames, 0)
        return self.normalize(x) * gain[:, :, None, None] + bias[:, :, None, None]


class StraightforwardConvGRU(ConvGRU):
    def step(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step of the four equations of B.2, literally."""
        hx = torch.cat([h, x], 1)
        r = torch.sigmoid(self.reset_gate(hx))
        u = torch.sigmoid(self.update_gate(hx))
        c = torch.relu(self.candidate(torch.cat([x, r * h], 1)))
        return u * h + (1 - u) * c

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None, frames: int) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[-2:]) if h0 is None else h0
        out = []
        for t in range(frames):
            h = self.step(x if x.dim() == 4 else x[:, t], h)
            out.append(h)
        return torch.stack(out, 1)


class StraightforwardGBlock(GBlock):
    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(x, cond))
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), cond)))
        return h + (x if self.shortcut is None else self.shortcut(x))


class StraightforwardDBlock(DBlock):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.pool(self.conv2(F.relu(self.conv1(h))))
        if self.shortcut is not None:
            # BigGAN: conv before pooling for pre-activated blocks, after it for the first block.
            x = self.pool(self.shortcut(x)) if self.preactivation else self.shortcut(self.pool(x))
        return h + x


_STRAIGHTFORWARD = {
    ConditionalBatchNorm: StraightforwardConditionalBatchNorm,
    ConvGRU: StraightforwardConvGRU,
    GBlock: StraightforwardGBlock,
    DBlock: StraightforwardDBlock,
}


def make_straightforward(module: nn.Module) -> nn.Module:
    """Switch every block of ``module`` to its straightforward class, in place (the subclasses
    add no parameters or buffers: weights, running statistics and keys are untouched); returns
    ``module``. Use on a copy to keep the original fast."""
    for m in module.modules():
        if type(m) in _STRAIGHTFORWARD:
            m.__class__ = _STRAIGHTFORWARD[type(m)]
    return module


def build_straightforward_generator(cfg: ModelConfig) -> Generator:
    """As :func:`dvdgan.models.prediction.build_generator`, every block straightforward."""
    return make_straightforward(build_generator(cfg))


def build_straightforward_discriminator(cfg: ModelConfig) -> DualDiscriminator:
    """:class:`DualDiscriminator`, every block straightforward."""
    return make_straightforward(DualDiscriminator(cfg))
