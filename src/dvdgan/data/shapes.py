"""MovingShapes: the built-in, procedurally generated, class-conditional video dataset.

No files are needed: every clip is rendered on demand in numpy from a seed. It is the project's
default dataset, small enough to train a tiny DVD-GAN on a CPU in minutes, and it comes with a
reference classifier (:mod:`dvdgan.metrics.reference`) that plays the role I3D plays for
Kinetics.

Classes
-------
Six classes = 3 shapes x 2 motions, named ``"<shape>-<motion>"``::

    0 square-rightward     1 square-leftward
    2 triangle-rightward   3 triangle-leftward
    4 cross-rightward      5 cross-leftward

Each clip shows one anti-aliased shape gliding across the frame, to the right or to the left *as
seen on screen*, with a small vertical drift. Every shape occurs in two classes and every motion
in three, so neither cue alone gives the class away: a single frame (or the frames in shuffled
order, or a frozen clip) tells the shape but not the direction, which is carried only by the
temporal order of the frames (a clip played backwards is a clip of the other class). Colour,
background shade, size, start position, vertical drift and speed are drawn per clip
independently of the class.

Motion is smooth (constant velocity, no bounces) and clearly visible: over the clip the shape
crosses 40-55 % of the frame width whatever the length T, about 2 px per frame at 32x32x8, and it
never leaves the frame. Telling the direction needs at least 2 frames.

Determinism
-----------
A clip is fully determined by ``(seed, split, index)`` (a numpy ``SeedSequence`` of the three);
the train and test splits are disjoint random streams. ``ds[(index, sample_seed)]`` is accepted
for compatibility with datasets that draw random clips per epoch, and ``sample_seed`` is ignored:
the built-in dataset has one fixed clip per index. The label of index ``i`` is
``i % num_classes``, so any contiguous range of indices is class-balanced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from dvdgan.errors import ConfigError

__all__ = ["MovingShapes", "SHAPES", "MOTIONS", "shapes_class_names", "motion_statistic"]

SHAPES: tuple[str, ...] = ("square", "triangle", "cross")
MOTIONS: tuple[str, ...] = ("rightward", "leftward")
_SPLITS: dict[str, int] = {"train": 0, "test": 1}

# Per-clip parameter ranges, as fractions of the frame width (so they scale with resolution).
_SIZE = (0.3, 0.38)  # extent of the shape's bounding box: ~9.6-12 px at 32x32
_TRAVEL = (0.4, 0.55)  # horizontal distance covered over the whole clip: ~13-17.6 px at 32x32
_DRIFT = (-0.1, 0.1)  # vertical distance covered over the whole clip
_BACKGROUND = (0.0, 0.35)  # grey level of the background
_FG_SATURATION = (0.55, 1.0)  # foreground colour: any hue, saturated and bright
_FG_VALUE = (0.75, 1.0)
_CROSS_ARM = 0.36  # arm width of the cross as a fraction of its extent
_SQUARE_SCALE = 0.9  # the square's side relative to the drawn extent (evens out visual mass)


def shapes_class_names() -> list[str]:
    """The six class names, in label order: ``["square-rightward", "square-leftward", ...]``."""
    return [f"{s}-{m}" for s in SHAPES for m in MOTIONS]


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of shape [N] in [0, 1]; returns [N, 3]."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [
            np.stack([v, t, p], -1), np.stack([q, v, p], -1), np.stack([p, v, t], -1),
            np.stack([p, q, v], -1), np.stack([t, p, v], -1), np.stack([v, p, q], -1),
        ],
        axis=0,
    )  # [6, N, 3]
    return table[i, np.arange(h.shape[0])]


class MovingShapes(Dataset):
    """Class-conditional moving-shape clips rendered on the fly (see the module docstring).

    Args:
        split: ``"train"`` or ``"test"`` (disjoint random streams).
        frames: clip length T (>= 2).
        resolution: frame height = width (>= 16).
        size: number of clips in the split (``len(ds)``).
        seed: base seed; together with the split and index it determines every clip.

    ``ds[i]`` or ``ds[(i, sample_seed)]`` returns ``(video uint8 [T, H, W, 3], label int)``;
    ``ds.batch(indices)`` renders many clips at once (vectorised, the fast path).
    """

    def __init__(self, split: str, frames: int, resolution: int, size: int, seed: int = 0) -> None:
        if split not in _SPLITS:
            raise ConfigError(f"MovingShapes split must be one of {', '.join(_SPLITS)}, got {split!r}")
        if frames < 2:
            raise ConfigError(f"MovingShapes needs frames >= 2, got {frames}")
        if resolution < 16:
            raise ConfigError(f"MovingShapes needs resolution >= 16, got {resolution}")
        if size < 1:
            raise ConfigError(f"MovingShapes needs size >= 1, got {size}")
        self.split = split
        self.frames = int(frames)
        self.resolution = int(resolution)
        self.size = int(size)
        self.seed = int(seed)
        self.class_names: list[str] = shapes_class_names()
        self.num_classes: int = len(self.class_names)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (
            f"MovingShapes(split={self.split!r}, frames={self.frames}, resolution={self.resolution}, "
            f"size={self.size}, seed={self.seed})"
        )

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index = key[0] if isinstance(key, tuple) else key  # sample_seed is ignored (one clip per index)
        index = self._check_index(int(index))
        videos, labels = self.batch([index])
        return videos[0], int(labels[0])

    def _check_index(self, index: int) -> int:
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self!r}")
        return index

    def label(self, index: int) -> int:
        """The class of clip ``index`` (``index % num_classes``), without rendering it."""
        return int(index) % self.num_classes

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Render many clips at once: ``(uint8 [N, T, H, W, 3], int64 labels [N])``.

        Indices are not range-checked against ``size`` here (any non-negative index names a
        clip of the split's stream), which lets evaluation draw as many real clips as it needs.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and idx.min() < 0:
            raise IndexError("MovingShapes.batch: indices must be non-negative")
        params = self._params(idx)
        video = _render(params, self.frames, self.resolution)
        return torch.from_numpy(video), torch.from_numpy(params["label"])

    # --- per-clip parameters ------------------------------------------------------------------
    def _params(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        n = idx.shape[0]
        u = np.empty((n, 10), dtype=np.float64)
        split_code = _SPLITS[self.split]
        for j, i in enumerate(idx.tolist()):
            u[j] = np.random.default_rng((self.seed, split_code, i, 0x5A)).random(10)
        res = float(self.resolution)
        label = idx % self.num_classes
        lerp = lambda k, lo_hi: lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u[:, k]  # noqa: E731
        size = lerp(0, _SIZE) * res
        travel = lerp(1, _TRAVEL) * res
        drift = lerp(2, _DRIFT) * res
        half = size / 2
        # The whole path keeps the whole shape inside the frame.
        x0 = half + (res - size - travel) * u[:, 3]
        ymid = half + np.abs(drift) / 2 + (res - size - np.abs(drift)) * u[:, 4]  # centre of the path
        steps = max(self.frames - 1, 1)
        # Screen coordinates: x right, y down.
        direction = np.where(label % len(MOTIONS) == 0, 1.0, -1.0)
        start_x = np.where(direction > 0, x0, x0 + travel)
        background = lerp(6, _BACKGROUND)
        colour = _hsv_to_rgb(u[:, 7], lerp(8, _FG_SATURATION), lerp(9, _FG_VALUE))
        return {
            "label": label,
            "shape": label // len(MOTIONS),
            "size": size,
            "x0": start_x,
            "y0": ymid - drift / 2,
            "vx": direction * travel / steps,  # px / frame
            "vy": drift / steps,
            "background": background,
            "colour": colour,
        }


def _render(p: dict[str, np.ndarray], frames: int, res: int) -> np.ndarray:
    """Rasterise clips with analytic anti-aliasing: coverage = clip(0.5 - signed distance, 0, 1)."""
    n = p["label"].shape[0]
    t = np.arange(frames, dtype=np.float64)
    px = (p["x0"][:, None] + p["vx"][:, None] * t[None, :]).astype(np.float32)  # [N, T]
    py = (p["y0"][:, None] + p["vy"][:, None] * t[None, :]).astype(np.float32)
    grid = np.arange(res, dtype=np.float32) + 0.5  # pixel centres
    cover = np.empty((n, frames, res, res), dtype=np.float32)
    for s, name in enumerate(SHAPES):
        sel = np.nonzero(p["shape"] == s)[0]
        if sel.size == 0:
            continue
        dx = grid[None, None, None, :] - px[sel, :, None, None]  # [n, T, 1, W]
        dy = grid[None, None, :, None] - py[sel, :, None, None]  # [n, T, H, 1]
        half = (p["size"][sel] / 2).astype(np.float32)[:, None, None, None]
        cover[sel] = _coverage(name, dx, dy, half)
    bg = p["background"].astype(np.float32)[:, None, None, None, None]  # [N,1,1,1,1]
    fg = p["colour"].astype(np.float32)[:, None, None, None, :]  # [N,1,1,1,3]
    a = cover[..., None]
    video = bg + (fg - bg) * a
    return np.rint(video * 255.0).astype(np.uint8)


def _coverage(name: str, dx: np.ndarray, dy: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Pixel coverage of one shape type for broadcastable offsets from its centre."""
    if name == "square":
        h = half * _SQUARE_SCALE
        sdf = np.maximum(np.abs(dx) - h, np.abs(dy) - h)
    elif name == "cross":
        ax, ay = np.abs(dx), np.abs(dy)
        arm = half * _CROSS_ARM
        sdf = np.minimum(np.maximum(ax - half, ay - arm), np.maximum(ax - arm, ay - half))
    elif name == "triangle":
        # Upright equilateral triangle of side 2*half, centred on its bounding box.
        hh = half * (math.sqrt(3.0) / 2.0)  # half height
        # Edges (y points down): the base y = +hh with outward normal (0, 1), and the two sides
        # through the apex (0, -hh) with outward normals (+-cos30, -sin30).
        c30, s30 = math.sqrt(3.0) / 2.0, 0.5
        base = dy - hh
        right = c30 * dx - s30 * (dy + hh)
        left = -c30 * dx - s30 * (dy + hh)
        sdf = np.maximum(base, np.maximum(right, left))
    else:  # pragma: no cover - SHAPES is fixed
        raise ValueError(name)
    return np.clip(0.5 - sdf, 0.0, 1.0)


def motion_statistic(videos: torch.Tensor | np.ndarray, threshold: float = 0.2) -> dict[str, float]:
    """Motion statistics of uint8 videos ``[N, T, H, W, 3]`` (real or generated), as floats.

    * ``frame_diff``: mean absolute frame-to-frame difference, in [0, 1] (pixel values / 255).
    * ``centroid_speed``: mean per-frame displacement of the foreground centroid, in pixels.
      The background of each video is its per-channel median over all frames and pixels; a
      pixel is foreground where its largest channel difference from that background exceeds
      ``threshold`` (in [0, 1] pixel units). A hard threshold: faint deviations of the
      background (a generator's noise, which the Frechet distance judges) would otherwise
      pull the centroid toward the frame's centre and read as slower motion. Frame pairs
      where either frame has (almost) no foreground are skipped.
    * ``centroid_speed_rel``: ``centroid_speed`` divided by the frame width.
    * ``foreground_fraction``: the fraction of foreground pixels.

    A static video gives 0 for the first three; MovingShapes clips give ~2 px/frame at 32x32x8.
    """
    v = videos.detach().cpu().numpy() if isinstance(videos, torch.Tensor) else np.asarray(videos)
    if v.dtype != np.uint8 or v.ndim != 5 or v.shape[-1] != 3:
        raise ValueError(f"expected uint8 videos [N, T, H, W, 3], got {v.dtype} {tuple(v.shape)}")
    n, t, h, w, _ = v.shape
    x = v.astype(np.float32) / 255.0
    frame_diff = float(np.abs(np.diff(x, axis=1)).mean()) if t > 1 else 0.0
    bg = np.median(x.reshape(n, -1, 3), axis=1)  # [N, 3]
    weight = (np.abs(x - bg[:, None, None, None, :]).max(axis=-1) > threshold).astype(np.float32)  # [N, T, H, W]
    mass = weight.sum(axis=(2, 3))  # [N, T]
    ys = np.arange(h, dtype=np.float32) + 0.5
    xs = np.arange(w, dtype=np.float32) + 0.5
    safe = np.maximum(mass, 1e-8)
    cy = (weight.sum(axis=3) * ys).sum(axis=2) / safe
    cx = (weight.sum(axis=2) * xs).sum(axis=2) / safe
    speeds = np.hypot(np.diff(cx, axis=1), np.diff(cy, axis=1))  # [N, T-1]
    valid = (mass[:, 1:] > 1.0) & (mass[:, :-1] > 1.0)  # at least about one pixel of foreground
    centroid_speed = float(speeds[valid].mean()) if valid.any() else 0.0
    return {
        "frame_diff": frame_diff,
        "centroid_speed": centroid_speed,
        "centroid_speed_rel": centroid_speed / w,
        "foreground_fraction": float(weight.mean()),
    }
