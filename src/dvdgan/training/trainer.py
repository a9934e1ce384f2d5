"""The DVD-GAN training loop (B.3): one trainer for one CPU, one GPU or many (torchrun / DDP).

Per generator update: ``d_steps`` (2) discriminator updates on real clips and fresh samples,
then one generator update; hinge losses on D_S + D_T (2.2, 3.1); Adam with lr G 1e-4 and
lr D 5e-4; an EMA of G's weights for sampling. Everything that decides the numbers (weights,
optimiser moments, RNG states, data position) is in the checkpoint, so ``--resume`` continues
bit-identically on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from dvdgan import checkpoint as ckpt_io
from dvdgan.config import Config
from dvdgan.data.transforms import to_model_input, to_uint8
from dvdgan.errors import DvdganError
from dvdgan.losses import dual_d_loss, dual_g_loss
from dvdgan.models import DualDiscriminator, power_iteration
from dvdgan.models.discriminators import sample_frame_indices
from dvdgan.models.prediction import build_generator
from dvdgan.training.distributed import (
    DistInfo,
    all_ranks,
    any_rank,
    barrier,
    broadcast_module,
    broadcast_object,
    cleanup,
    ddp_buffer_kwargs,
    init_distributed,
    mean_across_ranks,
)
from dvdgan.training.ema import ema_decay_at, standing_bn_stats, update_ema


class TrainingDiverged(DvdganError):
    """A loss became NaN or infinite and train.nonfinite is "stop"."""


class KeySampler:
    """Infinite stream of batches of dataset keys (index, sample_seed) for one replica.

    B.1: every replica shuffles the whole training set independently (seeded by (seed, rank)),
    rather than taking a shard of it. The batch at position p is a pure function of
    (seed, rank, p), so a resumed run reads exactly the clips it would have read.

    ``shard=(i, n)`` (train.data_sharding="split"): ``batch`` is the global batch of one stream
    shared by n replicas and replica i gets its i-th slice of every batch.
    """

    def __init__(self, n: int, batch: int, seed: int, rank: int, start_batch: int = 0,
                 shard: tuple[int, int] = (0, 1)):
        self.n, self.batch, self.seed, self.rank, self.start_batch = n, batch, seed, rank, start_batch
        if batch % shard[1]:
            raise ValueError(f"a batch of {batch} cannot be split {shard[1]} ways")
        self.shard = shard
        self._perm_epoch, self._perm = -1, None

    def _key(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.n)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, self.rank, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        sample_seed = int(np.random.SeedSequence([self.seed, self.rank, position]).generate_state(1)[0])
        return int(self._perm[offset]), sample_seed

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        b = self.start_batch
        index, count = self.shard
        local = self.batch // count
        while True:
            yield [self._key(b * self.batch + i) for i in range(index * local, (index + 1) * local)]
            b += 1


# ----------------------------------------------------------------------------------------
# activation checkpointing (train.activation_checkpointing, CUDA)
# ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _keep_running_stats(module: nn.Module):
    """Undo any update of BN running statistics made inside the block (the recomputation)."""
    from dvdgan.models.layers import TimestepBatchNorm

    saved = [(b, b.detach().clone()) for m in module.modules() if isinstance(m, TimestepBatchNorm)
             for b in (m.running_mean, m.running_var)]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


def _checkpointed(forward, module: nn.Module, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    calls = [0]

    def run(*a, **k):
        calls[0] += 1
        if calls[0] == 1:  # the forward pass: BN running statistics update once, here
            return forward(*a, **k)
        with _keep_running_stats(module):  # the recomputation in backward: statistics unchanged
            return forward(*a, **k)

    # No randomness inside ConvGRUs or residual blocks: no RNG state to stash.
    return torch_checkpoint(run, *args, use_reentrant=False, preserve_rng_state=False, **kwargs)


def enable_activation_checkpointing(module: nn.Module) -> int:
    """Recompute, in backward, the activations of every ConvGRU and residual block of G (GBlock)
    and of every residual block of D and of DVD-GAN-FP's conditioning stack (DBlock), instead of
    keeping them (``torch.utils.checkpoint``, non-reentrant, so it composes with DDP). Blocks
    rather than whole generator groups: the largest group of the 48-frame presets alone holds
    several GB per video (docs/scaling.md). The recomputation runs the blocks' BN layers again in
    training mode: their running statistics are restored afterwards, so they move once per
    forward, as without checkpointing. Patches ``forward`` on the instances (parameter names,
    hence checkpoints, are unchanged); returns the number of blocks wrapped."""
    from dvdgan.models.layers import ConvGRU, DBlock, GBlock

    n = 0
    for m in module.modules():
        if isinstance(m, (ConvGRU, GBlock, DBlock)) and "forward" not in vars(m):
            m.forward = functools.partial(_checkpointed, m.forward, m)
            n += 1
    return n


def resolve_device(name: str, dist_info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", dist_info.local_rank)
    return torch.device(name)


def check_writable(out_dir: Path) -> None:
    """Fail before creating anything if RUN_DIR cannot be written."""
    p = out_dir
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise DvdganError(f"cannot create run directory {out_dir}: {p} is not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise DvdganError(f"cannot write run directory {out_dir}: permission denied on {p}")


class Trainer:
    def __init__(self, cfg: Config, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
                 dataset=None):
        self.out_dir = Path(out_dir)
        check_writable(self.out_dir)
        self.cfg = cfg.validate()
        t = cfg.train
        device_type = "cuda" if (t.device in ("auto", "cuda") and torch.cuda.is_available()) else "cpu"
        self.dist = init_distributed(device_type)
        self.device = resolve_device(t.device, self.dist)
        self.is_main = self.dist.is_main
        self.progress = progress and self.is_main
        # train.data_sharding="split": one data stream and one RNG stream for all replicas, each
        # taking its slice of every global draw (docs/scaling.md); "independent" (B.1) otherwise.
        self.split = t.data_sharding == "split"
        if self.split and cfg.model.temporal_downsample == "crop_half":
            raise DvdganError('train.data_sharding="split" does not support model.temporal_downsample='
                              '"crop_half" (its random crops are drawn inside D_T per replica)')
        self._seed_rank = 0 if self.split else self.dist.rank
        ckpt = None
        if resume:  # rank 0 picks the checkpoint, so every rank resumes from the same one
            ckpts = ckpt_io.list_checkpoints(self.out_dir / "checkpoints") if self.is_main else []
            ckpt = broadcast_object(str(ckpts[-1]) if ckpts else None, self.dist)
            ckpt = Path(ckpt) if ckpt is not None else None
            if not all_ranks(ckpt is None or ckpt.exists(), self.dist, self.device):  # all ranks stop together
                raise DvdganError(f"some rank cannot see checkpoint {ckpt}: with several nodes the run directory "
                                  "must be on a shared file system")
        self._notices: list[str] = []
        if self.device.type != "cuda":
            for flag in ("bf16", "compile", "activation_checkpointing"):
                if getattr(t, flag):
                    self._notices.append(f"train.{flag} applies on CUDA only; ignored on {self.device.type}")

        # Effective batch = per-replica batch x replicas x accumulation steps.
        world, accum = self.dist.world_size, t.grad_accum
        if t.per_replica_batch:
            self.per_replica_batch = t.per_replica_batch
        else:
            if t.batch_size % (world * accum):
                raise DvdganError(f"train.batch_size={t.batch_size} is not divisible by {world} replicas x "
                                  f"{accum} accumulation steps")
            self.per_replica_batch = t.batch_size // (world * accum)
        self.effective_batch = self.per_replica_batch * world * accum
        if self.effective_batch != t.batch_size:
            self._notices.append(f"train.per_replica_batch={t.per_replica_batch} x {world} replicas x {accum} "
                                 f"accumulation gives an effective batch of {self.effective_batch}, not "
                                 f"train.batch_size={t.batch_size}")

        torch.manual_seed(t.seed * 7919 + self._seed_rank)
        m = cfg.model
        self.G = build_generator(m).to(self.device)
        self.D = DualDiscriminator(m).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t.lr_g, betas=tuple(t.adam_betas), eps=t.adam_eps)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=tuple(t.adam_betas), eps=t.adam_eps)
        self.step = 0
        self.skipped_steps = 0
        self._launched = time.perf_counter()  # metrics.jsonl: elapsed_s counts from this launch
        self._resumed_from: Path | None = None
        self._saved_step = -1  # the step of the newest checkpoint this run wrote or loaded

        if ckpt is not None:
            self._load(ckpt)

        # Wrappers used for the updates: DDP for the network being trained. Every rank starts from
        # rank 0's weights and buffers (G, EMA G, D); buffers are not broadcast again before each
        # forward (see ddp_buffer_kwargs).
        self.G_train: nn.Module = self.G
        self.D_train: nn.Module = self.D
        if self.dist.enabled:
            for module in (self.G, self.G_ema, self.D):
                broadcast_module(module, self.dist)
            ids = [self.device.index] if self.device.type == "cuda" else None
            # gradient_as_bucket_view: the gradients live in DDP's all_reduce buckets (no second copy)
            kw = dict(device_ids=ids, gradient_as_bucket_view=True, **ddp_buffer_kwargs())
            self.G_train = DDP(self.G, **kw)
            self.D_train = DDP(self.D, **kw)
        cuda = self.device.type == "cuda"
        if t.activation_checkpointing and cuda:  # after G_ema was copied: G_ema samples without it
            enable_activation_checkpointing(self.G)
            enable_activation_checkpointing(self.D)
        # The networks as called without DDP: G in D updates, D in G updates.
        self.G_plain: nn.Module = self.G
        self.D_plain: nn.Module = self.D
        if t.compile and cuda:
            self.G_train = torch.compile(self.G_train)
            self.D_train = torch.compile(self.D_train)
            self.G_plain = torch.compile(self.G)
            self.D_plain = torch.compile(self.D)
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if (t.bf16 and cuda) else contextlib.nullcontext()
        )

        self.dataset = dataset
        self.writer = None
        self.bad_log = self.out_dir / "bad_videos.log"
        # Fixed z and classes for the sample videos logged during training.
        gen = torch.Generator().manual_seed(t.seed + 1_000_003)
        n = t.num_sample_videos
        self.fixed_z = torch.randn(n, m.z_dim, generator=gen)
        self.fixed_y = torch.arange(n) % m.num_classes
        self.fixed_context = None

    # ------------------------------------------------------------------------------------
    # state
    # ------------------------------------------------------------------------------------

    def _modules(self) -> dict[str, nn.Module]:
        return {"generator": self.G, "generator_ema": self.G_ema, "discriminator": self.D}

    def _load(self, ckpt: Path) -> None:
        for prefix, module in self._modules().items():
            ckpt_io.load_module(module, ckpt, prefix)
        st = ckpt_io.load_train_state(ckpt)
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        self.step = int(st["step"])
        self.skipped_steps = int(st.get("skipped_steps", 0))
        rng = st["rng"]
        if rng.get("world_size") == self.dist.world_size:
            torch.set_rng_state(rng["torch"][self.dist.rank] if isinstance(rng["torch"], list) else rng["torch"])
        else:  # different number of processes: a fresh, still deterministic, stream per rank
            torch.manual_seed(self.cfg.train.seed * 7919 + self._seed_rank + 104729 * self.step)
        self._resumed_from = ckpt
        self._saved_step = self.step

    def _rng_state(self) -> dict:
        state = torch.get_rng_state()
        if self.dist.enabled:
            states = [torch.empty_like(state) for _ in range(self.dist.world_size)]
            torch.distributed.all_gather_object(states, state)
            return {"torch": states, "world_size": self.dist.world_size}
        return {"torch": [state], "world_size": 1}

    def save(self) -> Path | None:
        rng = self._rng_state()  # collective: every rank calls save()
        path = None
        if self.is_main:
            st = {"opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "step": self.step,
                  "skipped_steps": self.skipped_steps, "rng": rng}
            path = ckpt_io.save_checkpoint(self.out_dir / "checkpoints", self.step, self._modules(), st,
                                           self.cfg.to_dict(), keep=self.cfg.train.keep_checkpoints)
        barrier(self.dist)  # no rank runs ahead (or exits) before the checkpoint is complete
        self._saved_step = self.step
        return path

    # ------------------------------------------------------------------------------------
    # data
    # ------------------------------------------------------------------------------------

    def _build_data(self) -> Iterator:
        cfg, t = self.cfg, self.cfg.train
        if self.dataset is None:
            from dvdgan.data import build_dataset

            self.dataset = build_dataset(cfg.data, split=cfg.data.split, frames=cfg.model.total_frames,
                                         resolution=cfg.model.resolution, seed=t.seed, bad_log=str(self.bad_log))
        ds = self.dataset
        if cfg.model.context_frames == 0 and ds.num_classes > cfg.model.num_classes:
            raise DvdganError(f"the dataset has {ds.num_classes} classes but model.num_classes is "
                              f"{cfg.model.num_classes}")
        # batches drawn per step: d_steps D updates, and for prediction models the G update's context
        batches_done = self.step * (t.d_steps + (1 if cfg.model.context_frames else 0)) * t.grad_accum
        if self.split:  # one stream of global batches (rank 0's), each replica reading its slice
            world = self.dist.world_size
            sampler = KeySampler(len(ds), self.per_replica_batch * world, t.seed, 0, start_batch=batches_done,
                                 shard=(self.dist.rank, world))
        else:
            sampler = KeySampler(len(ds), self.per_replica_batch, t.seed, self.dist.rank, start_batch=batches_done)
        workers = cfg.data.num_workers
        loader = torch.utils.data.DataLoader(
            ds, batch_sampler=sampler, num_workers=workers, pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
            # its own generator: creating the iterator must not draw from the global RNG,
            # whose state the checkpoint restores
            generator=torch.Generator().manual_seed(t.seed + self.dist.rank),
        )
        return iter(loader)

    def _next_real(self, it: Iterator) -> tuple[torch.Tensor, torch.Tensor]:
        video, label = next(it)
        video = to_model_input(video.to(self.device, non_blocking=True))
        label = label.to(self.device).long()
        if self.cfg.model.context_frames:
            label = torch.zeros_like(label)  # B.4: class id fixed to 0 for prediction
        return video, label

    # ------------------------------------------------------------------------------------
    # updates
    # ------------------------------------------------------------------------------------

    def _replica_rows(self, b: int) -> tuple[int, slice]:
        """(rows to draw, this replica's slice of them): under "split" sharding the global batch
        is drawn from the shared stream and each replica keeps its rows; otherwise its own b."""
        world, rank = (self.dist.world_size, self.dist.rank) if self.split else (1, 0)
        return b * world, slice(rank * b, (rank + 1) * b)

    def _sample_zy(self, b: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z and y for b videos of this replica, from ``generator`` (default: the global RNG)."""
        m = self.cfg.model
        n, rows = self._replica_rows(b)
        z = torch.randn(n, m.z_dim, generator=generator)[rows]
        y = torch.randint(m.num_classes, (n,), generator=generator)[rows]
        return z.to(self.device), y.to(self.device)

    @contextlib.contextmanager
    def _global_frame_draws(self, *segments: int):
        """train.data_sharding="split" with several replicas: D_S draws the k frames of every
        video of the global batch from the shared RNG, exactly as one process would on the
        concatenated batch, and keeps this replica's rows. ``segments`` are the local sizes of
        the consecutive parts of D's input (real, fake); globally each part is the concatenation
        of the replicas' parts. (Patches ``sample_frames`` on the D_S instance for the call.)"""
        if not (self.split and self.dist.enabled):
            yield  # one replica: D's own draw is the global one
            return
        spatial, world, rank = self.D.spatial, self.dist.world_size, self.dist.rank
        rows, offset = [], 0
        for n in segments:
            rows.append(torch.arange(offset + rank * n, offset + (rank + 1) * n))
            offset += n * world
        rows = torch.cat(rows)
        cfg = spatial.cfg

        def sample_frames(video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
            b, t = video.shape[:2]
            first = cfg.context_frames
            idx = sample_frame_indices(offset, t - first, spatial.frames_per_spatial_d, first=first,
                                       per_video=cfg.spatial_d_sampling == "per_video",
                                       replacement=cfg.spatial_d_replacement, generator=generator)
            idx = idx[rows].to(video.device)
            return video[torch.arange(b, device=video.device)[:, None], idx]

        spatial.sample_frames = sample_frames
        try:
            yield
        finally:
            del spatial.sample_frames

    def _generate(self, g: nn.Module, z, y, real: torch.Tensor | None) -> torch.Tensor:
        """Fake videos as D sees them: for prediction, context frames + generated frames (B.4)."""
        c = self.cfg.model.context_frames
        if not c:
            return g(z, y)
        context = real[:, :c]
        return torch.cat([context, g(z, y, context)], 1)

    def _check(self, loss: torch.Tensor, what: str) -> bool:
        # Collective: if any replica's loss is not finite, every replica skips (or stops) together;
        # a replica leaving out a backward that the others run would hang DDP's gradient all_reduce.
        if all_ranks(bool(torch.isfinite(loss)), self.dist, self.device):
            return True
        if self.cfg.train.nonfinite == "skip":
            self.skipped_steps += 1
            return False
        ckpts = ckpt_io.list_checkpoints(self.out_dir / "checkpoints")
        last = f"; the last good checkpoint is {ckpts[-1]}" if ckpts else "; no checkpoint was written yet"
        where = f"rank {self.dist.rank}: " if self.dist.enabled else ""  # (the non-finite one may be another rank's)
        raise TrainingDiverged(f"non-finite {what} loss ({where}{loss.item()}) at step {self.step}{last}")

    def _no_sync(self, module: nn.Module, micro: int):
        """DDP: all-reduce gradients only on the last accumulation micro-batch."""
        if self.dist.enabled and micro < self.cfg.train.grad_accum - 1:
            return getattr(module, "_orig_mod", module).no_sync()
        return contextlib.nullcontext()

    def d_step(self, it: Iterator) -> dict[str, float]:
        t, fast = self.cfg.train, self.cfg.model.impl == "fast"
        power_iteration(self.D, self.cfg.model.sn_power_iterations)  # SN: one power iteration per update
        self.opt_d.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        for micro in range(t.grad_accum):
            real, y_real = self._next_real(it)
            b = real.shape[0]
            z, y_fake = self._sample_zy(b)
            if self.cfg.model.context_frames:
                y_fake = torch.zeros_like(y_fake)
            with self.autocast:
                # G without DDP: no G gradients are reduced in a D update
                if fast:  # no generator gradients are needed in a D update
                    with torch.no_grad():
                        fake = self._generate(self.G_plain, z, y_fake, real)
                else:  # straightforward formulation: build G's graph, then detach
                    fake = self._generate(self.G_plain, z, y_fake, real).detach()
                with self._no_sync(self.D_train, micro), self._global_frame_draws(b, b):
                    s, tt = self.D_train(torch.cat([real, fake.to(real.dtype)]), torch.cat([y_real, y_fake]))
                    loss, parts = dual_d_loss((s[:b], tt[:b]), (s[b:], tt[b:]))
                    if not self._check(loss, "discriminator"):
                        self.opt_d.zero_grad(set_to_none=True)
                        return {"d_skipped": 1.0}
                    (loss / t.grad_accum).backward()
            for k, v in {"d_loss": loss.detach(), **parts, "d_spatial_real": s[:b].detach().mean(),
                         "d_spatial_fake": s[b:].detach().mean(), "d_temporal_real": tt[:b].detach().mean(),
                         "d_temporal_fake": tt[b:].detach().mean()}.items():
                logs[k] = logs.get(k, 0.0) + float(v) / t.grad_accum
        self.opt_d.step()
        return logs

    def g_step(self, it_real: Iterator | None) -> dict[str, float]:
        t, fast = self.cfg.train, self.cfg.model.impl == "fast"
        power_iteration(self.G, self.cfg.model.sn_power_iterations)
        self.opt_g.zero_grad(set_to_none=True)
        d = self.D_plain  # D without DDP: its gradients, if any, are discarded
        if fast:
            self.D.requires_grad_(False)  # no D weight gradients in a G update
        logs: dict[str, float] = {}
        try:
            for micro in range(t.grad_accum):
                b = self.per_replica_batch
                real = None
                if self.cfg.model.context_frames:
                    real, _ = self._next_real(it_real)
                z, y = self._sample_zy(b)
                if self.cfg.model.context_frames:
                    y = torch.zeros_like(y)
                with self._no_sync(self.G_train, micro), self.autocast, self._global_frame_draws(b):
                    fake = self._generate(self.G_train, z, y, real)
                    loss, parts = dual_g_loss(d(fake, y))
                    if not self._check(loss, "generator"):
                        self.opt_g.zero_grad(set_to_none=True)
                        return {"g_skipped": 1.0}
                    (loss / t.grad_accum).backward()
                for k, v in {"g_loss": loss.detach(), **parts}.items():
                    logs[k] = logs.get(k, 0.0) + float(v) / t.grad_accum
        finally:
            if fast:
                self.D.requires_grad_(True)
        if not fast:
            self.opt_d.zero_grad(set_to_none=True)  # the straightforward way computed and discards them
        self.opt_g.step()
        return logs

    # ------------------------------------------------------------------------------------
    # logging
    # ------------------------------------------------------------------------------------

    def _writer(self):
        if self.writer is None and self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        return self.writer

    @torch.no_grad()
    def sample_videos(self, it_real: Iterator | None = None) -> torch.Tensor:
        """EMA generator samples at the fixed z and classes, uint8 [N, T, H, W, 3]."""
        g = self.G_ema
        z, y = self.fixed_z.to(self.device), self.fixed_y.to(self.device)
        c = self.cfg.model.context_frames
        if c:
            if self.fixed_context is None:
                ds = self.dataset
                vids = [ds[i][0] for i in range(len(z))]
                self.fixed_context = to_model_input(torch.stack(vids))[:, :c]
            ctx = self.fixed_context.to(self.device)
            video = torch.cat([ctx, g(z, torch.zeros_like(y), ctx)], 1)
        else:
            video = g(z, y)
        return to_uint8(video.cpu())

    def log_samples(self) -> None:
        from dvdgan.training.tb import add_gif
        from dvdgan.video_io import make_grid, save_gif

        videos = self.sample_videos()
        grid = make_grid(videos, nrow=min(len(videos), max(self.cfg.model.num_classes, 4)))
        save_gif(self.out_dir / "samples" / f"step_{self.step:08d}.gif", grid, fps=8, scale=2)
        add_gif(self._writer(), "samples/ema", grid, self.step)

    def refresh_ema_stats(self) -> None:
        """train.ema_bn_stats="standing": recompute the EMA generator's BN statistics from its own
        batches. Draws come from a generator seeded by (seed, step), never from the global RNG,
        so this leaves training (and exact resume) untouched. Collective under cross-replica BN."""
        t, m = self.cfg.train, self.cfg.model
        if t.ema_bn_stats != "standing":
            return
        gen = torch.Generator().manual_seed(t.seed * 1_000_003 + self.step * 31 + self._seed_rank)
        b = self.per_replica_batch
        n, rows = self._replica_rows(b)

        def draw(i: int) -> tuple:
            z, y = self._sample_zy(b, gen)
            if not m.context_frames:
                return z, y
            idx = torch.randint(len(self.dataset), (n,), generator=gen)[rows].tolist()
            clips = torch.stack([self.dataset[j][0] for j in idx])
            context = to_model_input(clips)[:, :m.context_frames].to(self.device)
            return z, torch.zeros_like(y), context

        standing_bn_stats(self.G_ema, draw, t.standing_stats_batches)

    def evaluate(self) -> dict[str, float]:
        from dvdgan.training.evaluation import evaluate_generator_reference

        return evaluate_generator_reference(self.G_ema, self.cfg, n=self.cfg.train.eval_samples,
                                            device=self.device, dataset=self.dataset)

    # ------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------

    def train(self, max_steps: int | None = None) -> dict[str, float]:
        cfg, t = self.cfg, self.cfg.train
        max_steps = t.max_steps if max_steps is None else max_steps
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.json").write_text(cfg.to_json())
            for n in self._notices:
                print(f"notice: {n}", file=sys.stderr)
            if self._resumed_from is not None:
                print(f"resuming from {self._resumed_from} (step {self.step})", file=sys.stderr)
            print(f"training {cfg.name} on {self.device} x{self.dist.world_size}: effective batch "
                  f"{self.effective_batch} = {self.per_replica_batch} per replica x {self.dist.world_size} "
                  f"replicas x {t.grad_accum} accumulation", file=sys.stderr)
            self._write_run_info()
        it = self._build_data()
        from tqdm.auto import tqdm

        bar = tqdm(total=max_steps, initial=self.step, disable=not self.progress, desc="train", unit="step",
                   dynamic_ncols=True, mininterval=1.0)
        last: dict[str, float] = {}
        stop = {"flag": False}  # set by the signal handler, on this rank only
        stopping = False  # decided by all ranks together, at the end of a step

        def _on_term(signum, frame):
            stop["flag"] = True

        try:  # SIGTERM (e.g. from a cluster scheduler): finish the step, checkpoint, exit
            old = signal.signal(signal.SIGTERM, _on_term)
        except ValueError:  # not the main thread
            old = None
        try:
            while self.step < max_steps and not stopping:
                t0 = time.perf_counter()
                self.G.train()
                self.D.train()
                logs: dict[str, float] = {}
                for _ in range(t.d_steps):  # B.3: D is updated twice for every update of G
                    for k, v in self.d_step(it).items():
                        logs[k] = logs.get(k, 0.0) + v / t.d_steps
                logs.update(self.g_step(it))
                self.step += 1
                update_ema(self.G_ema, self.G, ema_decay_at(self.step, t.ema_decay, t.ema_start))
                logs["step_time"] = time.perf_counter() - t0
                logs["lr_g"], logs["lr_d"] = self.opt_g.param_groups[0]["lr"], self.opt_d.param_groups[0]["lr"]
                log_now = self.step % t.log_every == 0 or self.step == max_steps
                if log_now:  # collective: rank 0 logs the means over all replicas
                    logs = mean_across_ranks(logs, self.dist, self.device)
                last = logs
                bar.update(1)
                if self.is_main and log_now:
                    w = self._writer()
                    for k, v in logs.items():
                        w.add_scalar(f"train/{k}", v, self.step)
                    bar.set_postfix(d=f"{logs.get('d_loss', math.nan):.3f}", g=f"{logs.get('g_loss', math.nan):.3f}",
                                    s=f"{logs['step_time']:.2f}")
                sample_due, eval_due, save_due = (bool(every) and self.step % every == 0
                                                  for every in (t.sample_every, t.eval_every, t.checkpoint_every))
                if sample_due or eval_due or save_due:  # on every rank: the EMA G is about to be used
                    self.refresh_ema_stats()
                if sample_due and self.is_main:
                    self.log_samples()
                if eval_due and self.is_main:
                    self._log_eval()
                if save_due:
                    self.save()
                # A SIGTERM reaching some ranks only must still stop all of them after the same step.
                stopping = any_rank(stop["flag"], self.dist, self.device)
        except KeyboardInterrupt:
            if self.dist.enabled:  # the ranks may be anywhere: no collective checkpoint; resume from the last
                raise
            stopping = True
        finally:
            bar.close()
            if old is not None:
                signal.signal(signal.SIGTERM, old)
        if self._saved_step != self.step:
            self.refresh_ema_stats()
            self.save()  # at exit (also after SIGTERM / Ctrl-C)
        if self.is_main:
            self._finish()
        return last

    def _write_run_info(self) -> None:
        """RUN_DIR/run_info.json: how this launch resolved the batch; earlier launches under "history"."""
        t = self.cfg.train
        info = {
            "world_size": self.dist.world_size, "backend": self.dist.backend or None, "device": str(self.device),
            "per_replica_batch": self.per_replica_batch, "grad_accum": t.grad_accum,
            "effective_batch": self.effective_batch, "data_sharding": t.data_sharding,
            "cross_replica_bn": self.cfg.model.cross_replica_bn and self.dist.enabled,
            "bf16": t.bf16 and self.device.type == "cuda", "compile": t.compile and self.device.type == "cuda",
            "activation_checkpointing": t.activation_checkpointing and self.device.type == "cuda",
            "start_step": self.step, "resumed_from": str(self._resumed_from) if self._resumed_from else None,
            "torch": torch.__version__,
        }
        path = self.out_dir / "run_info.json"
        history = []
        if path.exists():
            try:
                prev = json.loads(path.read_text())
                history = prev.pop("history", []) + [prev]
            except (OSError, json.JSONDecodeError, AttributeError):
                history = []
        path.write_text(json.dumps({**info, "history": history}, indent=2))

    def _log_eval(self) -> None:
        metrics = self.evaluate()
        w = self._writer()
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                w.add_scalar(f"eval/{k}", v, self.step)
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            elapsed = time.perf_counter() - self._launched
            f.write(json.dumps({"step": self.step, "elapsed_s": round(elapsed, 1), **metrics}) + "\n")

    def _finish(self) -> None:
        if self.writer is not None:
            self.writer.flush()
        if self.skipped_steps:
            print(f"skipped {self.skipped_steps} updates with a non-finite loss", file=sys.stderr)
        if self.bad_log.exists():
            from dvdgan.data import summarize_bad_log

            summary = summarize_bad_log(str(self.bad_log))
            total = sum(summary.values())
            detail = ", ".join(f"{k}: {v}" for k, v in summary.items())
            print(f"skipped {total} unusable videos ({detail}); names in {self.bad_log}", file=sys.stderr)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        cleanup(self.dist)


def train(cfg: Config, out_dir: str | Path, *, resume: bool = False, max_steps: int | None = None,
          progress: bool = True, dataset=None) -> dict[str, float]:
    """Train (or resume) a DVD-GAN; returns the last step's logged values."""
    trainer = Trainer(cfg, out_dir, resume=resume, progress=progress, dataset=dataset)
    try:
        return trainer.train(max_steps)
    finally:
        trainer.close()
