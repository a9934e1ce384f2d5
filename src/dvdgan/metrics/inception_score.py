"""Inception Score: IS = exp( E_x KL( p(y|x) || p(y) ) ), in float64.

Two protocols are published for videos (NOTES.md section 4); both are supported, say which:

* splits (improved-gan, StyleGAN-V ``isv2048_ucf``, TGANv2's ``inception_score(splits=...)``):
  the N samples are cut into ``splits`` consecutive parts ``[i*N//splits, (i+1)*N//splits)``,
  p(y) is the mean prediction *within each part*, and the result is mean +- std (population
  std, ddof=0) of the per-part scores. StyleGAN-V shuffles the probabilities with
  ``np.random.RandomState(42)`` before splitting (``shuffle_seed=42``); improved-gan / TGANv2 do
  not (``shuffle_seed=None``, our default). :func:`inception_score`.
* runs (TGANv2 ``scripts/compute_inception_score.py``, the number DVD-GAN compares with on
  UCF-101): 10 independent runs of 2048 generated samples, each scored with a single split,
  reported as mean +- std (ddof=0) over the runs; the caller generates the runs.
  :func:`inception_score_runs`.

Zero probabilities contribute 0 to the KL (the limit p log p -> 0), rather than TGANv2's
``+ 1e-20``; the difference is below float64 rounding for non-degenerate predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["inception_score", "inception_score_runs", "log_probabilities"]


def _as_f64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def log_probabilities(probs_or_logits, from_logits: bool) -> np.ndarray:
    """log p(y|x) [N, C] in float64 from logits (log-softmax) or from probabilities (checked)."""
    x = _as_f64(probs_or_logits)
    if x.ndim != 2:
        raise ValueError(f"expected [N, classes], got shape {x.shape}")
    if from_logits:
        x = x - x.max(axis=1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    if (x < 0).any() or not np.allclose(x.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("inputs are not probability rows (negative, or rows do not sum to 1); "
                         "pass from_logits=True for logits")
    x = x / x.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        return np.log(x)


def _score(logp: np.ndarray) -> float:
    p = np.exp(logp)
    log_py = np.log(p.mean(axis=0))
    # sum_y p (log p - log p(y)); terms with p == 0 contribute 0
    with np.errstate(invalid="ignore"):  # p == 0 gives 0 * -inf; those terms are masked out
        terms = np.multiply(p, logp - log_py[None, :], out=np.zeros_like(p), where=p > 0)
    kl = terms.sum(axis=1)
    return float(np.exp(kl.mean()))


def inception_score(
    probs_or_logits,
    splits: int = 10,
    from_logits: bool = False,
    shuffle_seed: int | None = None,
) -> tuple[float, float]:
    """(mean, std) of the Inception Score over ``splits`` consecutive parts of the samples.

    ``probs_or_logits`` is [N, C] (numpy or torch): softmax probabilities (``from_logits=False``,
    the references' input) or logits (``from_logits=True``, log-softmax taken in float64).
    Splits protocol of improved-gan / StyleGAN-V (10 splits of 2048 samples for ``isv2048_ucf``,
    with ``shuffle_seed=42``). ``splits=1`` gives the single score of the whole set.
    """
    logp = log_probabilities(probs_or_logits, from_logits)
    n = logp.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be between 1 and the number of samples ({n}), got {splits}")
    if shuffle_seed is not None:
        logp = logp.copy()
        np.random.RandomState(shuffle_seed).shuffle(logp)
    scores = [_score(logp[i * n // splits : (i + 1) * n // splits]) for i in range(splits)]
    return float(np.mean(scores)), float(np.std(scores))


def inception_score_runs(runs: Sequence, from_logits: bool = False) -> tuple[float, float]:
    """TGANv2 protocol: one single-split score per run (e.g. 10 runs of 2048 samples each,
    generated independently by the caller); returns (mean, std) over the runs (std ddof=0)."""
    if len(runs) == 0:
        raise ValueError("need at least one run")
    scores = [inception_score(r, splits=1, from_logits=from_logits)[0] for r in runs]
    return float(np.mean(scores)), float(np.std(scores))
