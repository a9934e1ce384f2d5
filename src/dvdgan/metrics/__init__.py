"""Evaluation metrics: Frechet distances (FVD / FID), Inception Score, I3D and C3D detectors.

    from dvdgan.metrics import load_detector, compute_real_stats, evaluate_generator
"""

from dvdgan.metrics.c3d import C3D, load_c3d
from dvdgan.metrics.detectors import (
    C3DDetector,
    Detector,
    I3DDetector,
    ReferenceDetector,
    fvd_preprocess,
    load_detector,
    resize_bilinear_tf,
)
from dvdgan.metrics.evaluate import METRICS, evaluate_generator, format_table, write_results
from dvdgan.metrics.frechet import FrechetAccumulator, feature_statistics, frechet_distance, symmetric_sqrt
from dvdgan.metrics.i3d import InceptionI3d, load_i3d, same_padding
from dvdgan.metrics.inception_score import inception_score, inception_score_runs
from dvdgan.metrics.stats import RealStats, compute_real_stats, load_real_stats

__all__ = [
    "frechet_distance",
    "feature_statistics",
    "symmetric_sqrt",
    "FrechetAccumulator",
    "inception_score",
    "inception_score_runs",
    "InceptionI3d",
    "load_i3d",
    "same_padding",
    "C3D",
    "load_c3d",
    "Detector",
    "I3DDetector",
    "C3DDetector",
    "ReferenceDetector",
    "load_detector",
    "fvd_preprocess",
    "resize_bilinear_tf",
    "RealStats",
    "compute_real_stats",
    "load_real_stats",
    "METRICS",
    "evaluate_generator",
    "format_table",
    "write_results",
]
