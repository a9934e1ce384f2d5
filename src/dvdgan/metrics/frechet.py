"""Frechet distance between two Gaussians fitted to detector features (FVD / FID).

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr( (S1 S2)^(1/2) )

Two numerically different but mathematically equal ways of computing the last trace are
offered, because published numbers depend on them (see docs and NOTES.md section 4):

* ``method="svd"`` -- the TF reference of FVD (google-research/frechet_video_distance, which
  calls tfgan ``frechet_classifier_distance_from_activations``):
  tr( sqrt( sqrt(S1) S2 sqrt(S1) ) ), every square root of a symmetric PSD matrix taken by
  SVD ``U diag(s) V^T`` with ``s -> sqrt(s)`` for ``s >= 1e-10`` and singular values below
  1e-10 *left as they are* (not square-rooted, not zeroed: tfgan's
  ``_symmetric_matrix_square_root``, ``where(s < eps, s, sqrt(s))``).
* ``method="sqrtm"`` -- pytorch-fid / clean-fid: ``scipy.linalg.sqrtm(S1 @ S2)``; if the
  result is not finite, retry with ``S + 1e-6 I`` added to both covariances; imaginary parts
  are dropped after checking that they are ~0 (``|imag| <= 1e-3`` on the diagonal).

Everything is computed in float64.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

__all__ = ["frechet_distance", "feature_statistics", "symmetric_sqrt", "FrechetAccumulator"]

#: tfgan: singular values below this are left as they are by the SVD square root.
SVD_EPS = 1e-10
#: pytorch-fid / clean-fid: diagonal offset added when sqrtm(S1 S2) is not finite.
SQRTM_OFFSET = 1e-6


def _as_f64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def feature_statistics(features, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``features`` [N, F] in float64.

    ``ddof=1`` (default) normalises the covariance by N-1, as tfgan (the FVD reference),
    pytorch-fid and clean-fid do (``np.cov(rowvar=False)``); ``ddof=0`` gives 1/N.
    """
    x = _as_f64(features)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, F], got shape {x.shape}")
    n = x.shape[0]
    if n - ddof <= 0:
        raise ValueError(f"need more than {ddof} samples for a covariance with ddof={ddof}, got {n}")
    mu = x.mean(axis=0)
    xc = x - mu
    sigma = xc.T @ xc / (n - ddof)
    return mu, sigma


def symmetric_sqrt(mat: np.ndarray, eps: float = SVD_EPS) -> np.ndarray:
    """Square root of a symmetric PSD matrix by SVD, tfgan style.

    Singular values ``s < eps`` are kept unchanged (tfgan: ``where(s < eps, s, sqrt(s))``:
    "sqrt is unstable around 0"); the others are square-rooted. Returns ``U diag(s') V^T``.
    """
    u, s, vt = np.linalg.svd(_as_f64(mat))
    si = np.where(s < eps, s, np.sqrt(s))
    return (u * si) @ vt


def _trace_sqrt_product_svd(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    # tfgan trace_sqrt_product: tr(sqrt(sqrt(A) B sqrt(A))) == tr(sqrt(A B)).
    sqrt1 = symmetric_sqrt(sigma1)
    inner = sqrt1 @ sigma2 @ sqrt1
    return float(np.trace(symmetric_sqrt(inner)))


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    # pytorch-fid calculate_frechet_distance / clean-fid frechet_distance.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on singular products; we check finiteness
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if isinstance(covmean, tuple):  # older scipy with disp=False semantics
        covmean = covmean[0]
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * SQRTM_OFFSET
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if isinstance(covmean, tuple):
            covmean = covmean[0]
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = float(np.max(np.abs(covmean.imag)))
            raise ValueError(f"sqrtm(S1 S2) has a significant imaginary component {m:.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "svd") -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``method="svd"`` follows the TF FVD reference (tfgan), ``method="sqrtm"`` follows
    pytorch-fid / clean-fid; see the module docstring for the exact numerical conventions.
    Inputs may be numpy arrays or torch tensors; the result is a Python float.
    """
    mu1, mu2 = _as_f64(mu1).reshape(-1), _as_f64(mu2).reshape(-1)
    s1, s2 = np.atleast_2d(_as_f64(sigma1)), np.atleast_2d(_as_f64(sigma2))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different shapes {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"covariances must be [{d}, {d}], got {s1.shape} and {s2.shape}")
    if method == "svd":
        tr_covmean = _trace_sqrt_product_svd(s1, s2)
    elif method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(s1, s2)
    else:
        raise ValueError(f"method must be 'svd' or 'sqrtm', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


class FrechetAccumulator:
    """Streaming float64 sums for mean and covariance (sum x, sum x x^T, n).

    Lets statistics be computed batch by batch and resumed: ``state()`` / ``from_state()``
    give plain numpy arrays that can be saved with ``np.savez``.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.n = 0
        self.sum: np.ndarray | None = None
        self.sum_outer: np.ndarray | None = None
        if dim is not None:
            self._init(dim)

    def _init(self, dim: int) -> None:
        self.sum = np.zeros(dim, dtype=np.float64)
        self.sum_outer = np.zeros((dim, dim), dtype=np.float64)

    def update(self, features) -> None:
        x = _as_f64(features)
        if x.ndim != 2:
            raise ValueError(f"features must be [N, F], got shape {x.shape}")
        if self.sum is None:
            self._init(x.shape[1])
        assert self.sum is not None and self.sum_outer is not None
        if x.shape[1] != self.sum.shape[0]:
            raise ValueError(f"feature dimension changed from {self.sum.shape[0]} to {x.shape[1]}")
        self.n += x.shape[0]
        self.sum += x.sum(axis=0)
        self.sum_outer += x.T @ x

    def statistics(self, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) with covariance normalised by n - ddof (default N-1)."""
        if self.sum is None or self.sum_outer is None or self.n - ddof <= 0:
            raise ValueError(f"need more than {ddof} samples, got {self.n}")
        mu = self.sum / self.n
        sigma = (self.sum_outer - self.n * np.outer(mu, mu)) / (self.n - ddof)
        return mu, (sigma + sigma.T) / 2

    def state(self) -> dict[str, np.ndarray]:
        if self.sum is None or self.sum_outer is None:
            return {"n": np.asarray(0)}
        return {"n": np.asarray(self.n), "sum": self.sum, "sum_outer": self.sum_outer}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> FrechetAccumulator:
        acc = cls()
        acc.n = int(state["n"])
        if "sum" in state:
            acc.sum = np.asarray(state["sum"], dtype=np.float64).copy()
            acc.sum_outer = np.asarray(state["sum_outer"], dtype=np.float64).copy()
        return acc
