"""Reading the prepared format (written by :mod:`dvdgan.data.prepare`): raw uint8 frames in shards.

Layout of ``out``::

    dvdgan_prepared.json          format, version, dataset, resolution, crop, frame_stride,
                                  max_frames, resize kernel, per-split class names and item counts
    bad_videos.log                one line per skipped video: reason<TAB>path<TAB>detail
    <split>/manifest.json         {"completed": {"00003": {videos, frames, bytes, bad}, ...}}
    <split>/shard-00003.bin       raw uint8 frames, videos back to back, each [T, H, W, 3]
    <split>/shard-00003.json      {"videos": [[name, label, T, H, W, byte offset], ...],
                                   "bad": [[name, reason, detail], ...]}

Shard k holds source items [k * shard_size, (k + 1) * shard_size) of the sorted source list
(bad ones left out). A shard's .bin and .json are written to temporary names and moved into
place with ``os.replace``; only then is the shard added to the manifest (written the same way),
so an interrupted run resumes by redoing exactly the shards not in the manifest. The source list
is fingerprinted: resuming against a changed source is refused.

Disk use is T * H * W * 3 bytes per video: UCF-101 at 64 (full 4:3 frames, ~2.5 M frames)
~40 GB, at 128 ~160 GB (``crop="center"`` ~120 GB); Kinetics-600 train at 64 is ~1.5 TB
unless ``frame_stride=2`` / ``max_frames`` are used. BAIR train at 64: 16 GB.

:class:`PreparedDataset` reads it through per-process memory maps (a small LRU of open shards),
slicing out only the frames of the run: the fast path. ``build_dataset`` returns it for
``dataset="prepared"`` and also when ``data.path`` of a ucf101 / kinetics600 / bair / folder
config points at a prepared folder of that dataset (auto-detected by ``dvdgan_prepared.json``).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dvdgan.data.base import ClipDataset, StringList, append_bad_log
from dvdgan.data.video import (
    BadVideo,
    clip_span,
    crop_offset,
    start_frame,
)
from dvdgan.errors import DataError

META_NAME = "dvdgan_prepared.json"
FORMAT = "dvdgan-prepared"
VERSION = 1
_OPEN_SHARDS = 64  # memory maps kept open per process


def is_prepared_dir(path: str | os.PathLike | None) -> bool:
    return bool(path) and (Path(path) / META_NAME).is_file()  # type: ignore[arg-type]


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path) / META_NAME
    try:
        meta = json.loads(p.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} is not a prepared dataset (no {META_NAME}); run dvdgan prepare") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {p}: {e}") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DataError(f"{p}: unsupported prepared format {meta.get('format')} v{meta.get('version')}")
    return meta


class PreparedDataset(ClipDataset):
    """Clips from a prepared folder: uint8 [frames, R, R, 3], same keys as the raw readers."""

    def __init__(
        self,
        path: str | os.PathLike,
        split: str,
        *,
        frames: int,
        resolution: int,
        frame_stride: int = 1,
        bad_log: str | None = None,
        expect_dataset: str | None = None,
    ) -> None:
        super().__init__(frames, resolution, frame_stride, bad_log)
        from dvdgan.data.readers import canonical_split

        root = Path(path).expanduser()
        if not root.exists():
            raise DataError(f"prepared path {root} does not exist")
        meta = read_meta(root)
        self.meta = meta
        if expect_dataset and meta["dataset"] != expect_dataset:
            raise DataError(f"{root} holds prepared {meta['dataset']}, not {expect_dataset}")
        if meta["resolution"] != resolution:
            raise DataError(
                f"{root} was prepared at {meta['resolution']}x{meta['resolution']}, the model needs "
                f"{resolution}x{resolution}: run dvdgan prepare --resolution {resolution}"
            )
        stored = int(meta["frame_stride"])
        if frame_stride % stored:
            raise DataError(
                f"{root} keeps every {stored}th frame; data.frame_stride={frame_stride} is not a multiple"
            )
        self.step = frame_stride // stored  # stride in stored frames
        sp = canonical_split(split)
        if sp not in meta["splits"] and "all" in meta["splits"]:
            sp = "all"  # a folder without split level: every split sees the same videos
        if sp not in meta["splits"]:
            have = ", ".join(sorted(meta["splits"])) or "none"
            raise DataError(
                f"{root} has no prepared {split!r} split (it has: {have}); run dvdgan prepare --split {split}"
            )
        info = meta["splits"][sp]
        d = root / sp
        try:
            done = json.loads((d / "manifest.json").read_text())["completed"]
        except (OSError, json.JSONDecodeError, KeyError):
            done = {}
        if len(done) < info["num_shards"]:
            raise DataError(
                f"{d} is incomplete ({len(done)} of {info['num_shards']} shards): "
                "re-run dvdgan prepare to finish it"
            )
        self.root = str(root)
        self.split = sp
        self.crop = meta["crop"]
        self.class_names = list(info["class_names"])
        self._shard_files: list[str] = []
        names: list[str] = []
        cols: list[list[int]] = []
        span = clip_span(frames, self.step)
        too_short = 0
        for k in range(info["num_shards"]):
            key = f"{k:05d}"
            try:
                entries = json.loads((d / f"shard-{key}.json").read_text())["videos"]
            except (OSError, json.JSONDecodeError, KeyError) as e:
                raise DataError(f"{d}/shard-{key}.json is unreadable ({e}): re-run dvdgan prepare") from None
            self._shard_files.append(str(d / f"shard-{key}.bin"))
            for name, label, t, h, w, off in entries:
                if t < span:
                    too_short += 1
                    append_bad_log(bad_log, "too_short", f"{root}/{sp}:{name}", f"{t} stored frames < {span}")
                    continue
                names.append(name)
                cols.append([k, label, t, h, w, off])
        if not names:
            raise DataError(f"no prepared video in {d} has the {span} frames a clip needs")
        self.num_too_short = too_short
        self.names = StringList(names)
        a = np.asarray(cols, dtype=np.int64)
        self._shard, self.labels, self._t, self._h, self._w, self._off = (a[:, i].copy() for i in range(6))
        self._cache: OrderedDict[int, np.memmap] = OrderedDict()

    def __len__(self) -> int:
        return len(self.names)

    def _describe(self, index: int) -> str:
        return f"{self.root}/{self.split}:{self.names[index]}"

    def _label(self, index: int) -> int:
        return int(self.labels[index])

    def _shard_map(self, k: int) -> np.memmap:
        cache = self.__dict__.setdefault("_cache", OrderedDict())
        mm = cache.get(k)
        if mm is None:
            mm = np.memmap(self._shard_files[k], dtype=np.uint8, mode="r")
            cache[k] = mm
            if len(cache) > _OPEN_SHARDS:
                cache.popitem(last=False)
        else:
            cache.move_to_end(k)
        return mm

    def video(self, index: int) -> np.ndarray:
        """All stored frames of item ``index``: a read-only uint8 [T, H, W, 3] memory map."""
        t, h, w, off = (int(a[index]) for a in (self._t, self._h, self._w, self._off))
        mm = self._shard_map(int(self._shard[index]))
        n = t * h * w * 3
        if off + n > mm.size:
            raise BadVideo("bad_record", "shard is shorter than its index says")
        return mm[off : off + n].reshape(t, h, w, 3)

    def _load(self, index: int, u_time: float | None, u_crop: float | None) -> torch.Tensor:
        v = self.video(index)
        span = clip_span(self.frames, self.step)
        s = start_frame(v.shape[0], span, u_time)  # B.1: random run of consecutive frames
        run = v[s : s + span : self.step]
        h, w = v.shape[1], v.shape[2]
        off = crop_offset(max(h, w), self.resolution, u_crop)  # B.1: random crop of the long side
        if h > self.resolution:
            run = run[:, off : off + self.resolution]
        elif w > self.resolution:
            run = run[:, :, off : off + self.resolution]
        return torch.from_numpy(np.array(run, order="C"))  # a copy: the memory map is read-only

    def __repr__(self) -> str:
        return (
            f"PreparedDataset({self.meta['dataset']} {self.split}: {len(self)} videos, {self.num_classes} "
            f"classes, {self.frames}x{self.resolution}x{self.resolution}, stride {self.frame_stride}, "
            f"root={self.root})"
        )


__all__ = ["PreparedDataset", "is_prepared_dir", "read_meta", "META_NAME", "FORMAT", "VERSION"]
