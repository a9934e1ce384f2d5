"""The reference classifier on MovingShapes: training, caching and evaluate_videos.

One small classifier (16x16, 6 frames: a few seconds of training) is trained per test session in
a temporary cache and shared by all tests here.
"""

from __future__ import annotations

import time

import pytest
import torch

from dvdgan.data.shapes import MovingShapes
from dvdgan.data.transforms import to_model_input
from dvdgan.errors import WeightsError
from dvdgan.metrics import reference
from dvdgan.metrics.reference import (
    ReferenceClassifier,
    evaluate_videos,
    load_reference_classifier,
    reference_cache_path,
)

RES, FRAMES, N = 16, 6, 300


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared, busy 2-core machine two OpenMP threads are far slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("dvdgan-cache")


@pytest.fixture(scope="module")
def classifier(cache_dir) -> ReferenceClassifier:
    return load_reference_classifier(RES, FRAMES, cache_dir=str(cache_dir), progress=False)


@pytest.fixture(scope="module")
def clips():
    """N real test clips disjoint from the default real set (test indices [0, 2N))."""
    return MovingShapes("test", FRAMES, RES, 10_000).batch(range(5000, 5000 + N))


def test_trains_to_target_and_caches(classifier, cache_dir):
    assert not classifier.loaded_from_cache and classifier.train_steps > 0
    assert classifier.test_accuracy >= 0.98
    assert not classifier.training
    path = reference_cache_path(RES, FRAMES, 6, cache_dir)
    assert path.exists() and [p.name for p in path.parent.iterdir()] == [path.name]  # no tmp left over
    t = time.perf_counter()
    again = load_reference_classifier(RES, FRAMES, cache_dir=str(cache_dir), progress=False)
    assert time.perf_counter() - t < 5.0
    assert again.loaded_from_cache and again.test_accuracy == classifier.test_accuracy
    for (k, a), b in zip(classifier.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_cache_location_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DVDGAN_CACHE", str(tmp_path))
    assert reference_cache_path(32, 8).parent.parent == tmp_path
    assert reference_cache_path(32, 8, cache_dir="/elsewhere").parts[:2] == ("/", "elsewhere")
    assert reference.REFERENCE_VERSION in reference_cache_path(32, 8).name


def test_bad_cache_file_is_rejected(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError):
        reference._load(path, RES, FRAMES, 6)


def test_forward_and_features(classifier, clips):
    x = to_model_input(clips[0][:5])
    with torch.no_grad():
        logits, feats = classifier(x), classifier.features(x)
    assert logits.shape == (5, 6) and feats.shape == (5, ReferenceClassifier.feature_dim)
    with pytest.raises(ValueError):
        classifier(torch.zeros(2, FRAMES + 1, 3, RES, RES))


def test_real_videos_score_like_real(classifier, clips):
    videos, labels = clips
    r = evaluate_videos(videos, labels, classifier)
    assert r["accuracy"] >= 0.98 and r["accuracy_real"] >= 0.98
    assert r["frechet_floor"] > 0
    assert r["frechet"] < 1.5 * r["frechet_floor"], (r["frechet"], r["frechet_floor"])
    assert r["motion"]["centroid_speed"] == pytest.approx(r["motion_real"]["centroid_speed"], rel=0.1)
    # The same clips given as the real set: distance 0.
    same = evaluate_videos(videos, labels, classifier, real_videos=videos)
    assert abs(same["frechet"]) < 1e-6 and same["frechet_floor"] == pytest.approx(r["frechet_floor"])


def test_shape_and_motion_halves_of_the_accuracy(classifier, clips):
    """Played backwards, every clip keeps its shape and shows the other direction."""
    videos, labels = clips
    r = evaluate_videos(videos, labels, classifier)
    assert r["accuracy_shape"] >= 0.98 and r["accuracy_motion"] >= 0.98
    back = evaluate_videos(videos.flip(1), labels, classifier)
    assert back["accuracy_shape"] >= 0.95 and back["accuracy_motion"] <= 0.05 and back["accuracy"] <= 0.05


def test_wrong_labels_give_low_accuracy(classifier, clips):
    videos, labels = clips
    shuffled = labels[torch.randperm(N, generator=torch.Generator().manual_seed(0))]
    assert evaluate_videos(videos, shuffled, classifier)["accuracy"] < 0.35
    with torch.no_grad():
        pred = classifier(to_model_input(videos)).argmax(1)
    assert (pred == (labels + 1) % 6).float().mean() < 0.05


def test_classifier_uses_motion(classifier, clips):
    """Frames shuffled in time, or frozen, keep the shape but destroy the direction of motion.

    (Frozen clips, with no motion at all, are far from anything seen in training, so only the
    shuffled ones are checked for the shape still being recognised.)
    """
    videos, labels = clips
    g = torch.Generator().manual_seed(0)
    perms = torch.stack([torch.randperm(FRAMES, generator=g) for _ in range(N)])
    shuffled = videos[torch.arange(N)[:, None], perms]
    frozen = videos[:, :1].expand_as(videos).contiguous()
    for name, v in [("shuffled", shuffled), ("frozen", frozen)]:
        r = evaluate_videos(v, labels, classifier)
        assert r["accuracy"] < 0.75, (name, r["accuracy"])
        assert r["frechet"] > 3 * r["frechet_floor"], (name, r["frechet"], r["frechet_floor"])
        # The shape is still recognised: the predicted class has the right shape.
        with torch.no_grad():
            pred = classifier(to_model_input(v)).argmax(1)
        if name == "shuffled":
            assert (pred // 2 == labels // 2).float().mean() > 0.75  # chance: 1/3
        else:
            assert r["motion"]["centroid_speed"] == 0.0


def test_evaluate_videos_checks_shapes(classifier, clips):
    videos, labels = clips
    with pytest.raises(ValueError):
        evaluate_videos(videos[:, :-1], labels, classifier)
    with pytest.raises(ValueError):
        evaluate_videos(videos, labels[:-1], classifier)
    with pytest.raises(ValueError):
        evaluate_videos(to_model_input(videos), labels, classifier)


def test_training_augmentation_degrades_frames_but_keeps_motion():
    """The classifier's training degradations (blur, contrast, per-frame noise) act within each
    frame: the foreground centroid of every frame stays where it was, values stay in [-1, 1]."""
    videos, _ = MovingShapes("train", FRAMES, RES, 64).batch(range(64))
    x = to_model_input(videos)
    y = reference.degrade_clips(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    changed = (y - x).abs().flatten(1).amax(1) > 0
    assert 0.25 < changed.float().mean() < 0.75  # about half of the batch is degraded

    def centroid(v):  # [N, T, 3, H, W] -> [N, T, 2], weighted by the distance from the median
        d = (v - v.flatten(1).median(1).values[:, None, None, None, None]).abs().amax(2)
        d = torch.where(d > 0.3, d, torch.zeros_like(d))
        grid = torch.arange(v.shape[-1], dtype=v.dtype)
        m = d.sum((2, 3))
        return torch.stack([(d.sum(2) * grid).sum(2) / m, (d.sum(3) * grid).sum(2) / m], -1)

    cy, cx = centroid(y[changed]), centroid(x[changed])
    err = (cy - cx).abs().flatten()  # px; the shape moves ~1 px per frame
    assert err.mean() < 0.2 and err.quantile(0.95) < 0.6


def test_classifier_is_robust_to_blur_and_noise(classifier, clips):
    """Blurred, noisy clips of the right shape and motion are still recognised."""
    videos, labels = clips
    x = to_model_input(videos)
    k = torch.tensor([0.25, 0.5, 0.25])
    blurred = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x.flatten(0, 2)[:, None], (1, 1, 1, 1), mode="replicate"), (k[:, None] * k)[None, None]
    ).view_as(x)
    noisy = (blurred + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    with torch.no_grad():
        pred = classifier(noisy).argmax(1)
    assert (pred == labels).float().mean() > 0.9
