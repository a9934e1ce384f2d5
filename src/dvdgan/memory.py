"""Memory planner (``dvdgan info --memory``): the peak memory of one training step per replica,
and the largest per-replica batch that fits a device, without allocating anything.

How: one training step (B.3: ``d_steps`` D updates, one G update, the EMA update) runs on fake
tensors (``FakeTensorMode``: shapes, dtypes and storages, no data, no compute) under
:class:`LiveBytes`, a dispatch mode that counts the bytes of every tensor storage from the op that
returns it until the last reference to it dies, and keeps the peak. The step follows
:meth:`dvdgan.training.Trainer.d_update` / ``g_update`` operation for operation (same networks,
same ``Precision`` context for ``train.bf16``, same activation checkpointing, same order of
allocation and release), from the steady state of a run: G's and D's gradients of the previous
updates and both Adam moments already exist. Weights, gradients, Adam state, the EMA copy and the
activations of the D and G updates are therefore all counted, at the moment they coexist.

What it does not see: allocations inside kernels that do not go through the dispatcher (cuDNN /
cuBLAS workspaces), the CUDA context, and the caching allocator's fragmentation (reserved minus
allocated memory). :func:`largest_batch` leaves room for them: ``overhead`` bytes plus a
``fragmentation`` fraction of the estimate (docs/design.md). ``torch.compile`` is not modelled (the
estimate is that of the eager step; inductor's fusions usually save activation memory).

:func:`measure_step` runs a real :class:`~dvdgan.training.Trainer` step on real tensors and
reports the same live-storage peak (and, on CPU, the process's resident-set growth; on CUDA
``torch.cuda.max_memory_allocated``): tests/test_memory.py checks the estimate against it.
"""

from __future__ import annotations

import contextlib
import math
import re
import tempfile
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

from dvdgan.config import Config, apply_overrides
from dvdgan.errors import DvdganError

GB = 1e9
#: what the estimate does not see, as :func:`largest_batch` assumes it (docs/design.md): the CUDA
#: context and library workspaces, and the caching allocator's fragmentation
DEFAULT_OVERHEAD = 2 * GB
DEFAULT_FRAGMENTATION = 0.10
#: CUDA's caching allocator hands out blocks in multiples of 512 bytes
CUDA_BLOCK = 512


class LiveBytes(TorchDispatchMode):
    """Bytes of live tensor storages, and their peak, over the code run inside.

    Every storage returned by an op is counted once (views and in-place results share it) until
    its last reference dies (a weakref finaliser on the storage). :meth:`track` adds storages
    that already exist (the weights of networks built outside). ``round_to`` rounds every storage
    up, as an allocator does (512 for CUDA). ``phase`` names the part of the step that is running;
    ``phase_peaks`` holds the peak seen during each."""

    def __init__(self, round_to: int = 1):
        super().__init__()
        self.round_to = max(1, round_to)
        self.live: dict[int, int] = {}
        self.current = self.peak = 0
        self.phase = ""
        self.phase_peaks: dict[str, int] = {}

    def _size(self, nbytes: int) -> int:
        return -(-nbytes // self.round_to) * self.round_to

    def _add(self, t: torch.Tensor) -> None:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
            return
        key = id(storage)
        if key in self.live:
            return
        n = self._size(storage.nbytes())
        self.live[key] = n
        self.current += n
        self.peak = max(self.peak, self.current)
        if self.phase:
            self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def track(self, tensors) -> None:
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._add(t)

    def reset_peak(self) -> None:
        self.peak = self.current
        self.phase_peaks = {}

    @contextlib.contextmanager
    def during(self, phase: str):
        outer, self.phase = self.phase, phase
        self.phase_peaks[phase] = max(self.phase_peaks.get(phase, 0), self.current)
        try:
            yield
        finally:
            self.phase = outer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self._add, out)
        return out


def _nbytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _state_tensors(*objs) -> list[torch.Tensor]:
    """Every tensor a training run holds between steps: weights, buffers, gradients, optimiser state."""
    out: list[torch.Tensor] = []
    for obj in objs:
        if isinstance(obj, nn.Module):
            out += list(obj.parameters()) + list(obj.buffers())
            out += [p.grad for p in obj.parameters() if p.grad is not None]
        elif isinstance(obj, torch.optim.Optimizer):
            for st in obj.state.values():
                out += [v for v in st.values() if isinstance(v, torch.Tensor)]
    return out


class _PlannedStep:
    """The networks and optimisers of one replica and one training step over them, written as
    :class:`~dvdgan.training.Trainer` runs it (``d_update``, ``g_update``, ``update_ema``) minus
    what needs data (finite-loss checks, logged floats). Built on whatever tensors are current:
    fake ones for the estimate."""

    def __init__(self, cfg: Config, *, foreach: bool | None, ddp: bool):
        from dvdgan.augment import VideoAugment
        from dvdgan.device import Precision
        from dvdgan.models import DualDiscriminator
        from dvdgan.models.layers import set_activation_checkpointing
        from dvdgan.models.prediction import build_generator

        t, m = cfg.train, cfg.model
        self.cfg, self.ddp = cfg, ddp
        self.G, self.D, self.G_ema = (self._empty(build_generator, m), self._empty(DualDiscriminator, m),
                                      self._empty(build_generator, m).eval().requires_grad_(False))
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t.lr_g, betas=tuple(t.adam_betas), eps=t.adam_eps,
                                      foreach=foreach)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=tuple(t.adam_betas), eps=t.adam_eps,
                                      foreach=foreach)
        if t.activation_checkpointing:
            set_activation_checkpointing(self.G, True)
            set_activation_checkpointing(self.D, True)
        self.augment = VideoAugment(t.augment, t.augment_p)
        self.precision = Precision("cpu", t.bf16)

    @staticmethod
    def _empty(build, m) -> nn.Module:
        """The network with uninitialised weights of the current kind (fake, under FakeTensorMode):
        built on the meta device (no initialisation to run), then given storages."""
        with torch.device("meta"):
            net = build(m)
        for mod in net.modules():  # (to_empty cannot swap a meta parameter for a fake one)
            for k, p in mod._parameters.items():
                if p is not None:
                    mod._parameters[k] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), p.requires_grad)
            for k, b in mod._buffers.items():
                if b is not None:
                    mod._buffers[k] = torch.empty(b.shape, dtype=b.dtype)
        return net

    def steady_state(self) -> None:
        """Gradients and Adam moments as they are between two steps of a run: G's from the last G
        update, D's from the last D update (each cleared only when its network's next update starts)."""
        for net, opt in ((self.G, self.opt_g), (self.D, self.opt_d)):
            for p in net.parameters():
                p.grad = torch.zeros_like(p)
            opt.step()

    def _real(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        from dvdgan.data.transforms import to_model_input

        m = self.cfg.model
        video = torch.zeros(b, m.total_frames, m.resolution, m.resolution, 3, dtype=torch.uint8)
        return to_model_input(video), torch.zeros(b, dtype=torch.long)

    def _zy(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.cfg.model
        return torch.randn(b, m.z_dim), torch.randint(m.num_classes, (b,))

    def _frames(self, n: int) -> torch.Tensor:
        return self.D.spatial.draw_frame_indices(n, self.cfg.model.total_frames)

    def d_update(self, b: int) -> None:
        from dvdgan.losses import dual_d_loss
        from dvdgan.models import power_iteration
        from dvdgan.models.prediction import full_video

        t, c = self.cfg.train, self.cfg.model.context_frames
        power_iteration(self.D, self.cfg.model.sn_power_iterations)
        self.opt_d.zero_grad(set_to_none=not self.ddp)
        for _ in range(min(t.grad_accum, 2)):  # every micro-batch after the second repeats the second
            real, y_real = self._real(b)
            z, y_fake = self._zy(b)
            with self.precision:
                with torch.no_grad():
                    fake = full_video(self.G, z, y_fake, real[:, :c] if c else None)
                videos = self.augment(torch.cat([real, fake.to(real.dtype)]))
                spatial, temporal = self.D(videos, torch.cat([y_real, y_fake]), frame_indices=self._frames(2 * b))
                loss, _ = dual_d_loss((spatial[:b], temporal[:b]), (spatial[b:], temporal[b:]))
                (loss / t.grad_accum).backward()
        with self.live.during("d_optimizer"):
            self.opt_d.step()

    def g_update(self, b: int) -> None:
        from dvdgan.losses import dual_g_loss
        from dvdgan.models import power_iteration
        from dvdgan.models.prediction import full_video

        t, c = self.cfg.train, self.cfg.model.context_frames
        power_iteration(self.G, self.cfg.model.sn_power_iterations)
        self.opt_g.zero_grad(set_to_none=not self.ddp)
        self.D.requires_grad_(False)
        try:
            for _ in range(min(t.grad_accum, 2)):
                context = self._real(b)[0][:, :c] if c else None
                z, y = self._zy(b)
                with self.precision:
                    fake = full_video(self.G, z, y, context)
                    scores = self.D(self.augment(fake), y, frame_indices=self._frames(b))
                    loss, _ = dual_g_loss(scores)
                    (loss / t.grad_accum).backward()
        finally:
            self.D.requires_grad_(True)
        with self.live.during("g_optimizer"):
            self.opt_g.step()

    def step(self, b: int, live: LiveBytes) -> None:
        """Peaks by phase: the forward and backward passes of the D and G updates grow with the
        batch, the optimiser steps (Adam's foreach temporaries) and the EMA update do not; the
        step's peak at any batch is the largest of the phase peaks."""
        from dvdgan.training.ema import update_ema

        self.live = live
        self.G.train()
        self.D.train()
        with live.during("d_update"):  # the d_steps D updates start and end in the same state: one is run
            self.d_update(b)
        with live.during("g_update"):
            self.g_update(b)
        with live.during("ema_update"):
            update_ema(self.G_ema, self.G, 0.5)


def _plan_config(cfg: Config, bf16: bool | None, checkpointing: bool | None) -> Config:
    extra = []
    if bf16 is not None:
        extra.append(f"train.bf16={bf16}")
    if checkpointing is not None:
        extra.append(f"train.activation_checkpointing={checkpointing}")
    return apply_overrides(cfg, extra) if extra else cfg


def estimate_step(cfg: Config, batch: int, *, target: str = "cuda", bf16: bool | None = None,
                  checkpointing: bool | None = None, replicas: int = 1, round_to: int | None = None
                  ) -> dict[str, Any]:
    """Peak bytes of one training step at per-replica batch ``batch``, on fake tensors.

    ``target``: "cuda" rounds storages to 512-byte blocks and uses Adam's foreach implementation
    (torch's default for CUDA tensors, whose temporaries are parameter-sized lists); "cpu" neither
    (torch's CPU default). ``bf16`` / ``checkpointing`` override ``train.bf16`` /
    ``train.activation_checkpointing``. ``replicas`` > 1: DDP keeps both networks' gradients in its
    buckets for the whole run (``gradient_as_bucket_view``), which the step models by clearing
    gradients to zero instead of freeing them. ``round_to``: bytes every storage is rounded up to
    (default: 512 for "cuda", 1 for "cpu")."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if batch < 1:
        raise DvdganError(f"batch must be >= 1, got {batch}")
    if target not in ("cuda", "cpu"):
        raise DvdganError(f"target must be cuda or cpu, got {target!r}")
    cfg = _plan_config(cfg, bf16, checkpointing)
    cuda = target == "cuda"
    live = LiveBytes(round_to=round_to or (CUDA_BLOCK if cuda else 1))
    rng = torch.get_rng_state()
    try:
        with FakeTensorMode(), live:
            planned = _PlannedStep(cfg, foreach=True if cuda else None, ddp=replicas > 1)
            planned.steady_state()
            state = live.current
            live.reset_peak()
            planned.step(batch, live)
            g, d = _nbytes(planned.G), _nbytes(planned.D)
    finally:
        torch.set_rng_state(rng)  # fake draws still advance the global generator
    return {
        "batch": batch, "target": target, "bf16": cfg.train.bf16,
        "activation_checkpointing": cfg.train.activation_checkpointing, "replicas": replicas,
        "peak_bytes": live.peak, "state_bytes": state,
        "state": {"weights_g": g, "weights_d": d, "ema_g": g, "grads": g + d, "adam": 2 * (g + d)},
        "activations_bytes": live.peak - state,
        "phase_peak_bytes": dict(live.phase_peaks),
    }


def fits(estimate_bytes: float, device_bytes: float, overhead: float = DEFAULT_OVERHEAD,
         fragmentation: float = DEFAULT_FRAGMENTATION) -> bool:
    return estimate_bytes * (1 + fragmentation) + overhead <= device_bytes


#: batches of the two estimates that give the line (docs/design.md)
LINE_BATCHES = (8, 32)


def batch_line(cfg: Config, *, estimate: Callable[..., dict] = estimate_step,
               batches: tuple[int, int] = LINE_BATCHES, **kw) -> dict[str, Any]:
    """The peak as a function of the per-replica batch, from two estimates (a fake step costs the
    same at any batch). Per phase (:meth:`_PlannedStep.step`) the peak is the largest of a few
    affine functions of the batch: batch-independent temporaries (autocast's bf16 weight copies,
    spectral-norm weights, Adam's) and activations, which win from some batch on. The secant
    through ``batches`` (8 and 32 by default) is exact once activations dominate, above it
    inside [8, 32] (a convex function lies below its secant) and may fall below it outside, by
    at most the temporaries that activations hide; :func:`largest_batch` verifies. The step's
    peak is the largest phase's. The estimates count exact bytes (the allocator's rounding is
    not affine in the batch). Returns ``{"phases": {name: [fixed, per_video]}, "estimates": ...}``."""
    b1, b2 = batches
    runs = {b: estimate(cfg, b, round_to=1, **kw) for b in batches}
    phases = {}
    for name in runs[b1]["phase_peak_bytes"]:
        p1, p2 = runs[b1]["phase_peak_bytes"][name], runs[b2]["phase_peak_bytes"][name]
        per_video = (p2 - p1) / (b2 - b1)
        phases[name] = [p1 - per_video * b1, per_video]
    return {"phases": phases, "estimates": runs}


def predict_peak(line: dict, batch: int) -> float:
    return max(fixed + per_video * batch for fixed, per_video in line["phases"].values())


def largest_batch(cfg: Config, device_bytes: float, *, line: dict | None = None, verify: bool = True,
                  overhead: float = DEFAULT_OVERHEAD, fragmentation: float = DEFAULT_FRAGMENTATION,
                  estimate: Callable[..., dict] = estimate_step, **kw) -> dict[str, Any]:
    """The largest per-replica batch whose peak fits ``device_bytes`` (:func:`fits`), from the
    :func:`batch_line` (``line``, or two estimates); ``verify``: one more estimate at that batch,
    stepped down while it does not fit. ``largest`` is 0 when not even batch 1 fits. ``kw``:
    target, bf16, checkpointing, replicas (:func:`estimate_step`)."""
    line = line or batch_line(cfg, estimate=estimate, **kw)
    b = 0
    per_video = max(max(pv for _, pv in line["phases"].values()), 1)
    budget = (device_bytes - overhead) / (1 + fragmentation)
    b = max(0, math.floor((budget - max(f for f, _ in line["phases"].values())) / per_video))
    while fits(predict_peak(line, b + 1), device_bytes, overhead, fragmentation):  # steeper phases first
        b += 1
    while b > 0 and not fits(predict_peak(line, b), device_bytes, overhead, fragmentation):
        b -= 1
    out = {"device_bytes": device_bytes, "largest": b, "predicted_peak_bytes": predict_peak(line, b) if b else None,
           "overhead_bytes": overhead, "fragmentation": fragmentation}
    if verify and b > 0:  # with the allocator's rounding; stepped down in proportion while it does not fit
        measured = estimate(cfg, b, **kw)["peak_bytes"]
        while b > 0 and not fits(measured, device_bytes, overhead, fragmentation):
            b = min(b - 1, math.floor(b * budget / measured))
            measured = estimate(cfg, b, **kw)["peak_bytes"] if b > 0 else None
        out.update(largest=max(b, 0), estimated_peak_bytes=measured)
    return out


def parse_size(text: str) -> float:
    """'80GB', '80G', '40 GiB', '24e9' -> bytes (GB = 1e9, GiB = 2**30)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*(gib|gb|g|mib|mb|m|b)?\s*", str(text).lower())
    if m is None:
        raise DvdganError(f"not a memory size: {text!r} (e.g. 80GB, 40GiB)")
    scale = {None: 1.0, "b": 1.0, "gb": 1e9, "g": 1e9, "gib": 2.0**30, "mb": 1e6, "m": 1e6, "mib": 2.0**20}
    value = float(m.group(1)) * scale[m.group(2)]
    if value <= 0:
        raise DvdganError(f"memory size must be positive: {text!r}")
    return value


# --------------------------------------------------------------------------------------------
# measured: a real Trainer step on real tensors
# --------------------------------------------------------------------------------------------


def rss_kb(field: str) -> int | None:
    """A ``/proc/self/status`` field of this process in kB (``VmRSS``, ``VmHWM``); None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def measure_step(cfg: Config, batch: int, device: str = "cpu") -> dict[str, Any]:
    """One real :meth:`Trainer.train_step` at per-replica batch ``batch`` after one warm-up step (so
    gradients and Adam moments exist, as in a run): the live-storage peak (:class:`LiveBytes`
    over real tensors, the same count as the estimate's), on CPU the growth of the process's peak
    resident set over the step (``VmHWM`` after resetting it), and on CUDA
    ``torch.cuda.max_memory_allocated``."""
    from dvdgan.bench import FixedBatches
    from dvdgan.training import Trainer

    cfg = apply_overrides(cfg, [f"train.per_replica_batch={batch}", f"train.device={device}",
                                "train.sample_every=0", "train.eval_every=0", "train.log_every=1000000"])
    data = FixedBatches(cfg.model, batch)
    with tempfile.TemporaryDirectory(prefix="dvdgan-memory-") as tmp:
        trainer = Trainer(cfg, tmp, progress=False, dataset=data)
        try:
            trainer.train_step(data)
            dev = trainer.device
            out: dict[str, Any] = {"batch": batch, "device": str(dev)}
            live = LiveBytes(round_to=CUDA_BLOCK if dev.type == "cuda" else 1)
            live.track(_state_tensors(trainer.G, trainer.D, trainer.G_ema, trainer.opt_g, trainer.opt_d))
            live.track([data.video, data.label])
            out["state_bytes"] = live.current
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                torch.cuda.reset_peak_memory_stats(dev)
                before = torch.cuda.memory_allocated(dev)
            rss0 = rss_kb("VmRSS")
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # VmHWM <- VmRSS
            except OSError:
                rss0 = None
            with live:
                trainer.train_step(data)
            out["live_peak_bytes"] = live.peak
            if rss0 is not None and dev.type == "cpu":
                out["rss_growth_bytes"] = (rss_kb("VmHWM") - rss0) * 1024
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                out["cuda_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(dev)
                out["cuda_allocated_before_bytes"] = before
        finally:
            trainer.close()
    return out


def compare(cfg: Config, batch: int, device: str = "cpu") -> dict[str, Any]:
    """The estimate (fake tensors, target = the device's type) against :func:`measure_step` on
    ``device``: ``ratio`` = estimated / measured peak (live storages; on CUDA
    ``max_memory_allocated``)."""
    target = "cuda" if str(device).startswith("cuda") else "cpu"
    est = estimate_step(cfg, batch, target=target)
    meas = measure_step(cfg, batch, device)
    measured = meas.get("cuda_max_memory_allocated_bytes", meas["live_peak_bytes"])
    return {"preset": cfg.name, "batch": batch, "device": meas["device"], "estimated_bytes": est["peak_bytes"],
            "measured_bytes": measured, "ratio": est["peak_bytes"] / measured, "estimate": est, "measured": meas}


def memory_report(cfg: Config, batch: int | None, device_bytes: float, *, replicas: int = 1) -> dict[str, Any]:
    """What ``dvdgan info --memory`` prints: the largest per-replica batch fitting ``device_bytes``
    with the config's train.bf16 / train.activation_checkpointing (and with both on, when they are
    not), and the estimate at ``batch`` (default: that largest batch) with its parts."""
    t = cfg.train
    report: dict[str, Any] = {"preset": cfg.name, "device_bytes": device_bytes, "replicas": replicas,
                              "configured": {"bf16": t.bf16, "activation_checkpointing": t.activation_checkpointing},
                              "overhead_bytes": DEFAULT_OVERHEAD, "fragmentation": DEFAULT_FRAGMENTATION}
    line = batch_line(cfg, replicas=replicas)
    report["largest_batch"] = largest_batch(cfg, device_bytes, line=line, replicas=replicas)["largest"]
    report["per_video_bytes"] = {k: v[1] for k, v in line["phases"].items()}
    if not (t.bf16 and t.activation_checkpointing):
        other = batch_line(cfg, bf16=True, checkpointing=True, replicas=replicas)
        report["largest_batch_bf16_checkpointing"] = largest_batch(cfg, device_bytes, line=other,
                                                                   verify=False)["largest"]
    b = batch or max(report["largest_batch"], 1)
    est = estimate_step(cfg, b, replicas=replicas)
    report["estimate"] = est
    report["fits"] = fits(est["peak_bytes"], device_bytes)
    return report


__all__ = ["LiveBytes", "estimate_step", "batch_line", "predict_peak", "largest_batch", "measure_step", "compare",
           "memory_report", "fits", "parse_size"]
