"""Benchmarks (``dvdgan bench``): everything measured in one process, after a warm-up, as medians
of repeated runs, with the variants being compared interleaved run by run (so a change in the
machine's load affects them alike).

Sections (``sections=`` / ``--only``):

``step``
    One training step (``train.d_steps`` D updates and one G update, EMA update included) at the
    benchmarked preset: the optimised formulation (:meth:`dvdgan.training.Trainer.train_step`;
    on CUDA also ``train.compile`` and ``train.bf16``) against the straightforward one
    (:class:`dvdgan.baselines.StraightforwardStep`, eager fp32), same
    weights, same inputs. Seconds, videos per
    second (the G-update batch over the step time), peak memory (CPU: the process's peak resident
    set during the step, VmHWM after resetting it; CUDA: ``torch.cuda.max_memory_allocated``).
    Real batches are fixed random clips already in memory: data loading is the ``data``
    section's business. Also timed, interleaved (``baseline``, on by default): the straightforward
    step at the widths of equal FLOPs (:func:`width_matched_baseline`), so that the FLOP/s of our
    step and of the same architecture in the literal formulation are compared at equal work
    (``baseline_flop_rate_ratio``). On CPU every step also gets its process CPU time
    (``cpu_seconds``), which a loaded machine disturbs less than the wall time.
``step64``
    The same at ``kinetics600-12x64`` with ``model.g_ch=32 model.d_ch=32`` (``large_batch`` videos).
``flops``
    FLOPs of one training step (``torch.utils.flop_counter.FlopCounterMode``: convolutions and
    matrix products, forward and backward) over its median time, against the fp32
    matrix-multiply FLOP/s (``torch.mm``, square ``matmul_size``) measured in the same run,
    interleaved with the steps (on CPU also per second of CPU time). ``targets`` / ``targets_met``:
    issue 18's goals (:data:`TARGETS`) and whether this run meets them.
``sample``
    Latency of the EMA generator (eval mode) for two 48-frame 64x64 videos at the paper's width
    (``kinetics600-48x64``, ch = 128; the paper: under 150 ms on one TPU core). On CUDA measured
    for real, eager and replayed as a CUDA graph (fp32 and bf16). On CPU (about 13 TFLOP)
    it is estimated by default: measured with ``sample_frames`` frames and scaled by the
    counted FLOPs (the generator's cost is linear in T); ``sample_frames=48`` measures it.
``dual``
    The dual discriminator (D_S on k frames + D_T on the 2x downsampled video) against one
    full-resolution 3-D discriminator (every DBlock 3-D, on all T frames, same widths, same
    downsampling) at 12x64x64 and 48x128x128: FLOPs at the paper's widths (meta device, no
    memory), time at width ``dual_ch`` (same for both; paper width on CUDA by default), batch 1,
    forward and forward + backward.
``data``
    :mod:`dvdgan.data.loader_bench` on a synthetic H.264 folder in a temporary directory: raw
    (decoded on the fly) and prepared (``dvdgan prepare``) clips per second at 64x64x12 and
    128x128x48, against the clips per second a measured training step consumes
    (per-replica batch x d_steps / step seconds).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dvdgan.baselines import FullVideoDiscriminator, StraightforwardStep, make_straightforward
from dvdgan.config import Config, ModelConfig, apply_overrides, get_preset, load_config
from dvdgan.errors import DvdganError
from dvdgan.memory import rss_kb

SECTIONS = ("step", "step64", "flops", "sample", "dual", "data")
LARGE_STEP = ("kinetics600-12x64", ("model.g_ch=32", "model.d_ch=32"))
SAMPLE_PRESET, SAMPLE_FRAMES, SAMPLE_VIDEOS = "kinetics600-48x64", 48, 2
DUAL_SIZES = ("12x64x64", "48x128x128")
DUAL_PRESETS = {64: "kinetics600-12x64", 128: "kinetics600-48x128", 256: "kinetics600-12x256"}
DATA_SIZES = ((12, 64), (48, 128))
# issue 18's targets at the default preset: the step's FLOP/s >= 0.8 of the fp32 matmul's, >= 1.2x the
# width-matched straightforward step's FLOP/s, and >= 2x faster than the straightforward formulation
TARGETS = {"flops_fraction_of_matmul": 0.8, "baseline_flop_rate_ratio": 1.2, "step_speedup": 2.0}


@dataclasses.dataclass
class BenchOptions:
    preset: str | None = None  # None: the default preset (shapes)
    config_path: str | None = None
    overrides: tuple[str, ...] = ()
    sections: tuple[str, ...] = SECTIONS
    device: str = "auto"
    threads: int | None = None  # torch.set_num_threads; None: torch's default
    repeats: int = 5
    repeats_large: int = 3  # for step64 and the sampling latency
    warmup: int = 1
    batch: int | None = None  # per-replica batch of the step; None: the preset's (at most 32 on CPU, 16 on CUDA)
    large_batch: int = 2
    matmul_size: int = 2048
    baseline: bool = True  # the width-matched straightforward step in the main step section
    sample_frames: int | None = None  # None: 48 on CUDA, 2 (then scaled) on CPU
    sample_ch: int | None = None  # None: the paper's width (ch = 128)
    dual_ch: int | None = None  # None: paper widths on CUDA, 16 on CPU
    dual_sizes: tuple[str, ...] = DUAL_SIZES
    data_seconds: float = 5.0
    data_workers: int = 2
    data_batch: int = 4
    data_sizes: tuple[tuple[int, int], ...] = DATA_SIZES  # (frames, resolution)
    data_video_size: tuple[int, int] = (320, 240)  # synthetic source videos (width, height)
    progress: bool = True


# --------------------------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _clocked(fn: Callable[[], Any], clock: Callable[[], float]) -> float:
    t0 = clock()
    fn()
    return clock() - t0


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


class _PeakMemory:
    """Peak memory of the code run inside: CUDA max_memory_allocated, or on CPU the process's peak
    resident set (VmHWM, reset through /proc/self/clear_refs; else ru_maxrss, which never resets)."""

    def __init__(self, device: torch.device):
        self.device, self.mb, self.kind = device, float("nan"), ""

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS
            except OSError:
                pass
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb, self.kind = torch.cuda.max_memory_allocated(self.device) / 2**20, "cuda_max_memory_allocated"
        else:
            hwm = rss_kb("VmHWM")
            if hwm is not None:
                self.mb, self.kind = hwm / 1024, "process_peak_rss(VmHWM)"
            else:
                import resource

                self.mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                self.kind = "process_peak_rss(ru_maxrss, since start)"
        return False


class _Bar:
    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled and total > 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="run", file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def matmul_flops_per_s(device: torch.device, n: int = 2048, dtype: torch.dtype = torch.float32,
                       calls: int = 2, clock: Callable[[], float] | None = None) -> float:
    """FLOP/s of ``torch.mm`` of two n x n matrices (2 n^3 FLOPs), best of ``calls`` after one warm-up;
    ``clock``: e.g. ``time.process_time`` for the rate per second of CPU time (default: wall time)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    if clock is None:
        best = min(_timed(lambda: torch.mm(a, b), device) for _ in range(calls))
    else:
        best = min(_clocked(lambda: torch.mm(a, b), clock) for _ in range(calls))
    return 2 * n**3 / best


def count_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


# --------------------------------------------------------------------------------------------
# training step
# --------------------------------------------------------------------------------------------


class FixedBatches:
    """An endless iterator of the same real batch (uint8 clips as the data loader yields them); also
    the trainer's dataset (its clips, its class count), which the benchmark never loads from."""

    def __init__(self, model: ModelConfig, batch: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        shape = (batch, model.total_frames, model.resolution, model.resolution, 3)
        self.video = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        self.label = torch.randint(0, model.num_classes, (batch,), generator=g)
        self.num_classes = model.num_classes

    def __len__(self) -> int:
        return len(self.video)

    def __getitem__(self, i: int):
        return self.video[i], int(self.label[i])

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        return self.video, self.label


def build_trainer(cfg: Config, batch: int, device: str, out_dir: str | Path, *, optimised_cuda: bool = False):
    """A Trainer for benchmarking; with ``optimised_cuda`` also train.compile and train.bf16."""
    from dvdgan.training import Trainer

    extra = [f"train.per_replica_batch={batch}", f"train.device={device}", "train.sample_every=0",
             "train.eval_every=0", f"train.compile={optimised_cuda}", f"train.bf16={optimised_cuda}"]
    return Trainer(apply_overrides(cfg, extra), out_dir, progress=False, dataset=FixedBatches(cfg.model, batch))


def _seeded_step(step: Callable[[Iterator], Any], batches: Iterator, seed: int) -> Callable[[], None]:
    def run():
        torch.manual_seed(seed)  # same z, classes and D_S frames for every variant
        step(batches)

    return run


def straightforward_step_flops(cfg: Config, batch: int, device: str | torch.device = "cpu") -> int:
    """FLOPs of one :class:`StraightforwardStep` of ``cfg`` at ``batch`` (fresh weights)."""
    step = StraightforwardStep(cfg=cfg, device=device, batch=batch)
    return count_flops(_seeded_step(step, FixedBatches(cfg.model, batch), 7))


def width_matched_baseline(cfg: Config, batch: int, target_flops: float,
                           device: str | torch.device = "cpu") -> tuple[Config, int]:
    """``cfg`` with the widths (g_ch, d_ch in their ratio) at which the straightforward step does the
    FLOPs closest to ``target_flops``, and the FLOPs it does there.

    Every counted operation (convolution, matrix product) multiplies at most two channel counts, so
    with both widths c times a fixed pair the step's FLOPs are exactly a quadratic in c: counted at
    c = 1, 2, 3 (tiny networks), solved for the target, the nearer integer taken."""
    g, d = cfg.model.g_ch, cfg.model.d_ch
    k = math.gcd(g, d)

    def at(c: int) -> Config:
        return apply_overrides(cfg, [f"model.g_ch={g // k * c}", f"model.d_ch={d // k * c}"])

    f1, f2, f3 = (straightforward_step_flops(at(c), batch, device) for c in (1, 2, 3))
    a2 = f3 - 2 * f2 + f1  # 2a
    b = f2 - f1 - 1.5 * a2
    e = f1 - a2 / 2 - b

    def predicted(c: int) -> float:
        return a2 / 2 * c * c + b * c + e

    if a2 > 0:
        root = (-b + math.sqrt(max(b * b - 2 * a2 * (e - target_flops), 0.0))) / a2
    else:
        root = (target_flops - e) / b
    c = min({max(1, math.floor(root)), max(1, math.ceil(root))}, key=lambda c: abs(predicted(c) - target_flops))
    return at(c), round(predicted(c))


def _step_batch(cfg: Config, device: torch.device, batch: int | None) -> int:
    if batch:
        return batch
    t = cfg.train
    b = t.per_replica_batch or t.batch_size  # the paper presets' 512 is a global batch: cap it
    return min(b, 16 if device.type == "cuda" else 32)


def bench_step(cfg: Config, batch: int, device: torch.device, opts: BenchOptions, ctx: dict, repeats: int,
               label: str, baseline: bool = False) -> dict[str, Any]:
    """Optimised vs straightforward training step, interleaved, medians; with ``baseline`` also the
    straightforward step at the widths of equal FLOPs (:func:`width_matched_baseline`)."""
    tmp = Path(tempfile.mkdtemp(prefix="dvdgan-bench-"))
    cuda = device.type == "cuda"
    trainers, steps = {}, {}
    try:
        trainers["optimised"] = build_trainer(cfg, batch, str(device), tmp / "optimised", optimised_cuda=cuda)
        if cuda:
            trainers["fast_fp32_eager"] = build_trainer(cfg, batch, str(device), tmp / "fp32")
        for name, tr in trainers.items():
            steps[name] = tr.train_step
        steps["reference"] = StraightforwardStep(trainers["optimised"])
        batches = FixedBatches(cfg.model, batch)
        count_on = "fast_fp32_eager" if cuda else "optimised"
        flops: dict[str, int] = {}
        matched = None
        if baseline:  # FLOPs of our step first: the baseline's widths are chosen to match them
            flops[count_on] = count_flops(_seeded_step(steps[count_on], batches, 7))
            matched, _ = width_matched_baseline(cfg, batch, flops[count_on], device)
            steps["baseline"] = StraightforwardStep(cfg=matched, device=device, batch=batch)
        optimised = {name: name == "optimised" and cuda for name in steps}
        bar = _Bar(len(steps) * (max(opts.warmup, 2 if cuda else 0) + repeats), f"{label}: training step",
                   opts.progress)
        times: dict[str, list[float]] = {k: [] for k in steps}
        cpu_times: dict[str, list[float]] = {k: [] for k in steps}  # process CPU time (the load's share removed)
        peaks: dict[str, _PeakMemory] = {}
        warmup = max(opts.warmup, 2) if cuda else opts.warmup  # compilation, autotuning
        for name, step in steps.items():  # warm-up (and, with compile, compilation)
            for w in range(warmup):
                if w == warmup - 1:
                    with _PeakMemory(device) as pm:
                        _seeded_step(step, batches, 1000 + w)()
                    peaks[name] = pm
                else:
                    _seeded_step(step, batches, 1000 + w)()
                bar.update()
        names = list(steps)
        for r in range(repeats):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                c0 = time.process_time()
                if name not in peaks:
                    with _PeakMemory(device) as pm:
                        times[name].append(_timed(_seeded_step(steps[name], batches, r), device))
                    peaks[name] = pm
                else:
                    times[name].append(_timed(_seeded_step(steps[name], batches, r), device))
                cpu_times[name].append(time.process_time() - c0)
                bar.update()
            ctx["matmul_samples"].append(matmul_flops_per_s(device, opts.matmul_size))
            if not cuda:
                ctx["matmul_cpu_time_samples"].append(
                    matmul_flops_per_s(device, opts.matmul_size, clock=time.process_time))
        bar.close()
        out: dict[str, Any] = {
            "preset": cfg.name, "overrides": list(ctx.get("overrides_of", {}).get(label, [])),
            "video": [cfg.model.total_frames, cfg.model.resolution, cfg.model.resolution],
            "g_ch": cfg.model.g_ch, "d_ch": cfg.model.d_ch, "per_replica_batch": batch,
            "d_steps": cfg.train.d_steps, "repeats": repeats,
        }
        for name in steps:
            s = _median(times[name])
            out[name] = {
                "seconds": s, "videos_per_s": batch / s, "all_seconds": times[name],
                "cpu_seconds": _median(cpu_times[name]), "all_cpu_seconds": cpu_times[name],
                "peak_memory_mb": peaks[name].mb, "memory_kind": peaks[name].kind,
                "formulation": "optimised" if name in trainers else "straightforward",
                "compile": optimised[name], "bf16": optimised[name],
            }
        out["speedup"] = out["reference"]["seconds"] / out["optimised"]["seconds"]
        out["speedup_cpu_time"] = out["reference"]["cpu_seconds"] / out["optimised"]["cpu_seconds"]
        out["data_demand_clips_per_s"] = batch * cfg.train.d_steps / out["optimised"]["seconds"]
        # FLOPs of the step as executed by each formulation (eager fp32: what the counter sees)
        if "flops" in opts.sections or baseline:
            if count_on not in flops:
                flops[count_on] = count_flops(_seeded_step(steps[count_on], batches, 7))
            out["flops_per_step"] = flops[count_on]
            out["reference_flops_per_step"] = count_flops(_seeded_step(steps["reference"], batches, 7))
        if baseline:
            bl = out["baseline"]
            bl["g_ch"], bl["d_ch"] = matched.model.g_ch, matched.model.d_ch
            bl["flops_per_step"] = count_flops(_seeded_step(steps["baseline"], batches, 7))
            bl["what"] = "the straightforward step (dvdgan/baselines.py) at the widths of equal FLOPs"
            for key, clock in (("", "seconds"), ("_cpu_time", "cpu_seconds")):
                ours = out["flops_per_step"] / out["optimised"][clock]
                theirs = bl["flops_per_step"] / bl[clock]
                out[f"flops_per_s{key}"], bl[f"flops_per_s{key}"] = ours, theirs
                out[f"baseline_flop_rate_ratio{key}"] = ours / theirs
        return out
    finally:
        for tr in trainers.values():
            with contextlib.suppress(Exception):
                tr.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _flops_summary(step: dict[str, Any], matmul: float, matmul_cpu: float | None = None) -> dict[str, Any]:
    s = step["optimised"]["seconds"]
    achieved = step["flops_per_step"] / s
    extra = {}
    if matmul_cpu:  # per second of CPU time, against the matmul per second of CPU time
        achieved_cpu = step["flops_per_step"] / step["optimised"]["cpu_seconds"]
        extra = {"achieved_flops_per_cpu_s": achieved_cpu, "matmul_fp32_flops_per_cpu_s": matmul_cpu,
                 "fraction_of_matmul_cpu_time": achieved_cpu / matmul_cpu}
    return {**extra,
        "flops_per_step": step["flops_per_step"],
        "reference_flops_per_step": step["reference_flops_per_step"],
        "step_seconds": s,
        "achieved_flops_per_s": achieved,
        "matmul_fp32_flops_per_s": matmul,
        "fraction_of_matmul": achieved / matmul,
        # the straightforward formulation's FLOPs done in the optimised step's time
        "reference_flops_over_optimised_time_fraction": step["reference_flops_per_step"] / s / matmul,
    }


# --------------------------------------------------------------------------------------------
# sampling latency
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def random_init_(module: nn.Module) -> nn.Module:
    """Fast random weights for timing (orthogonal init of a 300M-parameter G takes minutes)."""
    for p in module.parameters():
        if p.dim() >= 2:
            p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()))
        else:
            p.zero_()
    for name, b in module.named_buffers():
        if name.endswith("running_var"):
            b.fill_(1.0)
        elif name.endswith("sn_u"):
            b.normal_()
            b.div_(b.norm())
        else:
            b.zero_()
    return module


def build_eval_generator(model: ModelConfig, device: torch.device) -> nn.Module:
    from dvdgan.models import power_iteration
    from dvdgan.models.prediction import build_generator

    with torch.device("meta"):
        g = build_generator(model)
    g = random_init_(g.to_empty(device=device))
    power_iteration(g, 3)
    return g.eval().requires_grad_(False)


def _cuda_graph(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


def bench_sample(device: torch.device, opts: BenchOptions) -> dict[str, Any]:
    cfg = get_preset(SAMPLE_PRESET)
    cuda = device.type == "cuda"
    frames = opts.sample_frames or (SAMPLE_FRAMES if cuda else 2)
    model = dataclasses.replace(cfg.model, frames=frames)
    if opts.sample_ch:
        model = dataclasses.replace(model, g_ch=opts.sample_ch)
    g = build_eval_generator(model, device)
    z = torch.randn(SAMPLE_VIDEOS, model.z_dim, device=device)
    y = torch.randint(model.num_classes, (SAMPLE_VIDEOS,), device=device)

    def eager() -> torch.Tensor:
        with torch.no_grad():
            return g(z, y)

    variants: dict[str, Callable[[], torch.Tensor]] = {"eager_fp32": eager}
    errors: dict[str, str] = {}
    if cuda:
        def bf16() -> torch.Tensor:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                return g(z, y)

        for name, fn in (("cuda_graph_fp32", eager), ("cuda_graph_bf16", bf16)):
            try:
                variants[name] = _cuda_graph(fn)
            except Exception as e:  # report, keep benchmarking
                errors[name] = f"{type(e).__name__}: {e}"
    reps = opts.repeats_large if not cuda else max(opts.repeats, 10)
    bar = _Bar(len(variants) * (opts.warmup + reps), "sampling latency", opts.progress)
    for fn in variants.values():
        for _ in range(max(opts.warmup, 1)):
            _timed(fn, device)
            bar.update()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            times[name].append(_timed(fn, device))
            bar.update()
    bar.close()
    with torch.device("meta"):
        from dvdgan.models.prediction import build_generator

        flops = {}
        for t in sorted({frames, SAMPLE_FRAMES}):
            gm = build_generator(dataclasses.replace(model, frames=t)).eval()
            zm, ym = torch.empty(SAMPLE_VIDEOS, model.z_dim), torch.zeros(SAMPLE_VIDEOS, dtype=torch.long)
            flops[t] = count_flops(lambda gm=gm, zm=zm, ym=ym: gm(zm, ym))
    ms = {k: 1e3 * _median(v) for k, v in times.items()}
    best = min(ms, key=ms.get)
    scale = flops[SAMPLE_FRAMES] / flops[frames]
    out = {
        "preset": SAMPLE_PRESET, "g_ch": model.g_ch, "videos": SAMPLE_VIDEOS, "resolution": model.resolution,
        "frames_target": SAMPLE_FRAMES, "frames_measured": frames, "ms": ms, "best_variant": best,
        "flops_measured": flops[frames], "flops_target": flops[SAMPLE_FRAMES], "repeats": reps,
        "estimated": frames != SAMPLE_FRAMES,
        "latency_ms": ms[best] * scale,
        "paper_tpu_core_ms": 150.0,
    }
    if out["estimated"]:
        out["method"] = (f"measured with {frames} frames, scaled by the counted FLOPs of {SAMPLE_FRAMES} frames "
                         f"(x{scale:.1f}; the generator's cost is linear in T)")
    if errors:
        out["errors"] = errors
    return out


# --------------------------------------------------------------------------------------------
# dual vs full-video discriminator
# --------------------------------------------------------------------------------------------


def _parse_size(s: str) -> tuple[int, int]:
    try:
        t, h, w = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise DvdganError(f"dual size {s!r} is not TxHxW") from None
    if h != w:
        raise DvdganError(f"dual size {s!r}: frames must be square")
    return t, h


def _dual_model(base: ModelConfig, frames: int, res: int, ch: int | None) -> ModelConfig:
    m = get_preset(DUAL_PRESETS[res]).model if res in DUAL_PRESETS else base
    m = dataclasses.replace(m, frames=frames, resolution=res, context_frames=0, d_attention=(),
                            frames_per_spatial_d=min(m.frames_per_spatial_d, frames))
    if ch is not None:
        m = dataclasses.replace(m, d_ch=ch)
    return m


def _d_scores(d: nn.Module, video: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = d(video, y)
    return sum(out) if isinstance(out, tuple) else out


def _d_flops(d: nn.Module, video: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    fwd = count_flops(lambda: _d_scores(d, video, y))
    both = count_flops(lambda: _d_scores(d, video, y).sum().backward())
    return fwd, both


def _d_time(d: nn.Module, video: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """Seconds of (forward, forward + backward) of a D update's computation on one batch."""
    d.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    _sync(device)
    t0 = time.perf_counter()
    s = _d_scores(d, video, y).sum()
    _sync(device)
    t1 = time.perf_counter()
    s.backward()
    _sync(device)
    return t1 - t0, time.perf_counter() - t0


def bench_dual(base: ModelConfig, device: torch.device, opts: BenchOptions) -> dict[str, Any]:
    from dvdgan.models import DualDiscriminator

    cuda = device.type == "cuda"
    ch = opts.dual_ch if opts.dual_ch is not None else (None if cuda else 16)
    sizes = [_parse_size(s) for s in opts.dual_sizes]
    bar = _Bar(len(sizes) * 2 * (opts.warmup + opts.repeats), "dual vs full D", opts.progress)
    results: dict[str, Any] = {}
    for frames, res in sizes:
        key = f"{frames}x{res}x{res}"
        paper = _dual_model(base, frames, res, None)
        flops: dict[str, dict[str, int]] = {}
        with torch.device("meta"):  # "": as timed below; "_reference": the straightforward formulation
            for straightforward, suffix in ((False, ""), (True, "_reference")):
                for name, d in (("dual", DualDiscriminator(paper)), ("full_3d", FullVideoDiscriminator(paper))):
                    if straightforward:
                        d = make_straightforward(d)
                    v = torch.empty(1, frames, 3, res, res)
                    fl = _d_flops(d, v, torch.zeros(1, dtype=torch.long))
                    flops[name + suffix] = {"forward": fl[0], "forward_backward": fl[1]}
        m = _dual_model(base, frames, res, ch)
        torch.manual_seed(0)
        nets = {"dual": DualDiscriminator(m).to(device), "full_3d": FullVideoDiscriminator(m).to(device)}
        video = torch.rand(1, frames, 3, res, res, device=device) * 2 - 1
        y = torch.zeros(1, dtype=torch.long, device=device)
        fwd: dict[str, list[float]] = {k: [] for k in nets}
        both: dict[str, list[float]] = {k: [] for k in nets}

        for name in nets:
            for _ in range(opts.warmup):
                _d_time(nets[name], video, y, device)
                bar.update()
        for r in range(opts.repeats):
            for name in (list(nets) if r % 2 == 0 else list(nets)[::-1]):
                f, b = _d_time(nets[name], video, y, device)
                fwd[name].append(f)
                both[name].append(b)
                bar.update()
        t = {k: {"forward_s": _median(fwd[k]), "forward_backward_s": _median(both[k])} for k in nets}
        results[key] = {
            "paper_d_ch": paper.d_ch, "timed_d_ch": m.d_ch, "batch": 1, "k": m.frames_per_spatial_d,
            "d_multipliers": list(m.d_multipliers), "flops": flops, "time": t,
            "flops_ratio_forward": flops["dual"]["forward"] / flops["full_3d"]["forward"],
            "flops_ratio_forward_backward": flops["dual"]["forward_backward"] / flops["full_3d"]["forward_backward"],
            "reference_flops_ratio_forward_backward": (flops["dual_reference"]["forward_backward"]
                                                       / flops["full_3d_reference"]["forward_backward"]),
            "time_ratio_forward": t["dual"]["forward_s"] / t["full_3d"]["forward_s"],
            "time_ratio_forward_backward": t["dual"]["forward_backward_s"] / t["full_3d"]["forward_backward_s"],
        }
        del nets
    bar.close()
    return results


# --------------------------------------------------------------------------------------------
# data loading
# --------------------------------------------------------------------------------------------


def bench_data(opts: BenchOptions, steps: dict[str, dict]) -> dict[str, Any]:
    from dvdgan.config import DataConfig
    from dvdgan.data import build_dataset
    from dvdgan.data.loader_bench import bench_loader, make_synthetic_video_folder
    from dvdgan.data.prepare import prepare

    tmp = Path(tempfile.mkdtemp(prefix="dvdgan-bench-data-"))
    bar = _Bar(1 + 3 * len(opts.data_sizes), "data loading", opts.progress)
    try:
        max_t = max(t for t, _ in opts.data_sizes)
        vw, vh = opts.data_video_size
        root = make_synthetic_video_folder(tmp / "videos", classes=2, per_class=4, size=(vw, vh),
                                           frames=2 * max_t + 4)
        bar.update()
        out: dict[str, Any] = {"source": f"8 synthetic H.264 videos, {vw}x{vh}, frame stride 2",
                               "batch_size": opts.data_batch, "num_workers": opts.data_workers,
                               "seconds_per_measurement": opts.data_seconds}
        for frames, res in opts.data_sizes:
            key = f"{res}x{res}x{frames}"
            raw = build_dataset(DataConfig(dataset="folder", path=str(root), frame_stride=2), split="train",
                                frames=frames, resolution=res)
            prepare("folder", root, tmp / f"prepared-{res}", res, progress=False)
            bar.update()
            prep = build_dataset(DataConfig(dataset="prepared", path=str(tmp / f"prepared-{res}"), frame_stride=2),
                                 split="train", frames=frames, resolution=res)
            kw = dict(batch_size=opts.data_batch, num_workers=opts.data_workers, seconds=opts.data_seconds,
                      warmup_batches=2)
            r_raw = bench_loader(raw, **kw)
            bar.update()
            r_prep = bench_loader(prep, **kw)
            bar.update()
            # data.cache_mb: the same folder decoded once into memory, clips cut there in this process
            t0 = time.perf_counter()
            raw.preload(2048, progress=False)
            preload_s = time.perf_counter() - t0
            r_mem = bench_loader(raw, **{**kw, "num_workers": 0})
            entry: dict[str, Any] = {"raw_clips_per_s": r_raw["clips_per_s"],
                                     "prepared_clips_per_s": r_prep["clips_per_s"],
                                     "prepared_over_raw": r_prep["clips_per_s"] / r_raw["clips_per_s"],
                                     "in_memory_clips_per_s": r_mem["clips_per_s"],
                                     "in_memory_preload_seconds": preload_s}
            for label, st in steps.items():
                if st["video"] == [frames, res, res]:
                    d = st["data_demand_clips_per_s"]
                    entry["step"] = label
                    entry["step_demand_clips_per_s"] = d
                    entry["raw_over_demand"] = r_raw["clips_per_s"] / d
                    entry["prepared_over_demand"] = r_prep["clips_per_s"] / d
                    entry["in_memory_over_demand"] = r_mem["clips_per_s"] / d
            out[key] = entry
        out["step_demand_clips_per_s"] = {label: st["data_demand_clips_per_s"] for label, st in steps.items()}
        return out
    finally:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the whole benchmark
# --------------------------------------------------------------------------------------------


def _machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        with contextlib.suppress(OSError):
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    return info


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    """Run the selected sections; returns the JSON-able result (see the module docstring)."""
    unknown = [s for s in opts.sections if s not in SECTIONS]
    if unknown:
        raise DvdganError(f"unknown bench section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    name = opts.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    cfg = load_config(opts.preset, list(opts.overrides), opts.config_path)
    ctx: dict[str, Any] = {"matmul_samples": [], "matmul_cpu_time_samples": [], "overrides_of": {}}
    result: dict[str, Any] = {
        "step_speedup": None, "dual_vs_full_d_time_ratio": None, "flops_fraction_of_matmul": None,
        "baseline_flop_rate_ratio": None, "step_speedup_cpu_time": None,
        "machine": _machine(device), "loadavg_start": _loadavg(), "sections": list(opts.sections),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "options": dataclasses.asdict(opts),
    }
    t_start = time.perf_counter()
    steps: dict[str, dict] = {}
    main_label = cfg.name + (" " + " ".join(opts.overrides) if opts.overrides else "")
    if "step" in opts.sections or ("flops" in opts.sections and "step64" not in opts.sections):
        ctx["overrides_of"][main_label] = list(opts.overrides)
        batch = _step_batch(cfg, device, opts.batch)
        steps[main_label] = bench_step(cfg, batch, device, opts, ctx, opts.repeats, main_label,
                                       baseline=opts.baseline and "step" in opts.sections)
        result["step"] = steps[main_label]
        result["step_speedup"] = steps[main_label]["speedup"]
        result["step_speedup_cpu_time"] = steps[main_label]["speedup_cpu_time"]
        if "baseline" in steps[main_label]:
            result["baseline_flop_rate_ratio"] = steps[main_label]["baseline_flop_rate_ratio"]
            result["baseline_flop_rate_ratio_cpu_time"] = steps[main_label]["baseline_flop_rate_ratio_cpu_time"]
    if "step64" in opts.sections:
        preset, ov = LARGE_STEP
        label = f"{preset} " + " ".join(ov)
        ctx["overrides_of"][label] = list(ov)
        cfg64 = load_config(preset, list(ov))
        steps[label] = bench_step(cfg64, opts.large_batch, device, opts, ctx, opts.repeats_large, label)
        result["step64"] = steps[label]
        result["step_speedup_12x64_ch32"] = steps[label]["speedup"]
    if "flops" in opts.sections:
        matmul = _median(ctx["matmul_samples"])
        result["matmul_fp32_flops_per_s"] = matmul
        result["matmul_fp32_samples"] = ctx["matmul_samples"]
        matmul_cpu = _median(ctx["matmul_cpu_time_samples"]) if ctx["matmul_cpu_time_samples"] else None
        if matmul_cpu:
            result["matmul_fp32_flops_per_cpu_s"] = matmul_cpu
            result["matmul_fp32_cpu_time_samples"] = ctx["matmul_cpu_time_samples"]
        result["flops"] = {label: _flops_summary(st, matmul, matmul_cpu) for label, st in steps.items()}
        if device.type == "cuda":  # the optimised step runs in bf16: also against the bf16 matmul
            bf16 = result["matmul_bf16_flops_per_s"] = matmul_flops_per_s(device, 8192, torch.bfloat16, calls=5)
            for label, st in steps.items():
                f = result["flops"][label]
                f["fraction_of_bf16_matmul"] = f["achieved_flops_per_s"] / bf16
                f["fast_fp32_eager_fraction_of_matmul"] = (
                    st["flops_per_step"] / st["fast_fp32_eager"]["seconds"] / matmul)
        if main_label in result["flops"]:
            result["flops_fraction_of_matmul"] = result["flops"][main_label]["fraction_of_matmul"]
        label64 = f"{LARGE_STEP[0]} " + " ".join(LARGE_STEP[1])
        if label64 in result["flops"]:
            result["flops_fraction_of_matmul_12x64_ch32"] = result["flops"][label64]["fraction_of_matmul"]
    if "sample" in opts.sections:
        result["sample"] = bench_sample(device, opts)
        result["sample_latency_ms"] = result["sample"]["latency_ms"]
    if "dual" in opts.sections:
        result["dual"] = bench_dual(cfg.model, device, opts)
        key = "48x128x128" if "48x128x128" in result["dual"] else max(
            result["dual"], key=lambda k: math.prod(int(v) for v in k.split("x")))
        result["dual_vs_full_d_size"] = key
        result["dual_vs_full_d_time_ratio"] = result["dual"][key]["time_ratio_forward_backward"]
        result["dual_vs_full_d_flops_ratio"] = result["dual"][key]["flops_ratio_forward_backward"]
    if "data" in opts.sections:
        result["data"] = bench_data(opts, steps)
    result["targets"] = dict(TARGETS)
    result["targets_met"] = {k: result.get(k) is not None and result[k] >= v for k, v in TARGETS.items()}
    result["loadavg_end"] = _loadavg()
    result["total_seconds"] = time.perf_counter() - t_start
    return result


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------


def _si(x: float, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    for div, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f} {p}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def _secs(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def format_table(r: dict[str, Any]) -> str:
    """The human-readable summary of a :func:`run_bench` result (Markdown table)."""
    m = r["machine"]
    where = m.get("gpu") or m.get("cpu") or m["device"]
    lines = [f"dvdgan bench on {m['device']} ({where}; torch threads: {m['torch_threads']}; torch {m['torch']}); "
             f"load average {r.get('loadavg_start')} -> {r.get('loadavg_end')}", "",
             "| measurement | optimised | straightforward / reference | ratio |", "|---|---|---|---|"]
    for key in ("step", "step64"):
        st = r.get(key)
        if not st:
            continue
        o, ref = st["optimised"], st["reference"]
        what = (f"train step {st['preset']} {' '.join(st['overrides'])} ({st['video'][0]}x{st['video'][1]}x"
                f"{st['video'][2]}, batch {st['per_replica_batch']}, {st['d_steps']} D + 1 G)").replace("  ", " ")
        lines.append(f"| {what} | {_secs(o['seconds'])}, {o['videos_per_s']:.2f} videos/s, "
                     f"peak {o['peak_memory_mb']:.0f} MB | {_secs(ref['seconds'])}, "
                     f"peak {ref['peak_memory_mb']:.0f} MB | **{st['speedup']:.2f}x** faster |")
    st = r.get("step") or {}
    if "baseline" in st:
        bl = st["baseline"]
        lines.append(f"| achieved FLOP/s vs the straightforward step at equal FLOPs (g_ch={bl['g_ch']}, "
                     f"d_ch={bl['d_ch']}: {_si(bl['flops_per_step'], 'FLOP')}/step, {_secs(bl['seconds'])}) | "
                     f"{_si(st['flops_per_s'], 'FLOP/s')} | {_si(bl['flops_per_s'], 'FLOP/s')} | "
                     f"**{st['baseline_flop_rate_ratio']:.2f}x** (CPU time: "
                     f"{st['baseline_flop_rate_ratio_cpu_time']:.2f}x) |")
    for label, f in (r.get("flops") or {}).items():
        lines.append(f"| achieved FLOP/s, {label} ({_si(f['flops_per_step'], 'FLOP')}/step; reference "
                     f"{_si(f['reference_flops_per_step'], 'FLOP')}) | {_si(f['achieved_flops_per_s'], 'FLOP/s')} | "
                     f"fp32 matmul {_si(f['matmul_fp32_flops_per_s'], 'FLOP/s')} | "
                     f"**{100 * f['fraction_of_matmul']:.0f} %** of matmul |")
    s = r.get("sample")
    if s:
        est = " (estimated: " + s["method"] + ")" if s["estimated"] else ""
        ms = ", ".join(f"{k} {_secs(v / 1e3)}" for k, v in s["ms"].items())
        lines.append(f"| EMA G sampling, {s['videos']} x {s['frames_target']}x{s['resolution']}x{s['resolution']} "
                     f"at ch={s['g_ch']} | **{_secs(s['latency_ms'] / 1e3)}**{est} | paper: < 150 ms on one TPU core | "
                     f"measured at T={s['frames_measured']}: {ms} |")
    for key, d in (r.get("dual") or {}).items():
        t, f = d["time"], d["flops"]
        lines.append(f"| dual D vs full 3-D D, {key}, fwd+bwd: FLOPs at paper width ch={d['paper_d_ch']} "
                     f"(literal formulation: {d['reference_flops_ratio_forward_backward']:.3f}x) | "
                     f"{_si(f['dual']['forward_backward'], 'FLOP')} | "
                     f"{_si(f['full_3d']['forward_backward'], 'FLOP')} | {d['flops_ratio_forward_backward']:.3f}x |")
        lines.append(f"| dual D vs full 3-D D, {key}: time at ch={d['timed_d_ch']}, batch 1 (fwd / fwd+bwd) | "
                     f"{_secs(t['dual']['forward_s'])} / {_secs(t['dual']['forward_backward_s'])} | "
                     f"{_secs(t['full_3d']['forward_s'])} / {_secs(t['full_3d']['forward_backward_s'])} | "
                     f"{d['time_ratio_forward']:.3f}x / **{d['time_ratio_forward_backward']:.3f}x** |")
    dd = r.get("data")
    if dd:
        for key, e in dd.items():
            if not isinstance(e, dict) or "raw_clips_per_s" not in e:
                continue
            res, _, frames = (int(v) for v in key.split("x"))
            demand = (f"; a {e['step']} step consumes {e['step_demand_clips_per_s']:.2f} clips/s "
                      f"(prepared {e['prepared_over_demand']:.0f}x that, in memory "
                      f"{e['in_memory_over_demand']:.0f}x)") if "step" in e else ""
            lines.append(f"| data loader {res}x{res}x{frames} (batch {dd['batch_size']}, "
                         f"{dd['num_workers']} workers) | prepared {e['prepared_clips_per_s']:.1f} clips/s | "
                         f"raw {e['raw_clips_per_s']:.1f} clips/s | "
                         f"{e['prepared_over_raw']:.1f}x; in memory (data.cache_mb, 0 workers) "
                         f"{e['in_memory_clips_per_s']:.0f} clips/s after {e['in_memory_preload_seconds']:.1f} s of "
                         f"decoding{demand} |")
        for label, v in dd["step_demand_clips_per_s"].items():
            lines.append(f"| clips/s one training step consumes, {label} | {v:.2f} | | |")
    lines.append("")
    lines.append(f"step_speedup={_fmt(r['step_speedup'])}  baseline_flop_rate_ratio="
                 f"{_fmt(r['baseline_flop_rate_ratio'])}  dual_vs_full_d_time_ratio="
                 f"{_fmt(r['dual_vs_full_d_time_ratio'])}  "
                 f"flops_fraction_of_matmul={_fmt(r['flops_fraction_of_matmul'])}  ({r['total_seconds']:.0f} s)")
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def write_json(result: dict[str, Any], path: str | Path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=2, default=float) + "\n")


__all__ = ["BenchOptions", "SECTIONS", "TARGETS", "run_bench", "format_table", "write_json", "FixedBatches",
           "build_trainer", "matmul_flops_per_s", "count_flops", "width_matched_baseline", "straightforward_step_flops"]
