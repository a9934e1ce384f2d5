"""Judging a generator during training, on every dataset, by more than one number.

:func:`evaluate_generator` is what the trainer calls every ``train.eval_every`` steps. It returns
one flat dict of floats (JSON friendly) for metrics.jsonl, TensorBoard and the console:

* synthesis on a labelled dataset: ``n`` class-balanced samples judged by a reference classifier:
  the built-in dataset's (:mod:`dvdgan.metrics.reference`), any other dataset's trained on its own
  clips (:mod:`dvdgan.metrics.dataset_reference`): ``accuracy``, ``ref_fd`` (reference Frechet
  distance in the classifier's feature space, not FVD) beside ``ref_fd_floor`` (two disjoint real
  sets), ``motion`` / ``motion_real`` (centroid px/frame), ``frame_diff`` / ``frame_diff_real``,
  ``classifier_accuracy`` (the classifier's accuracy on held-out real clips); on datasets other
  than the built-in one also ``consistency`` / ``consistency_real`` (agreement of the per-frame
  class predictions within one video) and ``frame_accuracy``;
* prediction (FP) models: :func:`evaluate_prediction_reference` (per-frame MSE / PSNR against the
  real continuation beside the copy-last-frame baseline, and on the built-in dataset the reference
  classifier's Frechet distance and accuracy of [context + prediction] clips), prefixed ``fp_``;
* nothing (``{}``, one warning) where no judge exists: an unlabelled dataset (fewer than 2 classes).

This module does not import the trainer.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from dvdgan.config import Config
from dvdgan.errors import DvdganError
from dvdgan.sampling import sample

__all__ = ["evaluate_generator", "evaluate_prediction_reference",
           "prepare_reference", "flatten_metrics"]


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(flatten_metrics(v, f"{prefix}{k}_"))
        else:
            out[f"{prefix}{k}"] = float(v)
    return out


def _train_dataset(cfg: Config, dataset: Any):
    if dataset is not None:
        return dataset
    from dvdgan.data import build_dataset

    m = cfg.model
    return build_dataset(cfg.data, split="train", frames=m.total_frames, resolution=m.resolution,
                         seed=cfg.train.seed)


def prepare_reference(cfg: Config, dataset: Any = None, *, device="cpu", progress: bool = True,
                      cache_dir: str | None = None):
    """Load or train the reference classifier :func:`evaluate_generator` will use, so its one-off
    cost (seconds to a minute, then cached) is paid before training starts; returns
    ``(classifier or None, one console line)``. FP models and unlabelled datasets: ``(None, "")``."""
    m = cfg.model
    if m.context_frames:
        return None, ""
    if cfg.data.dataset == "shapes":
        from dvdgan.metrics.reference import load_reference_classifier

        clf = load_reference_classifier(m.resolution, m.frames, device=device, progress=progress,
                                        cache_dir=cache_dir)
        return clf, (f"reference classifier (built-in dataset): test accuracy {clf.test_accuracy:.3f}"
                     + (" (cached)" if clf.loaded_from_cache else f" (trained in {clf.train_seconds:.0f} s)"))
    from dvdgan.metrics.dataset_reference import dataset_classifier

    dataset = _train_dataset(cfg, dataset)
    if len(getattr(dataset, "class_names", []) or []) < 2:
        return None, ""
    ref = dataset_classifier(dataset, frames=m.frames, resolution=m.resolution, device=device,
                             cache_dir=cache_dir, progress=progress)
    return ref, (f"reference classifier ({ref.num_classes} classes): held-out accuracy "
                 f"{ref.heldout_accuracy:.3f} on {ref.heldout_size} clips"
                 + (" (cached)" if ref.loaded_from_cache else f" (trained in {ref.train_seconds:.0f} s)")
                 + (" - too weak to judge samples by" if ref.weak else ""))


def evaluate_generator(generator: nn.Module, cfg: Config, dataset: Any = None, *, n: int = 256, device="cpu",
                       seed: int = 1234, cache_dir: str | None = None) -> dict[str, float]:
    """Flat metrics of ``generator`` (see the module docstring). ``dataset``: the training set the
    model learns from (built from ``cfg.data`` when None), clips of the model's frames x resolution.
    The generator's train/eval mode is restored."""
    m = cfg.model
    if m.context_frames:
        return evaluate_prediction_reference(generator, cfg, n=n, device=device, seed=seed)
    was_training = generator.training
    try:
        if cfg.data.dataset == "shapes":
            return _evaluate_shapes(generator, cfg, n, device, seed, cache_dir)
        return _evaluate_dataset(generator, cfg, dataset, n, device, seed, cache_dir)
    finally:
        generator.train(was_training)


def _samples(generator: nn.Module, cfg: Config, n: int, seed: int, num_classes: int):
    classes = list(range(num_classes)) if num_classes > 1 else None  # class-balanced
    return sample(generator, cfg, classes=classes, n=n, seed=seed, batch_size=64)


def _evaluate_shapes(generator, cfg: Config, n: int, device, seed: int, cache_dir) -> dict[str, float]:
    from dvdgan.metrics.reference import evaluate_videos, load_reference_classifier

    m = cfg.model
    clf = load_reference_classifier(m.resolution, m.frames, device=device, progress=False, cache_dir=cache_dir)
    videos, labels = _samples(generator, cfg, n, seed, m.num_classes)
    r = evaluate_videos(videos, labels, clf)
    return {
        "accuracy": r["accuracy"], "accuracy_shape": r["accuracy_shape"], "accuracy_motion": r["accuracy_motion"],
        "accuracy_real": r["accuracy_real"], "ref_fd": r["frechet"], "ref_fd_floor": r["frechet_floor"],
        "motion": r["motion"]["centroid_speed"], "motion_real": r["motion_real"]["centroid_speed"],
        "frame_diff": r["motion"]["frame_diff"], "frame_diff_real": r["motion_real"]["frame_diff"],
        "classifier_accuracy": float(clf.test_accuracy), "num_videos": r["num_videos"],
    }


def _evaluate_dataset(generator, cfg: Config, dataset, n: int, device, seed: int, cache_dir) -> dict[str, float]:
    from dvdgan.metrics.dataset_reference import dataset_classifier

    m = cfg.model
    try:
        dataset = _train_dataset(cfg, dataset)
        if len(getattr(dataset, "class_names", []) or []) < 2:
            warnings.warn("in-loop evaluation skipped: the dataset is unlabelled (fewer than 2 classes), "
                          "so there is no reference classifier", stacklevel=3)
            return {}
        ref = dataset_classifier(dataset, frames=m.frames, resolution=m.resolution, device=device,
                                 cache_dir=cache_dir, progress=False)
    except DvdganError as e:
        warnings.warn(f"in-loop evaluation skipped: {e}", stacklevel=3)
        return {}
    conditional = m.num_classes == ref.num_classes
    videos, labels = _samples(generator, cfg, n, seed, m.num_classes if conditional else 1)
    out = ref.evaluate(videos, labels)
    if not conditional:  # the labels G was given are not the dataset's: class accuracy means nothing
        out.pop("accuracy")
        out.pop("frame_accuracy")
    return out



def evaluate_prediction_reference(generator: nn.Module, cfg: Config, n: int = 256, device="cpu", seed: int = 1234,
                                  ) -> dict[str, float]:
    """FP metrics of ``n`` test clips (:func:`dvdgan.metrics.prediction.evaluate_prediction`), flat,
    prefixed ``fp_``. The built-in dataset uses its reference classifier (frames = C + T) as the
    detector; other datasets get the per-frame errors only, and nothing ({}) when their test split
    cannot be read."""
    from dvdgan.data import build_dataset
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
