"""MovingShapes: the built-in procedural dataset, and motion_statistic."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from dvdgan.data.shapes import MOTIONS, SHAPES, MovingShapes, motion_statistic, shapes_class_names
from dvdgan.errors import ConfigError


def _ds(split: str = "train", frames: int = 8, resolution: int = 32, size: int = 1000, seed: int = 0):
    return MovingShapes(split, frames, resolution, size, seed=seed)


def _centroids(videos: torch.Tensor) -> np.ndarray:
    """Foreground centroid [N, T, 2] (x, y) of each frame, weighted by coverage.

    The background is the per-video median; as a clip is ``bg + (fg - bg) * coverage``, the largest
    channel difference from the background over its maximum is the coverage (up to rounding).
    """
    x = videos.numpy().astype(np.float32)
    n = x.shape[0]
    bg = np.median(x.reshape(n, -1, 3), axis=1)
    w = np.abs(x - bg[:, None, None, None]).max(-1)  # [N, T, H, W]
    w /= w.max(axis=(1, 2, 3), keepdims=True)
    grid = np.arange(x.shape[2], dtype=np.float32) + 0.5
    m = w.sum((2, 3))
    cx = (w.sum(2) * grid).sum(2) / m
    cy = (w.sum(3) * grid).sum(2) / m
    return np.stack([cx, cy], -1)


def _mean_foreground_colour(videos: torch.Tensor) -> np.ndarray:
    x = videos.numpy().astype(np.float32)
    n = x.shape[0]
    bg = np.median(x.reshape(n, -1, 3), axis=1)
    fg = np.abs(x - bg[:, None, None, None]).max(-1) > 60
    return np.stack([x[i][fg[i]].mean(0) for i in range(n)])


def test_item_shape_dtype_and_keys():
    ds = _ds()
    video, label = ds[7]
    assert video.dtype == torch.uint8 and video.shape == (8, 32, 32, 3)
    assert isinstance(label, int) and label == 7 % 6
    v2, l2 = ds[(7, 12345)]  # sample_seed is ignored: one clip per index
    assert torch.equal(video, v2) and l2 == label
    vb, lb = ds.batch([3, 7, 11])
    assert vb.shape == (3, 8, 32, 32, 3) and vb.dtype == torch.uint8 and lb.dtype == torch.int64
    assert torch.equal(vb[1], video) and lb.tolist() == [3, 1, 5]
    assert len(ds) == 1000 and torch.equal(ds[-1][0], ds[999][0])
    with pytest.raises(IndexError):
        ds[1000]


def test_any_resolution_and_frame_count():
    for res, frames in [(16, 2), (17, 3), (48, 5), (64, 12)]:
        v, _ = MovingShapes("test", frames, res, 10).batch(range(6))
        assert v.shape == (6, frames, res, res, 3)
    for bad in [dict(split="val"), dict(frames=1), dict(resolution=8), dict(size=0)]:
        kw = dict(split="train", frames=8, resolution=32, size=10) | bad
        with pytest.raises(ConfigError):
            MovingShapes(**kw)


def test_deterministic_and_seeded():
    a, _ = _ds().batch(range(20))
    b, _ = _ds().batch(range(20))
    c, _ = _ds(seed=1).batch(range(20))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_train_and_test_splits_differ():
    tr, ltr = _ds("train").batch(range(300))
    te, lte = _ds("test").batch(range(300))
    assert torch.equal(ltr, lte)  # same labels per index, different clips
    hashes_tr = {hash(v.numpy().tobytes()) for v in tr}
    hashes_te = {hash(v.numpy().tobytes()) for v in te}
    assert len(hashes_tr) == 300 and len(hashes_te) == 300 and not hashes_tr & hashes_te


def test_classes_cover_shape_times_motion():
    names = shapes_class_names()
    ds = _ds()
    assert ds.class_names == names and ds.num_classes == 6 == len(SHAPES) * len(MOTIONS)
    assert len(set(names)) == 6
    _, labels = ds.batch(range(60))
    assert torch.bincount(labels, minlength=6).tolist() == [10] * 6
    # Neither cue alone identifies a class: every class shares its shape with another class
    # (so a per-frame, motionless classifier cannot separate them) and its motion with others.
    parts = [n.split("-") for n in names]
    for i, (shape, motion) in enumerate(parts):
        assert sum(s == shape for s, _ in parts) == 2
        assert sum(m == motion for _, m in parts) == 3
        assert any(s == shape and m != motion for j, (s, m) in enumerate(parts) if j != i)


def test_motion_direction_matches_label_and_only_time_order_carries_it():
    v, labels = _ds(size=120).batch(range(120))
    c = _centroids(v)  # [N, T, 2]
    dx = np.diff(c[..., 0], axis=1)  # horizontal displacement per frame
    rightward = np.array([shapes_class_names()[k].endswith("-rightward") for k in labels.tolist()])
    assert np.array_equal((dx > 0).all(1), rightward) and np.array_equal((dx < 0).all(1), ~rightward)
    # Horizontal motion dominates the vertical drift.
    assert (np.abs(dx).mean(1) > 2 * np.abs(np.diff(c[..., 1], axis=1)).mean(1)).all()
    # Reversing time turns a rightward clip into a leftward one (same frames).
    assert np.array_equal((np.diff(c[:, ::-1, 0], axis=1) > 0).all(1), ~rightward)


def test_motion_is_visible_smooth_and_in_frame():
    v, _ = _ds(size=200).batch(range(200))
    c = _centroids(v)
    step = np.linalg.norm(np.diff(c, axis=1), axis=-1)  # px per frame
    assert 1.5 < step.mean() < 4.0 and step.min() > 0.8
    # Smooth: constant velocity, so consecutive steps are nearly equal.
    assert np.abs(np.diff(step, axis=1)).max() < 0.3
    # The shape never leaves the frame: foreground area stays constant within a clip.
    x = v.numpy().astype(np.float32)
    bg = np.median(x.reshape(200, -1, 3), axis=1)
    area = (np.abs(x - bg[:, None, None, None]).max(-1) / 255.0).sum((2, 3))  # [N, T]
    assert (area.std(1) / area.mean(1)).max() < 0.1


def test_rendering_is_antialiased():
    v, _ = _ds().batch(range(12))
    x = v.numpy().astype(np.int32)
    bg = x[:, :, :1, :1, :]  # a corner pixel is always background
    fg_max = np.abs(x - bg).max(-1)
    full = fg_max.max(axis=(1, 2, 3), keepdims=True)
    partial = (fg_max > 0.1 * full) & (fg_max < 0.9 * full)
    assert partial.sum() > 0.1 * (fg_max >= 0.9 * full).sum()


def test_colour_does_not_predict_class():
    v, labels = _ds(size=600).batch(range(600))
    col = _mean_foreground_colour(v)
    y = labels.numpy()
    tr, te = slice(0, 300), slice(300, 600)
    centroids = np.stack([col[tr][y[tr] == k].mean(0) for k in range(6)])
    pred = np.argmin(((col[te][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    acc = float((pred == y[te]).mean())
    assert acc < 0.3, acc  # chance is 1/6
    # Background shade does not either: per-class means agree within noise.
    bg = v[:, 0, 0, 0].float().mean(1).numpy()
    per_class = np.array([bg[y == k].mean() for k in range(6)])
    assert per_class.std() < 0.25 * bg.std()


def test_batch_is_fast():
    ds = _ds(size=20000)
    ds.batch(range(32))
    best = min(_timed(ds.batch, range(k * 32, k * 32 + 32)) for k in range(5))
    assert best < 0.05, best


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def test_motion_statistic():
    v, _ = _ds(size=64).batch(range(64))
    stat = motion_statistic(v)
    assert set(stat) >= {"frame_diff", "centroid_speed", "centroid_speed_rel", "foreground_fraction"}
    assert all(isinstance(x, float) for x in stat.values())
    assert stat["frame_diff"] > 0.005 and 1.5 < stat["centroid_speed"] < 4.0
    static = v[:, :1].expand(-1, 8, -1, -1, -1).contiguous()
    s0 = motion_statistic(static)
    assert s0["frame_diff"] == 0.0 and s0["centroid_speed"] == 0.0
    assert s0["foreground_fraction"] == pytest.approx(stat["foreground_fraction"], rel=0.05)
    # Speed scales with resolution; the relative speed does not.
    v64, _ = _ds(resolution=64).batch(range(64))
    s64 = motion_statistic(v64.numpy())
    assert s64["centroid_speed"] == pytest.approx(2 * stat["centroid_speed"], rel=0.15)
    assert s64["centroid_speed_rel"] == pytest.approx(stat["centroid_speed_rel"], rel=0.15)
    with pytest.raises(ValueError):
        motion_statistic(v.float())


def test_motion_statistic_ignores_faint_background_noise():
    """Noise below the foreground threshold (a generator's imperfect background) does not change
    the measured speed of the object: it is motion, not background fidelity."""
    v, _ = _ds(size=64).batch(range(64))
    clean = motion_statistic(v)
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(-25, 26, v.shape, generator=g)  # up to 0.1 of the range, below 0.2
    noisy = motion_statistic((v.int() + noise).clamp(0, 255).to(torch.uint8))
    assert noisy["centroid_speed"] == pytest.approx(clean["centroid_speed"], rel=0.03)
    assert noisy["foreground_fraction"] == pytest.approx(clean["foreground_fraction"], rel=0.1)
