"""Real statistics (resumable), evaluate_generator and the truncation curve, with fakes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from dvdgan.errors import DvdganError
from dvdgan.metrics.detectors import Detector, ReferenceDetector
from dvdgan.metrics.evaluate import evaluate_generator, route_metrics
from dvdgan.metrics.frechet import feature_statistics, frechet_distance
from dvdgan.metrics.stats import compute_real_stats, load_real_stats

T, R, C = 4, 8, 3


class FakeDetector(Detector):
    """Features: per-channel mean and std; logits: mean colour (class = dominant channel)."""

    kind = "custom"
    frechet_output = "features"
    classes_match_dataset = True
    num_classes = C
    identity = "fake/v1"
    name = "fake detector"

    def _forward(self, videos, want):
        x = videos.float() / 255.0
        mean, std = x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3))
        return {"features": torch.cat([mean, std], 1), "logits": 10 * mean}


def _videos(labels: torch.Tensor, noise: float, gen: torch.Generator) -> torch.Tensor:
    n = labels.shape[0]
    v = torch.full((n, T, R, R, 3), 60.0)
    v[torch.arange(n), ..., labels] = 180.0
    v += noise * 40 * torch.randn(v.shape, generator=gen)
    return v.clamp(0, 255).round().to(torch.uint8)


def fake_generate(n: int, truncation: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(C, (n,), generator=gen)
    return _videos(labels, truncation, gen), labels


class FakeDataset:
    def __init__(self, n: int = 40, fail_at: int | None = None, forbid_below: int = 0) -> None:
        gen = torch.Generator().manual_seed(123)
        self.labels = torch.arange(n) % C
        self.videos = _videos(self.labels, 0.7, gen)
        self.fail_at = fail_at
        self.forbid_below = forbid_below

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if self.fail_at is not None and i == self.fail_at:
            raise KeyboardInterrupt  # simulated interruption
        assert i >= self.forbid_below, f"video {i} was measured again after resuming"
        return self.videos[i], int(self.labels[i])


def test_real_stats_match_direct_computation_and_resume(tmp_path):
    det = FakeDetector(batch_size=3)
    ds = FakeDataset()
    out = tmp_path / "STATS.npz"
    with pytest.raises(KeyboardInterrupt):
        compute_real_stats(FakeDataset(fail_at=25), det, batch_size=4, out_path=str(out), progress=False,
                           checkpoint_every=2)
    assert (tmp_path / "STATS.npz.partial.npz").exists() and not out.exists()
    # saved every 2 batches of 4: resumes at video 24, never touching the first 24 again
    stats = compute_real_stats(FakeDataset(forbid_below=24), det, batch_size=4, out_path=str(out),
                               progress=False, checkpoint_every=2)
    assert out.exists() and not (tmp_path / "STATS.npz.partial.npz").exists()
    feats = det.features(ds.videos)
    mu, sigma = feature_statistics(feats)
    np.testing.assert_allclose(stats.frechet()[0], mu, rtol=1e-10)
    np.testing.assert_allclose(stats.frechet()[1], sigma, rtol=1e-8, atol=1e-12)
    loaded = load_real_stats(str(out))
    assert loaded.detector == det.identity and loaded.n == 40
    np.testing.assert_allclose(loaded.frechet("features")[1], sigma, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(loaded.labels, ds.labels.numpy())
    assert loaded.class_counts.tolist() == [14, 13, 13]
    assert loaded.accuracy == 1.0 and loaded.logits.shape == (40, C)
    assert 1.0 <= loaded.is_mean <= C


def test_evaluate_generator_truncation_curve(tmp_path):
    det = FakeDetector(batch_size=16)
    real = compute_real_stats(FakeDataset(), det, progress=False)
    result = evaluate_generator(
        fake_generate, metrics=["fvd", "fid", "is", "accuracy"], detector=det, real_stats=real, n=30,
        truncations=[0.0, 0.5, 1.0], chunk_size=8, is_splits=3, out_dir=str(tmp_path), progress=False,
    )
    rows = result["rows"]
    assert [r["truncation"] for r in rows] == [0.0, 0.5, 1.0]
    assert all(np.isfinite(r[m]) for r in rows for m in ("fvd", "fid", "is", "is_std", "accuracy"))
    assert rows[0]["accuracy"] == 1.0
    assert result["detectors"]["fvd"]["name"] == "fake detector"
    for name in ("metrics.json", "metrics.txt", "truncation_curve.csv", "truncation_curve.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    with open(tmp_path / "truncation_curve.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["truncation", "fvd", "fid", "is", "is_std", "accuracy"] and len(table) == 4
    assert json.loads((tmp_path / "metrics.json").read_text())["rows"][2]["truncation"] == 1.0
    assert (tmp_path / "truncation_curve.png").read_bytes()[:4] == b"\x89PNG"

    # the Frechet distance is exactly that of the generated features
    videos = torch.cat([fake_generate(8 if i < 3 else 6, 1.0, i)[0] for i in range(4)])
    mu_g, s_g = feature_statistics(det.features(videos))
    expect = frechet_distance(*real.frechet(), mu_g, s_g)
    assert rows[2]["fvd"] == pytest.approx(expect, rel=1e-9)


def test_evaluate_from_dataset_and_is_runs():
    det = FakeDetector()
    result = evaluate_generator(fake_generate, metrics=["fvd", "is"], detector=det,
                                real_dataset=FakeDataset(), n=12, chunk_size=5, is_runs=3, progress=False)
    assert len(result["rows"]) == 1 and "3 runs" in result["is_protocol"]


def test_errors():
    det = FakeDetector()
    with pytest.raises(DvdganError, match="C3D"):
        route_metrics(["isc3d"], [det])
    with pytest.raises(DvdganError, match="unknown metric"):
        route_metrics(["bleu"], [det])
    with pytest.raises(DvdganError, match="--stats"):
        evaluate_generator(fake_generate, metrics=["fvd"], detector=det, n=4, progress=False)
    other = compute_real_stats(FakeDataset(8), det, progress=False)
    other.detector = "another/detector"
    with pytest.raises(DvdganError, match="another/detector"):
        evaluate_generator(fake_generate, metrics=["fvd"], detector=det, real_stats=other, n=4,
                           progress=False)


class TinyReference(nn.Module):
    """Stands in for dvdgan.metrics.reference: [B, T, 3, H, W] in [-1, 1] -> logits / features."""

    num_classes = C

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, C)

    def features(self, x):
        assert x.dtype == torch.float32 and x.shape[2] == 3 and x.min() >= -1 and x.max() <= 1
        return x.mean(dim=(1, 3, 4))

    def forward(self, x):
        return self.fc(self.features(x))


def test_reference_detector_layout_and_shape_check():
    det = ReferenceDetector(TinyReference(), resolution=R, frames=T)
    v, _ = fake_generate(5, 1.0, 0)
    out = det.outputs(v)
    assert out["features"].shape == (5, 3) and out["logits"].shape == (5, C)
    assert out["features"].dtype == np.float64
    with pytest.raises(DvdganError, match="takes 4 frames of 8x8"):
        det.logits(torch.zeros(1, T + 1, R, R, 3, dtype=torch.uint8))


def test_cli_parsers():
    import argparse

    from dvdgan.commands import eval as eval_cmd
    from dvdgan.commands import stats as stats_cmd

    p = argparse.ArgumentParser()
    eval_cmd.add_arguments(p)
    a = p.parse_args(["--checkpoint", "x", "--detector", "reference", "--truncation", "0.5,1"])
    assert a.n == 2048 and a.detector == ["reference"] and eval_cmd._floats(a.truncation) == [0.5, 1.0]
    p = argparse.ArgumentParser()
    stats_cmd.add_arguments(p)
    a = p.parse_args(["--detector", "reference", "--out", "s.npz", "--n", "10"])
    assert a.n == 10 and a.split == "train"
