"""A reference classifier for any labelled video dataset (the built-in one has its own,
:mod:`dvdgan.metrics.reference`).

:func:`dataset_classifier` trains a small 3-D convnet on the dataset's clips at the model's frames
and resolution, measures its accuracy on held-out real clips and caches weights and real-clip
statistics on disk, keyed by a fingerprint of the dataset's content and the settings (a changed
file list, file size or modification time, frame stride, resolution or frame count retrains it).
The returned :class:`DatasetReference` judges a set of (generated) videos against the real clips:

* ``accuracy``: the classifier's top-1 accuracy against the labels the videos should show;
* ``ref_fd`` / ``ref_fd_floor``: the *reference Frechet distance*, in the classifier's 128-d feature
  space (not FVD: no I3D), to a set of real clips, beside the same distance between two disjoint
  real sets of the same size (what a perfect generator would score);
* ``motion`` / ``motion_real``: foreground-centroid displacement in px/frame, and ``frame_diff`` /
  ``frame_diff_real``: mean absolute frame difference
  (:func:`~dvdgan.data.shapes.motion_statistic`);
* ``consistency`` / ``consistency_real``: how often the per-frame class predictions of one video
  agree (the fraction of frames that predict the video's most frequent class, averaged over
  videos): an object whose identity changes from frame to frame scores low where real clips score
  high; ``frame_accuracy``: per-frame predictions against the labels;
* ``classifier_accuracy``: the classifier's held-out accuracy (how far to trust the rest).

Network (:class:`DatasetClassifier`): a class is often a kind of object *and* a kind of motion
(colour, size, place and speed being incidental), and on a few hundred clips a 3-D convnet
learns appearance first and motion barely. So motion is also given explicitly, by fixed
functions of the clip that apply to real and generated videos alike: the difference to the next
frame and a motion energy whose sign is the local direction of motion (:func:`frame_motion`),
the camera's shift between frames (:func:`global_shift`), the path of the moving pixels' centroid
and the foreground's spread and mass (:func:`object_track`), and a full-resolution glimpse
centred on the moving pixels (:func:`glimpse`). Three streams (tracks over time; per-frame
features over time; a space-time convolution) each have a head of their own, trained beside the
joint head so that none is starved by the one that learns fastest; their pooled outputs are fused
into the fixed 128-d ``features`` (the Frechet distance's space). Per-frame logits (the
consistency statistic) come from each frame's features, which see its motion to the next frame.
Trained on clip, per-frame and per-stream cross-entropy.

Data: at most ``max_clips`` clips (a fixed random subset), each decoded once at the evaluation key
(first run, centre crop) and at 1-3 random training keys (:func:`random_views`); duplicates (a
bad file is replaced by the next one) are dropped. ``holdout`` of each class (by clip, all its
views) is held out for the accuracy check; every clip serves as real data for the metrics.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from dvdgan.data.shapes import motion_statistic
from dvdgan.data.transforms import to_model_input
from dvdgan.errors import DataError, WeightsError
from dvdgan.metrics.frechet import frechet_distance
from dvdgan.metrics.reference import cache_root, conv_bn, degrade_clips, input_pool

__all__ = [
    "DATASET_REFERENCE_VERSION",
    "DatasetClassifier",
    "DatasetReference",
    "dataset_classifier",
    "dataset_fingerprint",
    "is_weak",
]

#: Part of the cache key: bump when the network, the recipe or the statistics change.
DATASET_REFERENCE_VERSION = "d2"
#: Held-out accuracy below which (or too close to chance) the classifier is called too weak.
MIN_USEFUL_ACCURACY = 0.6

_SEED = 0
_BATCH = 32
_LR = 3e-3
_WEIGHT_DECAY = 1e-4
_FRAME_LOSS_WEIGHT = 0.5
_STREAM_LOSS_WEIGHT = 0.3
#: How far towards :func:`~dvdgan.metrics.reference.degrade_clips` a degraded training clip goes
#: (its full blur, up to 1.2 px, turns a 10-px star into a disc at 32x32)
_DEGRADE_STRENGTH = 0.5


def _conv2d_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _next_diff(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, ...] -> forward differences x[t+1] - x[t], the last one repeated (zeros for T = 1)."""
    if x.shape[2] < 2:
        return torch.zeros_like(x)
    d = x[:, :, 1:] - x[:, :, :-1]
    return torch.cat([d, d[:, :, -1:]], 2)


def frame_motion(x: torch.Tensor) -> torch.Tensor:
    """Per-frame motion channels of float videos ``[B, 3, T, H, W]``: the colour difference to the
    next frame (3) and the grey-level motion energy ``-I_t * I_y``, ``-I_t * I_x`` (2; its local
    mean is the optical-flow constraint's product ``u I_x^2 + v I_xI_y`` and its transpose, so its
    sign is the local direction of motion, which a ReLU network cannot form from the frames and
    their difference alone). ``[B, 5, T, H, W]``."""
    diff = _next_diff(x)
    g = x.mean(1, keepdim=True)
    gt = diff.mean(1, keepdim=True)
    mid = F.pad((g + g + gt).squeeze(1) / 2, (1, 1, 1, 1), mode="replicate")  # (I_t + I_t+1) / 2
    ix = (mid[..., 1:-1, 2:] - mid[..., 1:-1, :-2]).unsqueeze(1) / 2
    iy = (mid[..., 2:, 1:-1] - mid[..., :-2, 1:-1]).unsqueeze(1) / 2
    return torch.cat([diff, -8 * gt * iy, -8 * gt * ix], 1)


def global_shift(x: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Whole-frame translation between consecutive frames of float videos ``[B, 3, T, H, W]``, the
    camera's motion: grey frames at half resolution, the mean absolute difference for every shift
    within ``radius`` (half-resolution) pixels, soft-argmin over the shifts. ``[B, 2, T]`` (dy, dx
    in half-resolution pixels / radius; the last pair repeated)."""
    b, _, t, h, w = x.shape
    if t < 2:
        return x.new_zeros(b, 2, t)
    g = F.avg_pool2d(x.mean(1), 2) if min(h, w) >= 8 else x.mean(1)  # [B, T, h, w]
    hh, ww = g.shape[2:]
    k = 2 * radius + 1
    prev = F.pad(g[:, :-1].reshape(-1, 1, hh, ww), (radius,) * 4, mode="replicate")
    cols = F.unfold(prev, k).flip(1)  # [N, k*k, hh*ww]: index i holds shift (i // k - r, i % k - r)
    cost = (cols - g[:, 1:].reshape(-1, 1, hh * ww)).abs().mean(2)  # [N, k*k]
    p = (-50.0 * cost).softmax(1)
    r = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    offsets = torch.stack([r.repeat_interleave(k), r.repeat(k)], 1) / radius  # [k*k, 2]
    s = (p @ offsets).view(b, t - 1, 2).transpose(1, 2)
    return torch.cat([s, s[:, :, -1:]], 2)


def moving_centroid(x: torch.Tensor, noise: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroid (y, x) in [-1, 1] ``[B, 2, T]``, mass ``[B, T]``) of the moving pixels of float videos
    ``[B, 3, T, H, W]``: the largest colour change to the next frame above ``noise``, as a weight.
    A frame pair where nothing moves has no mass and its centroid is the frame's centre."""
    h, w = x.shape[3:]
    ys = (torch.arange(h, dtype=x.dtype, device=x.device) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=x.dtype, device=x.device) + 0.5) / w * 2 - 1
    moving = (_next_diff(x).abs().amax(1) - noise).clamp_min(0)  # [B, T, H, W]
    m = moving.sum((2, 3))
    safe = m.clamp_min(1e-3)
    return torch.stack([(moving.sum(3) * ys).sum(2) / safe, (moving.sum(2) * xs).sum(2) / safe], 1), m


def glimpse(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Per-frame crops of half the side, at full resolution, centred on ``centre`` (``[B, 2, T]``,
    (y, x) in [-1, 1]) of videos ``[B, C, T, H, W]``: ``[B*T, C, H/2, W/2]`` (edges repeated)."""
    b, c, t, h, w = x.shape
    cy, cx = centre.transpose(1, 2).reshape(-1, 2).unbind(1)
    theta = x.new_zeros(b * t, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = 0.5, 0.5, cx, cy
    grid = F.affine_grid(theta, [b * t, c, h // 2, w // 2], align_corners=False)
    return F.grid_sample(x.transpose(1, 2).reshape(b * t, c, h, w), grid, padding_mode="border", align_corners=False)


def object_track(x: torch.Tensor, threshold: float = 0.2, noise: float = 0.05,
                 moving: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Track of the moving object in float videos ``[B, 3, T, H, W]``, per frame (``[B, 6, T]``,
    each minus its mean over the clip, so it does not depend on where the object is or how big):

    * the centroid (y, x) of the *moving* pixels (largest colour change to the next frame above
      ``noise``, weighted by it) and its log mass: the object's path, unaffected by a textured or
      graded background, which does not move (a static frame pair has no mass: its centroid is
      the frame's centre);
    * the log spread (y, x) and log mass of the foreground as in
      :func:`~dvdgan.data.shapes.motion_statistic` (distance from the clip's median colour above
      ``threshold``): growing, shrinking, zooming.

    ``moving``: :func:`moving_centroid` of ``x`` if already computed.
    """
    h, w = x.shape[3:]
    ys = (torch.arange(h, dtype=x.dtype, device=x.device) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=x.dtype, device=x.device) + 0.5) / w * 2 - 1
    centre, m = moving if moving is not None else moving_centroid(x, noise)
    cy, cx = centre.unbind(1)
    v = (x + 1) / 2
    bg = v[..., ::2, ::2].flatten(2).median(2).values[:, :, None, None, None]  # a subsample: faster
    fg = ((v - bg).abs().amax(1) / threshold).clamp(0, 1)  # [B, T, H, W]
    mass = fg.sum((2, 3)).clamp_min(1e-3)
    py, px = fg.sum(3), fg.sum(2)
    fy, fx = (py * ys).sum(2) / mass, (px * xs).sum(2) / mass
    sy = ((py * ys**2).sum(2) / mass - fy**2).clamp_min(1e-4).log() / 2
    sx = ((px * xs**2).sum(2) / mass - fx**2).clamp_min(1e-4).log() / 2
    track = torch.stack([cy, cx, (m + 1).log(), sy, sx, mass.log()], 1)
    return track - track.mean(2, keepdim=True)


class DatasetClassifier(nn.Module):
    """Clip and per-frame classifier of float videos ``[B, T, 3, H, W]`` in [-1, 1].

    Per frame: the frame and :func:`frame_motion` (difference to the next frame, motion energy),
    normalised (BatchNorm without affine), three strided 3x3 convolutions (16, 32, 64 channels) to
    a map of 1/8 the input side; ``heads`` softmax attention maps over it pool one feature vector
    each and give a keypoint (its expected position); the same 8 channels in a :func:`glimpse`
    (half the side, full resolution, centred on the moving pixels) through three more
    convolutions. Per-frame vector: the mean-pooled map, the glimpse and the attention-pooled
    features; ``frame_head`` gives the per-frame logits. Streams: (1) tracks: the keypoints'
    positions (minus their clip mean) and velocities, :func:`global_shift` (camera motion) and its
    running sum, :func:`object_track`, normalised, through two temporal convolutions (64); (2) the
    per-frame vectors through two temporal convolutions (128); (3) two 3x3x3 convolutions over the
    maps (space-time layout, 128); each averaged over time (and space). A linear layer + ReLU
    fuses them into the 128-d ``features``; the clip logits are ``head(features)`` plus each
    stream's own head (``stream_heads``, also trained alone).
    """

    feature_dim = 128
    heads = 4
    width = 16

    def __init__(self, resolution: int, frames: int, num_classes: int) -> None:
        super().__init__()
        self.resolution, self.frames, self.num_classes = int(resolution), int(frames), int(num_classes)
        self.pool = input_pool(self.resolution)
        w, k = self.width, self.heads
        self.in_norm = nn.BatchNorm2d(8, affine=False)
        self.frame_body = nn.Sequential(_conv2d_bn(8, w, 2), _conv2d_bn(w, 2 * w, 2), _conv2d_bn(2 * w, 4 * w, 2))
        self.attend = nn.Conv2d(4 * w, k, 1)
        self.fovea_body = nn.Sequential(_conv2d_bn(8, w, 1), _conv2d_bn(w, 2 * w, 2), _conv2d_bn(2 * w, 4 * w, 2))
        per_frame = 4 * w * (2 + k)
        tracks = 4 * k + 4 + 6
        self.frame_head = nn.Linear(per_frame, self.num_classes)
        self.track_norm = nn.BatchNorm1d(tracks, affine=False)
        self.track_body = nn.Sequential(
            nn.Conv1d(tracks, 64, 3, padding=1, bias=False), nn.BatchNorm1d(64), nn.ReLU(inplace=True),
            nn.Conv1d(64, 64, 3, padding=1, bias=False), nn.BatchNorm1d(64), nn.ReLU(inplace=True),
        )
        self.temporal = nn.Sequential(
            nn.Conv1d(per_frame, 128, 3, padding=1, bias=False), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
            nn.Conv1d(128, 128, 3, padding=1, bias=False), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
        )
        self.clip_body = nn.Sequential(conv_bn(4 * w, 96, (3, 3, 3), (2, 2, 2)), conv_bn(96, 128, (3, 3, 3), (1, 1, 1)))
        #: one head per stream (tracks, per-frame features over time, space-time maps), trained
        #: beside the joint head so that no stream is left unused by the one that learns fastest
        self.stream_heads = nn.ModuleList(nn.Linear(n, self.num_classes) for n in (64, 128, 128))
        self.fuse = nn.Sequential(nn.Linear(64 + 128 + 128, self.feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(self.feature_dim, self.num_classes)

    def _check_shape(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"expected float videos [B, T, 3, H, W], got {tuple(x.shape)}")
        if (x.shape[1], x.shape[3], x.shape[4]) != (self.frames, self.resolution, self.resolution):
            raise ValueError(f"this classifier takes {self.frames} frames of {self.resolution}x{self.resolution}, "
                             f"got {x.shape[1]} frames of {x.shape[3]}x{x.shape[4]}")

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(clip features [B, 128], clip logits [B, C], per-frame logits [B, T, C])."""
        return self.all_outputs(x)[:3]

    def all_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """:meth:`outputs` and the per-stream logits (tracks, per-frame features, space-time)."""
        self._check_shape(x)
        x = x.transpose(1, 2)  # [B, 3, T, H, W]
        if self.pool > 1:
            x = F.avg_pool3d(x, (1, self.pool, self.pool))
        b, _, t = x.shape[:3]
        with torch.no_grad():  # fixed functions of the input: nothing to learn through them
            inp = torch.cat([x, frame_motion(x)], 1)  # [B, 8, T, H, W]
            moving = moving_centroid(x)
            fixed_tracks = torch.cat([global_shift(x), object_track(x, moving=moving)], 1)  # [B, 8, T]
            fovea = glimpse(inp, moving[0])  # [B*T, 8, H/2, W/2]
            inp = inp.transpose(1, 2).flatten(0, 1)  # [B*T, 8, H, W]
        h = self.frame_body(self.in_norm(inp))  # [B*T, 64, h, w]
        seen = self.fovea_body(self.in_norm(fovea)).mean((2, 3))
        hh, ww = h.shape[2:]
        att = self.attend(h).flatten(2).softmax(-1)  # [B*T, K, h*w]
        glimpses = torch.einsum("nkp,ncp->nkc", att, h.flatten(2)).flatten(1)
        per_frame = torch.cat([h.mean((2, 3)), seen, glimpses], 1).view(b, t, -1)  # [B, T, 64 (2 + K)]
        frame_logits = self.frame_head(per_frame)
        att = att.view(-1, self.heads, hh, ww)
        ys = (torch.arange(hh, dtype=x.dtype, device=x.device) + 0.5) / hh * 2 - 1
        xs = (torch.arange(ww, dtype=x.dtype, device=x.device) + 0.5) / ww * 2 - 1
        keypoints = torch.cat([(att.sum(3) * ys).sum(2), (att.sum(2) * xs).sum(2)], 1)  # [B*T, 2K]
        keypoints = keypoints.view(b, t, -1).transpose(1, 2)
        keypoints = keypoints - keypoints.mean(2, keepdim=True)
        tracks = torch.cat([keypoints, _next_diff(keypoints[:, None])[:, 0], fixed_tracks,
                            fixed_tracks[:, :2].cumsum(2)], 1)  # [B, 4K + 10, T]
        streams = [self.track_body(self.track_norm(tracks)).mean(2), self.temporal(per_frame.transpose(1, 2)).mean(2),
                   self.clip_body(h.view(b, t, *h.shape[1:]).transpose(1, 2)).mean((2, 3, 4))]
        feats = self.fuse(torch.cat(streams, 1))
        stream_logits = [head(z) for head, z in zip(self.stream_heads, streams)]
        return feats, self.head(feats) + sum(stream_logits), frame_logits, stream_logits

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f, lg, _ = self.outputs(x)
        return f, lg

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x)[1]


# --------------------------------------------------------------------------------------------
# Statistics shared by the real clips and the judged videos
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def _predict(model: DatasetClassifier, videos: torch.Tensor, batch_size: int = 64) -> dict[str, np.ndarray]:
    """features float64 [N, F], logits [N, C], frame_logits [N, T, C] of uint8 videos."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: dict[str, list[np.ndarray]] = {"features": [], "logits": [], "frame_logits": []}
    try:
        for i in range(0, videos.shape[0], batch_size):
            f, lg, fl = model.outputs(to_model_input(videos[i:i + batch_size].to(device)))
            for k, v in zip(out, (f, lg, fl)):
                out[k].append(v.double().cpu().numpy())
    finally:
        model.train(was_training)
    return {k: np.concatenate(v) for k, v in out.items()}


def consistency_per_video(frame_logits: np.ndarray) -> np.ndarray:
    """[N]: the fraction of a video's frames whose prediction is the video's most frequent one."""
    pred = frame_logits.argmax(-1)  # [N, T]
    n, t = pred.shape
    counts = np.zeros((n, frame_logits.shape[-1]), np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), t), pred.reshape(-1)), 1)
    return counts.max(1) / t


def _gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def is_weak(accuracy: float, num_classes: int) -> bool:
    """Too weak to judge: below MIN_USEFUL_ACCURACY, or less than 40 % of the way from chance to 1."""
    chance = 1.0 / max(num_classes, 1)
    return not accuracy >= MIN_USEFUL_ACCURACY or (accuracy - chance) < 0.4 * (1.0 - chance)


def _as_uint8(videos: Any, what: str) -> torch.Tensor:
    v = torch.from_numpy(np.ascontiguousarray(videos)) if isinstance(videos, np.ndarray) else videos.cpu()
    if v.dtype != torch.uint8 or v.ndim != 5 or v.shape[-1] != 3:
        raise ValueError(f"{what}: expected uint8 videos [N, T, H, W, 3], got {v.dtype} {tuple(v.shape)}")
    return v


@dataclass
class DatasetReference:
    """A trained :class:`DatasetClassifier` with the statistics of the real clips it was built on."""

    model: DatasetClassifier
    class_names: list[str]
    heldout_accuracy: float
    heldout_size: int
    real_features: np.ndarray  # [N, F] float64: one view (the evaluation key) per real clip
    real_labels: np.ndarray  # [N]
    real_motion: dict[str, float]  # of all real clips
    real_consistency: float  # of the held-out clips, as the accuracy
    real_frame_accuracy: float
    fingerprint: str
    train_seconds: float = 0.0
    loaded_from_cache: bool = False
    _floor_cache: dict[int, float] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def weak(self) -> bool:
        return is_weak(self.heldout_accuracy, self.num_classes)

    def features(self, videos: Any, batch_size: int = 64) -> np.ndarray:
        """Clip features float64 [N, 128] of uint8 videos [N, T, H, W, 3]."""
        return _predict(self.model, _as_uint8(videos, "videos"), batch_size)["features"]

    def _halves(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        perm = np.random.default_rng(_SEED).permutation(len(self.real_features))
        return perm[:m], perm[m:2 * m]

    def evaluate(self, videos: Any, labels: Any, batch_size: int = 64) -> dict[str, float]:
        """Metrics of uint8 videos ``[N >= 2, T, H, W, 3]`` that should show classes ``labels``
        (see the module docstring). The Frechet distances use ``m = min(N, real clips // 2)``
        videos (a fixed random subset when N > m) and two disjoint real sets of m clips
        (``ref_fd_n`` = m)."""
        videos = _as_uint8(videos, "videos")
        labels = np.asarray(torch.as_tensor(labels).reshape(-1).cpu(), dtype=np.int64)
        n = videos.shape[0]
        if labels.shape[0] != n:
            raise ValueError(f"got {n} videos but {labels.shape[0]} labels")
        m = min(n, len(self.real_features) // 2)
        if m < 2:
            raise ValueError("the reference Frechet distance needs at least 2 videos and 4 real clips")
        out = _predict(self.model, videos, batch_size)
        a, b = self._halves(m)
        mu_a, s_a = _gaussian(self.real_features[a])
        if m not in self._floor_cache:
            self._floor_cache[m] = frechet_distance(mu_a, s_a, *_gaussian(self.real_features[b]))
        pick = np.sort(np.random.default_rng(_SEED).permutation(n)[:m])  # all of them when m == n
        mu, s = _gaussian(out["features"][pick])
        motion = motion_statistic(videos)
        return {
            "accuracy": float((out["logits"].argmax(1) == labels).mean()),
            "frame_accuracy": float((out["frame_logits"].argmax(-1) == labels[:, None]).mean()),
            "frame_accuracy_real": self.real_frame_accuracy,
            "ref_fd": frechet_distance(mu, s, mu_a, s_a),
            "ref_fd_floor": self._floor_cache[m],
            "ref_fd_n": float(m),
            "motion": motion["centroid_speed"],
            "motion_real": self.real_motion["centroid_speed"],
            "frame_diff": motion["frame_diff"],
            "frame_diff_real": self.real_motion["frame_diff"],
            "consistency": float(consistency_per_video(out["frame_logits"]).mean()),
            "consistency_real": self.real_consistency,
            "classifier_accuracy": self.heldout_accuracy,
            "num_videos": float(n),
        }


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _subset(dataset: Any, max_clips: int) -> np.ndarray:
    n = len(dataset)
    if n <= max_clips:
        return np.arange(n)
    return np.sort(np.random.default_rng(_SEED).choice(n, max_clips, replace=False))


def dataset_fingerprint(dataset: Any, indices: np.ndarray) -> str:
    """sha256 of what the clips are made from: for file datasets the files' paths, sizes and
    modification times (no decoding); otherwise eight decoded clips. Plus length, classes and
    clip geometry."""
    h = hashlib.sha256()
    head = {"len": len(dataset), "classes": list(getattr(dataset, "class_names", [])),
            "frames": getattr(dataset, "frames", None), "resolution": getattr(dataset, "resolution", None),
            "stride": getattr(dataset, "frame_stride", None), "kind": type(dataset).__name__}
    h.update(json.dumps(head, sort_keys=True).encode())
    path_of = getattr(dataset, "path", None)
    if callable(path_of):
        for i in indices:
            p = path_of(int(i))
            try:
                st = os.stat(p)
                h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{p}\0missing\n".encode())
    else:
        for i in indices[np.linspace(0, len(indices) - 1, min(8, len(indices))).astype(int)]:
            video, label = dataset[int(i)]
            h.update(np.ascontiguousarray(torch.as_tensor(video).numpy()).tobytes())
            h.update(str(int(label)).encode())
    return h.hexdigest()


def random_views(num_clips: int) -> int:
    """Random-key views decoded per clip besides the evaluation one: about 800 training views in
    all, 1 to 3 per clip (a small dataset gets more temporal windows of each clip)."""
    return int(min(3, max(1, round(800 / max(num_clips, 1)))))


def _decode(dataset: Any, indices: np.ndarray, progress: bool, views: int = 1,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(eval-key clips [N, T, H, W, 3], random-key clips [views, N, ...], labels [N]); duplicates
    dropped."""
    seen: set[bytes] = set()
    evals, randoms, labels = [], [], []
    for i in tqdm(indices, desc="reference classifier: decoding", disable=not progress, leave=False, unit="clip"):
        video, label = dataset[int(i)]
        digest = hashlib.sha1(np.ascontiguousarray(video.numpy()).tobytes()).digest()
        if digest in seen or int(label) < 0:
            continue
        seen.add(digest)
        evals.append(video)
        randoms.append(torch.stack([dataset[(int(i), 7919 * int(i) + 1 + 104729 * v)][0] for v in range(views)]))
        labels.append(int(label))
    if not evals:
        raise DataError("the reference classifier found no labelled clips in the dataset")
    return torch.stack(evals), torch.stack(randoms, 1), torch.tensor(labels, dtype=torch.long)


def _holdout_mask(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Stratified: round(fraction * n_c) clips of each class with >= 3 clips (at least one)."""
    rng = np.random.default_rng(_SEED)
    held = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) >= 3:
            held[rng.permutation(idx)[:max(1, round(fraction * len(idx)))]] = True
    return held


# --------------------------------------------------------------------------------------------
# Training and cache
# --------------------------------------------------------------------------------------------


def _train(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, steps: int, device: torch.device,
           progress: bool) -> DatasetClassifier:
    _, t, h, _, _ = train_x.shape
    devices = [device.index or 0] if device.type == "cuda" else []
    # trained on first use, possibly from inside a caller's torch.no_grad() (evaluation)
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        torch.manual_seed(_SEED)
        model = DatasetClassifier(h, t, num_classes).to(device)
        gen = torch.Generator().manual_seed(_SEED)
        opt = torch.optim.AdamW(model.parameters(), lr=_LR, weight_decay=_WEIGHT_DECAY)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=_LR, total_steps=steps, pct_start=0.15)
        model.train()
        for _ in tqdm(range(steps), desc="reference classifier: training", disable=not progress, leave=False):
            idx = torch.randint(0, train_x.shape[0], (min(_BATCH, train_x.shape[0]),), generator=gen)
            x = to_model_input(train_x[idx])
            x = (x + _DEGRADE_STRENGTH * (degrade_clips(x, gen) - x)).to(device)
            y = train_y[idx].to(device)
            _, logits, frame_logits, stream_logits = model.all_outputs(x)
            loss = F.cross_entropy(logits, y) + _FRAME_LOSS_WEIGHT * F.cross_entropy(
                frame_logits.flatten(0, 1), y.repeat_interleave(t))
            loss = loss + _STREAM_LOSS_WEIGHT * sum(F.cross_entropy(lg, y) for lg in stream_logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def _steps_for(n_train: int) -> int:
    """25 batches' worth per training clip / batch size (12 passes over both views), in [150, 320]."""
    return int(min(320, max(150, math.ceil(25 * n_train / _BATCH))))


def _cache_paths(cache_dir: Any, key: str) -> tuple[Path, Path]:
    base = cache_root(cache_dir) / "reference" / f"dataset-{key[:24]}"
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def _save(ref: DatasetReference, key: str, cache_dir: Any, info: dict) -> None:
    weights, meta_path = _cache_paths(cache_dir, key)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in ref.model.state_dict().items()}
    tensors["real.features"] = torch.from_numpy(ref.real_features.astype(np.float32))
    tensors["real.labels"] = torch.from_numpy(ref.real_labels.astype(np.int64))
    meta = {
        "version": DATASET_REFERENCE_VERSION, "key": key, "fingerprint": ref.fingerprint,
        "class_names": ref.class_names, "resolution": ref.model.resolution, "frames": ref.model.frames,
        "heldout_accuracy": ref.heldout_accuracy, "heldout_size": ref.heldout_size,
        "real_motion": ref.real_motion, "real_consistency": ref.real_consistency,
        "real_frame_accuracy": ref.real_frame_accuracy, "train_seconds": round(ref.train_seconds, 2), **info,
    }
    for path, write in ((weights, lambda p: save_file(tensors, str(p), metadata={"key": key})),
                        (meta_path, lambda p: p.write_text(json.dumps(meta, indent=1)))):
        tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def _load(key: str, cache_dir: Any, device: torch.device) -> DatasetReference | None:
    weights, meta_path = _cache_paths(cache_dir, key)
    if not (weights.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(weights))
        if meta.get("key") != key:
            raise WeightsError("key mismatch")
        model = DatasetClassifier(meta["resolution"], meta["frames"], len(meta["class_names"]))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    except Exception as e:  # noqa: BLE001 - a broken cache is retrained, never fatal
        warnings.warn(f"reference classifier cache {weights} unusable ({type(e).__name__}: {e}); retraining",
                      stacklevel=3)
        return None
    return DatasetReference(
        model=model.to(device).eval(), class_names=list(meta["class_names"]),
        heldout_accuracy=float(meta["heldout_accuracy"]), heldout_size=int(meta["heldout_size"]),
        real_features=tensors["real.features"].double().numpy(), real_labels=tensors["real.labels"].numpy(),
        real_motion=dict(meta["real_motion"]), real_consistency=float(meta["real_consistency"]),
        real_frame_accuracy=float(meta["real_frame_accuracy"]), fingerprint=meta["fingerprint"],
        train_seconds=float(meta.get("train_seconds", 0.0)), loaded_from_cache=True,
    )


_MEMORY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def dataset_classifier(
    dataset: Any, *, frames: int, resolution: int, device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None, progress: bool = True, holdout: float = 0.2,
    max_clips: int = 1200, num_threads: int | None = None, warn: bool = True, steps: int | None = None,
) -> DatasetReference:
    """The reference classifier of a labelled clip dataset (``dataset[i] -> (uint8 [T, H, W, 3],
    label)``, ``class_names``), trained or read from the cache; see the module docstring.

    ``frames`` / ``resolution`` must be the dataset's clip size (the model's). The classifier is
    kept in memory per dataset object too, so periodic evaluation pays only for its videos.
    ``num_threads``: torch CPU threads while training (restored afterwards); ``steps``: optimiser
    steps (default: :func:`_steps_for` the number of training clips). Issues one warning
    line when the held-out accuracy is too weak to judge by (:func:`is_weak`).
    """
    device = torch.device(device)
    names = list(getattr(dataset, "class_names", []) or [])
    if len(names) < 2:
        raise DataError("a reference classifier needs a labelled dataset with at least 2 classes "
                        f"(this one has {len(names)})")
    indices = _subset(dataset, max_clips)
    settings = {"version": DATASET_REFERENCE_VERSION, "frames": int(frames), "resolution": int(resolution),
                "holdout": holdout, "max_clips": max_clips, "steps": steps}
    try:
        memo = _MEMORY.setdefault(dataset, {})
    except TypeError:  # not weak-referenceable
        memo = {}
    mkey = json.dumps(settings, sort_keys=True) + str(cache_dir)
    if mkey in memo:
        return memo[mkey]
    fingerprint = dataset_fingerprint(dataset, indices)
    key = hashlib.sha256((fingerprint + json.dumps(settings, sort_keys=True)).encode()).hexdigest()
    ref = _load(key, cache_dir, device)
    if ref is None:
        ref = _build(dataset, indices, names, frames, resolution, device, holdout, progress, num_threads,
                     fingerprint, steps)
        _save(ref, key, cache_dir, {"settings": settings, "num_clips": int(len(ref.real_labels))})
    if warn and ref.weak:
        warnings.warn(f"the reference classifier of this dataset reaches only {ref.heldout_accuracy:.2f} held-out "
                      f"accuracy ({len(names)} classes, chance {1 / len(names):.2f}): too weak to judge samples by",
                      stacklevel=2)
    memo[mkey] = ref
    return ref


def _build(dataset, indices, names, frames, resolution, device, holdout, progress, num_threads, fingerprint,
           steps) -> DatasetReference:
    start = time.perf_counter()
    evals, randoms, labels = _decode(dataset, indices, progress, random_views(len(indices)))
    if tuple(evals.shape[1:4]) != (frames, resolution, resolution):
        raise DataError(f"the dataset gives clips of {tuple(evals.shape[1:4])} (frames, H, W), "
                        f"not {(frames, resolution, resolution)}")
    y = labels.numpy()
    held = _holdout_mask(y, holdout)
    if not held.any():
        warnings.warn("too few clips per class to hold any out: the classifier's accuracy is measured "
                      "on its training clips", stacklevel=3)
        held_idx, train_idx = np.arange(len(y)), np.arange(len(y))
    else:
        held_idx, train_idx = np.flatnonzero(held), np.flatnonzero(~held)
    tr = torch.from_numpy(train_idx)
    train_x = torch.cat([evals[tr], *randoms[:, tr]])
    train_y = labels[tr].repeat(1 + randoms.shape[0])
    old = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        model = _train(train_x, train_y, len(names), steps or _steps_for(len(train_idx)), device, progress)
        real = _predict(model, evals)
    finally:
        torch.set_num_threads(old)
    heldout_accuracy = float((real["logits"][held_idx].argmax(1) == y[held_idx]).mean())
    return DatasetReference(
        model=model, class_names=names, heldout_accuracy=heldout_accuracy, heldout_size=int(len(held_idx)),
        real_features=real["features"], real_labels=y, real_motion=motion_statistic(evals),
        real_consistency=float(consistency_per_video(real["frame_logits"][held_idx]).mean()),
        real_frame_accuracy=float((real["frame_logits"][held_idx].argmax(-1) == y[held_idx, None]).mean()),
        fingerprint=fingerprint, train_seconds=time.perf_counter() - start,
    )
