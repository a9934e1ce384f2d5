"""C3D fine-tuned on UCF-101: the classifier of the video Inception Score (TGAN / TGANv2 protocol).

Port of pfnet-research/tgan2 ``tgan2/models/c3d/c3d_ucf101.py`` (``C3DVersion1UCF101``), which
loads ``conv3d_deepnetA_ucf.npz`` (converted from the Caffe model
``c3d_ucf101_finetune_whole_iter_20000``) and subtracts the mean clip of ``mean2.npz``:

* input: 16 frames, [B, 3, 16, H, W] in [-1, 1];
* ``pre``: RGB -> BGR and x128 (a fixed 1x1x1 conv without bias in the chainer model); each frame
  resized to 112x112 with chainer ``F.resize_images`` (bilinear, ``align_corners=True``, no
  antialiasing); plus ``128 - mean[:, :, 8:120, 8:120]``; in total 128x + 128 - mean;
* conv1a 64 -> pool (1,2,2) -> conv2a 128 -> pool 2 -> conv3a/b 256 -> pool 2 -> conv4a/b 512 ->
  pool 2 -> conv5a/b 512 -> pool 2 -> fc6 8192->4096 -> fc7 4096 -> fc8 101 (-> softmax). Convs
  3x3x3 pad 1 + ReLU; chainer's ``max_pooling_nd`` defaults to ``cover_all=True``, i.e. ceil
  mode (112 -> 56 -> 28 -> 14 -> 7 -> 4, so 512 x 1 x 4 x 4 = 8192 inputs to fc6); dropout is the
  identity at evaluation.

Chainer stores ConvolutionND weights as (out, in, kd, kh, kw) and Linear weights as (out, in),
the same layout as PyTorch, and flattens pool5 in C order like ``torch.flatten``; the
conversion is a renaming ``conv1a/W -> conv1a.weight``, ``conv1a/b -> conv1a.bias``.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dvdgan.errors import DvdganError, WeightsError
from dvdgan.metrics.i3d import check_state_dict, is_torchscript_file, read_weight_file

__all__ = ["C3D", "TorchScriptC3D", "load_c3d", "C3D_FRAMES", "C3D_SIZE", "chainer_keys"]

C3D_FRAMES = 16
C3D_SIZE = 112
_CONVS = [
    ("conv1a", 3, 64), ("conv2a", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
    ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512),
]
_FCS = [("fc6", 8192, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 101)]


def chainer_keys(num_classes: int = 101) -> dict[str, tuple[int, ...]]:
    """The arrays of ``conv3d_deepnetA_ucf.npz`` as chainer's ``save_npz`` names them, with shapes."""
    keys: dict[str, tuple[int, ...]] = {}
    for name, cin, cout in _CONVS:
        keys[f"{name}/W"] = (cout, cin, 3, 3, 3)
        keys[f"{name}/b"] = (cout,)
    for name, fin, fout in _FCS:
        fout = num_classes if name == "fc8" else fout
        keys[f"{name}/W"] = (fout, fin)
        keys[f"{name}/b"] = (fout,)
    return keys


def check_c3d_input(x: torch.Tensor) -> None:
    if x.ndim != 5 or x.shape[1] != 3:
        raise DvdganError(f"C3D expects videos [B, 3, T, H, W], got shape {list(x.shape)}")
    if x.shape[2] != C3D_FRAMES:
        raise DvdganError(
            f"C3D (UCF-101 Inception Score) needs exactly {C3D_FRAMES} frames, got {x.shape[2]}"
        )


class C3D(nn.Module):
    """TGANv2's C3D; ``forward`` includes the protocol's preprocessing and returns fc8 logits.

    ``mean`` is the cropped mean clip [3, 16, 112, 112] in BGR order (``mean2.npz`` cropped
    [8:120, 8:120]); ``features`` returns relu(fc7) [B, 4096] (TGANv2 ``get_feature``).
    """

    def __init__(self, num_classes: int = 101, mean: torch.Tensor | None = None) -> None:
        super().__init__()
        for name, cin, cout in _CONVS:
            self.add_module(name, nn.Conv3d(cin, cout, 3, padding=1))
        for name, fin, fout in _FCS:
            self.add_module(name, nn.Linear(fin, num_classes if name == "fc8" else fout))
        self.num_classes = num_classes
        if mean is None:
            mean = torch.zeros(3, C3D_FRAMES, C3D_SIZE, C3D_SIZE)
        self.register_buffer("mean", mean.float().reshape(3, C3D_FRAMES, C3D_SIZE, C3D_SIZE))
        self.eval()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB [B, 3, 16, H, W] -> 128 x + 128 in BGR, 112x112, minus the mean clip."""
        check_c3d_input(x)
        b, c, t, h, w = x.shape
        x = x.flip(1) * 128.0  # chainer ``pre``: W[[0, 1, 2], [2, 1, 0]] = 128, no bias
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        if (h, w) != (C3D_SIZE, C3D_SIZE):
            # chainer F.resize_images: bilinear, align_corners=True (its default), no antialias
            frames = F.interpolate(frames, size=(C3D_SIZE, C3D_SIZE), mode="bilinear", align_corners=True)
        x = frames.reshape(b, t, c, C3D_SIZE, C3D_SIZE).transpose(1, 2)
        return x + (128.0 - self.mean)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        x = F.relu(self.conv1a(x))
        x = F.max_pool3d(x, (1, 2, 2), (1, 2, 2), ceil_mode=True)
        x = F.relu(self.conv2a(x))
        x = F.max_pool3d(x, 2, 2, ceil_mode=True)
        for block in (("conv3a", "conv3b"), ("conv4a", "conv4b"), ("conv5a", "conv5b")):
            for name in block:
                x = F.relu(self._modules[name](x))
            x = F.max_pool3d(x, 2, 2, ceil_mode=True)  # chainer cover_all=True
        x = x.flatten(1)
        x = F.relu(self.fc6(x))
        return F.relu(self.fc7(x))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._trunk(x)
        return h, self.fc8(h)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc8(self._trunk(x))


class TorchScriptC3D(nn.Module):
    """Wraps StyleGAN-V's ``c3d_ucf101.pt`` (a TorchScript port of the chainer model above).

    StyleGAN-V feeds it uint8 videos [B, 3, 16, H, W] (``(x * 127.5 + 128).clamp(0, 255)``) and
    reads its output as class probabilities; the port does its own preprocessing. ``forward``
    takes [-1, 1] like :class:`C3D`, converts the same way and returns log-probabilities as logits
    (softmax of them gives the file's probabilities back). Not testable here without the file.
    """

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.module = module
        self.num_classes = 101

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_c3d_input(x)
        u8 = (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        out = self.module(u8).double()
        if bool((out >= 0).all()) and torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-3):
            return out.clamp_min(1e-30).log()
        return out  # already logits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise DvdganError("the TorchScript C3D (c3d_ucf101.pt) exposes only class probabilities")

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features(x), self(x)


def _read_npz(path: str, what: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise WeightsError(f"{what} {path} does not exist (weights are never downloaded)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise WeightsError(f"cannot read {what} {path}: {e}".splitlines()[0]) from None


def load_c3d_mean(path: str) -> torch.Tensor:
    """``mean2.npz`` (key ``mean``, [3, 16, >=120, >=120], BGR) cropped to [3, 16, 112, 112]."""
    arrays = _read_npz(path, "C3D mean file")
    if "mean" not in arrays:
        raise WeightsError(f"{path} is not a C3D mean file: missing key 'mean'")
    mean = arrays["mean"]
    if mean.ndim != 4 or mean.shape[:2] != (3, C3D_FRAMES) or mean.shape[2] < 120 or mean.shape[3] < 120:
        raise WeightsError(f"{path}: key 'mean' has shape {list(mean.shape)}, expected [3, 16, >=120, >=120]")
    return torch.from_numpy(np.ascontiguousarray(mean[:, :, 8:120, 8:120], dtype=np.float32))


def load_c3d(path: str, mean_path: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Load the UCF-101 C3D from a local file, in eval mode.

    * TGANv2's chainer ``conv3d_deepnetA_ucf.npz`` (keys ``conv1a/W``, ``conv1a/b``, ... ``fc8/b``,
      all checked strictly with their shapes) plus the mean clip ``mean_path`` (default:
      ``mean2.npz`` beside the weights; missing -> WeightsError, since the protocol needs it);
    * a state dict with this module's names (``conv1a.weight``, ..., ``mean``), torch or
      safetensors;
    * StyleGAN-V's TorchScript ``c3d_ucf101.pt`` (wrapped in :class:`TorchScriptC3D`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"C3D weight file {path} does not exist (weights are never downloaded)")
    if is_torchscript_file(path):
        try:
            module = torch.jit.load(path, map_location=device)
        except Exception as e:  # noqa: BLE001
            raise WeightsError(f"cannot load TorchScript C3D {path}: {e}".splitlines()[0]) from None
        return TorchScriptC3D(module.eval()).eval()
    if is_npz(path):
        arrays = _read_npz(path, "C3D weight file")
        arrays = {k.lstrip("/"): v for k, v in arrays.items()}
        fc8 = arrays.get("fc8/W")
        num_classes = int(fc8.shape[0]) if fc8 is not None and fc8.ndim == 2 else 101
        expected = {k: torch.empty(s) for k, s in chainer_keys(num_classes).items()}
        got = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}
        check_state_dict(got, expected, path, "chainer C3D (conv3d_deepnetA_ucf.npz)")
        if mean_path is None:
            mean_path = os.path.join(os.path.dirname(os.path.abspath(path)), "mean2.npz")
            if not os.path.isfile(mean_path):
                raise WeightsError(
                    f"C3D mean clip not found: pass mean2.npz explicitly (looked for {mean_path})"
                )
        sd = {}
        for k, v in got.items():
            layer, p = k.split("/")
            sd[f"{layer}.{'weight' if p == 'W' else 'bias'}"] = v.float().contiguous()
        sd["mean"] = load_c3d_mean(mean_path)
        return _build(num_classes, sd).to(device).eval()
    sd = read_weight_file(path)
    fc8 = sd.get("fc8.weight")
    num_classes = int(fc8.shape[0]) if fc8 is not None and fc8.ndim == 2 else 101
    with torch.device("meta"):
        expected = C3D(num_classes).state_dict()
    check_state_dict(sd, expected, path, "C3D")
    sd = {k: v.float().contiguous() for k, v in sd.items()}
    if mean_path is not None:
        sd["mean"] = load_c3d_mean(mean_path)
    return _build(num_classes, sd).to(device).eval()


def _build(num_classes: int, sd: dict[str, torch.Tensor]) -> C3D:
    # built on the meta device and assigned the loaded tensors: no 78M-parameter random init
    with torch.device("meta"):
        model = C3D(num_classes)
    model.load_state_dict(sd, strict=True, assign=True)
    return model


def is_npz(path: str) -> bool:
    if path.endswith(".npz"):
        return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return bool(names) and all(n.endswith(".npy") for n in names)
