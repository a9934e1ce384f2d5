"""Detectors: one interface over I3D, C3D and the built-in reference classifier.

A :class:`Detector` takes uint8 RGB videos [B, T, H, W, 3] (the dataset / sampler layout), applies
its protocol's preprocessing, runs the network batched under ``torch.no_grad()`` and returns
float64 numpy arrays:

* ``features(videos)`` -> [B, F], ``logits(videos)`` -> [B, C], ``probs(videos)`` -> [B, C];
* ``outputs(videos, want)`` -> both in one pass; ``embedding(videos)`` -> the array whose
  Frechet distance is reported as "fvd" (``frechet_output``: I3D logits, as FVD; the reference
  classifier's features).

Preprocessing per protocol:

* I3D / FVD (Unterthiner et al., google-research/frechet_video_distance ``preprocess``): every
  frame bilinearly resized to 224x224 with TF1 ``tf.image.resize_bilinear`` semantics
  (``align_corners=False, half_pixel_centers=False``, no antialiasing; ``i3d_resize="tf"``,
  the default) or PyTorch ``F.interpolate(bilinear, align_corners=False)`` without antialiasing
  as the VideoGPT / TATS ports do (``i3d_resize="torch"``); then 2x/255 - 1; then [B, 3, T, 224, 224].
* C3D / UCF-101 IS (TGANv2): x = 2u/255 - 1 -> the C3D module's own preprocessing (see c3d.py);
  videos longer than 16 frames are cut to their first 16.
* reference classifier: ``dvdgan.data.transforms.to_model_input`` ([B, T, 3, H, W] in [-1, 1]).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dvdgan.data.transforms import to_model_input
from dvdgan.errors import DvdganError, WeightsError
from dvdgan.metrics.c3d import C3D_FRAMES, is_npz, load_c3d
from dvdgan.metrics.i3d import (
    file_digest,
    i3d_output_size,
    is_torchscript_file,
    load_i3d,
    read_weight_file,
)

__all__ = [
    "Detector",
    "I3DDetector",
    "C3DDetector",
    "ReferenceDetector",
    "load_detector",
    "resize_bilinear_tf",
    "fvd_preprocess",
    "as_uint8_videos",
    "module_digest",
]

FVD_SIZE = 224


# ------------------------------------------------------------------------------------------
# Preprocessing
# ------------------------------------------------------------------------------------------


def _tf_resize_axis(x: torch.Tensor, dim: int, out: int) -> torch.Tensor:
    n = x.shape[dim]
    if n == out:
        return x
    # TF1 legacy resize_bilinear: src = dst * (in / out), no half-pixel offset, no antialias
    src = torch.arange(out, dtype=torch.float64) * (n / out)
    i0 = src.floor().long().clamp_(max=n - 1)
    i1 = (i0 + 1).clamp_(max=n - 1)
    w = (src - i0.double()).to(x.dtype)
    shape = [1] * x.ndim
    shape[dim] = out
    w = w.reshape(shape).to(x.device)
    a = x.index_select(dim, i0.to(x.device))
    b = x.index_select(dim, i1.to(x.device))
    return a + (b - a) * w


def resize_bilinear_tf(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [..., H, W] with TF1 ``tf.image.resize_bilinear`` defaults
    (``align_corners=False``, ``half_pixel_centers=False``; no antialiasing), as used by the
    FVD reference implementation."""
    frames = _tf_resize_axis(frames, frames.ndim - 2, size[0])
    return _tf_resize_axis(frames, frames.ndim - 1, size[1])


def as_uint8_videos(videos) -> torch.Tensor:
    """Check and convert uint8 videos [B, T, H, W, 3] (torch or numpy) to a CPU torch tensor."""
    if isinstance(videos, np.ndarray):
        videos = torch.from_numpy(videos)
    if not isinstance(videos, torch.Tensor) or videos.dtype != torch.uint8:
        got = getattr(videos, "dtype", type(videos))
        raise TypeError(f"expected uint8 videos [B, T, H, W, 3], got {got}")
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise DvdganError(f"expected RGB videos [B, T, H, W, 3], got shape {list(videos.shape)}")
    return videos


def fvd_preprocess(videos: torch.Tensor, resize: str = "tf", size: int = FVD_SIZE) -> torch.Tensor:
    """FVD preprocessing: uint8 [B, T, H, W, 3] -> float32 [B, 3, T, size, size] in [-1, 1]."""
    b, t, h, w, c = videos.shape
    frames = videos.reshape(b * t, h, w, c).permute(0, 3, 1, 2).float()
    if resize == "tf":
        frames = resize_bilinear_tf(frames, (size, size))
    elif resize == "torch":
        if (h, w) != (size, size):
            frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
    else:
        raise ValueError(f"resize must be 'tf' or 'torch', got {resize!r}")
    frames = 2.0 * frames / 255.0 - 1.0
    return frames.reshape(b, t, c, size, size).transpose(1, 2).contiguous()


def module_digest(module: nn.Module, n: int = 12) -> str:
    """SHA-256 prefix of a module's state dict (names, shapes and values)."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        if v.numel():
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:n]


# ------------------------------------------------------------------------------------------
# Detectors
# ------------------------------------------------------------------------------------------


class Detector:
    """Base class. Subclasses implement :meth:`_forward` on one uint8 batch.

    Attributes: ``name`` (human readable), ``identity`` (stable id stored in stats files: kind,
    preprocessing and a digest of the weights), ``kind`` ("i3d", "c3d", "reference" or a custom
    string), ``num_classes``, ``has_features``, ``frechet_output`` ("logits" | "features"),
    ``classes_match_dataset`` (the detector's classes are the dataset's labels, so class accuracy
    is meaningful), ``min_frames``.
    """

    name: str = "detector"
    identity: str = "detector"
    kind: str = "custom"
    num_classes: int = 0
    has_features: bool = True
    frechet_output: str = "features"
    classes_match_dataset: bool = False
    min_frames: int = 1

    def __init__(self, batch_size: int = 8, device: str | torch.device = "cpu") -> None:
        self.batch_size = int(batch_size)
        self.device = torch.device(device)

    # -- to implement ---------------------------------------------------------------------
    def _forward(self, videos: torch.Tensor, want: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """uint8 [b, T, H, W, 3] (on ``self.device``) -> {"features": [b, F], "logits": [b, C]}."""
        raise NotImplementedError

    # -- public ---------------------------------------------------------------------------
    def check_videos(self, videos: torch.Tensor) -> None:
        """Raise DvdganError when the videos cannot be measured by this detector."""
        if videos.shape[1] < self.min_frames:
            raise DvdganError(
                f"{self.name} needs at least {self.min_frames} frames per video, got {videos.shape[1]}"
            )

    def outputs(self, videos, want: Sequence[str] = ("features", "logits")) -> dict[str, np.ndarray]:
        """Run the detector on uint8 videos [B, T, H, W, 3]; float64 arrays for each of ``want``."""
        want = tuple(want)
        for w in want:
            if w not in ("features", "logits"):
                raise ValueError(f"unknown detector output {w!r}")
        if "features" in want and not self.has_features:
            raise DvdganError(f"{self.name} does not expose features (only logits)")
        videos = as_uint8_videos(videos)
        self.check_videos(videos)
        chunks: dict[str, list[np.ndarray]] = {w: [] for w in want}
        with torch.no_grad():
            for i in range(0, videos.shape[0], self.batch_size):
                out = self._forward(videos[i : i + self.batch_size].to(self.device), want)
                for w in want:
                    chunks[w].append(out[w].detach().double().cpu().numpy())
        return {
            w: np.concatenate(c, axis=0) if c else np.zeros((0, 0), dtype=np.float64)
            for w, c in chunks.items()
        }

    def features(self, videos) -> np.ndarray:
        return self.outputs(videos, ("features",))["features"]

    def logits(self, videos) -> np.ndarray:
        return self.outputs(videos, ("logits",))["logits"]

    def probs(self, videos) -> np.ndarray:
        x = self.logits(videos)
        x = np.exp(x - x.max(axis=1, keepdims=True))
        return x / x.sum(axis=1, keepdims=True)

    def embedding(self, videos) -> np.ndarray:
        """The output whose Frechet distance is reported as "fvd" (``frechet_output``)."""
        return self.outputs(videos, (self.frechet_output,))[self.frechet_output]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity})"


def _features_and_logits(model: nn.Module, x: torch.Tensor, want: tuple[str, ...]) -> dict[str, torch.Tensor]:
    if "features" in want:
        f, lg = model.features_and_logits(x)
        return {"features": f, "logits": lg}
    return {"logits": model(x)}


class I3DDetector(Detector):
    """I3D with FVD preprocessing; logits are the FVD embedding, avgpool features give FID."""

    kind = "i3d"
    frechet_output = "logits"

    def __init__(self, model: nn.Module, digest: str, label: str = "", resize: str = "tf",
                 batch_size: int = 8, device: str | torch.device = "cpu") -> None:
        super().__init__(batch_size, device)
        if resize not in ("tf", "torch"):
            raise ValueError(f"resize must be 'tf' or 'torch', got {resize!r}")
        self.model = model.to(self.device).eval()
        self.resize = resize
        self.num_classes = int(getattr(model, "num_classes", 400))
        self.has_features = not type(model).__name__.startswith("TorchScript")
        self.min_frames = next(t for t in range(1, 1000) if i3d_output_size(t, FVD_SIZE, FVD_SIZE)[0] >= 1)
        self.identity = f"i3d{self.num_classes}/resize224-{resize}/sha256:{digest}"
        self.name = f"I3D-{self.num_classes} ({label or digest})"

    def _forward(self, videos: torch.Tensor, want: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return _features_and_logits(self.model, fvd_preprocess(videos, self.resize), want)


class C3DDetector(Detector):
    """UCF-101 C3D with TGANv2 preprocessing (16 frames); logits give the video IS."""

    kind = "c3d"
    frechet_output = "features"
    min_frames = C3D_FRAMES

    def __init__(self, model: nn.Module, digest: str, label: str = "", batch_size: int = 8,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(batch_size, device)
        self.model = model.to(self.device).eval()
        self.num_classes = int(getattr(model, "num_classes", 101))
        self.has_features = not type(model).__name__.startswith("TorchScript")
        self.identity = f"c3d{self.num_classes}/tgan2/sha256:{digest}"
        self.name = f"C3D-UCF101 ({label or digest})"

    def _forward(self, videos: torch.Tensor, want: tuple[str, ...]) -> dict[str, torch.Tensor]:
        x = to_model_input(videos[:, :C3D_FRAMES]).transpose(1, 2)  # [b, 3, 16, H, W] in [-1, 1]
        return _features_and_logits(self.model, x, want)


class ReferenceDetector(Detector):
    """The built-in dataset's reference classifier (``dvdgan.metrics.reference``).

    The module takes float [B, T, 3, H, W] in [-1, 1] (our model layout): ``forward`` gives logits,
    ``features`` the embedding reported as "fvd". Its classes are the dataset's labels.
    """

    kind = "reference"
    frechet_output = "features"
    classes_match_dataset = True

    def __init__(self, module: nn.Module, resolution: int, frames: int, batch_size: int = 32,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(batch_size, device)
        self.module = module.to(self.device).eval()
        self.resolution, self.frames = int(resolution), int(frames)
        self.num_classes = int(getattr(module, "num_classes", 0))
        self.min_frames = self.frames
        self.identity = f"reference-{resolution}x{frames}/sha256:{module_digest(module)}"
        self.name = f"reference classifier {resolution}x{resolution}x{frames}f"

    def check_videos(self, videos: torch.Tensor) -> None:
        _, t, h, w, _ = videos.shape
        if (t, h, w) != (self.frames, self.resolution, self.resolution):
            raise DvdganError(
                f"the {self.name} takes {self.frames} frames of {self.resolution}x{self.resolution}, "
                f"got {t} frames of {h}x{w}"
            )

    def _forward(self, videos: torch.Tensor, want: tuple[str, ...]) -> dict[str, torch.Tensor]:
        x = to_model_input(videos)
        if hasattr(self.module, "features_and_logits"):
            f, lg = self.module.features_and_logits(x)
            return {"features": f, "logits": lg}
        out = {}
        if "logits" in want:
            out["logits"] = self.module(x)
        if "features" in want:
            out["features"] = self.module.features(x)
        return out


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


def _torchscript_kind(path: str) -> str | None:
    with zipfile.ZipFile(path) as z:
        text = " ".join(z.namelist()).lower()
    base = os.path.basename(path).lower()
    for kind in ("c3d", "i3d"):
        if kind in base:
            return kind
    hits = [k for k in ("c3d", "i3d") if k in text]
    return hits[0] if len(hits) == 1 else None


def detect_kind(path: str) -> str:
    """"i3d" or "c3d" from a weight file's content (keys / archive entries / name)."""
    if not os.path.isfile(path):
        raise WeightsError(f"detector weight file {path} does not exist (weights are never downloaded)")
    if is_torchscript_file(path):
        kind = _torchscript_kind(path)
        if kind is None:
            raise WeightsError(f"cannot tell whether TorchScript file {path} is I3D or C3D: "
                               "prefix it with i3d: or c3d:")
        return kind
    if is_npz(path):
        return "c3d"
    sd = read_weight_file(path)
    if "Conv3d_1a_7x7.conv3d.weight" in sd or "logits.conv3d.weight" in sd:
        return "i3d"
    if "conv1a.weight" in sd or "fc8.weight" in sd:
        return "c3d"
    raise WeightsError(f"{path} is neither an InceptionI3d nor a C3D weight file "
                       f"(first key: {next(iter(sd), '<none>')!r})")


def load_detector(
    spec: str,
    *,
    resolution: int | None = None,
    frames: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    c3d_mean: str | None = None,
    i3d_resize: str = "tf",
    num_classes: int | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
) -> Detector:
    """A :class:`Detector` from a spec.

    ``spec`` is ``"reference"`` (the built-in dataset's classifier for ``resolution`` x
    ``frames``; trained or read from ``cache_dir`` by ``dvdgan.metrics.reference``), or a local
    weight file: an I3D state dict / TorchScript, a C3D chainer npz (+ ``c3d_mean``, default
    ``mean2.npz`` beside it) / state dict / TorchScript. The kind is detected from the content;
    ``i3d:PATH`` or ``c3d:PATH`` forces it.
    """
    if spec == "reference":
        if resolution is None or frames is None:
            raise DvdganError("the reference detector needs the video resolution and frame count")
        from dvdgan.metrics.reference import load_reference_classifier

        module = load_reference_classifier(
            int(resolution), int(frames), device=str(device), cache_dir=cache_dir, progress=progress
        )
        return ReferenceDetector(module, resolution, frames, batch_size=batch_size or 32, device=device)
    kind = None
    path = spec
    for prefix in ("i3d:", "c3d:"):
        if spec.lower().startswith(prefix):
            kind, path = prefix[:3], spec[len(prefix):]
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise WeightsError(f"detector weight file {path} does not exist (weights are never downloaded; "
                           "use --detector reference for the built-in dataset)")
    kind = kind or detect_kind(path)
    digest = file_digest(path)
    label = os.path.basename(path)
    if kind == "i3d":
        model = load_i3d(path, num_classes=num_classes, device=device)
        return I3DDetector(model, digest, label, resize=i3d_resize, batch_size=batch_size or 8, device=device)
    model = load_c3d(path, mean_path=c3d_mean, device=device)
    mean = getattr(model, "mean", None)
    if isinstance(mean, torch.Tensor):  # the mean clip is part of the protocol: identify it too
        mean_digest = hashlib.sha256(mean.detach().cpu().float().contiguous().numpy().tobytes())
        digest = f"{digest}+mean:{mean_digest.hexdigest()[:8]}"
    return C3DDetector(model, digest, label, batch_size=batch_size or 8, device=device)
