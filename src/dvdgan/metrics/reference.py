"""Reference video classifier for the built-in MovingShapes dataset.

It fills the role I3D plays for Kinetics: a small 3-D convnet, trained once on
:class:`~dvdgan.data.shapes.MovingShapes` and cached, whose

* top-1 accuracy on generated videos (against the labels they were conditioned on) says whether
  a class-conditional generator draws the right shape *and* the right direction of motion (the
  motion half of the class is only visible in the temporal order of the frames), and whose
* penultimate features give a Frechet distance to real clips (an FVD analogue), reported next
  to the real-vs-real floor of the same sample size.

The weights are cached as safetensors under ``cache_dir or $DVDGAN_CACHE or ~/.cache/dvdgan``
(sub-folder ``reference``), one file per (resolution, frames, num_classes, version). The first
call trains the network (deterministic seed; 240 steps of 64 clips, ~20 s on 2 idle CPU cores at
32x32x8), checks its accuracy on the real test split and writes the cache atomically.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from dvdgan.config import DataConfig
from dvdgan.data.shapes import MOTIONS, MovingShapes, motion_statistic, shapes_class_names
from dvdgan.data.transforms import to_model_input
from dvdgan.errors import WeightsError
from dvdgan.metrics.frechet import frechet_distance

__all__ = [
    "REFERENCE_VERSION",
    "ReferenceClassifier",
    "load_reference_classifier",
    "train_reference_classifier",
    "reference_cache_path",
    "evaluate_videos",
]

#: Bump when the architecture, the training recipe or the dataset's rendering changes:
#: it is part of the cache key, so stale weights are never loaded.
REFERENCE_VERSION = "v3"
#: Accuracy on the real test split the trained classifier is checked against.
MIN_TEST_ACCURACY = 0.98

_TRAIN_SEED = 0  # seed of the network's initialisation and of the training batches
_DATA_SEED = 0  # MovingShapes seed of the train and test splits
_BATCH = 64
_STEPS = 240  # base schedule; extended (at most _EXTRA_ROUNDS times) if the check fails
_EXTRA_ROUNDS = 2
_LR = 3e-3
_WEIGHT_DECAY = 1e-4


def input_pool(resolution: int) -> int:
    """Average-pooling factor applied to the input so that the network sees frames of 16-47 px."""
    k = 1
    while resolution // (2 * k) >= 24:
        k *= 2
    return k


def conv_bn(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


class ReferenceClassifier(nn.Module):
    """A small 3-D convnet over MovingShapes clips.

    Input: float videos ``[B, T, 3, H, W]`` in [-1, 1] (``to_model_input`` of uint8 clips), with
    ``T == frames`` and ``H == W == resolution``. Architecture: optional 2^k x 2^k average pooling
    (resolutions >= 48, so the network sees 24-47 px frames); each frame is stacked with its
    forward difference to the next frame (6 channels, zero for the last frame: a cheap "motion
    stream" that makes the direction of motion quick to learn); a 1x3x3 Conv3d stem and three 3x3x3
    Conv3d layers, each with BatchNorm + ReLU (16, 32, 64, 128 channels; spatial strides 2, 2, 2,
    1; temporal stride 2 in the third); global average pooling (``features``: 128-d) and a linear
    layer (``forward``: logits).
    """

    feature_dim = 128

    def __init__(self, resolution: int, frames: int, num_classes: int = 6) -> None:
        super().__init__()
        self.resolution = int(resolution)
        self.frames = int(frames)
        self.num_classes = int(num_classes)
        self.pool = input_pool(self.resolution)
        self.body = nn.Sequential(
            conv_bn(6, 16, (1, 3, 3), (1, 2, 2)),
            conv_bn(16, 32, (3, 3, 3), (1, 2, 2)),
            conv_bn(32, 64, (3, 3, 3), (2, 2, 2)),
            conv_bn(64, self.feature_dim, (3, 3, 3), (1, 1, 1)),
        )
        self.head = nn.Linear(self.feature_dim, self.num_classes)
        #: accuracy on the real test split measured after training (also in the cache metadata)
        self.test_accuracy: float = float("nan")
        #: seconds spent training and optimiser steps taken (as recorded in the cache)
        self.train_seconds: float = 0.0
        self.train_steps: int = 0
        #: True when the weights came from the cache rather than from training in this call
        self.loaded_from_cache: bool = False
        # evaluate_videos' real-set statistics, per sample size (see _real_statistics)
        self._real_cache: dict[tuple, _RealStatistics] = {}

    def _check_shape(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"expected float videos [B, T, 3, H, W], got {tuple(x.shape)}")
        t, h, w = x.shape[1], x.shape[3], x.shape[4]
        if (t, h, w) != (self.frames, self.resolution, self.resolution):
            raise ValueError(
                f"this reference classifier takes {self.frames} frames of {self.resolution}x"
                f"{self.resolution}, got {t} frames of {h}x{w}"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[B, 128]`` (globally pooled), used for the Frechet distance."""
        self._check_shape(x)
        x = x.transpose(1, 2)  # [B, 3, T, H, W]
        if self.pool > 1:
            x = F.avg_pool3d(x, (1, self.pool, self.pool))
        diff = F.pad(x[:, :, 1:] - x[:, :, :-1], (0, 0, 0, 0, 0, 1))
        x = torch.cat([x, diff], dim=1)
        return self.body(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, num_classes]``."""
        return self.head(self.features(x))


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    root = cache_dir or os.environ.get("DVDGAN_CACHE") or os.path.join("~", ".cache", "dvdgan")
    return Path(root).expanduser()


def reference_cache_path(
    resolution: int, frames: int, num_classes: int = 6, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where the weights for (resolution, frames, num_classes, REFERENCE_VERSION) are cached."""
    name = f"shapes-r{resolution}-t{frames}-c{num_classes}-{REFERENCE_VERSION}.safetensors"
    return cache_root(cache_dir) / "reference" / name


def _save(model: ReferenceClassifier, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "version": REFERENCE_VERSION,
        "resolution": str(model.resolution),
        "frames": str(model.frames),
        "num_classes": str(model.num_classes),
        "test_accuracy": repr(model.test_accuracy),
        "train_seconds": f"{model.train_seconds:.1f}",
        "train_steps": str(model.train_steps),
        "data_seed": str(_DATA_SEED),
        "train_seed": str(_TRAIN_SEED),
    }
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    try:
        save_file(state, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _load(path: Path, resolution: int, frames: int, num_classes: int) -> ReferenceClassifier:
    """Load cached weights; raises WeightsError when the file does not match."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as e:  # safetensors raises several error types for a corrupt file
        raise WeightsError(f"cannot read reference classifier weights {path}: {e}") from None
    expected = {"version": REFERENCE_VERSION, "resolution": str(resolution), "frames": str(frames),
                "num_classes": str(num_classes)}
    for k, v in expected.items():
        if meta.get(k) != v:
            raise WeightsError(f"{path}: metadata {k}={meta.get(k)!r}, expected {v!r}")
    model = ReferenceClassifier(resolution, frames, num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path} does not match the reference classifier: {e}") from None
    model.test_accuracy = float(meta.get("test_accuracy", "nan"))
    model.train_seconds = float(meta.get("train_seconds", "nan"))
    model.train_steps = int(meta.get("train_steps", "0"))
    model.loaded_from_cache = True
    return model


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def _predict(
    model: ReferenceClassifier, videos: torch.Tensor, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features float64 [N, F], logits float32 [N, C]) of uint8 videos, batch by batch, on CPU."""
    feats, logits = [], []
    for i in range(0, videos.shape[0], batch_size):
        x = to_model_input(videos[i : i + batch_size].to(device))
        f = model.features(x)
        feats.append(f.double().cpu())
        logits.append(model.head(f).float().cpu())
    return torch.cat(feats), torch.cat(logits)


def degrade_clips(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Degrade a random half of a training batch the way imperfect generated clips are degraded,
    so the classifier judges shape and motion rather than crispness (fidelity is what the
    Frechet distance measures): per clip a Gaussian blur (sigma 0-1.2 px), a contrast change
    (x0.6-1.0) and pixel noise that is independent across frames (std 0-0.12 in [-1, 1] units).
    Nothing moves: every change acts within a frame, so motion and its direction are untouched.
    """
    b = x.shape[0]
    pick = torch.rand(b, generator=gen) < 0.5
    n = int(pick.sum())
    if n == 0:
        return x
    sub = x[pick]  # [n, T, 3, H, W]
    sigma = 1.2 * torch.rand(n, generator=gen)
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k = (k / k.sum(1, keepdim=True)).to(x.device)  # [n, 5] separable kernel per clip
    t, c, h, w = sub.shape[1:]
    y = sub.permute(1, 2, 0, 3, 4).reshape(1, t * c * n, h, w)  # channels grouped by clip, last
    kh = k.repeat(t * c, 1)[:, None, :, None]  # [t*c*n, 1, 5, 1]
    y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="replicate"), kh, groups=t * c * n)
    y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="replicate"), kh.transpose(2, 3), groups=t * c * n)
    sub = y.reshape(t, c, n, h, w).permute(2, 0, 1, 3, 4)
    mean = sub.mean(dim=(1, 2, 3, 4), keepdim=True)
    contrast = (0.6 + 0.4 * torch.rand(n, 1, 1, 1, 1, generator=gen)).to(x.device)
    noise = 0.12 * torch.rand(n, 1, 1, 1, 1, generator=gen) * torch.randn(sub.shape, generator=gen)
    sub = (mean + contrast * (sub - mean) + noise.to(x.device)).clamp(-1, 1)
    out = x.clone()
    out[pick] = sub
    return out


def _test_accuracy(model: ReferenceClassifier, device: torch.device, n: int) -> float:
    model.eval()
    test = MovingShapes("test", model.frames, model.resolution, n, seed=_DATA_SEED)
    correct = 0
    for i in range(0, n, 250):
        v, y = test.batch(range(i, min(n, i + 250)))
        _, logits = _predict(model, v, 125, device)
        correct += int((logits.argmax(1) == y).sum())
    return correct / n


def train_reference_classifier(
    resolution: int, frames: int, *, device: str | torch.device = "cpu", progress: bool = True,
    min_accuracy: float = MIN_TEST_ACCURACY, num_threads: int | None = None,
) -> ReferenceClassifier:
    """Train the reference classifier on MovingShapes' train split (deterministic, no caching).

    AdamW with a one-cycle learning rate over ``_STEPS`` batches of 64 fresh training clips;
    the accuracy on ``DataConfig.shapes_test_size`` real test clips is measured afterwards and,
    if below ``min_accuracy``, training continues (lower learning rate) up to
    ``_EXTRA_ROUNDS`` more times. The result is returned in eval mode with ``test_accuracy``
    and ``train_seconds`` set; if the target is still missed a warning is issued.

    ``num_threads``: CPU threads for torch during training (restored afterwards); ``None``
    keeps ``torch.get_num_threads()``. One thread is much faster on a CPU shared with other
    busy processes (OpenMP threads then wait on each other).
    """
    device = torch.device(device)
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train(resolution, frames, device, progress, min_accuracy)
    finally:
        torch.set_num_threads(old_threads)


def _train(
    resolution: int, frames: int, device: torch.device, progress: bool, min_accuracy: float
) -> ReferenceClassifier:
    data_cfg = DataConfig()
    train = MovingShapes("train", frames, resolution, data_cfg.shapes_train_size, seed=_DATA_SEED)
    start = time.perf_counter()
    devices = [device.index or 0] if device.type == "cuda" else []
    # trained on first use, possibly from inside a caller's torch.no_grad() (evaluation)
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        torch.manual_seed(_TRAIN_SEED)
        model = ReferenceClassifier(resolution, frames, train.num_classes).to(device)
        gen = torch.Generator().manual_seed(_TRAIN_SEED)
        accuracy = float("nan")
        total_steps = 0
        bar = tqdm(total=_STEPS, desc=f"reference classifier {resolution}x{resolution}x{frames}",
                   disable=not progress, leave=False, unit="step")
        for round_ in range(1 + _EXTRA_ROUNDS):
            steps = _STEPS if round_ == 0 else _STEPS // 2
            lr = _LR if round_ == 0 else _LR / 4
            if round_ > 0:
                bar.reset(total=steps)
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=_WEIGHT_DECAY)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
            model.train()
            for _ in range(steps):
                idx = torch.randint(0, len(train), (_BATCH,), generator=gen)
                v, y = train.batch(idx)
                x = degrade_clips(to_model_input(v.to(device)), gen)
                loss = F.cross_entropy(model(x), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_steps += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            accuracy = _test_accuracy(model, device, data_cfg.shapes_test_size)
            bar.set_postfix(test_acc=f"{accuracy:.4f}")
            if accuracy >= min_accuracy:
                break
        bar.close()
    model.eval()
    model.test_accuracy = accuracy
    model.train_seconds = time.perf_counter() - start
    model.train_steps = total_steps
    if accuracy < min_accuracy:
        warnings.warn(
            f"reference classifier {resolution}x{resolution}x{frames} reached only {accuracy:.2%} "
            f"test accuracy (target {min_accuracy:.0%}); its numbers are less reliable",
            stacklevel=3,
        )
    return model


def load_reference_classifier(
    resolution: int, frames: int, *, device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None, progress: bool = True, num_threads: int | None = None,
) -> ReferenceClassifier:
    """The reference classifier for MovingShapes clips of this size, in eval mode on ``device``.

    Loads cached weights from :func:`reference_cache_path` if present; otherwise trains them
    (:func:`train_reference_classifier`) and writes the cache atomically. A cache file that
    cannot be read or does not match is replaced (with a warning). ``num_threads`` applies to
    training only (see :func:`train_reference_classifier`).
    """
    num_classes = len(shapes_class_names())
    path = reference_cache_path(resolution, frames, num_classes, cache_dir)
    model: ReferenceClassifier | None = None
    if path.exists():
        try:
            model = _load(path, resolution, frames, num_classes)
        except WeightsError as e:
            warnings.warn(f"{e}; retraining", stacklevel=2)
    if model is None:
        model = train_reference_classifier(
            resolution, frames, device=device, progress=progress, num_threads=num_threads
        )
        _save(model, path)
    return model.to(device).eval()


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _as_uint8_videos(videos: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    v = torch.from_numpy(np.ascontiguousarray(videos)) if isinstance(videos, np.ndarray) else videos.cpu()
    if v.dtype != torch.uint8 or v.ndim != 5 or v.shape[-1] != 3:
        raise ValueError(f"{what}: expected uint8 videos [N, T, H, W, 3], got {v.dtype} {tuple(v.shape)}")
    return v


def _gaussian(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = features.numpy().astype(np.float64)
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


@dataclass
class _RealStatistics:
    """Statistics of the real test clips [0, N) ("a") and [N, 2N) ("b") for one N."""

    mu_a: np.ndarray
    sigma_a: np.ndarray
    accuracy_a: float
    motion_a: dict[str, float]
    floor: float  # Frechet distance between a and b


def _fingerprint(classifier: ReferenceClassifier) -> tuple[float, ...]:
    """Cheap identity of the weights, so cached real statistics follow a reloaded classifier."""
    last_bn = classifier.body[-1][1]
    return (
        float(classifier.head.weight.detach().double().sum()),
        float(classifier.head.bias.detach().double().sum()),
        float(last_bn.running_mean.double().sum()),  # type: ignore[union-attr]
    )


def _real_statistics(
    classifier: ReferenceClassifier, n: int, batch_size: int, device: torch.device
) -> _RealStatistics:
    """Real-clip statistics for sample size ``n``, computed once per classifier and ``n``.

    The clips are rendered batch by batch; only the first set ("a", the default real set) is
    kept whole, for its motion statistic.
    """
    key = (n, _DATA_SEED, _fingerprint(classifier))
    cache = classifier._real_cache
    if key in cache:
        return cache[key]
    t, h = classifier.frames, classifier.resolution
    test = MovingShapes("test", t, h, max(2 * n, DataConfig().shapes_test_size), seed=_DATA_SEED)
    real_a, labels_a = test.batch(range(n))
    feats_a, logits_a = _predict(classifier, real_a, batch_size, device)
    feats_b = torch.cat([
        _predict(classifier, test.batch(range(i, min(2 * n, i + 512)))[0], batch_size, device)[0]
        for i in range(n, 2 * n, 512)
    ])
    mu_a, sigma_a = _gaussian(feats_a)
    mu_b, sigma_b = _gaussian(feats_b)
    stats = _RealStatistics(
        mu_a=mu_a,
        sigma_a=sigma_a,
        accuracy_a=float((logits_a.argmax(1) == labels_a).double().mean()),
        motion_a=motion_statistic(real_a),
        floor=frechet_distance(mu_a, sigma_a, mu_b, sigma_b),
    )
    if len(cache) >= 4:
        cache.clear()
    cache[key] = stats
    return stats


def evaluate_videos(
    videos: torch.Tensor | np.ndarray,
    labels: torch.Tensor,
    classifier: ReferenceClassifier,
    real_videos: torch.Tensor | np.ndarray | None = None,
    batch_size: int = 64,
) -> dict[str, float | dict[str, float]]:
    """Judge videos (usually generated) with the reference classifier.

    Args:
        videos: uint8 ``[N, T, H, W, 3]`` (N >= 2), the classifier's frame count and resolution.
        labels: int64 ``[N]``, the classes the videos should show (e.g. the conditioning labels).
        classifier: from :func:`load_reference_classifier`.
        real_videos: uint8 ``[M, T, H, W, 3]`` real clips to compare with; default: the first N
            clips of MovingShapes' test split.
        batch_size: classifier batch size.

    Returns a dict with

    * ``accuracy``: top-1 accuracy of the classifier on ``videos`` against ``labels``;
    * ``accuracy_shape`` / ``accuracy_motion``: the same, counting a prediction as right when
      only its shape / only its direction matches (chance 1/3 and 1/2): which half of the class
      a generator has not learned yet (e.g. one direction for every class: motion 0.5);
    * ``frechet``: Frechet distance between the classifier features of ``videos`` and of the
      real clips (mean / covariance in float64, ``np.cov(rowvar=False)``);
    * ``frechet_floor``: the Frechet distance between two disjoint sets of N real test clips
      (test indices ``[0, N)`` and ``[N, 2N)``), i.e. what a perfect generator would score with
      this sample size;
    * ``accuracy_real``: the classifier's accuracy on the real clips (when their labels are known,
      i.e. ``real_videos`` is None; otherwise NaN);
    * ``motion`` / ``motion_real``: :func:`~dvdgan.data.shapes.motion_statistic` of both sets;
    * ``num_videos``: N.

    The real-set statistics (for a given N) are computed once and kept on the classifier, so
    periodic evaluation during training only pays for the videos being judged.
    """
    videos = _as_uint8_videos(videos, "videos")
    n, t, h, w, _ = videos.shape
    if (t, h, w) != (classifier.frames, classifier.resolution, classifier.resolution):
        raise ValueError(
            f"videos are {t} frames of {h}x{w} but the reference classifier takes {classifier.frames} "
            f"frames of {classifier.resolution}x{classifier.resolution}"
        )
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
    if labels.shape[0] != n:
        raise ValueError(f"got {n} videos but {labels.shape[0]} labels")
    if n < 2:
        raise ValueError("evaluate_videos needs at least 2 videos for a covariance")
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    try:
        feats, logits = _predict(classifier, videos, batch_size, device)
        pred = logits.argmax(1)
        accuracy = float((pred == labels).double().mean())
        m = len(MOTIONS)  # class = shape * len(MOTIONS) + motion (data/shapes.py)
        accuracy_shape = float((pred // m == labels // m).double().mean())
        accuracy_motion = float((pred % m == labels % m).double().mean())
        ref = _real_statistics(classifier, n, batch_size, device)
        if real_videos is None:
            mu_r, sigma_r, accuracy_real, motion_real = ref.mu_a, ref.sigma_a, ref.accuracy_a, dict(ref.motion_a)
        else:
            real = _as_uint8_videos(real_videos, "real_videos")
            if tuple(real.shape[1:4]) != (t, h, w) or real.shape[0] < 2:
                raise ValueError(f"real_videos must be [M >= 2, {t}, {h}, {w}, 3], got {tuple(real.shape)}")
            mu_r, sigma_r = _gaussian(_predict(classifier, real, batch_size, device)[0])
            accuracy_real, motion_real = math.nan, motion_statistic(real)
    finally:
        classifier.train(was_training)

    mu, sigma = _gaussian(feats)
    return {
        "accuracy": accuracy,
        "accuracy_shape": accuracy_shape,
        "accuracy_motion": accuracy_motion,
        "accuracy_real": accuracy_real,
        "frechet": frechet_distance(mu, sigma, mu_r, sigma_r),
        "frechet_floor": ref.floor,
        "motion": motion_statistic(videos),
        "motion_real": motion_real,
        "num_videos": float(n),
    }
