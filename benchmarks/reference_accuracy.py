"""Held-out accuracy and training time of the dataset reference classifier
(:mod:`dvdgan.metrics.dataset_reference`) on labelled class-folder datasets, at the model's frames
and resolution (default: the ``shapes`` preset's 8 frames of 32x32), on one CPU thread, with a
fresh cache (nothing is read from an earlier run). One JSON object per dataset on stdout, one
JSON list in ``--json`` if given. ``cpu_seconds`` (the process's CPU time: decoding, training,
statistics) is the cost on one thread whatever else the machine runs; ``train_seconds`` and
``wall_seconds`` are wall-clock times and grow with the machine's load.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/reference_accuracy.py \\
        /work/data/{bounce,spin,pan,heldout-like}{,-quarter} --json reference_accuracy.json

The datasets are those of ``benchmarks/make_datasets.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from dvdgan.config import DataConfig
from dvdgan.data import build_dataset
from dvdgan.data.transforms import to_model_input
from dvdgan.metrics.dataset_reference import DATASET_REFERENCE_VERSION, _holdout_mask, dataset_classifier


def _factor_accuracies(ref, ds) -> dict:
    """For class names ``<a>_<b>`` (make_datasets.py: shape or texture, kind of motion), the
    held-out accuracy of each factor alone: which of the two the classifier gets wrong."""
    names = ref.class_names
    if not all(n.count("_") == 1 for n in names) or len(ref.real_labels) != len(ds):
        return {}  # (a clip was dropped: the held-out indices would not be the dataset's)
    held = np.flatnonzero(_holdout_mask(ref.real_labels, 0.2))
    videos = torch.stack([ds[int(i)][0] for i in held])
    with torch.no_grad():
        pred = ref.model.eval()(to_model_input(videos)).argmax(1).numpy()
    true = ref.real_labels[held]
    parts = [n.split("_") for n in names]
    return {f"heldout_accuracy_{k}": round(float(np.mean([parts[p][i] == parts[t][i] for p, t in zip(pred, true)])), 4)
            for i, k in enumerate(("appearance", "motion"))}


def measure(path: str, frames: int, resolution: int, threads: int) -> dict:
    ds = build_dataset(DataConfig(dataset="folder", path=path, frame_stride=1), split="train", frames=frames,
                       resolution=resolution, seed=0, bad_log=None)
    with tempfile.TemporaryDirectory() as cache, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start, cpu = time.perf_counter(), time.process_time()
        ref = dataset_classifier(ds, frames=frames, resolution=resolution, cache_dir=cache, progress=False,
                                 num_threads=threads)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    factors = _factor_accuracies(ref, ds)
    return {
        "dataset": Path(path).name, "version": DATASET_REFERENCE_VERSION, "classes": ref.num_classes,
        "clips": int(len(ref.real_labels)), "heldout_accuracy": round(ref.heldout_accuracy, 4),
        "heldout_size": ref.heldout_size, **factors, "weak": ref.weak,
        "real_consistency": round(ref.real_consistency, 4),
        "real_frame_accuracy": round(ref.real_frame_accuracy, 4), "train_seconds": round(ref.train_seconds, 1),
        "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "frames": frames, "resolution": resolution,
        "threads": threads,
        "warnings": [str(w.message) for w in caught if "reference classifier" in str(w.message)],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("datasets", nargs="+", help="class-folder dataset directories")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write all results to this file as a JSON list")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for path in args.datasets:
        r = measure(path, args.frames, args.resolution, args.threads)
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
