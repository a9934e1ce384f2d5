"""Tiny synthetic class-folder video datasets (mp4 files) for tests of folder-dataset features.

``make_class_folder(root, ...)`` writes ``root/<class>/clip_XXX.mp4``: class ``c`` is one of a few
shapes (bar, square, disk, ring, cross) moving rightward or leftward (``c % 2``), over a random
plain background, in a random colour, from a random start, so a classifier needs both the shape
and the direction of motion. Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dvdgan.data.video import encode_video

SHAPES = ("bar", "square", "disk", "ring", "cross")


def class_names(num_classes: int) -> list[str]:
    return [f"{SHAPES[(c // 2) % len(SHAPES)]}-{'right' if c % 2 == 0 else 'left'}" for c in range(num_classes)]


def _mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if shape == "square":
        return (np.abs(dy) <= r) & (np.abs(dx) <= r)
    if shape == "disk":
        return dy**2 + dx**2 <= r**2
    if shape == "bar":
        return (np.abs(dy) <= r) & (np.abs(dx) <= r / 3)
    if shape == "ring":
        d = dy**2 + dx**2
        return (d <= r**2) & (d >= (0.5 * r) ** 2)
    return ((np.abs(dy) <= r) & (np.abs(dx) <= r / 3)) | ((np.abs(dx) <= r) & (np.abs(dy) <= r / 3))


def render_clip(label: int, rng: np.random.Generator, frames: int = 12, size: int = 32) -> np.ndarray:
    """uint8 [frames, size, size, 3] of class ``label``."""
    shape = SHAPES[(label // 2) % len(SHAPES)]
    direction = 1.0 if label % 2 == 0 else -1.0
    bg = rng.integers(0, 90, 3)
    fg = rng.integers(150, 256, 3)
    r = size * rng.uniform(0.2, 0.28)
    speed = size * rng.uniform(0.04, 0.07) * direction
    cy = rng.uniform(r + 1, size - r - 1)
    x0 = rng.uniform(r + 1, size - r - 1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        cx = (x0 + speed * t) % size  # wraps around: the direction stays visible
        m = _mask(shape, yy, xx, cy, cx, r)
        out[t] = bg
        out[t][m] = fg
    return out


def make_class_folder(root: str | Path, num_classes: int = 4, per_class: int = 10, frames: int = 12,
                      size: int = 32, seed: int = 0) -> Path:
    """Write the dataset under ``root`` and return it."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c, name in enumerate(class_names(num_classes)):
        for i in range(per_class):
            encode_video(root / name / f"clip_{i:03d}.mp4", render_clip(c, rng, frames, size), "h264",
                         options={"crf": "12"})
    return root
