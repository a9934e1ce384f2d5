"""What ``dvdgan bench`` and the tests measure this package against: the straightforward formulation
of DVD-GAN's blocks (the oracle), a training step written with it (the baseline of every speed-up),
and a full-video 3-D discriminator (the alternative the dual discriminator avoids). Nothing here
trains a model; :mod:`dvdgan.models` holds the networks that do.

Each class overrides one block's ``forward`` with the literal sequence of operations: the ConvGRU
equations of B.2 frame by frame (three spectrally normed convolutions on concatenated tensors),
nearest upsampling then the 3x3 convolution, the 3x3 convolution then average pooling, gains
and biases repeated per frame. Same function, same parameters and buffers (state-dict keys are
identical, so ``load_state_dict`` works both ways), slower. Whole networks are the networks of
this package with every block switched to its straightforward class (:func:`make_straightforward`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dvdgan.config import Config, ModelConfig
from dvdgan.data.transforms import to_model_input
from dvdgan.losses import dual_d_loss, dual_g_loss
from dvdgan.models.discriminators import DualDiscriminator, TemporalDiscriminator
from dvdgan.models.generator import Generator
from dvdgan.models.layers import ConditionalBatchNorm, ConvGRU, DBlock, GBlock, power_iteration
from dvdgan.models.prediction import build_generator, full_video

# --------------------------------------------------------------------------------------------
# The oracle: every block in its straightforward formulation
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The baseline of every speed-up: a training step written with the oracle
# --------------------------------------------------------------------------------------------


class StraightforwardStep:
    """The baseline of every speed-up: one training step as a plain re-implementation writes it,
    with the oracle networks above holding ``trainer``'s weights: G's
    graph is built in the D updates and detached, D's weight gradients are computed in the G update
    and thrown away, every block is the literal sequence of the paper's operations. It draws z, y
    and D_S's frames from the global RNG in the trainer's order, so from the same seed both compute
    the same update (tests/test_training.py)."""

    def __init__(self, trainer=None, *, cfg: Config | None = None, device: str | torch.device | None = None,
                 batch: int | None = None, seed: int = 0):
        """From ``trainer`` (its config, device, batch and weights), or with fresh weights drawn from
        ``seed`` for ``cfg`` on ``device`` (``"meta"``: no memory, for counting FLOPs) at ``batch``."""
        if trainer is not None:
            cfg, device, batch = trainer.cfg, trainer.device, trainer.per_replica_batch
        elif cfg is None or batch is None:
            raise ValueError("pass a trainer, or cfg and batch")
        self.cfg, self.device = cfg, torch.device(device or "cpu")
        m, t = self.cfg.model, self.cfg.train
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            with torch.device(self.device):
                self.G = build_straightforward_generator(m)
                self.D = build_straightforward_discriminator(m)
        if trainer is not None:
            self.G.load_state_dict(trainer.G.state_dict())
            self.D.load_state_dict(trainer.D.state_dict())
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t.lr_g, betas=tuple(t.adam_betas), eps=t.adam_eps)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=tuple(t.adam_betas), eps=t.adam_eps)
        self.batch, self.step = batch, 0

    def _draw(self, batches: Iterator):
        m = self.cfg.model
        video, label = next(batches)
        real = to_model_input(video.to(self.device))
        y_real = label.to(self.device).long()
        context = real[:, :m.context_frames] if m.context_frames else None
        z = torch.randn(len(real), m.z_dim).to(self.device)
        y = torch.randint(m.num_classes, (len(real),)).to(self.device)
        if m.context_frames:
            y, y_real = torch.zeros_like(y), torch.zeros_like(y_real)
        return real, y_real, context, z, y

    def __call__(self, batches: Iterator) -> None:
        from dvdgan.training.ema import ema_decay_at, update_ema  # here: importing dvdgan.training loads the trainer

        m, t, G, D = self.cfg.model, self.cfg.train, self.G, self.D
        G.train()
        D.train()
        for _ in range(t.d_steps):
            power_iteration(D, m.sn_power_iterations)
            self.opt_d.zero_grad(set_to_none=True)
            real, y_real, context, z, y = self._draw(batches)
            fake = full_video(G, z, y, context).detach()
            s, tt = D(torch.cat([real, fake]), torch.cat([y_real, y]))
            b = len(real)
            dual_d_loss((s[:b], tt[:b]), (s[b:], tt[b:]))[0].backward()
            self.opt_d.step()
        power_iteration(G, m.sn_power_iterations)
        self.opt_g.zero_grad(set_to_none=True)
        if m.context_frames:
            _, _, context, z, y = self._draw(batches)
        else:
            z = torch.randn(self.batch, m.z_dim).to(self.device)
            y = torch.randint(m.num_classes, (len(z),)).to(self.device)
            context = None
        dual_g_loss(D(full_video(G, z, y, context), y))[0].backward()
        self.opt_g.step()
        self.opt_d.zero_grad(set_to_none=True)
        self.step += 1
        update_ema(self.G_ema, G, ema_decay_at(self.step, t.ema_decay, t.ema_start))


# --------------------------------------------------------------------------------------------
# The alternative to the dual discriminator (section 3.1)
# --------------------------------------------------------------------------------------------


class FullVideoDiscriminator(nn.Module):
    """The alternative the dual discriminator avoids: one discriminator whose every DBlock is 3-D,
    on all T frames at full resolution (no phi), with D's widths and downsampling."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        full = dataclasses.replace(cfg, temporal_downsample="identity", temporal_d_3d_blocks=len(cfg.d_multipliers),
                                   d_attention=())
        self.net = TemporalDiscriminator(full)

    def forward(self, video: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(video, y)
