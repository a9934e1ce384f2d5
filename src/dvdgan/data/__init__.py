"""Datasets for DVD-GAN: the factory :func:`build_dataset` and the bad-video log summary.

Every dataset returned here follows one contract::

    ds = build_dataset(cfg.data, split="train", frames=T, resolution=R, seed=0, bad_log=None)
    len(ds); ds.class_names; ds.num_classes
    video, label = ds[index]                 # evaluation: first run, centre crop
    video, label = ds[(index, sample_seed)]  # training: choices from default_rng(sample_seed)
    # video: torch.uint8 [T, R, R, 3]; label: int (0-based)

Datasets (``data.dataset``):

- ``shapes``: the built-in moving-shapes videos (:mod:`dvdgan.data.shapes`), no files.
- ``ucf101``, ``kinetics600``, ``folder``: video files decoded with PyAV on the fly
  (:mod:`dvdgan.data.readers`, :mod:`dvdgan.data.video`).
- ``bair``: BAIR robot pushing TFRecords, read without TensorFlow (:mod:`dvdgan.data.bair`).
- ``prepared``: a folder written by ``dvdgan prepare`` (:mod:`dvdgan.data.prepared`), the fast
  path. **Auto-detection:** when ``data.path`` of a ``ucf101`` / ``kinetics600`` / ``bair`` /
  ``folder`` config points at a prepared folder (it holds ``dvdgan_prepared.json``), that
  folder is read, after checking that it was prepared from the same kind of dataset.

Preprocessing is the paper's (2.3, B.1): shortest side bilinearly resized to R, random R crop
of the longer side, a random run of T frames at stride ``data.frame_stride``. ``seed`` is
accepted for the shapes dataset; real-video randomness comes only from the per-item
``sample_seed``. Bad videos are skipped and logged to ``bad_log`` (see
:mod:`dvdgan.data.base`); :func:`summarize_bad_log` counts them by reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dvdgan.data.base import ClipDataset, summarize_bad_log
from dvdgan.data.sampler import ClipSampler
from dvdgan.errors import DataError

DATASETS = ("shapes", "ucf101", "kinetics600", "bair", "folder", "prepared")

__all__ = ["build_dataset", "summarize_bad_log", "ClipDataset", "ClipSampler", "DATASETS"]


def build_dataset(
    data_cfg: Any,
    *,
    split: str,
    frames: int,
    resolution: int,
    seed: int = 0,
    bad_log: str | None = None,
):
    """The dataset named by ``data_cfg.dataset`` (a :class:`dvdgan.config.DataConfig`)."""
    name = data_cfg.dataset
    if name == "shapes":
        from dvdgan.data.shapes import MovingShapes

        size = data_cfg.shapes_train_size if split == "train" else data_cfg.shapes_test_size
        return MovingShapes(split=split, frames=frames, resolution=resolution, size=size, seed=seed)
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (one of {', '.join(DATASETS)})")
    if not data_cfg.path:
        raise DataError(f"data.path is not set: dataset {name} needs the folder that holds it")
    path = Path(data_cfg.path).expanduser()
    if not path.exists():
        raise DataError(f"data.path {path} does not exist")
    common = dict(frames=frames, resolution=resolution, frame_stride=data_cfg.frame_stride, bad_log=bad_log)

    from dvdgan.data.prepared import PreparedDataset, is_prepared_dir

    if name == "prepared" or is_prepared_dir(path):
        return PreparedDataset(path, split, expect_dataset=None if name == "prepared" else name, **common)
    if name == "bair":
        from dvdgan.data.bair import BairDataset

        return BairDataset(path, split, camera=data_cfg.bair_camera, **common)

    from dvdgan.data import readers

    if name == "ucf101":
        fl = readers.list_ucf101(path, split, data_cfg.ucf_split)
    elif name == "kinetics600":
        fl = readers.list_kinetics(path, split, data_cfg.kinetics_csv)
    else:
        fl = readers.list_folder(path, split)
    return readers.open_file_list(fl, **common)
