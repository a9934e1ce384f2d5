"""Sampling from a trained DVD-GAN: load a generator, draw videos with truncation (4.1.1).

    from dvdgan.sampling import load_generator, generate
    G, cfg = load_generator("runs/shapes")            # EMA weights by default (B.3)
    videos, labels = generate(G, cfg, classes=[0, 1], n=8, truncation=0.5, seed=0)
    # videos: uint8 [8, T, H, W, 3]
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dvdgan.config import Config
from dvdgan.data.transforms import to_uint8
from dvdgan.errors import DvdganError
from dvdgan.models.prediction import build_generator
from dvdgan.training import checkpoint as ckpt_io


def load_generator(path: str | Path, ema: bool = True, device: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, Config]:
    """A checkpoint directory, its model.safetensors, or a run directory (newest checkpoint).
    ``ema=False`` loads the trained (raw) generator instead of its moving average."""
    ckpt = ckpt_io.resolve_checkpoint(path)
    meta = ckpt_io.load_meta(ckpt)
    try:
        cfg = Config.from_dict(meta["config"]).validate()
    except (KeyError, DvdganError) as e:
        raise ckpt_io.CheckpointError(f"checkpoint {ckpt} has an invalid config: {e}") from None
    g = build_generator(cfg.model)
    ckpt_io.load_module(g, ckpt, "generator_ema" if ema else "generator")
    return g.to(device).eval(), cfg


def sample_z(n: int, dim: int, truncation: float, generator: torch.Generator, mode: str = "scale") -> torch.Tensor:
    """z ~ N(0, truncation^2 I) (4.1.1: "varying the standard deviation of z between 0 and 1"),
    or BigGAN-style ``mode="resample"``: N(0, I) with entries beyond +-truncation redrawn."""
    if not 0.0 <= truncation <= 1.0 and mode == "scale":
        raise DvdganError(f"truncation must be in [0, 1], got {truncation}")
    if mode == "scale":
        return torch.randn(n, dim, generator=generator) * truncation
    if mode == "resample":
        if truncation <= 0:
            raise DvdganError("resampling truncation needs a threshold > 0")
        z = torch.randn(n, dim, generator=generator)
        bad = z.abs() > truncation
        while bad.any():
            z[bad] = torch.randn(int(bad.sum()), generator=generator)
            bad = z.abs() > truncation
        return z
    raise DvdganError(f"unknown truncation mode {mode!r} (scale or resample)")


@torch.no_grad()
def generate(generator: nn.Module, config: Config, classes: list[int] | None = None, n: int = 16,
             truncation: float = 1.0, seed: int = 0, batch_size: int = 16, context: torch.Tensor | None = None,
             truncation_mode: str = "scale", z: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n`` videos -> (uint8 [n, T, H, W, 3], labels [n]).

    ``classes``: the class of each sample, cycled (None = uniformly drawn). Deterministic for a
    seed, and batched so any n fits in memory. For prediction models pass ``context`` (float
    [n, C, 3, H, W] in [-1, 1]); the output then holds context + predicted frames.
    """
    m = config.model
    gen = torch.Generator().manual_seed(seed)
    if classes is None:
        labels = torch.randint(m.num_classes, (n,), generator=gen)
    else:
        bad = [c for c in classes if not 0 <= int(c) < m.num_classes]
        if bad:
            raise DvdganError(f"class {bad[0]} is out of range: the model has {m.num_classes} classes")
        labels = torch.tensor([int(classes[i % len(classes)]) for i in range(n)], dtype=torch.long)
    if z is None:
        z = sample_z(n, m.z_dim, truncation, gen, truncation_mode)
    if m.context_frames and context is None:
        raise DvdganError("this is a prediction (FP) model: it needs context frames")
    device = next(generator.parameters()).device
    generator.eval()
    out = []
    for i in range(0, n, batch_size):
        zb, yb = z[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
        if m.context_frames:
            cb = context[i:i + batch_size].to(device)
            video = torch.cat([cb, generator(zb, torch.zeros_like(yb), cb)], 1)
        else:
            video = generator(zb, yb)
        out.append(to_uint8(video.float().cpu()))
    return torch.cat(out), labels
