"""C3D (TGANv2 UCF-101 Inception Score): chainer npz loading, mean clip, preprocessing, shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvdgan.errors import DvdganError, WeightsError
from dvdgan.metrics.c3d import C3D, load_c3d
from dvdgan.metrics.detectors import load_detector

# conv3d_deepnetA_ucf.npz as chainer's save_npz writes it (written out independently of c3d.py)
CHAINER = {
    "conv1a/W": (64, 3, 3, 3, 3), "conv1a/b": (64,),
    "conv2a/W": (128, 64, 3, 3, 3), "conv2a/b": (128,),
    "conv3a/W": (256, 128, 3, 3, 3), "conv3a/b": (256,),
    "conv3b/W": (256, 256, 3, 3, 3), "conv3b/b": (256,),
    "conv4a/W": (512, 256, 3, 3, 3), "conv4a/b": (512,),
    "conv4b/W": (512, 512, 3, 3, 3), "conv4b/b": (512,),
    "conv5a/W": (512, 512, 3, 3, 3), "conv5a/b": (512,),
    "conv5b/W": (512, 512, 3, 3, 3), "conv5b/b": (512,),
    "fc6/W": (4096, 8192), "fc6/b": (4096,),
    "fc7/W": (4096, 4096), "fc7/b": (4096,),
    "fc8/W": (101, 4096), "fc8/b": (101,),
}


@pytest.fixture(scope="module")
def c3d_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("c3d")
    rng = np.random.default_rng(0)
    arrays = {}
    for k, s in CHAINER.items():
        fan_in = int(np.prod(s[1:])) if len(s) > 1 else 1
        arrays[k] = (rng.standard_normal(s, dtype=np.float32) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    np.savez(d / "conv3d_deepnetA_ucf.npz", **arrays)
    mean = rng.uniform(80, 120, size=(3, 16, 128, 171)).astype(np.float32)
    np.savez(d / "mean2.npz", mean=mean)
    return d, arrays, mean


def test_npz_loads_with_converted_layout(c3d_files):
    d, arrays, mean = c3d_files
    model = load_c3d(str(d / "conv3d_deepnetA_ucf.npz"))  # mean2.npz found beside it
    assert isinstance(model, C3D)
    np.testing.assert_array_equal(model.conv3b.weight.detach().numpy(), arrays["conv3b/W"])
    np.testing.assert_array_equal(model.fc6.weight.detach().numpy(), arrays["fc6/W"])
    np.testing.assert_array_equal(model.fc8.bias.detach().numpy(), arrays["fc8/b"])
    np.testing.assert_array_equal(model.mean.numpy(), mean[:, :, 8:120, 8:120])


def test_output_shape_and_preprocessing(c3d_files):
    d, _, mean = c3d_files
    model = load_c3d(str(d / "conv3d_deepnetA_ucf.npz"), mean_path=str(d / "mean2.npz"))
    x = torch.rand(1, 3, 16, 64, 64) * 2 - 1
    with torch.no_grad():
        feats, logits = model.features_and_logits(x)
        pre = model.preprocess(x)
    assert logits.shape == (1, 101) and feats.shape == (1, 4096)
    # 128 x + 128 in BGR, resized 64 -> 112 with align_corners=True, minus the cropped mean
    corner = 128 * x[0, :, :, 0, 0].flip(0) + 128 - torch.from_numpy(mean[:, :, 8, 8])
    torch.testing.assert_close(pre[0, :, :, 0, 0], corner, rtol=1e-5, atol=1e-3)
    probs = torch.softmax(logits, 1)
    assert torch.allclose(probs.sum(), torch.tensor(1.0))


def test_wrong_shape_and_missing_keys_are_named(c3d_files, tmp_path):
    d, arrays, _ = c3d_files
    mean_path = str(d / "mean2.npz")
    # keys are checked in layer order, so small partial files exercise each error
    bad = {k: arrays[k] for k in ("conv1a/W", "conv1a/b", "conv2a/W", "conv2a/b", "conv3a/W", "conv3a/b")}
    bad["conv3b/W"] = np.zeros((256, 128, 3, 3, 3), np.float32)
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(WeightsError, match="conv3b/W.*256, 256, 3, 3, 3"):
        load_c3d(str(tmp_path / "bad.npz"), mean_path=mean_path)
    np.savez(tmp_path / "missing.npz", **{"conv1a/W": arrays["conv1a/W"]})
    with pytest.raises(WeightsError, match="missing key 'conv1a/b'"):
        load_c3d(str(tmp_path / "missing.npz"), mean_path=mean_path)
    # no mean2.npz beside the weights and none given
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "conv3d_deepnetA_ucf.npz").symlink_to(d / "conv3d_deepnetA_ucf.npz")
    with pytest.raises(WeightsError, match="mean2.npz"):
        load_c3d(str(tmp_path / "w" / "conv3d_deepnetA_ucf.npz"))
    np.savez(tmp_path / "mean_bad.npz", mean=np.zeros((3, 8, 128, 171), np.float32))
    with pytest.raises(WeightsError, match="'mean'"):
        load_c3d(str(tmp_path / "w" / "conv3d_deepnetA_ucf.npz"), mean_path=str(tmp_path / "mean_bad.npz"))


def test_c3d_detector_frames(c3d_files):
    d, _, _ = c3d_files
    det = load_detector(str(d / "conv3d_deepnetA_ucf.npz"))
    assert det.kind == "c3d" and det.num_classes == 101
    with pytest.raises(DvdganError, match="16 frames"):
        det.logits(torch.zeros(1, 12, 32, 32, 3, dtype=torch.uint8))
