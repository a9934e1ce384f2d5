"""Loader throughput figures and the automatic choice of loader workers."""

from __future__ import annotations

import time

import pytest
import torch

from dvdgan.data import loader_bench
from dvdgan.data.loader_bench import bench_workers, choose_num_workers, decode_rate, make_synthetic_video_folder


class SlowDataset(torch.utils.data.Dataset):
    """Each item takes at least ``delay`` seconds; remembers the keys it was given."""

    def __init__(self, n: int = 50, delay: float = 0.02) -> None:
        self.n, self.delay, self.keys = n, delay, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        self.keys.append(key)
        time.sleep(self.delay)
        return torch.zeros(2, 4, 4, 3, dtype=torch.uint8), 0


def test_decode_rate_times_training_keys():
    ds = SlowDataset(delay=0.02)
    rate = decode_rate(ds, n_clips=5)
    assert 1.0 < rate <= 1 / 0.02 + 1e-6  # sleep is a lower bound on each item's time
    assert len(ds.keys) == 6  # one untimed warm-up + 5 timed
    assert all(isinstance(k, tuple) and len(k) == 2 for k in ds.keys)  # (index, sample_seed)


def test_choose_num_workers(monkeypatch):
    monkeypatch.setattr(loader_bench.os, "cpu_count", lambda: 16)
    ds = SlowDataset(delay=0.02)  # <= 50 clips/s in-process
    # a step that consumes 0.5 clips/s: decoding in-process costs <= 1 % of the time: no workers
    assert choose_num_workers(ds, 0.5, 8) == 0
    # 200 clips/s: >= 4 workers needed, capped by max_workers
    assert choose_num_workers(ds, 200.0, 3) == 3
    # with a known rate the arithmetic is exact: workers = ceil(demand / rate)
    assert choose_num_workers(ds, 4.0, 8, rate=50.0) == 0  # 8 % of the step: in-process
    assert choose_num_workers(ds, 6.0, 8, rate=50.0) == 1  # 12 %: one worker
    assert choose_num_workers(ds, 120.0, 8, rate=50.0) == 3
    assert choose_num_workers(ds, 120.0, 8, rate=50.0, tolerance=5.0) == 0
    assert choose_num_workers(ds, 0.0, 8) == 0 and choose_num_workers(ds, 100.0, 0) == 0
    # capped by the CPUs beside the training process
    monkeypatch.setattr(loader_bench.os, "cpu_count", lambda: 2)
    assert choose_num_workers(ds, 120.0, 8, rate=50.0) == 1
    monkeypatch.setattr(loader_bench.os, "cpu_count", lambda: 1)
    assert choose_num_workers(ds, 120.0, 8, rate=50.0) == 0


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_synthetic_video_folder(
        tmp_path_factory.mktemp("syn") / "v", classes=2, per_class=2, size=(48, 40), frames=12
    )


def test_bench_workers_and_cli(folder, capsys):
    from dvdgan.config import DataConfig
    from dvdgan.data import build_dataset

    ds = build_dataset(DataConfig(dataset="folder", path=str(folder), frame_stride=1), split="train",
                       frames=4, resolution=16)
    rs = bench_workers(ds, 2, workers=(0, 1), seconds=None, n_batches=2, warmup_batches=1)
    assert [r["num_workers"] for r in rs] == [0, 1]
    assert all(r["clips"] == 4 and r["clips_per_s"] > 0 and r["batch_shape"] == [2, 4, 16, 16, 3] for r in rs)
    assert loader_bench.main([str(folder), "--frames", "4", "--resolution", "16", "--batch-size", "2",
                              "--workers", "0", "--seconds", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "in-process decode:" in out and "num_workers 0:" in out and "clips/s" in out
