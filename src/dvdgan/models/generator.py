"""The DVD-GAN generator (B.2, Figure 3 left).

[z; e(y)] -> affine -> 4x4 x ch0; then per resolution group: a ConvGRU unrolled once per frame,
followed by two BigGAN residual blocks applied to every frame independently (the first keeps
the resolution, the second doubles it); finally BN -> relu -> conv -> tanh (appendix D: removing
this last BN breaks training). [z; e(y)] feeds every class-conditional BN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dvdgan.config import ModelConfig
from dvdgan.models.layers import ConditionalBatchNorm, ConvGRU, GBlock, SeparableAttention, SNConv2d, SNLinear


class GeneratorGroup(nn.Module):
    """One resolution group: ConvGRU, then GBlock (same resolution), then GBlock (x2)."""

    def __init__(self, cfg: ModelConfig, in_ch: int, out_ch: int, resolution: int):
        super().__init__()
        cond = cfg.z_dim + cfg.embed_dim
        kw = dict(cond_dim=cond, frames=cfg.frames, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum,
                  cross_replica=cfg.cross_replica_bn, sn_eps=cfg.sn_eps)
        self.resolution = resolution  # spatial size of the ConvGRU state (input resolution)
        self.gru = ConvGRU(in_ch, in_ch, cfg.gru_kernel, sn_eps=cfg.sn_eps)
        self.block1 = GBlock(in_ch, in_ch, upsample=False, **kw)  # B.2: "we skip upsampling in the first block"
        self.block2 = GBlock(in_ch, out_ch, upsample=True, **kw)
        self.initial_state = (
            nn.Parameter(torch.zeros(1, in_ch, resolution, resolution)) if cfg.gru_initial_state == "learned" else None
        )
        self.attention = SeparableAttention(out_ch, cfg.sn_eps) if 2 * resolution in cfg.g_attention else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor, frames: int, h0: torch.Tensor | None) -> torch.Tensor:
        """x: [B, T, C, H, W] or [B, C, H, W] (same input at every frame) -> [B, T, C', 2H, 2W]."""
        b = cond.shape[0]
        if h0 is None and self.initial_state is not None:
            h0 = x.new_zeros(b, self.gru.hidden_channels, self.resolution, self.resolution) + self.initial_state
        h = self.gru(x, h0, frames).flatten(0, 1)  # B.2: time folded into batch for the blocks
        h = self.block2(self.block1(h, cond), cond)
        h = h.unflatten(0, (b, frames))
        if self.attention is not None:
            h = self.attention(h)
        return h


class Generator(nn.Module):
    """G(z, y) -> video [B, T, 3, H, W] in [-1, 1]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.g_ch * m for m in cfg.g_multipliers]  # B.2: width = ch x multiplier
        cond = cfg.z_dim + cfg.embed_dim
        self.embed = nn.Embedding(cfg.num_classes, cfg.embed_dim)  # B.2: learned linear embedding e(y)
        if not self.embed.weight.is_meta:
            init = nn.init.orthogonal_ if cfg.g_embed_init == "orthogonal" else nn.init.normal_
            init(self.embed.weight)
        self.affine = SNLinear(cond, 4 * 4 * widths[0], sn_eps=cfg.sn_eps)  # B.2: affine to [4, 4, ch0]
        self.groups = nn.ModuleList(
            GeneratorGroup(cfg, widths[i], widths[i + 1], 4 * 2**i) for i in range(cfg.num_groups)
        )
        # Appendix D: final BN -> relu -> conv -> tanh (class-conditional like every BN in G).
        self.out_bn = ConditionalBatchNorm(widths[-1], cond, cfg.frames, cfg.bn_eps, cfg.bn_momentum,
                                           cfg.cross_replica_bn, cfg.sn_eps)
        self.out_conv = SNConv2d(widths[-1], 3, 3, padding=1, sn_eps=cfg.sn_eps)

    @property
    def state_resolutions(self) -> list[int]:
        return [g.resolution for g in self.groups]

    @property
    def state_channels(self) -> list[int]:
        return [g.gru.hidden_channels for g in self.groups]

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, *, class_embedding: torch.Tensor | None = None,
                initial_states: list[torch.Tensor] | None = None) -> torch.Tensor:
        """z: [B, z_dim]; y: [B] class ids, or ``class_embedding`` [B, embed_dim] in place of e(y)
        (class interpolation, E.2); initial_states: optional ConvGRU states per group
        (DVD-GAN-FP, B.4), smallest resolution first."""
        if (y is None) == (class_embedding is None):
            raise ValueError("pass exactly one of y and class_embedding")
        cfg, b = self.cfg, z.shape[0]
        cond = torch.cat([z, self.embed(y) if class_embedding is None else class_embedding], 1)
        x = self.affine(cond).view(b, -1, 4, 4)  # the ConvGRU input of the first group, every frame
        for i, group in enumerate(self.groups):
            x = group(x, cond, cfg.frames, None if initial_states is None else initial_states[i])
        h = F.relu(self.out_bn(x.flatten(0, 1), cond))
        return torch.tanh(self.out_conv(h)).unflatten(0, (b, cfg.frames))
