"""Real-data statistics for Frechet distances and the Inception Score, computed once, resumable.

:func:`compute_real_stats` runs a detector over a map-style dataset (``ds[i] -> (uint8 [T, H, W, 3],
label)``) in index order and keeps float64 running sums (sum x, sum x x^T, n) of every detector
output. Every ``checkpoint_every`` batches the accumulators are written atomically (temporary
file + ``os.replace``) to ``<out>.partial.npz``; a later call with the same dataset size and
detector resumes from there. The result (:class:`RealStats`) is saved to ``out_path``:

=================  ===============================================================================
key                content
=================  ===============================================================================
format             "dvdgan-real-stats-v1"
detector           detector identity (kind, preprocessing, SHA-256 of the weights); eval refuses
                   statistics of another detector
detector_name      human-readable detector name; ``detector_kind``; ``frechet_output``
n, ddof            number of real videos; covariance normalisation (1 = N-1, as tfgan/pytorch-fid)
mu, sigma          mean / covariance of the embedding reported as "fvd" (``frechet_output``)
mu_features, ...   ``mu_features``/``sigma_features`` (e.g. I3D avgpool, FID) and
                   ``mu_logits``/``sigma_logits`` (e.g. I3D logits, FVD), where available
logits             float32 [n, C] real logits (IS of real data; omitted when keep_logits=False)
labels             int64 [n] dataset labels; ``class_counts`` [num_classes]; ``num_classes``
is_mean, is_std    Inception Score of the real videos (10 splits; 1 split if n < 10)
accuracy           detector accuracy on the real labels (NaN unless the detector's classes are
                   the dataset's labels, as for the reference classifier)
dataset            free-text description of the data the statistics come from
=================  ===============================================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from dvdgan.errors import DvdganError
from dvdgan.metrics.detectors import Detector
from dvdgan.metrics.frechet import FrechetAccumulator
from dvdgan.metrics.inception_score import inception_score

__all__ = ["RealStats", "compute_real_stats", "load_real_stats", "stats_outputs"]

FORMAT = "dvdgan-real-stats-v1"


def stats_outputs(detector: Detector) -> tuple[str, ...]:
    """Which detector outputs get mean / covariance: logits always, features where they exist
    (skipped for C3D, whose 4096-d fc7 features no metric here uses)."""
    if detector.has_features and detector.kind != "c3d":
        return ("features", "logits")
    return ("logits",)


@dataclass
class RealStats:
    detector: str
    detector_name: str
    detector_kind: str
    frechet_output: str
    n: int
    moments: dict[str, tuple[np.ndarray, np.ndarray]]  # output -> (mu, sigma)
    labels: np.ndarray
    num_classes: int
    logits: np.ndarray | None = None
    is_mean: float = float("nan")
    is_std: float = float("nan")
    accuracy: float = float("nan")
    dataset: str = ""
    ddof: int = 1
    extra: dict = field(default_factory=dict)

    def frechet(self, output: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of ``output`` ("features" | "logits"; default: the "fvd" embedding)."""
        output = output or self.frechet_output
        if output not in self.moments:
            raise DvdganError(f"the real statistics ({self.detector_name}) hold no {output} statistics")
        return self.moments[output]

    @property
    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels.astype(np.int64), minlength=max(self.num_classes, 0))

    def save(self, path: str) -> None:
        arrays: dict[str, np.ndarray] = {
            "format": np.array(FORMAT),
            "detector": np.array(self.detector),
            "detector_name": np.array(self.detector_name),
            "detector_kind": np.array(self.detector_kind),
            "frechet_output": np.array(self.frechet_output),
            "n": np.array(self.n),
            "ddof": np.array(self.ddof),
            "num_classes": np.array(self.num_classes),
            "labels": self.labels.astype(np.int64),
            "class_counts": self.class_counts,
            "is_mean": np.array(self.is_mean),
            "is_std": np.array(self.is_std),
            "accuracy": np.array(self.accuracy),
            "dataset": np.array(self.dataset),
        }
        for out, (mu, sigma) in self.moments.items():
            arrays[f"mu_{out}"], arrays[f"sigma_{out}"] = mu, sigma
        if self.frechet_output in self.moments:
            arrays["mu"], arrays["sigma"] = self.moments[self.frechet_output]
        if self.logits is not None:
            arrays["logits"] = self.logits.astype(np.float32)
        _atomic_savez(path, arrays)


def load_real_stats(path: str) -> RealStats:
    """Read a STATS.npz written by :func:`compute_real_stats` (DvdganError if it is not one)."""
    if not os.path.isfile(path):
        raise DvdganError(f"statistics file {path} does not exist (compute it with `dvdgan stats`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DvdganError(f"cannot read statistics file {path}: {e}".splitlines()[0]) from None
    if str(d.get("format", "")) != FORMAT:
        raise DvdganError(f"{path} is not a dvdgan statistics file (written by `dvdgan stats`)")
    moments = {
        out: (d[f"mu_{out}"], d[f"sigma_{out}"]) for out in ("features", "logits") if f"mu_{out}" in d
    }
    return RealStats(
        detector=str(d["detector"]),
        detector_name=str(d["detector_name"]),
        detector_kind=str(d["detector_kind"]),
        frechet_output=str(d["frechet_output"]),
        n=int(d["n"]),
        moments=moments,
        labels=d["labels"],
        num_classes=int(d["num_classes"]),
        logits=d.get("logits"),
        is_mean=float(d["is_mean"]),
        is_std=float(d["is_std"]),
        accuracy=float(d["accuracy"]),
        dataset=str(d["dataset"]),
        ddof=int(d["ddof"]),
    )


def _atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:  # a file object: np.savez must not append ".npz" to the name
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _partial_path(out_path: str) -> str:
    return f"{out_path}.partial.npz"


def _load_partial(path: str, detector: Detector, n: int, outputs: tuple[str, ...]) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None
    if str(d.get("detector", "")) != detector.identity or int(d.get("n", -1)) != n:
        print(f"ignoring {path}: it was computed for another detector or dataset size")
        return None
    if tuple(str(s) for s in d["outputs"]) != outputs:
        return None
    return d


def compute_real_stats(
    dataset,
    detector: Detector,
    n: int | None = None,
    batch_size: int = 16,
    out_path: str | None = None,
    progress: bool = True,
    *,
    checkpoint_every: int = 20,
    num_workers: int = 0,
    keep_logits: bool = True,
    description: str = "",
) -> RealStats:
    """Statistics of the first ``n`` videos of ``dataset`` (all when None; capped at its length).

    With ``out_path`` the result is saved there and the computation is resumable from
    ``<out_path>.partial.npz`` (written every ``checkpoint_every`` batches, removed at the end).
    Real logits are kept in memory as float32 [n, C] (for the real IS and accuracy) and saved
    unless ``keep_logits=False``.
    """
    total = len(dataset)
    if total == 0:
        raise DvdganError("the dataset holds no videos")
    if n is None:
        n = total
    elif n > total:
        print(f"note: {n} real videos requested, the dataset has {total}; using {total}")
        n = total
    if n < 2:
        raise DvdganError("real statistics need at least 2 videos")
    outputs = stats_outputs(detector)
    accs = {o: FrechetAccumulator() for o in outputs}
    logits_chunks: list[np.ndarray] = []
    labels_chunks: list[np.ndarray] = []
    start = 0
    partial = _partial_path(out_path) if out_path else None
    if partial and os.path.isfile(partial):
        d = _load_partial(partial, detector, n, outputs)
        if d is not None:
            start = int(d["next_index"])
            for o in outputs:
                accs[o] = FrechetAccumulator.from_state(
                    {k[len(o) + 1:]: v for k, v in d.items() if k.startswith(f"{o}_")}
                )
            logits_chunks = [d["logits"]] if "logits" in d else []
            labels_chunks = [d["labels"]]
            if progress:
                print(f"resuming real statistics from {partial} at video {start}/{n}")

    def save_partial(next_index: int) -> None:
        arrays: dict[str, np.ndarray] = {
            "detector": np.array(detector.identity),
            "n": np.array(n),
            "next_index": np.array(next_index),
            "outputs": np.array(outputs),
            "labels": np.concatenate(labels_chunks) if labels_chunks else np.zeros(0, np.int64),
        }
        if logits_chunks:
            arrays["logits"] = np.concatenate(logits_chunks)
        for o, acc in accs.items():
            for k, v in acc.state().items():
                arrays[f"{o}_{k}"] = v
        _atomic_savez(partial, arrays)  # type: ignore[arg-type]

    loader = DataLoader(Subset(dataset, range(start, n)), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    bar = tqdm(total=n, initial=start, desc="real statistics", unit="video", disable=not progress)
    index = start
    for b, (videos, labels) in enumerate(loader):
        out = detector.outputs(videos, outputs)
        for o in outputs:
            accs[o].update(out[o])
        logits_chunks.append(out["logits"].astype(np.float32))
        labels_chunks.append(torch.as_tensor(labels).reshape(-1).long().numpy())
        index += videos.shape[0]
        bar.update(videos.shape[0])
        if partial and (b + 1) % checkpoint_every == 0 and index < n:
            save_partial(index)
    bar.close()

    labels_all = np.concatenate(labels_chunks).astype(np.int64)
    logits_all = np.concatenate(logits_chunks).astype(np.float64) if logits_chunks else None
    is_mean = is_std = accuracy = float("nan")
    if logits_all is not None:
        is_mean, is_std = inception_score(logits_all, splits=10 if n >= 10 else 1, from_logits=True)
        if detector.classes_match_dataset:
            accuracy = float((logits_all.argmax(axis=1) == labels_all).mean())
    num_classes = detector.num_classes or (int(labels_all.max()) + 1)
    stats = RealStats(
        detector=detector.identity,
        detector_name=detector.name,
        detector_kind=detector.kind,
        frechet_output=detector.frechet_output,
        n=n,
        moments={o: accs[o].statistics(ddof=1) for o in outputs},
        labels=labels_all,
        num_classes=num_classes,
        logits=logits_all.astype(np.float32) if (keep_logits and logits_all is not None) else None,
        is_mean=is_mean,
        is_std=is_std,
        accuracy=accuracy,
        dataset=description,
    )
    if out_path:
        stats.save(out_path)
        if partial and os.path.isfile(partial):
            os.remove(partial)
    return stats
