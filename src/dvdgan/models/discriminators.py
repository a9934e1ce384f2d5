"""The dual discriminator of DVD-GAN (section 3.1, B.2).

SpatialDiscriminator (D_S) judges k = frames_per_spatial_d frames drawn uniformly from each
video at full resolution and sums the per-frame scores. TemporalDiscriminator (D_T) judges the
whole video after a spatial downsampling phi (2x2 average pooling by default); its first two
residual blocks are 3-D. Both use projection class conditioning (Miyato & Koyama).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dvdgan.config import ModelConfig
from dvdgan.models.layers import DBlock, SeparableAttention, SNEmbedding, SNLinear


def sample_frame_indices(batch: int, available: int, k: int, *, first: int = 0, per_video: bool = True,
                         replacement: bool = False, device=None, generator: torch.Generator | None = None
                         ) -> torch.Tensor:
    """Indices [batch, k] of the frames D_S judges, drawn uniformly from [first, first+available).

    3.1: "randomly sampling k full-resolution frames" of each video: by default every video gets
    its own draw, without replacement, sorted in time.
    """
    rows = batch if per_video else 1
    if replacement:
        idx = torch.randint(available, (rows, k), generator=generator)
    else:
        idx = torch.rand(rows, available, generator=generator).argsort(dim=1)[:, :k]
    idx = idx.sort(dim=1).values + first
    return idx.expand(batch, k).to(device)


def d_widths(cfg: ModelConfig) -> list[int]:
    return [cfg.d_ch * m for m in cfg.d_multipliers]  # B.2: D widths ch x [2, 4, 8, 16, 16] etc.


class _ProjectionHead(nn.Module):
    """relu -> global sum pooling -> linear + <embed(y), h> (projection conditioning, B.3)."""

    def __init__(self, channels: int, num_classes: int, sn_eps: float):
        super().__init__()
        self.linear = SNLinear(channels, 1, sn_eps=sn_eps)
        self.embed = SNEmbedding(num_classes, channels, sn_eps=sn_eps)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


class SpatialDiscriminator(nn.Module):
    """D_S: a BigGAN 2-D discriminator applied to k full-resolution frames of each video."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.frames_per_spatial_d = cfg.frames_per_spatial_d  # k (3.1)
        widths, n = d_widths(cfg), len(cfg.d_multipliers)
        blocks, res = [], cfg.resolution
        for i in range(n):
            down = i < n - 1
            blocks.append(DBlock(3 if i == 0 else widths[i - 1], widths[i], downsample=down,
                                 preactivation=i > 0, sn_eps=cfg.sn_eps))
            res = res // 2 if down else res
            if res in cfg.d_attention:
                blocks.append(SeparableAttention(widths[i], cfg.sn_eps))
        self.blocks = nn.ModuleList(blocks)
        self.head = _ProjectionHead(widths[-1], cfg.num_classes, cfg.sn_eps)

    def draw_frame_indices(self, batch: int, frames: int, *, device=None,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """Indices [batch, k] of the frames D_S judges in ``batch`` videos of ``frames`` frames,
        drawn as model.spatial_d_sampling / spatial_d_replacement say. In prediction models the
        first C (conditioning) frames are never drawn (B.4)."""
        cfg = self.cfg
        return sample_frame_indices(batch, frames - cfg.context_frames, self.frames_per_spatial_d,
                                    first=cfg.context_frames, per_video=cfg.spatial_d_sampling == "per_video",
                                    replacement=cfg.spatial_d_replacement, device=device, generator=generator)

    def sample_frames(self, video: torch.Tensor, frame_indices: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, T_total, 3, H, W] -> the k frames D_S judges, [B, k, 3, H, W]: ``frame_indices``
        [B, k], or a fresh draw (:meth:`draw_frame_indices`)."""
        b, t = video.shape[:2]
        if frame_indices is None:
            frame_indices = self.draw_frame_indices(b, t, device=video.device, generator=generator)
        return video[torch.arange(b, device=video.device)[:, None], frame_indices.to(video.device)]

    def score_frames(self, frames: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """frames [B, k, 3, H, W] -> per-frame scores [B, k]."""
        b, k = frames.shape[:2]
        h = frames.flatten(0, 1)
        for blk in self.blocks:
            h = blk(h.unsqueeze(1)).squeeze(1) if isinstance(blk, SeparableAttention) else blk(h)
        h = F.relu(h).sum(dim=(2, 3))
        return self.head(h, y.repeat_interleave(k)).view(b, k)

    def forward(self, video: torch.Tensor, y: torch.Tensor, frame_indices: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """video [B, T, 3, H, W] -> D_S score [B]: the sum of the k per-frame scores (3.1), of
        the frames ``frame_indices`` [B, k] (long) when given, else of a fresh draw."""
        return self.score_frames(self.sample_frames(video, frame_indices, generator), y).sum(1)


def downsample_phi(video: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """phi of 3.1 / 4.3 on [B, T, 3, H, W]: "avg2" (the paper's choice), "avg4", "identity",
    or "crop_half" (a random half-size crop per video, as TGANv2)."""
    if mode == "identity":
        return video
    b, t, c, h, w = video.shape
    if mode in ("avg2", "avg4"):
        f = 2 if mode == "avg2" else 4
        return F.avg_pool2d(video.flatten(0, 1), f).unflatten(0, (b, t))
    if mode == "crop_half":
        oy = torch.randint(h - h // 2 + 1, (b,), generator=generator)
        ox = torch.randint(w - w // 2 + 1, (b,), generator=generator)
        return torch.stack([video[i, :, :, oy[i]:oy[i] + h // 2, ox[i]:ox[i] + w // 2] for i in range(b)])
    raise ValueError(f"unknown temporal downsampling {mode!r}")


class TemporalDiscriminator(nn.Module):
    """D_T: phi(video) -> 3-D residual blocks (``blocks3d``) -> BigGAN 2-D blocks with time folded
    into batch (``blocks2d``) -> sum over time and space -> projection head. Optional separable
    attention (appendix A) sits in either list after the block that reaches its resolution."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        widths, n = d_widths(cfg), len(cfg.d_multipliers)
        div = {"avg2": 2, "avg4": 4, "identity": 1, "crop_half": 2}[cfg.temporal_downsample]
        self.input_resolution = cfg.resolution // div
        self.blocks3d, self.blocks2d = nn.ModuleList(), nn.ModuleList()
        res = self.input_resolution
        for i in range(n):
            down = i < n - 1 and res > 1
            dims = 3 if i < cfg.temporal_d_3d_blocks else 2  # B.2: the first two blocks are 3-D
            blocks = self.blocks3d if dims == 3 else self.blocks2d
            blocks.append(DBlock(3 if i == 0 else widths[i - 1], widths[i], downsample=down, preactivation=i > 0,
                                 dims=dims, downsample_time=cfg.temporal_d_downsample_time, sn_eps=cfg.sn_eps))
            res = res // 2 if down else res
            if res in cfg.d_attention:
                blocks.append(SeparableAttention(widths[i], cfg.sn_eps))
        self.head = _ProjectionHead(widths[-1], cfg.num_classes, cfg.sn_eps)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before D_T had two block lists name every block "blocks.N".
        n3 = len(self.blocks3d)
        old = prefix + "blocks."
        for key in [k for k in state_dict if k.startswith(old)]:
            i, rest = key[len(old):].split(".", 1)
            new = f"blocks3d.{i}" if int(i) < n3 else f"blocks2d.{int(i) - n3}"
            state_dict[f"{prefix}{new}.{rest}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, video: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """video [B, T, 3, H, W] (all T frames; in prediction models conditioning + generated,
        B.4) -> D_T score [B]."""
        x = downsample_phi(video, self.cfg.temporal_downsample, generator)
        return self.score_downsampled(x, y)

    def score_downsampled(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """phi(video) [B, T, 3, h, w] -> score [B]."""
        b = x.shape[0]
        h = x.transpose(1, 2)  # [B, C, T, H, W] for the 3-D blocks
        for blk in self.blocks3d:
            h = blk(h.transpose(1, 2)).transpose(1, 2) if isinstance(blk, SeparableAttention) else blk(h)
        t = h.shape[2]
        h = h.transpose(1, 2).flatten(0, 1)  # [B*T', C, H, W]: time folded into batch
        for blk in self.blocks2d:
            h = blk(h.unflatten(0, (b, t))).flatten(0, 1) if isinstance(blk, SeparableAttention) else blk(h)
        h = F.relu(h).sum(dim=(2, 3)).view(b, t, -1).sum(1)  # sum over space, then time
        return self.head(h, y)


class DualDiscriminator(nn.Module):
    """D = (D_S, D_T); the hinge loss is applied to each score and summed (2.2, 3.1)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.spatial = SpatialDiscriminator(cfg)
        self.temporal = TemporalDiscriminator(cfg)

    def forward(self, video: torch.Tensor, y: torch.Tensor, frame_indices: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(D_S score, D_T score), each [B]; ``frame_indices`` [B, k]: the frames D_S judges."""
        return self.spatial(video, y, frame_indices, generator), self.temporal(video, y, generator)

    def pixels_per_video(self, frames: int) -> dict[str, int]:
        """Pixels each discriminator processes per video (3.1's budget)."""
        cfg, s = self.spatial.cfg, self.temporal.input_resolution
        ds = cfg.frames_per_spatial_d * cfg.resolution**2
        dt = frames * s * s
        return {"spatial": ds, "temporal": dt, "total": ds + dt, "full_video": frames * cfg.resolution**2}
