"""A small video folder is decoded once into memory (data.cache_mb) and its clips cut from there:
the same clips as decoding the files, bad files recorded as a read would record them, nothing
decoded when the folder does not fit, and no decoding process beside training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvdgan.config import DataConfig
from dvdgan.data import build_dataset
from dvdgan.data.video import encode_video
from videofolders import make_class_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = make_class_folder(tmp_path_factory.mktemp("pre") / "videos", num_classes=2, per_class=4, frames=14,
                             size=40, seed=1)  # 40x40 frames: resized to 24 (libswscale) on decode
    (root / "bar-right" / "empty.mp4").write_bytes(b"")
    good = next((root / "bar-left").glob("*.mp4")).read_bytes()
    (root / "bar-left" / "trunc.mp4").write_bytes(good[: len(good) // 2])
    encode_video(root / "bar-left" / "short.mp4", np.zeros((3, 40, 40, 3), np.uint8), "h264")
    return root


def _ds(root, stride=2):
    return build_dataset(DataConfig(dataset="folder", path=str(root), frame_stride=stride), split="train",
                         frames=5, resolution=24)


@pytest.mark.parametrize("stride", [1, 2])
def test_preloaded_clips_are_the_decoded_clips(folder, stride):
    files, cached = _ds(folder, stride), _ds(folder, stride)
    held = cached.preload(64, progress=False)
    assert held > 0 and cached.preloaded == 8 and cached.fully_preloaded
    assert cached.bad_reasons == {"empty": 1, "unreadable": 1, "too_short": 1} and cached.bad_count == 3
    for i in range(len(files)):
        for key in (i, (i, 7 * i + 3), (i, 991 + i)):
            a, ya = files[key]
            b, yb = cached[key]
            assert b.shape == (5, 24, 24, 3) and torch.equal(a, b) and ya == yb, key


def test_nothing_is_decoded_when_the_folder_does_not_fit(folder):
    ds = _ds(folder)
    assert ds.preload(ds.estimated_bytes() / 2**20 / 2, progress=False) == 0
    assert ds.preloaded == 0 and not ds.fully_preloaded and ds.bad_count == 0


def test_the_budget_is_never_passed_when_the_estimate_was_low(folder, monkeypatch):
    ds = _ds(folder)
    one = ds.estimated_bytes() / 11  # 11 files: about one video
    monkeypatch.setattr(ds, "estimated_bytes", lambda: 0.0)  # the headers under-counted
    held = ds.preload(3.5 * one / 2**20, progress=False)
    assert 0 < held <= 3.5 * one and 1 <= ds.preloaded < 8 and not ds.fully_preloaded
    v, _ = ds[(len(ds) - 1, 5)]  # the rest still decode from their files
    assert v.shape == (5, 24, 24, 3)


def test_training_on_a_folder_decodes_once_and_starts_no_decoding_process(folder, tmp_path, capsys):
    from conftest import TINY_NETWORK
    from dvdgan.cli import main

    small = [o for o in TINY_NETWORK if not o.startswith("model.frames")]
    rc = main(["train", "--data", str(folder), "--out", str(tmp_path / "run"), "--max-steps", "1", "--no-progress",
               *small, "model.frames=5", "model.frames_per_spatial_d=2", "train.eval_every=0",
               "data.num_workers=-1"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "data: 8 videos decoded into memory" in err and "decoding processes" not in err, err
