"""Data-loading throughput, and a synthetic video folder to measure it without a download.

:func:`bench_loader` runs a torch DataLoader over a dataset with the same (index, sample_seed)
keys the trainer uses (:class:`~dvdgan.data.sampler.ClipSampler`), discards a warm-up, and
reports clips per second. :func:`make_synthetic_video_folder` writes a folder dataset of
PyAV-encoded videos (H.264 MP4 by default) with moving, textured content so that decoding
costs about what real footage costs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dvdgan.data.sampler import ClipSampler
from dvdgan.data.video import encode_video


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
    sampler = ClipSampler(len(dataset), seed=seed, num_samples=total)
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
