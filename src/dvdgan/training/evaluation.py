"""Judging a generator during training on the built-in dataset, by more than one number:
class accuracy of its samples under the reference classifier, the Frechet distance of its
samples to real clips with the real-vs-real floor beside it, and a motion statistic."""

from __future__ import annotations

from torch import nn

from dvdgan.config import Config
from dvdgan.sampling import generate


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(flatten_metrics(v, f"{prefix}{k}_"))
        else:
            out[f"{prefix}{k}"] = float(v)
    return out


def evaluate_generator_reference(generator: nn.Module, cfg: Config, n: int = 256, device="cpu", seed: int = 1234,
                                 dataset=None) -> dict[str, float]:
    """Reference-classifier metrics of ``n`` class-balanced samples (synthesis on MovingShapes)."""
    m = cfg.model
    if cfg.data.dataset != "shapes" or m.context_frames:
        return {}
    from dvdgan.metrics.reference import evaluate_videos, load_reference_classifier

    clf = load_reference_classifier(m.resolution, m.frames, device=device, progress=False)
    was_training = generator.training
    videos, labels = generate(generator, cfg, classes=list(range(m.num_classes)), n=n, seed=seed, batch_size=64)
    generator.train(was_training)
    return flatten_metrics(evaluate_videos(videos, labels, clf))
