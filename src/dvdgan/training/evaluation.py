"""Judging a generator during training on the built-in dataset, by more than one number:
class accuracy of its samples under the reference classifier, the Frechet distance of its
samples to real clips with the real-vs-real floor beside it, and a motion statistic.

Prediction (FP) models are judged on the test split instead (:mod:`dvdgan.metrics.prediction`):
per-frame MSE / PSNR against the real continuation beside the copy-last-frame baseline, and on
the built-in dataset the reference classifier's Frechet distance and accuracy of
[context + prediction] clips and the foreground-centroid position error."""

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
    """Reference-classifier metrics of ``n`` class-balanced samples (synthesis on MovingShapes);
    for prediction models, :func:`evaluate_prediction_reference`."""
    m = cfg.model
    if m.context_frames:
        return evaluate_prediction_reference(generator, cfg, n=n, device=device, seed=seed)
    if cfg.data.dataset != "shapes":
        return {}
    from dvdgan.metrics.reference import evaluate_videos, load_reference_classifier

    clf = load_reference_classifier(m.resolution, m.frames, device=device, progress=False)
    was_training = generator.training
    videos, labels = generate(generator, cfg, classes=list(range(m.num_classes)), n=n, seed=seed, batch_size=64)
    generator.train(was_training)
    return flatten_metrics(evaluate_videos(videos, labels, clf))


def evaluate_prediction_reference(generator: nn.Module, cfg: Config, n: int = 256, device="cpu", seed: int = 1234,
                                  ) -> dict[str, float]:
    """FP metrics of ``n`` test clips (:func:`dvdgan.metrics.prediction.evaluate_prediction`), flat,
    prefixed ``fp_``. The built-in dataset uses its reference classifier (frames = C + T) as the
    detector; other datasets get the per-frame errors only, and nothing ({}) when their test split
    cannot be read."""
    import warnings

    from dvdgan.data import build_dataset
    from dvdgan.errors import DvdganError
    from dvdgan.metrics.prediction import evaluate_prediction, flat_prediction_metrics

    m = cfg.model
    try:
        dataset = build_dataset(cfg.data, split="test", frames=m.total_frames, resolution=m.resolution,
                                seed=cfg.train.seed)
        n = min(n, len(dataset))
        detector = None
        if cfg.data.dataset == "shapes":
            from dvdgan.metrics.detectors import load_detector

            detector = load_detector("reference", resolution=m.resolution, frames=m.total_frames, device=device,
                                     progress=False)
        result = evaluate_prediction(generator, cfg, dataset, n=n, detector=detector, seed=seed, batch_size=64)
    except DvdganError as e:
        warnings.warn(f"prediction evaluation skipped: {e}", stacklevel=2)
        return {}
    return flat_prediction_metrics(result)
