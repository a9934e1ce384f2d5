"""Evaluation metrics: Frechet distances (FVD / FID), Inception Score, I3D and C3D detectors."""

from dvdgan.metrics.frechet import FrechetAccumulator, feature_statistics, frechet_distance, symmetric_sqrt

__all__ = ["frechet_distance", "feature_statistics", "symmetric_sqrt", "FrechetAccumulator"]
