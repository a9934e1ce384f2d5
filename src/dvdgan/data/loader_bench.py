"""Data-loading throughput: how many clips per second a loader gives, and how many worker
processes training needs so that decoding stays off the critical path.

- :func:`bench_loader`: clips/s of a torch DataLoader over a dataset with ``num_workers``
  workers, fed training keys ``(index, sample_seed)`` by the public
  :class:`dvdgan.data.ClipSampler`, after a warm-up.
- :func:`bench_workers`: :func:`bench_loader` for several worker counts (default 0, 1, 2).
- :func:`decode_rate` / :func:`choose_num_workers`: time a few clips in-process and pick the
  number of loader workers that keeps up with what a training step consumes.
- :func:`make_synthetic_video_folder`: a folder dataset of PyAV-encoded videos (H.264 MP4 by
  default) with moving, textured content, so that decoding costs about what real footage costs.

Command line (clips/s of a folder dataset with 0, 1 and 2 workers)::

    python -m dvdgan.data.loader_bench DIR --frames 8 --resolution 32 --stride 1 --batch-size 16
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dvdgan.data import ClipSampler
from dvdgan.data.video import encode_video

# choose_num_workers: in-process decoding may add at most this fraction to a step's time.
DECODE_TOLERANCE = 0.1


def bench_loader(
    dataset,
    batch_size: int,
    num_workers: int = 0,
    seconds: float | None = None,
    n_batches: int | None = None,
    *,
    warmup_batches: int = 2,
    seed: int = 0,
    pin_memory: bool = False,
) -> dict[str, Any]:
    """Clips per second of ``DataLoader(dataset, batch_size, num_workers)`` after a warm-up.

    Stops after ``n_batches`` timed batches or ``seconds`` (default: 10 s), whichever is given
    (both: whichever comes first). Returns clips_per_s, batches_per_s, batches, clips, seconds,
    warmup_s (includes worker start-up), batch_shape, num_workers, batch_size.
    """
    if seconds is None and n_batches is None:
        seconds = 10.0
    total = (warmup_batches + (n_batches if n_batches is not None else 10**9)) * batch_size
    sampler = ClipSampler(len(dataset), seed=seed, num_samples=total)  # the trainer's keys
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    it = iter(loader)
    t0 = time.perf_counter()
    shape: tuple[int, ...] = ()
    for _ in range(warmup_batches):
        video, _label = next(it)
        shape = tuple(video.shape)
    t1 = time.perf_counter()
    batches = clips = 0
    while True:
        if n_batches is not None and batches >= n_batches:
            break
        if seconds is not None and time.perf_counter() - t1 >= seconds:
            break
        video, _label = next(it)
        shape = tuple(video.shape)
        batches += 1
        clips += int(video.shape[0])
    elapsed = time.perf_counter() - t1
    del it, loader
    return {
        "clips_per_s": clips / elapsed if elapsed > 0 else float("nan"),
        "batches_per_s": batches / elapsed if elapsed > 0 else float("nan"),
        "batches": batches,
        "clips": clips,
        "seconds": elapsed,
        "warmup_s": t1 - t0,
        "batch_shape": list(shape),
        "num_workers": num_workers,
        "batch_size": batch_size,
    }


def bench_workers(
    dataset, batch_size: int, workers: tuple[int, ...] = (0, 1, 2), seconds: float = 5.0, **kw: Any
) -> list[dict[str, Any]]:
    """:func:`bench_loader` once per worker count in ``workers``: a list of its results."""
    return [bench_loader(dataset, batch_size, num_workers=w, seconds=seconds, **kw) for w in workers]


def decode_rate(dataset, n_clips: int = 8, max_seconds: float = 2.0, seed: int = 0) -> float:
    """Clips per second one process gets from ``dataset[(index, sample_seed)]`` (training keys).

    One clip is read first and not timed (library start-up); then up to ``n_clips`` clips, or
    as many as ``max_seconds`` allows (at least one).
    """
    sampler = ClipSampler(len(dataset), seed=seed, num_samples=n_clips + 1)
    keys = iter(sampler)
    dataset[next(keys)]
    done, t0 = 0, time.perf_counter()
    for key in keys:
        dataset[key]
        done += 1
        if time.perf_counter() - t0 >= max_seconds:
            break
    elapsed = time.perf_counter() - t0
    return done / elapsed if elapsed > 0 else float("inf")


def choose_num_workers(
    dataset,
    demand_clips_per_s: float,
    max_workers: int,
    *,
    tolerance: float = DECODE_TOLERANCE,
    n_clips: int = 8,
    rate: float | None = None,
) -> int:
    """Loader workers for training on ``dataset`` when a step consumes ``demand_clips_per_s``.

    Times :func:`decode_rate` in-process (or takes ``rate``). Decoding in the training process
    adds ``demand / rate`` to each second of training; if that is at most ``tolerance`` (10 %),
    0 (no worker processes, no start-up cost). Otherwise ``ceil(demand / rate)`` workers (each
    worker decodes at about ``rate``), at least 1, capped by ``max_workers`` and by the CPUs
    left beside the training process (``os.cpu_count() - 1``; 0 on a single core).
    """
    if demand_clips_per_s <= 0 or max_workers <= 0:
        return 0
    if rate is None:
        rate = decode_rate(dataset, n_clips=n_clips)
    if rate <= 0:
        need = max_workers
    elif demand_clips_per_s / rate <= tolerance:
        return 0
    else:
        need = max(1, math.ceil(demand_clips_per_s / rate))
    spare = max(0, (os.cpu_count() or 1) - 1)
    return int(min(need, max_workers, spare))


def synthetic_frames(frames: int, size: tuple[int, int] = (320, 240), seed: int = 0) -> np.ndarray:
    """uint8 [frames, H, W, 3] of drifting textured content (``size`` is (width, height))."""
    w, h = size
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    tex = np.repeat(np.repeat(tex, 8, axis=0), 8, axis=1)  # 8x8 blocks: texture H.264 must code
    yy, xx = np.mgrid[0:h, 0:w]
    vx, vy = rng.uniform(-3, 3, 2)
    cx, cy, r = (
        rng.uniform(0.2 * w, 0.8 * w),
        rng.uniform(0.2 * h, 0.8 * h),
        rng.uniform(0.1, 0.25) * min(w, h),
    )
    color = rng.integers(0, 256, 3, dtype=np.uint8)
    out = np.empty((frames, h, w, 3), dtype=np.uint8)
    for t in range(frames):
        dx, dy = int(t * 2) % 16, int(t) % 16
        out[t] = tex[dy % 8 : dy % 8 + h, dx % 8 : dx % 8 + w]
        out[t, :, :, 0] = (xx + 3 * t) % 256  # a moving gradient in the red channel
        x = (cx + vx * t) % w
        y = (cy + vy * t) % h
        out[t][(xx - x) ** 2 + (yy - y) ** 2 < r * r] = color
    return out


def make_synthetic_video_folder(
    root: str | os.PathLike,
    classes: int = 4,
    per_class: int = 8,
    size: tuple[int, int] = (320, 240),
    frames: int = 64,
    codec: str = "h264",
    seed: int = 0,
    fps: int = 25,
    ext: str = ".mp4",
) -> Path:
    """Write ``root/class_XX/video_YYY<ext>`` (``size`` = (width, height)); existing files are
    kept, so a second call is free. Returns ``root``."""
    root = Path(root)
    for c in range(classes):
        for j in range(per_class):
            p = root / f"class_{c:02d}" / f"video_{j:03d}{ext}"
            if p.exists() and p.stat().st_size > 0:
                continue
            tmp = p.with_name(f".{p.stem}.tmp{os.getpid()}{ext}")
            encode_video(tmp, synthetic_frames(frames, size, seed=seed * 100003 + c * 1009 + j), codec, fps)
            os.replace(tmp, p)
    return root


def main(argv: list[str] | None = None) -> int:
    """Print clips/s of a folder dataset with each worker count, and the in-process rate."""
    from dvdgan.config import DataConfig
    from dvdgan.data import build_dataset

    p = argparse.ArgumentParser(prog="python -m dvdgan.data.loader_bench", description=main.__doc__)
    p.add_argument("path", help="a class-folder video dataset (or a prepared folder)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per worker count")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ds = build_dataset(DataConfig(dataset="folder", path=args.path, frame_stride=args.stride),
                       split="train", frames=args.frames, resolution=args.resolution)
    print(f"{ds!r}")
    print(f"in-process decode: {decode_rate(ds, n_clips=16, max_seconds=5.0):.1f} clips/s")
    workers = tuple(int(w) for w in args.workers.split(","))
    for r in bench_workers(ds, args.batch_size, workers, seconds=args.seconds):
        print(f"num_workers {r['num_workers']}: {r['clips_per_s']:.1f} clips/s "
              f"({r['batches']} batches of {args.batch_size}, warm-up {r['warmup_s']:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
