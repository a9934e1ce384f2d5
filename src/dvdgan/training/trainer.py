"""The DVD-GAN training loop (B.3): one trainer for one CPU, one GPU or many (torchrun / DDP).

Per training step (:meth:`Trainer.train_step`): ``d_steps`` (2) discriminator updates on real
clips and fresh samples, then one generator update; hinge losses on D_S + D_T (2.2, 3.1); Adam
with lr G 1e-4 and lr D 5e-4; an EMA of G's weights for sampling. Everything that decides the
numbers (weights, optimiser moments, RNG states, data position) is in the checkpoint, so
``--resume`` continues bit-identically on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from dvdgan import checkpoint as ckpt_io
from dvdgan.augment import AdaptiveP, VideoAugment
from dvdgan.config import Config, apply_overrides
from dvdgan.data.sampler import BatchKeys, ClipSampler
from dvdgan.data.transforms import to_model_input, to_uint8
from dvdgan.device import Precision, resolve_device
from dvdgan.errors import DvdganError
from dvdgan.losses import dual_d_loss, dual_g_loss
from dvdgan.models import DualDiscriminator, power_iteration
from dvdgan.models.discriminators import sample_frame_indices
from dvdgan.models.layers import set_activation_checkpointing
from dvdgan.models.prediction import build_generator, full_video
from dvdgan.rundir import check_writable, record_best, write_run_info
from dvdgan.training.distributed import (
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


@dataclass
class Network:
    """One network under training: its weights, its optimiser, the wrapper its own update calls
    (DDP across replicas, torch.compile) and the one the other network's update calls (compiled,
    never DDP: no gradients of a frozen network are reduced)."""

    module: nn.Module
    opt: torch.optim.Optimizer
    update: nn.Module
    frozen: nn.Module


class Trainer:
    """Usage: ``Trainer(cfg, run_dir).train()``; or, step by step, ``trainer.train_step(batches)``
    with an iterator of real ``(uint8 video, label)`` batches (what the loop and the benchmark do).

    ``classes_from_data``: a synthesis model takes its class count from the dataset when the
    config's differs (the command line sets it unless model.num_classes was given explicitly)."""

    def __init__(self, cfg: Config, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
                 dataset=None, classes_from_data: bool = False):
        self.out_dir = Path(out_dir)
        check_writable(self.out_dir)
        self.cfg = cfg.validate()
        self.progress = progress
        self._notices: list[str] = []
        self._setup_processes()
        self.dataset = dataset if dataset is not None else self._build_dataset()
        self._check_classes(classes_from_data)
        self._resolve_batch()
        self._build_networks()
        self.step, self.skipped_steps = 0, 0
        self.started = time.perf_counter()  # metrics.jsonl: elapsed_s counts from this launch
        self.resumed_from: Path | None = None
        self.last_saved: Path | None = None
        self._saved_step = -1  # the step of the newest checkpoint this run wrote or loaded
        if resume:
            self._resume()
        self._wrap_networks()
        self.writer = None
        self.last_eval: dict[str, float] = {}
        self.interrupted = False
        self._fixed_samples()

    # ------------------------------------------------------------------------------------
    # set-up, in the order __init__ runs it
    # ------------------------------------------------------------------------------------

    def _setup_processes(self) -> None:
        t = self.cfg.train
        device_type = "cuda" if (t.device in ("auto", "cuda") and torch.cuda.is_available()) else "cpu"
        self.dist = init_distributed(device_type)
        self.device = resolve_device(t.device, self.dist.local_rank)
        self.is_main = self.dist.is_main
        # train.data_sharding="split": one data stream and one RNG stream for all replicas, each
        # taking its slice of every global draw (docs/scaling.md); "independent" (B.1) otherwise.
        self.shared_stream = t.data_sharding == "split"
        if self.shared_stream and self.cfg.model.temporal_downsample == "crop_half":
            raise DvdganError('train.data_sharding="split" does not support model.temporal_downsample='
                              '"crop_half" (its random crops are drawn inside D_T per replica)')
        self.stream_rank = 0 if self.shared_stream else self.dist.rank  # whose RNG / data stream this is
        self.bad_log = self.out_dir / "bad_videos.log"

    def _build_dataset(self):
        from dvdgan.data import build_dataset

        cfg = self.cfg
        return build_dataset(cfg.data, split=cfg.data.split, frames=cfg.model.total_frames,
                             resolution=cfg.model.resolution, seed=cfg.train.seed, bad_log=str(self.bad_log))

    def _check_classes(self, from_data: bool) -> None:
        m, have = self.cfg.model, self.dataset.num_classes
        if m.context_frames or have == m.num_classes or have < 1 or (have < m.num_classes and not from_data):
            return
        if not from_data:
            raise DvdganError(f"the dataset has {have} classes but model.num_classes is {m.num_classes}: "
                              f"set model.num_classes={have}")
        self._notices.append(f"model.num_classes={have} from the dataset's {have} classes (the preset has "
                             f"{m.num_classes})")
        self.cfg = apply_overrides(self.cfg, [f"model.num_classes={have}"])

    def _resolve_batch(self) -> None:
        """Effective batch = per-replica batch x replicas x accumulation steps."""
        t, world = self.cfg.train, self.dist.world_size
        if t.per_replica_batch:
            self.per_replica_batch = t.per_replica_batch
        elif t.batch_size % (world * t.grad_accum):
            raise DvdganError(f"train.batch_size={t.batch_size} is not divisible by {world} replicas x "
                              f"{t.grad_accum} accumulation steps")
        else:
            self.per_replica_batch = t.batch_size // (world * t.grad_accum)
        self.effective_batch = self.per_replica_batch * world * t.grad_accum
        if self.effective_batch != t.batch_size:
            self._notices.append(f"train.per_replica_batch={t.per_replica_batch} x {world} replicas x "
                                 f"{t.grad_accum} accumulation gives an effective batch of {self.effective_batch}, "
                                 f"not train.batch_size={t.batch_size}")

    def _build_networks(self) -> None:
        t, m = self.cfg.train, self.cfg.model
        torch.manual_seed(t.seed * 7919 + self.stream_rank)
        self.G = build_generator(m).to(self.device)
        self.D = DualDiscriminator(m).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)

        def adam(module: nn.Module, lr: float) -> torch.optim.Optimizer:
            return torch.optim.Adam(module.parameters(), lr=lr, betas=tuple(t.adam_betas), eps=t.adam_eps)

        self.opt_g, self.opt_d = adam(self.G, t.lr_g), adam(self.D, t.lr_d)
        # Data-efficient training (silent in the paper; docs/design.md): the same differentiable
        # augmentation of real and generated clips before both discriminators, p fixed or adaptive.
        self.augment = VideoAugment(t.augment, t.augment_p)
        self.ada = AdaptiveP(t.ada_target, t.ada_interval, t.ada_kimg, p=t.augment_p) if t.augment_adaptive else None

    def _resume(self) -> None:
        # rank 0 picks the checkpoint, so every rank resumes from the same one
        ckpts = ckpt_io.list_checkpoints(self.out_dir / "checkpoints") if self.is_main else []
        name = broadcast_object(str(ckpts[-1]) if ckpts else None, self.dist)
        if name is None:
            return
        ckpt = Path(name)
        if not all_ranks(ckpt.exists(), self.dist, self.device):  # all ranks stop together
            raise DvdganError(f"some rank cannot see checkpoint {ckpt}: with several nodes the run directory "
                              "must be on a shared file system")
        ckpt_io.check_config_matches(ckpt, self.cfg, tuple(self._modules()))
        for prefix, module in self._modules().items():
            ckpt_io.load_module(module, ckpt, prefix)
        st = ckpt_io.load_train_state(ckpt)
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        self.step = int(st["step"])
        self.skipped_steps = int(st.get("skipped_steps", 0))
        if self.ada is not None and "ada" in st:
            self.ada.load_state_dict(st["ada"])
            self.augment.p = self.ada.p
        rng = st["rng"]
        if rng.get("world_size") == self.dist.world_size:
            torch.set_rng_state(rng["torch"][self.dist.rank] if isinstance(rng["torch"], list) else rng["torch"])
        else:  # different number of processes: a fresh, still deterministic, stream per rank
            torch.manual_seed(self.cfg.train.seed * 7919 + self.stream_rank + 104729 * self.step)
        self.resumed_from = self.last_saved = ckpt
        self._saved_step = self.step

    def _wrap_networks(self) -> None:
        """DDP for the network being updated (every rank starts from rank 0's weights and buffers,
        which are not broadcast again before each forward: see ddp_buffer_kwargs); activation
        checkpointing (after the EMA copy: G_ema samples without it); torch.compile; bf16."""
        t = self.cfg.train
        if self.dist.enabled:
            for module in (self.G, self.G_ema, self.D):
                broadcast_module(module, self.dist)
        if t.activation_checkpointing:
            set_activation_checkpointing(self.G, True)
            set_activation_checkpointing(self.D, True)

        def wrap(module: nn.Module, opt: torch.optim.Optimizer) -> Network:
            update = module
            if self.dist.enabled:
                ids = [self.device.index] if self.device.type == "cuda" else None
                # gradient_as_bucket_view: the gradients live in DDP's all_reduce buckets (no second copy)
                update = DDP(module, device_ids=ids, gradient_as_bucket_view=True, **ddp_buffer_kwargs())
            if t.compile:  # static shapes: a training run has two batch sizes, B and 2B (docs/design.md)
                return Network(module, opt, torch.compile(update, dynamic=False), torch.compile(module, dynamic=False))
            return Network(module, opt, update, module)

        self.g, self.d = wrap(self.G, self.opt_g), wrap(self.D, self.opt_d)
        self.autocast = Precision(self.device.type, t.bf16)

    def _fixed_samples(self) -> None:
        """Fixed z and classes for the sample videos logged during training: whole rows per class."""
        t, m = self.cfg.train, self.cfg.model
        gen = torch.Generator().manual_seed(t.seed + 1_000_003)
        n, classes = t.num_sample_videos, m.num_classes
        if n >= classes:  # the same number of videos for every class: no ragged last row
            per_class = n // classes
            n = per_class * classes
            self.fixed_y = torch.arange(n) // per_class
        else:  # fewer videos than classes: one each of n classes spread over the range
            self.fixed_y = torch.arange(n) * classes // n
        self.fixed_z = torch.randn(n, m.z_dim, generator=gen)
        self.fixed_context: torch.Tensor | None = None

    # ------------------------------------------------------------------------------------
    # state
    # ------------------------------------------------------------------------------------

    def _modules(self) -> dict[str, nn.Module]:
        return {"generator": self.G, "generator_ema": self.G_ema, "discriminator": self.D}

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
            if self.ada is not None:
                st["ada"] = self.ada.state_dict()
            try:
                path = ckpt_io.save_checkpoint(self.out_dir / "checkpoints", self.step, self._modules(), st,
                                               self.cfg.to_dict(), keep=self.cfg.train.keep_checkpoints)
            except ckpt_io.NonFiniteCheckpoint as e:
                raise TrainingDiverged(f"{e}{self._last_good()}") from None
            self.last_saved = path
        barrier(self.dist)  # no rank runs ahead (or exits) before the checkpoint is complete
        self._saved_step = self.step
        return path

    # ------------------------------------------------------------------------------------
    # data and random draws
    # ------------------------------------------------------------------------------------

    def data_loader(self) -> Iterator:
        """Real batches from the position the run has reached (exact resume)."""
        cfg, t = self.cfg, self.cfg.train
        # batches drawn per step: d_steps D updates, and for prediction models the G update's context
        batches_done = self.step * (t.d_steps + (1 if cfg.model.context_frames else 0)) * t.grad_accum
        world = self.dist.world_size if self.shared_stream else 1
        sampler = ClipSampler(len(self.dataset), t.seed, self.stream_rank)
        shard = (self.dist.rank, world) if self.shared_stream else (0, 1)
        keys = BatchKeys(sampler, self.per_replica_batch * world, start_batch=batches_done, shard=shard)
        workers = self._num_workers()
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=keys, num_workers=workers, pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
            # its own generator: creating the iterator must not draw from the global RNG,
            # whose state the checkpoint restores
            generator=torch.Generator().manual_seed(t.seed + self.dist.rank),
        )
        return iter(loader)

    def _preload_data(self) -> None:
        """A video folder that fits data.cache_mb is decoded once, here, on every rank (the
        reference classifier, trained next, reads it too)."""
        ds, budget = self.dataset, self.cfg.data.cache_mb
        if not hasattr(ds, "preload") or budget <= 0 or ds.preloaded:
            return
        t0 = time.perf_counter()
        held = ds.preload(budget, progress=self.progress and self.is_main)
        if not self.is_main:
            return
        if held:
            print(f"data: {ds.preloaded} videos decoded into memory ({held / 2**20:.0f} MB in "
                  f"{time.perf_counter() - t0:.0f} s); clips are cut from there", file=sys.stderr)
        else:
            print(f"data: the decoded videos would not fit data.cache_mb={budget:g}: clips are decoded as they are "
                  "read", file=sys.stderr)

    def _num_workers(self) -> int:
        """data.num_workers, or with -1 ("auto") enough decoding processes to keep up with the step:
        none when every clip is cut from memory (:meth:`_preload_data`) or when decoding in this
        process costs under a tenth of the step (the built-in dataset renders in microseconds), else
        clips demanded per second / clips decoded per second."""
        n = self.cfg.data.num_workers
        if n >= 0 or not hasattr(self.dataset, "path"):
            return max(n, 0)
        if getattr(self.dataset, "fully_preloaded", False):
            return 0  # every clip is cut from memory (data.cache_mb)
        from dvdgan.data.loader_bench import choose_num_workers

        t = self.cfg.train
        step_s = 0.4  # the default preset's step on two CPU cores (README); a GPU step is faster
        demand = self.per_replica_batch * t.d_steps * t.grad_accum / step_s
        n = choose_num_workers(self.dataset, demand, max_workers=8)
        if self.is_main:
            print(f"data.num_workers=auto: {n} decoding processes", file=sys.stderr)
        return n

    def _next_real(self, batches: Iterator) -> tuple[torch.Tensor, torch.Tensor]:
        video, label = next(batches)
        video = to_model_input(video.to(self.device, non_blocking=True)).to(next(self.G.parameters()).dtype)
        label = label.to(self.device).long()
        if self.cfg.model.context_frames:
            label = torch.zeros_like(label)  # B.4: class id fixed to 0 for prediction
        return video, label

    def _replica_rows(self, b: int) -> tuple[int, slice]:
        """(rows to draw, this replica's slice of them): with a shared stream the global batch is
        drawn and each replica keeps its rows; otherwise each replica draws its own b."""
        world, rank = (self.dist.world_size, self.dist.rank) if self.shared_stream else (1, 0)
        return b * world, slice(rank * b, (rank + 1) * b)

    def _sample_zy(self, b: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z and y for b videos of this replica, from ``generator`` (default: the global RNG)."""
        m = self.cfg.model
        n, rows = self._replica_rows(b)
        z = torch.randn(n, m.z_dim, generator=generator)[rows]
        y = torch.randint(m.num_classes, (n,), generator=generator)[rows]
        return z.to(self.device), y.to(self.device)

    def _frame_indices(self, *segments: int) -> torch.Tensor | None:
        """D_S's k frames per video when replicas share one stream: drawn for every video of the
        global batch, exactly as one process would on the concatenated batch, keeping this
        replica's rows. ``segments`` are the local sizes of the consecutive parts of D's input
        (real, fake). Otherwise this replica's own draw (3.1), from the global RNG at the point
        where D_S would draw them itself: drawn here, outside the network, so that a compiled D
        (train.compile) neither traces a random op nor draws from inductor's RNG, and samples
        the same frames as eager."""
        m = self.cfg.model
        if not (self.shared_stream and self.dist.enabled):
            return self.D.spatial.draw_frame_indices(sum(segments), m.total_frames, device=self.device)
        world, rank = self.dist.world_size, self.dist.rank
        rows, offset = [], 0
        for n in segments:
            rows.append(torch.arange(offset + rank * n, offset + (rank + 1) * n))
            offset += n * world
        idx = sample_frame_indices(offset, m.total_frames - m.context_frames, m.frames_per_spatial_d,
                                   first=m.context_frames, per_video=m.spatial_d_sampling == "per_video",
                                   replacement=m.spatial_d_replacement)
        return idx[torch.cat(rows)].to(self.device)

    # ------------------------------------------------------------------------------------
    # updates
    # ------------------------------------------------------------------------------------

    def _loss_is_finite(self, loss: torch.Tensor, what: str) -> bool:
        # Collective: if any replica's loss is not finite, every replica skips (or stops) together;
        # a replica leaving out a backward that the others run would hang DDP's gradient all_reduce.
        if all_ranks(bool(torch.isfinite(loss)), self.dist, self.device):
            return True
        if self.cfg.train.nonfinite == "skip":
            self.skipped_steps += 1
            return False
        where = f"rank {self.dist.rank}: " if self.dist.enabled else ""  # (the non-finite one may be another rank's)
        raise TrainingDiverged(f"non-finite {what} loss ({where}{loss.item()}) at step {self.step}{self._last_good()}")

    def _last_good(self) -> str:
        good = ckpt_io.newest_finite_checkpoint(self.out_dir / "checkpoints")
        return f"; the last good checkpoint is {good}" if good else "; no good checkpoint was written yet"

    def _check_skips(self) -> None:
        """train.nonfinite="skip" stops when skipping becomes the rule (train.max_skipped_fraction)."""
        t = self.cfg.train
        updates = self.step * (t.d_steps + 1)
        if self.skipped_steps >= 4 and self.skipped_steps > t.max_skipped_fraction * updates:
            raise TrainingDiverged(f"skipped {self.skipped_steps} of {updates} updates with a non-finite loss by step "
                                   f"{self.step} (train.max_skipped_fraction={t.max_skipped_fraction}): the run has "
                                   f"diverged{self._last_good()}")

    def _no_sync(self, net: Network, micro: int):
        """DDP: all-reduce gradients only on the last accumulation micro-batch."""
        if self.dist.enabled and micro < self.cfg.train.grad_accum - 1:
            return getattr(net.update, "_orig_mod", net.update).no_sync()
        return contextlib.nullcontext()

    def d_update(self, batches: Iterator) -> dict[str, float]:
        """One update of D_S and D_T on real clips and fresh samples of the current G."""
        t, c = self.cfg.train, self.cfg.model.context_frames
        power_iteration(self.D, self.cfg.model.sn_power_iterations)  # SN: one power iteration per update
        self.opt_d.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        for micro in range(t.grad_accum):
            real, y_real = self._next_real(batches)
            b = real.shape[0]
            z, y_fake = self._sample_zy(b)
            with self.autocast:
                with torch.no_grad():  # no G gradients in a D update
                    fake = full_video(self.g.frozen, z, y_fake, real[:, :c] if c else None)
                if c:
                    y_fake = torch.zeros_like(y_fake)
                with self._no_sync(self.d, micro):
                    videos = self.augment(torch.cat([real, fake.to(real.dtype)]))
                    spatial, temporal = self.d.update(videos, torch.cat([y_real, y_fake]),
                                                      frame_indices=self._frame_indices(b, b))
                    loss, parts = dual_d_loss((spatial[:b], temporal[:b]), (spatial[b:], temporal[b:]))
                    if not self._loss_is_finite(loss, "discriminator"):
                        self.opt_d.zero_grad(set_to_none=True)
                        return {"d_skipped": 1.0}
                    (loss / t.grad_accum).backward()
            scores = {"d_spatial_real": spatial[:b], "d_spatial_fake": spatial[b:],
                      "d_temporal_real": temporal[:b], "d_temporal_fake": temporal[b:]}
            for k, v in {"d_loss": loss, **parts, **scores}.items():
                logs[k] = logs.get(k, 0.0) + float(v.detach().mean()) / t.grad_accum
            if self.ada is not None:  # ADA's overfitting heuristic r_t = E[sign(D(real))], over all replicas
                signs = {"s": float(torch.sign(spatial[:b].detach()).mean()),
                         "t": float(torch.sign(temporal[:b].detach()).mean())}
                signs = mean_across_ranks(signs, self.dist, self.device)
                self.augment.p = self.ada.update(torch.tensor([signs["s"], signs["t"]]), n_images=b)
        self.opt_d.step()
        if self.augment.p > 0:
            logs["augment_p"] = self.augment.p
        return logs

    def g_update(self, batches: Iterator) -> dict[str, float]:
        """One update of G against both discriminators (D's weights frozen)."""
        t, c = self.cfg.train, self.cfg.model.context_frames
        power_iteration(self.G, self.cfg.model.sn_power_iterations)
        self.opt_g.zero_grad(set_to_none=True)
        self.D.requires_grad_(False)  # no D weight gradients in a G update
        logs: dict[str, float] = {}
        try:
            for micro in range(t.grad_accum):
                b = self.per_replica_batch
                context = self._next_real(batches)[0][:, :c] if c else None
                z, y = self._sample_zy(b)
                if c:
                    y = torch.zeros_like(y)
                with self._no_sync(self.g, micro), self.autocast:
                    fake = full_video(self.g.update, z, y, context)
                    scores = self.d.frozen(self.augment(fake), y, frame_indices=self._frame_indices(b))
                    loss, parts = dual_g_loss(scores)
                    if not self._loss_is_finite(loss, "generator"):
                        self.opt_g.zero_grad(set_to_none=True)
                        return {"g_skipped": 1.0}
                    (loss / t.grad_accum).backward()
                for k, v in {"g_loss": loss.detach(), **parts}.items():
                    logs[k] = logs.get(k, 0.0) + float(v) / t.grad_accum
        finally:
            self.D.requires_grad_(True)
        self.opt_g.step()
        return logs

    def train_step(self, batches: Iterator) -> dict[str, float]:
        """One training step (B.3): ``d_steps`` D updates, one G update, the EMA update. ``batches``
        yields real (uint8 video [B, T, H, W, 3], label [B]) batches of the per-replica size."""
        t = self.cfg.train
        self.G.train()
        self.D.train()
        logs: dict[str, float] = {}
        for _ in range(t.d_steps):  # B.3: D is updated twice for every update of G
            for k, v in self.d_update(batches).items():
                logs[k] = logs.get(k, 0.0) + v / t.d_steps
        logs.update(self.g_update(batches))
        self.step += 1
        update_ema(self.G_ema, self.G, ema_decay_at(self.step, t.ema_decay, t.ema_start))
        return logs

    # ------------------------------------------------------------------------------------
    # samples, statistics and evaluation of the EMA generator
    # ------------------------------------------------------------------------------------

    def _writer(self):
        if self.writer is None and self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: after a resume, events past the checkpoint (logged before a crash) are dropped
            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self._saved_step + 1
                                        if self.resumed_from else None)
        return self.writer

    def _context(self, n: int) -> torch.Tensor | None:
        """The fixed context frames of the logged prediction samples: the first n clips."""
        c = self.cfg.model.context_frames
        if not c:
            return None
        if self.fixed_context is None:
            clips = torch.stack([self.dataset[i][0] for i in range(n)])
            self.fixed_context = to_model_input(clips)[:, :c]
        return self.fixed_context.to(self.device)

    @torch.no_grad()
    def sample_videos(self) -> torch.Tensor:
        """EMA generator samples at the fixed z and classes, uint8 [N, T, H, W, 3]."""
        z, y = self.fixed_z.to(self.device), self.fixed_y.to(self.device)
        return to_uint8(full_video(self.G_ema, z, y, self._context(len(z))).cpu())

    def class_names(self) -> list[str]:
        names = [str(n) for n in getattr(self.dataset, "class_names", [])]
        n = self.cfg.model.num_classes
        return names if len(names) == n else [f"class{i}" for i in range(n)]

    def run_title(self) -> str:
        """The dataset's name, and the preset's when they differ ("spin (preset shapes)")."""
        d = self.cfg.data
        data_name = Path(d.path).name if d.path else d.dataset
        return self.cfg.name if data_name == self.cfg.name else f"{data_name} (preset {self.cfg.name})"

    def log_samples(self) -> Path:
        """A labelled grid (one row per class) as GIF and in TensorBoard."""
        from dvdgan import video_io as vio
        from dvdgan.sampling import grid_rows
        from dvdgan.training.tb import add_gif

        videos = self.sample_videos().numpy()
        caption = f"{self.run_title()}, step {self.step}, EMA G"
        if self.cfg.model.context_frames:
            caption += f", first {self.cfg.model.context_frames} frames real"
            row_labels, rows = None, grid_rows(None, len(videos), by_class=False)
        else:
            labels = self.fixed_y.tolist()
            rows = grid_rows(labels, len(videos))
            names = self.class_names()
            row_labels = [names[labels[r[0]]] for r in rows]
        grid = vio.labelled_grid(videos, row_labels, rows, scale=vio.legible_scale(videos.shape[2]), caption=caption)
        path = self.out_dir / "samples" / f"step_{self.step:08d}.gif"
        vio.save_gif(path, grid, fps=vio.DEFAULT_FPS)
        add_gif(self._writer(), "samples/ema", grid, self.step)
        return path

    def refresh_ema_stats(self) -> None:
        """train.ema_bn_stats="standing": recompute the EMA generator's BN statistics from its own
        batches. Draws come from a generator seeded by (seed, step), never from the global RNG,
        so this leaves training (and exact resume) untouched. Collective under cross-replica BN."""
        t, m = self.cfg.train, self.cfg.model
        if t.ema_bn_stats != "standing":
            return
        gen = torch.Generator().manual_seed(t.seed * 1_000_003 + self.step * 31 + self.stream_rank)
        b = self.per_replica_batch
        n, rows = self._replica_rows(b)

        def draw(i: int) -> tuple:
            z, y = self._sample_zy(b, gen)
            if not m.context_frames:
                return z, y
            idx = torch.randint(len(self.dataset), (n,), generator=gen)[rows].tolist()
            clips = torch.stack([self.dataset[j][0] for j in idx])
            return z, torch.zeros_like(y), to_model_input(clips)[:, :m.context_frames].to(self.device)

        standing_bn_stats(self.G_ema, draw, t.standing_stats_batches)

    def evaluate(self) -> dict[str, float]:
        """Metrics of the EMA generator (:func:`dvdgan.training.evaluation.evaluate_generator`)."""
        from dvdgan.training.evaluation import evaluate_generator

        metrics = evaluate_generator(self.G_ema, self.cfg, self.dataset, n=self.cfg.train.eval_samples,
                                     device=self.device)
        if self.ada is not None:
            metrics.update(augment_p=self.ada.p, ada_r_t=self.ada.r_t)
        return metrics

    def _log_eval(self) -> None:
        metrics = self.evaluate()
        if not metrics:
            return
        w = self._writer()
        for k, v in metrics.items():
            w.add_scalar(f"eval/{k}", v, self.step)
        elapsed = time.perf_counter() - self.started
        best = record_best(self.out_dir, self.step, metrics)
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, "elapsed_s": round(elapsed, 1), **metrics,
                                "best_step": best["step"]}) + "\n")
        self.last_eval = {"step": self.step, **metrics}
        keys = [k for k in ("accuracy", "ref_fd", "ref_fd_floor", "motion", "motion_real", "consistency")
                if k in metrics]
        shown = ", ".join(f"{k} {metrics[k]:.3g}" for k in keys or list(metrics)[:6])
        from tqdm.auto import tqdm

        tqdm.write(f"step {self.step}: {shown} (best step {best['step']})", file=sys.stderr)

    # ------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------

    def _announce(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.json").write_text(cfg.to_json())
        for n in self._notices:
            print(f"notice: {n}", file=sys.stderr)
        if self.resumed_from is not None:
            print(f"resuming from {self.resumed_from} (step {self.step})", file=sys.stderr)
        data = (f"{cfg.data.dataset} dataset {cfg.data.path}" if cfg.data.path
                else f"the built-in {cfg.data.dataset} dataset")
        print(f"training on {data} ({len(self.dataset)} clips, {cfg.model.num_classes} classes), config {cfg.name}, on "
              f"{self.device} x{self.dist.world_size}: effective batch {self.effective_batch} = "
              f"{self.per_replica_batch} per replica x {self.dist.world_size} replicas x {t.grad_accum} "
              "accumulation", file=sys.stderr)
        self._write_run_info()
        if t.eval_every > 0:  # the reference classifier's one-off training, before the progress bar
            from dvdgan.training.evaluation import prepare_reference

            _, line = prepare_reference(cfg, self.dataset, device=self.device, progress=self.progress)
            if line:
                print(line, file=sys.stderr)

    def train(self, max_steps: int | None = None) -> dict[str, float]:
        """Train up to ``max_steps`` (default train.max_steps); samples, evaluation and a checkpoint
        also at the last step. SIGTERM or Ctrl-C: finish the step, checkpoint, return
        (``self.interrupted`` is then True)."""
        t = self.cfg.train
        max_steps = t.max_steps if max_steps is None else max_steps
        self._preload_data()
        if self.is_main:
            self._announce()
            if self.step >= max_steps:
                print(f"already finished: the run is at step {self.step} and max_steps is {max_steps} "
                      "(pass a larger --max-steps to continue)", file=sys.stderr)
        batches = self.data_loader()
        from tqdm.auto import tqdm

        bar = tqdm(total=max_steps, initial=self.step, disable=not self.is_main or not self.progress,
                   desc="train", unit="step", dynamic_ncols=True, mininterval=1.0)
        last: dict[str, float] = {}
        stop = {"flag": False}  # set by the signal handler, on this rank only
        stopping = False  # decided by all ranks together, at the end of a step

        def on_term(signum, frame):
            stop["flag"] = True

        try:  # SIGTERM (e.g. from a cluster scheduler): finish the step, checkpoint, exit
            old = signal.signal(signal.SIGTERM, on_term)
        except ValueError:  # not the main thread
            old = None
        try:
            while self.step < max_steps and not stopping:
                t0 = time.perf_counter()
                logs = self.train_step(batches)
                if self.skipped_steps:
                    self._check_skips()
                logs["step_time"] = time.perf_counter() - t0
                logs["lr_g"], logs["lr_d"] = self.opt_g.param_groups[0]["lr"], self.opt_d.param_groups[0]["lr"]
                final = self.step == max_steps
                if self.step % t.log_every == 0 or final:  # collective: rank 0 logs the means over all replicas
                    logs = mean_across_ranks(logs, self.dist, self.device)
                    if self.is_main:
                        for k, v in logs.items():
                            self._writer().add_scalar(f"train/{k}", v, self.step)
                        bar.set_postfix(d=f"{logs.get('d_loss', math.nan):.3f}",
                                        g=f"{logs.get('g_loss', math.nan):.3f}", s=f"{logs['step_time']:.2f}")
                last = logs
                bar.update(1)
                self._periodic(final)
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
        self.interrupted = stopping
        if self._saved_step != self.step:
            self.refresh_ema_stats()
            self.save()  # at exit (also after SIGTERM / Ctrl-C)
        if self.is_main:
            self._finish()
        return last

    def _periodic(self, final: bool) -> None:
        """Samples, evaluation and checkpoints when due, and all three at the last step."""
        t = self.cfg.train

        def due(every: int) -> bool:  # 0 = never
            return every > 0 and (final or self.step % every == 0)

        sample, evaluate, save = due(t.sample_every), due(t.eval_every), due(t.checkpoint_every)
        if sample or evaluate or save:  # on every rank: the EMA G is about to be used
            self.refresh_ema_stats()
        if sample and self.is_main:
            self.log_samples()
        if evaluate and self.is_main:
            self._log_eval()
        if save:
            self.save()

    def _write_run_info(self) -> None:
        t = self.cfg.train
        write_run_info(self.out_dir, {
            "world_size": self.dist.world_size, "backend": self.dist.backend or None, "device": str(self.device),
            "per_replica_batch": self.per_replica_batch, "grad_accum": t.grad_accum,
            "effective_batch": self.effective_batch, "data_sharding": t.data_sharding,
            "cross_replica_bn": self.cfg.model.cross_replica_bn and self.dist.enabled,
            "bf16": t.bf16, "compile": t.compile, "activation_checkpointing": t.activation_checkpointing,
            "start_step": self.step, "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "torch": torch.__version__,
        })

    def _finish(self) -> None:
        if self.writer is not None:
            self.writer.flush()
        if self.skipped_steps:
            print(f"skipped {self.skipped_steps} updates with a non-finite loss", file=sys.stderr)
        if self.bad_log.exists():
            from dvdgan.data import summarize_bad_log

            summary = summarize_bad_log(str(self.bad_log))
            detail = ", ".join(f"{k}: {v}" for k, v in summary.items())
            print(f"skipped {sum(summary.values())} unusable videos ({detail}); names in {self.bad_log}",
                  file=sys.stderr)

    def summary(self) -> str:
        """What a person needs after a run: where it stopped, the last metrics, what to run next."""
        elapsed = time.perf_counter() - self.started
        lines = [f"{'stopped' if self.interrupted else 'finished'} at step {self.step} "
                 f"({elapsed / 60:.1f} min this launch); checkpoint: {self.last_saved}"]
        if self.last_eval:
            shown = ", ".join(f"{k} {v:.3g}" for k, v in self.last_eval.items() if k != "step")
            lines.append(f"evaluation at step {self.last_eval['step']}: {shown}")
        out = self.out_dir
        if self.interrupted:
            lines.append(f"resume: dvdgan train --out {out} --resume")
        lines.append(f"sample: dvdgan sample --checkpoint {out} --out {out}/samples-final")
        return "\n".join(lines)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        cleanup(self.dist)


def train(cfg: Config, out_dir: str | Path, *, resume: bool = False, max_steps: int | None = None,
          progress: bool = True, dataset=None, classes_from_data: bool = False) -> dict[str, float]:
    """Train (or resume) a DVD-GAN; returns the last step's logged values."""
    trainer = Trainer(cfg, out_dir, resume=resume, progress=progress, dataset=dataset,
                      classes_from_data=classes_from_data)
    try:
        return trainer.train(max_steps)
    finally:
        trainer.close()
