"""DVD-GAN-FP: the frame-conditional generator for future video prediction (B.4, Figure 8).

Each of the C conditioning frames goes through a residual stack identical to D_S. After each
block, the C feature maps are stacked on channels and passed through a 3x3 conv and relu; the
result is the initial state of the ConvGRU of the generator group with the same spatial
resolution, so the smallest (most processed) features enter the earliest group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dvdgan.config import ModelConfig
from dvdgan.models.discriminators import d_widths
from dvdgan.models.generator import Generator
from dvdgan.models.layers import DBlock, SNConv2d


class ConditioningStack(nn.Module):
    """Context frames [B, C, 3, H, W] -> one initial ConvGRU state per generator group."""

    def __init__(self, cfg: ModelConfig, state_resolutions: list[int], state_channels: list[int]):
        super().__init__()
        widths, n, c = d_widths(cfg), len(cfg.d_multipliers), cfg.context_frames
        self.blocks = nn.ModuleList(
            DBlock(3 if i == 0 else widths[i - 1], widths[i], downsample=i < n - 1, preactivation=i > 0,
                   sn_eps=cfg.sn_eps)
            for i in range(n)
        )  # B.4: a residual network identical to D_S
        out_res = [cfg.resolution // 2 ** min(i + 1, n - 1) for i in range(n)]  # after each block
        # For each G group, the deepest block whose output has the group's resolution.
        self.taps: list[int] = []
        for r in state_resolutions:
            matches = [i for i, rr in enumerate(out_res) if rr == r]
            if not matches:
                raise ValueError(f"no conditioning block at resolution {r}")
            self.taps.append(matches[-1])
        self.projections = nn.ModuleList(
            SNConv2d(c * widths[tap], ch, 3, padding=1, sn_eps=cfg.sn_eps)
            for tap, ch in zip(self.taps, state_channels)
        )

    def forward(self, context: torch.Tensor) -> list[torch.Tensor]:
        b, c = context.shape[:2]
        h, feats = context.flatten(0, 1), []  # each conditioning frame separately
        for blk in self.blocks:
            h = blk(h)
            feats.append(h)
        return [F.relu(proj(feats[tap].unflatten(0, (b, c)).flatten(1, 2)))  # the C maps stacked on channels
                for tap, proj in zip(self.taps, self.projections)]


class PredictionGenerator(Generator):
    """G(z, y, context) -> the T frames that follow the C context frames, [B, T, 3, H, W]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.conditioning = ConditioningStack(cfg, self.state_resolutions, self.state_channels)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, context: torch.Tensor | None = None, *,
                class_embedding: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            raise ValueError("a prediction generator needs the context frames")
        return super().forward(z, y, class_embedding=class_embedding, initial_states=self.conditioning(context))


def build_generator(cfg: ModelConfig) -> Generator:
    """The synthesis generator, or DVD-GAN-FP's when the config has context frames."""
    return PredictionGenerator(cfg) if cfg.context_frames > 0 else Generator(cfg)


def full_video(generator: nn.Module, z: torch.Tensor, y: torch.Tensor, context: torch.Tensor | None = None
               ) -> torch.Tensor:
    """The whole video G makes, as D judges it and people watch it: G(z, y) for synthesis; for
    DVD-GAN-FP the C context frames followed by the T predicted ones, with the class id fixed to 0
    (B.4). ``generator`` may be wrapped (DDP, torch.compile)."""
    if context is None:
        return generator(z, y)
    return torch.cat([context, generator(z, torch.zeros_like(y), context)], 1)
