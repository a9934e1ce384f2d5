"""The prepared format: round trip against the raw readers, resume, CLI, loader benchmark."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import dvdgan.data.prepare as prepare_mod
from dvdgan.commands import prepare as prepare_cmd
from dvdgan.config import DataConfig
from dvdgan.data import build_dataset, summarize_bad_log
from dvdgan.data.loader_bench import bench_loader, make_synthetic_video_folder
from dvdgan.data.prepare import prepare
from dvdgan.data.prepared import PreparedDataset
from dvdgan.data.video import encode_video
from dvdgan.errors import DataError


def _video(rng, n: int, w: int, h: int) -> np.ndarray:
    v = (
        rng.integers(0, 256, (1, h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        .repeat(4, 1)
        .repeat(4, 2)[:, :h, :w]
    )
    return np.concatenate([np.roll(v, 2 * t, axis=2) for t in range(n)])


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """A class-folder dataset of mixed codecs, sizes (landscape, portrait, 400x226) and lengths."""
    root = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(0)
    specs = [
        ("cats/a.mp4", "h264", 80, 60, 20),
        ("cats/b.avi", "mpeg4", 60, 80, 18),
        ("dogs/c.avi", "mjpeg", 100, 56, 16),
        ("dogs/d.mp4", "h264", 64, 48, 25),
        ("dogs/e.mkv", "mjpeg", 48, 48, 12),
    ]
    for rel, codec, w, h, n in specs:
        encode_video(root / rel, _video(rng, n, w, h), codec)
    return root


def _raw(path, **kw):
    return build_dataset(
        DataConfig(dataset="folder", path=str(path), frame_stride=kw.pop("stride", 2)), split="train", **kw
    )


def test_round_trip_equals_raw_reader(src, tmp_path):
    out = tmp_path / "prep"
    summary = prepare("folder", src, out, 32, shard_size=2, progress=False)
    assert summary["all"]["videos"] == 5 and summary["all"]["shards"] == 3 and summary["all"]["bad"] == 0
    raw = _raw(src, frames=6, resolution=32)
    for dataset in ("prepared", "folder"):  # explicit, or auto-detected from the folder
        cfg = DataConfig(dataset=dataset, path=str(out), frame_stride=2)
        prep = build_dataset(cfg, split="train", frames=6, resolution=32)
        assert isinstance(prep, PreparedDataset)
        assert len(prep) == len(raw) == 5 and prep.class_names == raw.class_names == ["cats", "dogs"]
        for i in range(5):
            for key in (i, (i, 17), (i, 12345)):
                (a, ya), (b, yb) = raw[key], prep[key]
                assert a.shape == b.shape == (6, 32, 32, 3) and b.dtype == torch.uint8
                assert torch.equal(a, b) and ya == yb, key
    # clips longer than some videos: those are left out (and logged), the rest still match
    log = tmp_path / "bad.log"
    prep = PreparedDataset(out, "train", frames=9, resolution=32, frame_stride=2, bad_log=str(log))
    assert len(prep) == 3 and summarize_bad_log(log) == {"too_short": 2}
    with pytest.raises(DataError, match="prepared at 32x32"):
        PreparedDataset(out, "train", frames=4, resolution=64, frame_stride=2)
    with pytest.raises(DataError, match="holds prepared folder, not ucf101"):
        build_dataset(DataConfig(dataset="ucf101", path=str(out)), split="train", frames=4, resolution=32)
    meta = json.loads((out / "dvdgan_prepared.json").read_text())
    assert meta["resolution"] == 32 and meta["crop"] == "full"


def test_center_crop_and_stored_stride(src, tmp_path):
    out = tmp_path / "c"
    prepare("folder", src, out, 32, crop="center", frame_stride=2, max_frames=7, progress=False)
    raw = _raw(src, frames=4, resolution=32, stride=2)
    prep = PreparedDataset(out, "train", frames=4, resolution=32, frame_stride=2)
    for i in range(len(prep)):
        assert torch.equal(raw[i][0], prep[i][0])  # evaluation keys: first run, centre crop
        assert prep[(i, 3)][0].shape == (4, 32, 32, 3)
    with pytest.raises(DataError, match="not a multiple"):
        PreparedDataset(out, "train", frames=4, resolution=32, frame_stride=3)


def test_bad_videos_are_skipped_and_summarised(src, tmp_path, capsys):
    root = tmp_path / "s"
    for p in src.rglob("*.*"):
        (root / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        (root / p.relative_to(src)).write_bytes(p.read_bytes())
    (root / "cats" / "zero.mp4").write_bytes(b"")
    (root / "dogs" / "junk.avi").write_bytes(b"RIFF" + bytes(range(256)) * 10)
    out = tmp_path / "p"
    summary = prepare("folder", root, out, 32, progress=True)
    text = capsys.readouterr().out
    assert "prepared 5 videos" in text and "skipped 2 bad videos" in text
    assert summary["all"]["bad"] == 2 and summary["all"]["bad_reasons"] == {"empty": 1, "unreadable": 1}
    assert summarize_bad_log(out / "bad_videos.log") == {"empty": 1, "unreadable": 1}
    assert len(PreparedDataset(out, "train", frames=4, resolution=32)) == 5


def test_resume_after_interruption(src, tmp_path, monkeypatch):
    out = tmp_path / "r"
    real = prepare_mod._run_shard
    calls = []

    def flaky(job, tick=None):
        calls.append(job.shard)
        if job.shard == 1 and len(calls) == 2:
            raise KeyboardInterrupt  # killed while writing shard 1
        return real(job, tick)

    monkeypatch.setattr(prepare_mod, "_run_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare("folder", src, out, 32, shard_size=2, progress=False)
    man = json.loads((out / "all" / "manifest.json").read_text())
    assert sorted(man["completed"]) == ["00000"]
    with pytest.raises(DataError, match="incomplete"):
        PreparedDataset(out, "train", frames=4, resolution=32)
    st0 = (out / "all" / "shard-00000.bin").stat()
    summary = prepare("folder", src, out, 32, shard_size=2, progress=False)
    assert calls == [0, 1, 1, 2]  # shard 0 was not redone
    assert summary["all"]["skipped_shards"] == 1 and summary["all"]["videos"] == 5
    assert (out / "all" / "shard-00000.bin").stat().st_mtime_ns == st0.st_mtime_ns
    # a shard dropped from the manifest is redone, the others are not rewritten
    man = json.loads((out / "all" / "manifest.json").read_text())
    del man["completed"]["00001"]
    (out / "all" / "manifest.json").write_text(json.dumps(man))
    before = {k: (out / "all" / f"shard-0000{k}.bin").stat().st_mtime_ns for k in (0, 2)}
    calls.clear()
    prepare("folder", src, out, 32, shard_size=2, progress=False)
    assert calls == [1]
    assert all((out / "all" / f"shard-0000{k}.bin").stat().st_mtime_ns == before[k] for k in (0, 2))
    assert not [p for p in os.listdir(out / "all") if ".tmp" in p]
    raw = _raw(src, frames=4, resolution=32)
    prep = PreparedDataset(out, "train", frames=4, resolution=32, frame_stride=2)
    assert all(torch.equal(raw[(i, 5)][0], prep[(i, 5)][0]) for i in range(5))
    with pytest.raises(DataError, match="prepared with resolution=32"):
        prepare("folder", src, out, 64, shard_size=2, progress=False)


def test_cli_and_workers(src, tmp_path):
    parser = argparse.ArgumentParser()
    prepare_cmd.add_arguments(parser)
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            "--dataset",
            "folder",
            "--src",
            str(src),
            "--out",
            str(out),
            "--resolution",
            "24",
            "--workers",
            "2",
            "--shard-size",
            "3",
            "--quiet",
        ]
    )
    assert prepare_cmd.run(args) == 0
    ds = PreparedDataset(out, "test", frames=4, resolution=24, frame_stride=1)  # no split level: "all"
    raw = build_dataset(
        DataConfig(dataset="folder", path=str(src), frame_stride=1), split="test", frames=4, resolution=24
    )
    assert len(ds) == 5 and all(torch.equal(ds[(i, 1)][0], raw[(i, 1)][0]) for i in range(5))
    bad = parser.parse_args(
        ["--dataset", "folder", "--src", str(tmp_path / "nope"), "--out", str(out), "--resolution", "24"]
    )
    with pytest.raises(DataError, match="does not exist"):
        prepare_cmd.run(bad)
    from dvdgan.cli import main

    assert (
        main(
            [
                "prepare",
                "--dataset",
                "folder",
                "--src",
                str(tmp_path / "nope"),
                "--out",
                str(out),
                "--resolution",
                "24",
            ]
        )
        == 2
    )


def test_loader_bench_on_synthetic_folder(tmp_path):
    root = make_synthetic_video_folder(tmp_path / "syn", classes=2, per_class=2, size=(96, 72), frames=20)
    assert len(list(root.rglob("*.mp4"))) == 4
    raw = _raw(root, frames=4, resolution=32)
    r = bench_loader(raw, batch_size=2, num_workers=0, n_batches=2, warmup_batches=1)
    assert r["clips"] == 4 and r["clips_per_s"] > 0 and r["batch_shape"] == [2, 4, 32, 32, 3]
    prepare("folder", root, tmp_path / "p", 32, progress=False)
    prep = build_dataset(
        DataConfig(dataset="prepared", path=str(tmp_path / "p"), frame_stride=2),
        split="train",
        frames=4,
        resolution=32,
    )
    r = bench_loader(prep, batch_size=2, num_workers=0, seconds=0.2)
    assert r["clips_per_s"] > 0
