"""Frechet distance, feature statistics and Inception Score against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from dvdgan.metrics.frechet import FrechetAccumulator, feature_statistics, frechet_distance, symmetric_sqrt
from dvdgan.metrics.inception_score import inception_score, inception_score_runs


def _reference_fd(a: np.ndarray, b: np.ndarray) -> float:
    """Independent float64 reference: eigen-decomposition square roots (not SVD, not sqrtm)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r1 @ s2 @ r1
    w2 = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = np.sqrt(np.clip(w2, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(600, 24)) @ rng.normal(size=(24, 24))
    b = rng.normal(size=(500, 24)) @ rng.normal(size=(24, 24)) * 0.8 + 0.5
    return a, b


def test_statistics_match_numpy(feats):
    a, _ = feats
    mu, sigma = feature_statistics(a)
    np.testing.assert_allclose(mu, a.mean(0))
    np.testing.assert_allclose(sigma, np.cov(a, rowvar=False))  # default N-1
    _, sigma0 = feature_statistics(torch.from_numpy(a), ddof=0)
    np.testing.assert_allclose(sigma0, np.cov(a, rowvar=False, bias=True))


@pytest.mark.parametrize("method", ["svd", "sqrtm"])
def test_matches_independent_reference(feats, method):
    a, b = feats
    ref = _reference_fd(a, b)
    got = frechet_distance(*feature_statistics(a), *feature_statistics(b), method=method)
    assert isinstance(got, float)
    assert got == pytest.approx(ref, rel=1e-6)


def test_identical_and_symmetric(feats):
    a, b = feats
    sa, sb = feature_statistics(a), feature_statistics(b)
    assert abs(frechet_distance(*sa, *sa)) < 1e-6
    assert abs(frechet_distance(*sa, *sa, method="sqrtm")) < 1e-6
    assert frechet_distance(*sa, *sb) == pytest.approx(frechet_distance(*sb, *sa), rel=1e-9)


def test_svd_and_sqrtm_agree_and_scipy_formula(feats):
    a, b = feats
    (m1, s1), (m2, s2) = feature_statistics(a), feature_statistics(b)
    d_svd = frechet_distance(m1, s1, m2, s2, method="svd")
    d_sqrtm = frechet_distance(m1, s1, m2, s2, method="sqrtm")
    assert d_svd == pytest.approx(d_sqrtm, rel=1e-8)
    # the pytorch-fid formula written out with scipy
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert d_sqrtm == pytest.approx(ref, rel=1e-10)


def test_singular_covariances():
    # rank-deficient covariances (fewer samples than dimensions) stay finite in both methods
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 20)), rng.normal(size=(8, 20)) + 1
    for method in ("svd", "sqrtm"):
        d = frechet_distance(*feature_statistics(a), *feature_statistics(b), method=method)
        assert np.isfinite(d) and d > 0


def test_symmetric_sqrt_keeps_tiny_singular_values():
    m = np.diag([4.0, 1e-12, 0.0])
    r = symmetric_sqrt(m)
    np.testing.assert_allclose(np.diag(r), [2.0, 1e-12, 0.0], atol=1e-15)  # < 1e-10 left as is


def test_accumulator_matches_batch_and_resumes(feats):
    a, _ = feats
    acc = FrechetAccumulator()
    acc.update(a[:100])
    acc = FrechetAccumulator.from_state(acc.state())
    acc.update(a[100:])
    mu, sigma = acc.statistics()
    mu_ref, sigma_ref = feature_statistics(a)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-12)
    np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-9, atol=1e-9)


def test_bad_method_and_shapes(feats):
    a, _ = feats
    mu, s = feature_statistics(a)
    with pytest.raises(ValueError):
        frechet_distance(mu, s, mu, s, method="nope")
    with pytest.raises(ValueError):
        frechet_distance(mu, s, mu[:3], s[:3, :3])


# ---------------------------------------------------------------------------------------------
# Inception Score
# ---------------------------------------------------------------------------------------------


def test_is_uniform_one_hot_equals_num_classes():
    c = 7
    probs = np.eye(c)[np.arange(c * 10) % c]  # each split of 7 consecutive samples holds all classes
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(c, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)
    mean1, _ = inception_score(probs, splits=1)
    assert mean1 == pytest.approx(c, rel=1e-12)


def test_is_identical_predictions_is_one():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5))
    probs = np.tile(p, (40, 1))
    mean, std = inception_score(probs, splits=4)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_is_from_logits_equals_from_probs():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(100, 11)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    a = inception_score(torch.from_numpy(logits), splits=10, from_logits=True)
    b = inception_score(probs, splits=10)
    assert a == pytest.approx(b, rel=1e-10)
    # independent formula (improved-gan / StyleGAN-V), one split
    kl = (probs * (np.log(probs) - np.log(probs.mean(0, keepdims=True)))).sum(1).mean()
    assert inception_score(probs, splits=1)[0] == pytest.approx(np.exp(kl), rel=1e-12)
    with pytest.raises(ValueError):
        inception_score(logits, splits=10)  # logits passed as probabilities


def test_is_runs_protocol():
    c = 4
    runs = [np.eye(c)[np.arange(20) % c], np.tile(np.full(c, 1 / c), (20, 1))]
    mean, std = inception_score_runs(runs)
    assert mean == pytest.approx((c + 1) / 2) and std == pytest.approx((c - 1) / 2)
