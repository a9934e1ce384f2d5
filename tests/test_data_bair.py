"""BAIR: crc32c, TFRecord framing and tf.train.Example parsing written by hand, read back."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dvdgan.config import DataConfig
from dvdgan.data import build_dataset, summarize_bad_log
from dvdgan.data.bair import BairDataset
from dvdgan.data.tfrecord import (
    _crc32c_bytes,
    crc32c,
    encode_example,
    iter_records,
    masked_crc32c,
    parse_example,
    scan_records,
)
from dvdgan.errors import DataError


def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4 test vectors
    assert crc32c(bytes([0xFF] * 32)) == 0x62A8AB43
    rng = np.random.default_rng(0)
    for n in (70_000, 100_003, 760_000):  # the vectorised path equals the plain table loop
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == _crc32c_bytes(data)
    c = crc32c(b"abc")
    assert masked_crc32c(b"abc") == (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _frame(seq: int, t: int, cam: int) -> np.ndarray:
    f = np.zeros((64, 64, 3), np.uint8)
    f[..., 0] = t * 8  # frame index
    f[..., 1] = seq  # sequence id
    f[..., 2] = 100 * cam
    f[:, :4] = 255  # a left edge, to check that nothing is flipped
    return f


def _example(seq: int, steps: int = 30) -> bytes:
    feats: dict = {}
    for t in range(steps):
        feats[f"{t}/action"] = np.array([0.1, 0.2, 0.3, t], np.float32)
        feats[f"{t}/endeffector_pos"] = np.array([1.0, 2.0, 3.0], np.float32)
        feats[f"{t}/image_aux1/encoded"] = _frame(seq, t, 1).tobytes()
        feats[f"{t}/image_main/encoded"] = [_frame(seq, t, 2).tobytes()]
    return encode_example(feats)


def _frame_record(payload: bytes) -> bytes:
    """The framing of DATASETS.md, written out independently of the reader."""
    head = struct.pack("<Q", len(payload))
    return head + struct.pack("<I", masked_crc32c(head)) + payload + struct.pack("<I", masked_crc32c(payload))


@pytest.fixture(scope="module")
def bair(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bair") / "softmotion30_44k"
    files = {
        "train/traj_0_to_1.tfrecords": [0, 1],
        "train/traj_2_to_3.tfrecords": [2, 3],
        "test/traj_0_to_1.tfrecords": [10, 11],
    }
    for rel, seqs in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"".join(_frame_record(_example(s)) for s in seqs))
    return root


def test_tfrecord_and_example_roundtrip(bair):
    path = bair / "train" / "traj_2_to_3.tfrecords"
    assert len(scan_records(path)) == 2
    payloads = list(iter_records(path))
    ex = parse_example(payloads[1])
    assert len(ex) == 30 * 4
    assert np.allclose(ex["7/action"], [0.1, 0.2, 0.3, 7]) and ex["7/action"].dtype == np.float32
    img = np.frombuffer(ex["5/image_aux1/encoded"][0], np.uint8).reshape(64, 64, 3)
    assert np.array_equal(img, _frame(3, 5, 1))
    ints = parse_example(encode_example({"n": np.array([3, -1, 2**40])}))["n"]
    assert ints.tolist() == [3, -1, 2**40]


def test_bair_dataset(bair):
    for path in (bair, bair.parent):  # softmotion30_44k itself or the folder holding it
        ds = BairDataset(path, "train", frames=16, resolution=64, frame_stride=1)
        assert len(ds) == 4 and ds.class_names == ["robot_pushing"] and ds.num_classes == 1
    v, y = ds[3]
    assert v.shape == (16, 64, 64, 3) and v.dtype == torch.uint8 and y == 0
    assert v[:, 0, 10, 0].tolist() == [t * 8 for t in range(16)]  # first run
    assert int(v[0, 0, 10, 1]) == 3 and int(v[0, 0, 10, 2]) == 100 and int(v[0, 0, 0, 2]) == 255
    v, _ = ds[(1, 5)]
    s = int(v[0, 0, 10, 0]) // 8
    assert v[:, 0, 10, 0].tolist() == [(s + t) * 8 for t in range(16)]
    assert torch.equal(ds[(1, 5)][0], v)
    main = BairDataset(bair, "test", frames=15, resolution=32, frame_stride=2, camera="image_main")
    v, _ = main[0]
    assert v.shape == (15, 32, 32, 3) and int(v[0, 10, 10, 2]) == 200 and int(v[0, 10, 10, 1]) == 10
    assert v[:, 10, 10, 0].tolist() == [t * 16 for t in range(15)]
    cfg = DataConfig(dataset="bair", path=str(bair), frame_stride=1)
    assert len(build_dataset(cfg, split="test", frames=16, resolution=64)) == 2
    with pytest.raises(DataError, match="30 frames"):
        BairDataset(bair, "train", frames=16, resolution=64, frame_stride=2)
    with pytest.raises(DataError, match="no BAIR val TFRecords"):
        BairDataset(bair, "val", frames=16, resolution=64)


def test_bair_corrupt_record_skipped(tmp_path):
    p = tmp_path / "test" / "traj_0_to_2.tfrecords"
    p.parent.mkdir()
    recs = [bytearray(_frame_record(_example(s))) for s in range(3)]
    recs[1][500] ^= 0xFF  # payload corrupted: its crc32c no longer matches
    p.write_bytes(b"".join(recs[:2]) + bytes(recs[2][:1000]))  # and the last record truncated
    log = tmp_path / "bad.log"
    ds = BairDataset(tmp_path, "test", frames=4, resolution=64, bad_log=str(log))
    assert len(ds) == 3  # declared by the file name
    v0 = ds[(0, 9)][0]
    assert torch.equal(ds[(1, 9)][0], v0)  # 1 is bad -> 2 is bad -> wraps to 0
    assert summarize_bad_log(log) == {"bad_record": 2}
    assert "crc32c" in log.read_text()


def test_bair_prepare_round_trip(bair, tmp_path):
    from dvdgan.data.prepare import prepare
    from dvdgan.data.prepared import PreparedDataset

    summary = prepare("bair", bair, tmp_path / "p", 64, shard_size=3, progress=False)
    assert summary["train"]["videos"] == 4 and summary["test"]["videos"] == 2
    for split in ("train", "test"):
        raw = BairDataset(bair, split, frames=16, resolution=64, frame_stride=1)
        prep = PreparedDataset(tmp_path / "p", split, frames=16, resolution=64, frame_stride=1)
        assert len(prep) == len(raw) and prep.class_names == ["robot_pushing"]
        for i in range(len(raw)):
            assert torch.equal(raw[(i, 4)][0], prep[(i, 4)][0]) and prep[i][1] == 0
