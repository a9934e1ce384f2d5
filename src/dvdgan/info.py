"""Model summary: parameter counts, the discriminators' pixel budget (3.1), forward FLOPs."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from dvdgan.config import Config
from dvdgan.models import DualDiscriminator, Generator
from dvdgan.models.prediction import build_generator


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def model_info(cfg: Config, flops: bool = True) -> dict:
    """Everything is built on the meta device: no memory, no compute, any preset size."""
    m = cfg.model
    with torch.device("meta"):
        g = build_generator(m)
        d = DualDiscriminator(m)
    t_total = m.total_frames
    pix = d.pixels_per_video(t_total)
    info = {
        "preset": cfg.name,
        "video": {"frames": m.frames, "context_frames": m.context_frames, "resolution": m.resolution},
        "parameters": {
            "generator": _count(g),
            "spatial_discriminator": _count(d.spatial),
            "temporal_discriminator": _count(d.temporal),
        },
        "pixels_per_video": {
            "spatial_discriminator": pix["spatial"],
            "temporal_discriminator": pix["temporal"],
            "dual_total": pix["total"],
            "full_video": pix["full_video"],
            "reduction": round(1 - pix["total"] / pix["full_video"], 4),
        },
    }
    if flops:
        with torch.device("meta"):
            z = torch.empty(1, m.z_dim)
            y = torch.zeros(1, dtype=torch.long)
            video = torch.empty(1, t_total, 3, m.resolution, m.resolution)
            ctx = torch.empty(1, m.context_frames, 3, m.resolution, m.resolution) if m.context_frames else None
            g_call = (lambda: g(z, y, ctx)) if m.context_frames else (lambda: g(z, y))
            info["forward_flops_per_video"] = {
                "generator": _flops(g_call),
                "spatial_discriminator": _flops(lambda: d.spatial(video, y)),
                "temporal_discriminator": _flops(lambda: d.temporal(video, y)),
            }
    return info


__all__ = ["model_info", "Generator"]
