"""Memorisation check: are samples copies of training clips? (The paper found memorisation of
UCF-101 training clips, C.1.)

For each sample, its nearest training clips in a detector's feature space (the dataset's
reference classifier, or any detector with ``features``); the distribution of sample-to-train
nearest distances is compared with that of real clips the generator did not train on
(held-out-to-train), or, when the dataset has no separate held-out split, with each training
clip's distance to its nearest *other* training clip (leave-one-out). A generator that draws new
clips lands in the same range as the real ones; one that copies lands far below.

Summary numbers (:func:`memorisation_check`): medians of both distributions and their ratio, and
``copy_fraction``: the fraction of samples closer to a training clip than the 5th percentile of the
real distances (about 0.05 for a generator that does not copy). ``memorised`` is set when that
fraction exceeds :data:`COPY_FRACTION_LIMIT`. :func:`write_memorisation_report` writes the
neighbour PNGs, a histogram PNG and a JSON summary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dvdgan.data.transforms import to_model_input

__all__ = ["COPY_FRACTION_LIMIT", "video_features", "nearest_neighbours", "memorisation_check",
           "write_memorisation_report", "format_summary"]

#: The 5th percentile of real distances is the line; 5x the expected fraction of samples below it
#: flags memorisation.
COPY_PERCENTILE = 5.0
COPY_FRACTION_LIMIT = 0.25


def _uint8(videos: Any) -> torch.Tensor:
    v = torch.from_numpy(np.ascontiguousarray(videos)) if isinstance(videos, np.ndarray) else videos.cpu()
    if v.dtype != torch.uint8 or v.ndim != 5 or v.shape[-1] != 3:
        raise ValueError(f"expected uint8 videos [N, T, H, W, 3], got {v.dtype} {tuple(v.shape)}")
    return v


@torch.no_grad()
def video_features(detector: Any, videos: Any, batch_size: int = 64) -> np.ndarray:
    """float64 [N, F] features of uint8 videos. ``detector``: an object whose ``features`` takes uint8
    videos (a :class:`~dvdgan.metrics.detectors.Detector`, a
    :class:`~dvdgan.metrics.dataset_reference.DatasetReference`), or an ``nn.Module`` whose
    ``features`` takes float [B, T, 3, H, W] in [-1, 1] (the reference classifiers)."""
    videos = _uint8(videos)
    if not isinstance(detector, nn.Module):
        return np.asarray(detector.features(videos), dtype=np.float64)
    device = next(detector.parameters()).device
    was_training = detector.training
    detector.eval()
    try:
        out = [detector.features(to_model_input(videos[i:i + batch_size].to(device))).double().cpu().numpy()
               for i in range(0, videos.shape[0], batch_size)]
    finally:
        detector.train(was_training)
    return np.concatenate(out)


def nearest_neighbours(query: np.ndarray, reference: np.ndarray, k: int = 1, exclude_self: bool = False,
                       chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean ``(distances [N, k], indices [N, k])`` of each query row's k nearest reference rows,
    nearest first. ``exclude_self``: query is reference, and row i may not match itself."""
    k = min(k, len(reference) - int(exclude_self))
    if k < 1:
        raise ValueError("not enough reference rows for a nearest neighbour")
    r2 = (reference**2).sum(1)
    dists, idxs = [], []
    for s in range(0, len(query), chunk):
        q = query[s:s + chunk]
        d2 = (q**2).sum(1)[:, None] + r2[None] - 2 * q @ reference.T
        if exclude_self:
            d2[np.arange(len(q)), np.arange(s, s + len(q))] = np.inf
        idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(d2, idx, 1)
        order = np.argsort(part, axis=1)
        idxs.append(np.take_along_axis(idx, order, 1))
        dists.append(np.sqrt(np.maximum(np.take_along_axis(part, order, 1), 0)))
    return np.concatenate(dists), np.concatenate(idxs)


def memorisation_check(samples: Any, train_videos: Any, detector: Any, *, heldout_videos: Any = None,
                       k: int = 3, batch_size: int = 64) -> dict[str, Any]:
    """Nearest training clips of ``samples`` and the distance distributions (module docstring).

    Returns a dict: ``summary`` (floats and the ``memorised`` flag, JSON friendly),
    ``sample_distances`` [N] and ``real_distances`` [M] (nearest-training-clip distances),
    ``neighbours`` [N, k] (indices into ``train_videos``), ``neighbour_distances`` [N, k].
    """
    samples, train = _uint8(samples), _uint8(train_videos)
    if train.shape[0] < 2:
        raise ValueError("the memorisation check needs at least 2 training clips")
    f_train = video_features(detector, train, batch_size)
    f_samples = video_features(detector, samples, batch_size)
    nd, ni = nearest_neighbours(f_samples, f_train, k)
    if heldout_videos is not None and len(heldout_videos):
        real, _ = nearest_neighbours(video_features(detector, _uint8(heldout_videos), batch_size), f_train, 1)
        reference = "held-out real clips to training clips"
    else:
        real, _ = nearest_neighbours(f_train, f_train, 1, exclude_self=True)
        reference = "each training clip to its nearest other training clip (no held-out split)"
    sample_d, real_d = nd[:, 0], real[:, 0]
    line = float(np.percentile(real_d, COPY_PERCENTILE))
    copy_fraction = float((sample_d < line).mean()) if line > 0 else float((sample_d <= 0).mean())
    med_s, med_r = float(np.median(sample_d)), float(np.median(real_d))
    summary = {
        "num_samples": int(len(sample_d)), "num_train": int(train.shape[0]), "num_real": int(len(real_d)),
        "real_reference": reference,
        "sample_nn_median": med_s, "sample_nn_mean": float(sample_d.mean()),
        "real_nn_median": med_r, "real_nn_mean": float(real_d.mean()),
        "median_ratio": med_s / med_r if med_r > 0 else float("inf"),
        "copy_line": line, "copy_fraction": copy_fraction, "expected_copy_fraction": COPY_PERCENTILE / 100,
        "memorised": bool(copy_fraction > COPY_FRACTION_LIMIT),
    }
    return {"summary": summary, "sample_distances": sample_d, "real_distances": real_d,
            "neighbours": ni, "neighbour_distances": nd}


def _strip(video: torch.Tensor, frames: int = 4) -> np.ndarray:
    """Up to ``frames`` evenly spaced frames side by side, with 1-px white gaps."""
    t = video.shape[0]
    idx = np.unique(np.linspace(0, t - 1, min(frames, t)).round().astype(int))
    parts = []
    for i in idx:
        parts += [video[i].numpy(), np.full((video.shape[1], 1, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


def write_memorisation_report(result: dict, samples: Any, train_videos: Any, out_dir: str | os.PathLike,
                              sample_labels: Any = None, train_labels: Any = None,
                              class_names: list[str] | None = None, rows_per_page: int = 16) -> dict[str, str]:
    """``neighbours_XXX.png`` (each sample's frame strip beside its k nearest training clips, with
    labels and distances), ``distances.png`` (histograms of both distance distributions, the copy
    line marked) and ``memorisation.json`` (the summary) in ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples, train = _uint8(samples), _uint8(train_videos)
    names = class_names or []

    def label(labels, i) -> str:
        if labels is None:
            return ""
        c = int(labels[i])
        return f" {names[c]}" if 0 <= c < len(names) else f" class {c}"

    paths: dict[str, str] = {}
    nb, nd = result["neighbours"], result["neighbour_distances"]
    n, k = nb.shape
    for page, start in enumerate(range(0, n, rows_per_page)):
        rows = range(start, min(n, start + rows_per_page))
        fig, axes = plt.subplots(len(rows), k + 1, figsize=(2.6 * (k + 1), 1.2 * len(rows) + 0.4), squeeze=False)
        for r, i in enumerate(rows):
            cells = [(samples[i], f"sample {i}{label(sample_labels, i)}")]
            cells += [(train[nb[i, j]], f"train {nb[i, j]}{label(train_labels, nb[i, j])} d={nd[i, j]:.3g}")
                      for j in range(k)]
            for c, (video, title) in enumerate(cells):
                ax = axes[r, c]
                ax.imshow(_strip(video), interpolation="nearest")
                ax.set_title(title, fontsize=6)
                ax.axis("off")
        fig.tight_layout()
        p = out / f"neighbours_{page:03d}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths[f"neighbours_{page:03d}"] = str(p)

    s = result["summary"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    both = np.concatenate([result["sample_distances"], result["real_distances"]])
    bins = np.linspace(0, max(float(both.max()), 1e-9), 31)
    ax.hist(result["real_distances"], bins=bins, alpha=0.6, density=True, label="real (held-out) to train")
    ax.hist(result["sample_distances"], bins=bins, alpha=0.6, density=True, label="samples to train")
    ax.axvline(s["copy_line"], color="k", ls="--", lw=1, label=f"{COPY_PERCENTILE:.0f}th pct. of real")
    ax.set_xlabel("nearest-training-clip distance (detector features)")
    ax.set_title(f"copy fraction {s['copy_fraction']:.2f}" + (" - MEMORISED" if s["memorised"] else ""), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths["distances"] = str(out / "distances.png")
    fig.savefig(paths["distances"], dpi=110)
    plt.close(fig)
    paths["summary"] = str(out / "memorisation.json")
    Path(paths["summary"]).write_text(json.dumps(s, indent=1))
    return paths


def format_summary(summary: dict) -> str:
    """One console line."""
    verdict = "MEMORISED: samples copy training clips" if summary["memorised"] else "no sign of copying"
    return (f"memorisation: {verdict} (copy fraction {summary['copy_fraction']:.2f}, expected "
            f"{summary['expected_copy_fraction']:.2f}; median nearest-train distance samples "
            f"{summary['sample_nn_median']:.3g} vs real {summary['real_nn_median']:.3g})")
