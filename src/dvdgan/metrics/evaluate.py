"""Metrics of generated videos, optionally along a truncation curve (Table 1 of the paper).

Metrics and the detector each one uses:

=========  ========================================================================================
fvd        Frechet distance of the detector's "fvd" embedding: I3D logits averaged over time
           (Unterthiner et al.)
ref_fd     reference Frechet distance: the same, in the reference classifier's feature space
           (``fvd`` asked of the reference classifier is reported under this name: it is not
           comparable with I3D FVD)
fid        Frechet distance of the I3D 1024-d avgpool features (the paper's Kinetics-600 FID)
is         Inception Score of I3D logits (the paper's Kinetics-600 IS; needs the 600-class I3D
           for comparable numbers), or of the reference classifier's logits
isc3d      Inception Score of the UCF-101 C3D (TGAN / TGANv2 protocol)
accuracy   class accuracy of generated videos under the reference classifier (labels from G)
=========  ========================================================================================

IS is computed with ``is_splits`` splits of the n samples (StyleGAN-V protocol, default 10); with
``is_runs=R > 1`` it is instead the TGANv2 protocol: R independent runs of n samples, one split
each, mean +- std over runs (the extra runs are generated only for the IS detectors).
Frechet distances use ``frechet_method`` ("svd" = TF FVD reference, "sqrtm" = pytorch-fid) and
covariances normalised by N-1.

``generate_fn(n, truncation, seed) -> (uint8 [n, T, H, W, 3], labels LongTensor [n])`` is called in
chunks of ``chunk_size`` videos with seeds ``seed + 1_000_003 * run + chunk_index``, so every
truncation value sees the same seeds.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from dvdgan.errors import DvdganError
from dvdgan.metrics.detectors import Detector, as_uint8_videos
from dvdgan.metrics.frechet import FrechetAccumulator, frechet_distance
from dvdgan.metrics.inception_score import inception_score, inception_score_runs
from dvdgan.metrics.stats import RealStats, compute_real_stats

__all__ = ["METRICS", "evaluate_generator", "route_metrics", "format_table", "write_results"]

METRICS = ("fvd", "ref_fd", "fid", "is", "isc3d", "accuracy")
FRECHET = ("fvd", "ref_fd", "fid")
LABELS = {"fvd": "FVD", "ref_fd": "reference Frechet distance", "fid": "FID", "is": "IS", "isc3d": "IS (C3D)",
          "accuracy": "accuracy"}
GenerateFn = Callable[[int, float, int], tuple[torch.Tensor, torch.Tensor]]

# metric -> detector kinds that can compute it, in order of preference
_KINDS = {
    "fvd": ("i3d", "reference", "custom"),
    "ref_fd": ("reference",),
    "fid": ("i3d", "custom"),
    "is": ("i3d", "reference", "custom"),
    "isc3d": ("c3d",),
    "accuracy": ("reference", "custom"),
}
_NEEDS = {
    "fvd": "an I3D weight file or the reference classifier",
    "ref_fd": "the reference classifier (--detector reference)",
    "fid": "an InceptionI3d state dict (avgpool features)",
    "is": "an I3D weight file or the reference classifier",
    "isc3d": "the UCF-101 C3D (conv3d_deepnetA_ucf.npz + mean2.npz, or c3d_ucf101.pt)",
    "accuracy": "the reference classifier (--detector reference)",
}


def route_metrics(metrics: Sequence[str], detectors: Sequence[Detector]) -> dict[str, Detector]:
    """Pick the detector of each metric (DvdganError naming what is missing)."""
    routed: dict[str, Detector] = {}
    for m in metrics:
        if m not in METRICS:
            raise DvdganError(f"unknown metric {m!r}; choose from {', '.join(METRICS)}")
        for kind in _KINDS[m]:
            cands = [d for d in detectors if d.kind == kind]
            if m == "fid":
                cands = [d for d in cands if d.has_features]
            if m == "accuracy":
                cands = [d for d in cands if d.classes_match_dataset]
            if cands:
                routed[m] = cands[0]
                break
        else:
            raise DvdganError(f"metric {m} needs {_NEEDS[m]}")
    return routed


def _frechet_output(metric: str, det: Detector) -> str:
    return det.frechet_output if metric in ("fvd", "ref_fd") else "features"


def _find_stats(det: Detector, real_stats) -> RealStats | None:
    if real_stats is None:
        return None
    pool = list(real_stats.values()) if isinstance(real_stats, dict) else (
        list(real_stats) if isinstance(real_stats, (list, tuple)) else [real_stats]
    )
    for s in pool:
        if s.detector == det.identity:
            return s
    return None


def evaluate_generator(
    generate_fn: GenerateFn,
    *,
    metrics: Sequence[str],
    detector: Detector | Sequence[Detector],
    real_stats: RealStats | Sequence[RealStats] | dict[str, RealStats] | None = None,
    real_dataset=None,
    n: int = 2048,
    truncations: Sequence[float] | None = None,
    seed: int = 0,
    chunk_size: int = 64,
    is_splits: int = 10,
    is_runs: int = 1,
    frechet_method: str = "svd",
    real_n: int | None = None,
    out_dir: str | None = None,
    progress: bool = True,
    real_description: str = "",
) -> dict:
    """Compute ``metrics`` for ``n`` generated videos at each truncation (default [1.0]).

    Real statistics for fvd / fid come from ``real_stats`` (matched to the detector by identity;
    a mismatch is an error) or are computed from ``real_dataset`` (first ``real_n`` or ``n``
    videos; ``real_description`` names that data in ``real.dataset``). Returns
    ``{"rows": [{"truncation", "fvd", "fid", "is", "is_std", ...}], "detectors",
    "real", ...}``; with ``out_dir``, writes metrics.json and metrics.txt, and with several
    truncations also truncation_curve.csv and truncation_curve.png.
    """
    metrics = [m.strip().lower() for m in metrics if m.strip()]
    if not metrics:
        raise DvdganError("no metric requested")
    detectors = [detector] if isinstance(detector, Detector) else list(detector)
    routed = route_metrics(metrics, detectors)
    if "fvd" in routed and routed["fvd"].kind == "reference":  # not I3D FVD: say so in its name
        routed = {"ref_fd": routed["fvd"], **{m: d for m, d in routed.items() if m != "fvd"}}
        metrics = list(dict.fromkeys("ref_fd" if m == "fvd" else m for m in metrics))
    truncations = [1.0] if not truncations else [float(t) for t in truncations]
    if n < 2:
        raise DvdganError("evaluation needs at least 2 generated videos")
    if is_runs < 1:
        raise DvdganError("is_runs must be >= 1")

    # real statistics of every detector used for a Frechet distance
    real: dict[str, RealStats] = {}
    for m in FRECHET:
        if m not in routed:
            continue
        det = routed[m]
        if det.identity in real:
            continue
        s = _find_stats(det, real_stats)
        if s is None and real_stats is not None and real_dataset is None:
            got = ", ".join(sorted({x.detector for x in _as_list(real_stats)}))
            raise DvdganError(f"the statistics were computed with {got}, but {m} uses {det.identity}")
        if s is None:
            if real_dataset is None:
                raise DvdganError(f"{m} needs real statistics: pass --stats STATS.npz or --data PATH")
            s = compute_real_stats(real_dataset, det, n=real_n or n, progress=progress,
                                   description=real_description or type(real_dataset).__name__)
        real[det.identity] = s
    for m in FRECHET:
        if m in routed:
            real[routed[m].identity].frechet(_frechet_output(m, routed[m]))  # raises if absent

    # outputs needed from each detector
    wants: dict[int, set[str]] = {}
    for m, det in routed.items():
        need = _frechet_output(m, det) if m in FRECHET else "logits"
        wants.setdefault(id(det), set()).add(need)
    used = {id(d): d for d in routed.values()}
    is_dets = {id(routed[m]) for m in ("is", "isc3d") if m in routed}

    frechet_keys = {(id(d), _frechet_output(m, d)) for m, d in routed.items() if m in FRECHET}

    rows = []
    for t in truncations:
        logits, accs, labels_np = _measure(
            generate_fn, n, t, seed, 0, chunk_size, used, {k: sorted(v) for k, v in wants.items()},
            frechet_keys, progress,
        )
        extra_runs: dict[int, list[np.ndarray]] = {k: [np.concatenate(logits[k])] for k in is_dets}
        if is_runs > 1:
            for r in range(1, is_runs):
                rl, _, _ = _measure(
                    generate_fn, n, t, seed, r, chunk_size, {k: used[k] for k in is_dets},
                    {k: ["logits"] for k in is_dets}, set(), progress,
                )
                for k in is_dets:
                    extra_runs[k].append(np.concatenate(rl[k]))

        row: dict[str, float] = {"truncation": t}
        for m in metrics:
            det = routed[m]
            if m in FRECHET:
                out = _frechet_output(m, det)
                mu_g, sigma_g = accs[(id(det), out)].statistics(ddof=1)
                mu_r, sigma_r = real[det.identity].frechet(out)
                row[m] = frechet_distance(mu_r, sigma_r, mu_g, sigma_g, method=frechet_method)
            elif m in ("is", "isc3d"):
                if is_runs > 1:
                    mean, std = inception_score_runs(extra_runs[id(det)], from_logits=True)
                else:
                    mean, std = inception_score(np.concatenate(logits[id(det)]),
                                                splits=min(is_splits, n), from_logits=True)
                row[m], row[f"{m}_std"] = mean, std
            elif m == "accuracy":
                pred = np.concatenate(logits[id(det)]).argmax(axis=1)
                row[m] = float((pred == labels_np).mean())
        rows.append(row)

    result = {
        "metrics": metrics,
        "n": n,
        "seed": seed,
        "truncations": truncations,
        "frechet_method": frechet_method,
        "covariance": "N-1",
        "is_protocol": f"{is_runs} runs x {n} samples, 1 split each" if is_runs > 1
        else f"{min(is_splits, n)} splits of {n} samples",
        "detectors": {m: {"name": d.name, "identity": d.identity,
                          "embedding": _frechet_output(m, d) if m in FRECHET else "logits"}
                      for m, d in routed.items()},
        "real": {
            s.detector: {"n": s.n, "dataset": s.dataset, "is": _nan_to_none(s.is_mean),
                         "is_std": _nan_to_none(s.is_std), "accuracy": _nan_to_none(s.accuracy)}
            for s in real.values()
        },
        "rows": rows,
    }
    if out_dir:
        write_results(result, out_dir)
    return result


def _measure(
    generate_fn: GenerateFn,
    n: int,
    t: float,
    seed: int,
    run: int,
    chunk_size: int,
    dets: dict[int, Detector],
    wants: dict[int, list[str]],
    frechet_keys: set[tuple[int, str]],
    progress: bool,
) -> tuple[dict[int, list[np.ndarray]], dict[tuple[int, str], FrechetAccumulator], np.ndarray]:
    """Generate n videos in chunks and run each detector: (logits per detector, Frechet
    accumulators per (detector, output), labels)."""
    logits: dict[int, list[np.ndarray]] = {k: [] for k in dets}
    accs: dict[tuple[int, str], FrechetAccumulator] = {key: FrechetAccumulator() for key in frechet_keys}
    labels_all: list[np.ndarray] = []
    desc = f"generate+measure t={t:g}" + (f" run {run + 1}" if run else "")
    bar = tqdm(total=n, desc=desc, unit="video", disable=not progress)
    for ci, start in enumerate(range(0, n, chunk_size)):
        m = min(chunk_size, n - start)
        videos, labels = generate_fn(m, t, seed + 1_000_003 * run + ci)
        videos = as_uint8_videos(videos)
        if videos.shape[0] != m:
            raise DvdganError(f"generate_fn returned {videos.shape[0]} videos, {m} requested")
        for k, det in dets.items():
            for o, arr in det.outputs(videos, wants[k]).items():
                if o == "logits":
                    logits[k].append(arr)
                if (k, o) in accs:
                    accs[(k, o)].update(arr)
        labels_all.append(torch.as_tensor(labels).reshape(-1).long().cpu().numpy())
        bar.update(m)
    bar.close()
    return logits, accs, np.concatenate(labels_all)


def _as_list(x) -> list:
    if isinstance(x, dict):
        return list(x.values())
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _nan_to_none(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _columns(result: dict) -> list[str]:
    cols = ["truncation"]
    for m in result["metrics"]:
        cols.append(m)
        if m in ("is", "isc3d"):
            cols.append(f"{m}_std")
    return cols


def format_table(result: dict) -> str:
    """A plain-text table: one row per truncation, then the detectors used."""
    cols = _columns(result)
    lines = ["  ".join(f"{c:>12}" for c in cols)]
    for row in result["rows"]:
        lines.append("  ".join(f"{row.get(c, float('nan')):>12.4f}" for c in cols))
    lines.append("")
    for m, d in result["detectors"].items():
        lines.append(f"{m}: {d['name']} [{d['embedding']}] ({d['identity']})")
    is_part = f" IS: {result['is_protocol']}" if any(m in ("is", "isc3d") for m in result["metrics"]) else ""
    lines.append(f"n={result['n']} seed={result['seed']} frechet={result['frechet_method']} "
                 f"covariance={result['covariance']}{is_part}")
    return "\n".join(lines)


def write_results(result: dict, out_dir: str) -> dict[str, str]:
    """metrics.json + metrics.txt; with several truncations also truncation_curve.csv / .png."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "metrics.json"), "table": os.path.join(out_dir, "metrics.txt")}
    with open(paths["json"], "w") as f:
        json.dump(result, f, indent=2, default=_nan_to_none)
    with open(paths["table"], "w") as f:
        f.write(format_table(result) + "\n")
    if len(result["rows"]) > 1:
        paths["csv"] = os.path.join(out_dir, "truncation_curve.csv")
        cols = _columns(result)
        with open(paths["csv"], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for row in result["rows"]:
                w.writerow([row.get(c, "") for c in cols])
        paths["png"] = os.path.join(out_dir, "truncation_curve.png")
        plot_truncation_curve(result, paths["png"])
    return paths


def plot_truncation_curve(result: dict, path: str) -> None:
    """Two panels against truncation, like Table 1's column groups: Frechet (FID, else FVD) and
    IS (I3D IS, else C3D IS, else accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    x = [r["truncation"] for r in rows]
    left = next((m for m in ("fid", "fvd", "ref_fd") if m in result["metrics"]), None)
    right = next((m for m in ("is", "isc3d", "accuracy") if m in result["metrics"]), None)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, m in zip(axes, (left, right)):
        if m is None:
            ax.set_axis_off()
            continue
        y = [r[m] for r in rows]
        if f"{m}_std" in rows[0]:
            ax.errorbar(x, y, yerr=[r[f"{m}_std"] for r in rows], marker="o", capsize=3)
        else:
            ax.plot(x, y, marker="o")
        label = LABELS[m]
        ax.set_xlabel("truncation (std of z)")
        ax.set_ylabel(label)
        ax.set_title(f"{label} ({result['detectors'][m]['name']})", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
