"""BAIR robot pushing (softmotion30_44k) read straight from its TFRecord files.

``path`` is the ``softmotion30_44k`` folder or a folder holding it; a split is
``<path>/<split>/*.tfrecords`` (``traj_<a>_to_<b>.tfrecords``, 256 sequences each; the test
split is the 256 videos the paper evaluates on, 4.2). Each record is a ``tf.train.Example``
with raw RGB frames (64x64x3 uint8, HWC) under ``{t}/<camera>/encoded`` for t = 0..29;
``camera`` is ``data.bair_camera`` (default ``image_aux1``, the stream VideoGPT and
tensor2tensor use). Single class ``robot_pushing``.

At construction only the file names are read: a file named ``traj_<a>_to_<b>`` holds
``b - a + 1`` records, other names are scanned (12-byte headers only). A file's record offsets
are scanned the first time one of its records is read, once per process. Both crc32c checks
of TFRecord are verified (header and payload, :mod:`dvdgan.data.tfrecord`); a record that fails
them, does not parse, lacks the camera or is shorter than the clip is a bad item
(``bad_record`` / ``too_short``) and is skipped like a bad video. Frames go through the same
run / resize / crop steps as decoded videos (B.1), so ``resolution`` other than 64 works.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from dvdgan.data.base import ClipDataset
from dvdgan.data.readers import canonical_split
from dvdgan.data.tfrecord import RecordError, parse_example, read_record, scan_records
from dvdgan.data.video import BadVideo, clip_span, finish_clip, start_frame
from dvdgan.errors import DataError

BAIR_CLASS = "robot_pushing"
BAIR_SIZE = 64
BAIR_STEPS = 30
_NAME = re.compile(r"traj_(\d+)_to_(\d+)\.tfrecords?$")


def find_bair_split(path: str | os.PathLike, split: str) -> list[Path]:
    """The TFRecord files of ``split`` (sorted by first trajectory index)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"BAIR path {root} does not exist")
    split = canonical_split(split)
    for base in (
        root,
        root / "softmotion30_44k",
        root / "bair_robot_pushing_dataset_v0" / "softmotion30_44k",
    ):
        d = base / split
        if d.is_dir():
            files = [p for p in d.iterdir() if p.name.endswith((".tfrecords", ".tfrecord"))]
            if files:
                return sorted(files, key=_file_sort_key)
    raise DataError(
        f"no BAIR {split} TFRecords under {root} (expected softmotion30_44k/{split}/traj_*.tfrecords)"
    )


def _file_sort_key(p: Path) -> tuple[int, str]:
    m = _NAME.search(p.name)
    return (int(m.group(1)) if m else 1 << 62, p.name)


def declared_count(p: Path) -> int:
    """Number of videos in a BAIR TFRecord file: from its name (``traj_A_to_B``) or by scanning."""
    m = _NAME.search(p.name)
    if m and int(m.group(2)) >= int(m.group(1)):
        return int(m.group(2)) - int(m.group(1)) + 1
    return len(scan_records(p))


def decode_bair_frames(payload: bytes, camera: str) -> np.ndarray:
    """All frames of one BAIR record: uint8 [T, 64, 64, 3]. Raises RecordError."""
    ex = parse_example(payload, keys={f"{t}/{camera}/encoded" for t in range(BAIR_STEPS * 4)})
    frames = []
    for t in range(len(ex)):
        v = ex.get(f"{t}/{camera}/encoded")
        if not v:
            break
        raw = v[0] if isinstance(v, list) else bytes(v)
        if len(raw) != BAIR_SIZE * BAIR_SIZE * 3:
            raise RecordError(f"frame {t}: {len(raw)} bytes, expected 64x64x3 raw RGB")
        frames.append(np.frombuffer(raw, dtype=np.uint8).reshape(BAIR_SIZE, BAIR_SIZE, 3))
    if not frames:
        raise RecordError(f"no {camera} frames (keys like 0/{camera}/encoded)")
    return np.stack(frames)


class BairDataset(ClipDataset):
    """BAIR sequences as clips: uint8 [frames, R, R, 3], label 0."""

    def __init__(
        self,
        path: str | os.PathLike,
        split: str,
        *,
        frames: int,
        resolution: int,
        frame_stride: int = 1,
        camera: str = "image_aux1",
        bad_log: str | None = None,
        verify_crc: bool = True,
    ) -> None:
        super().__init__(frames, resolution, frame_stride, bad_log)
        if clip_span(frames, frame_stride) > BAIR_STEPS:
            raise DataError(
                f"BAIR sequences have {BAIR_STEPS} frames; {frames} frames at stride {frame_stride} need "
                f"{clip_span(frames, frame_stride)}"
            )
        self.files = [str(p) for p in find_bair_split(path, split)]
        counts = np.array([declared_count(Path(p)) for p in self.files], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        if self._starts[-1] == 0:
            raise DataError(f"the BAIR {split} TFRecords under {path} hold no records")
        self.camera = camera
        self.verify_crc = verify_crc
        self.class_names = [BAIR_CLASS]
        self._cache: dict[int, list[tuple[int, int]]] = {}

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(file number, record number) of item ``index``."""
        f = int(np.searchsorted(self._starts, index, side="right")) - 1
        return f, index - int(self._starts[f])

    def _describe(self, index: int) -> str:
        f, r = self.locate(index)
        return f"{self.files[f]}#{r}"

    def _label(self, index: int) -> int:
        return 0

    def sequence(self, index: int) -> np.ndarray:
        """All frames of sequence ``index``: uint8 [T, 64, 64, 3]. Raises BadVideo."""
        f, r = self.locate(index)
        cache = self.__dict__.setdefault("_cache", {})
        if f not in cache:
            try:
                cache[f] = scan_records(self.files[f])
            except OSError as e:
                raise BadVideo("unreadable", e.strerror or str(e)) from None
        offsets = cache[f]
        if r >= len(offsets):
            raise BadVideo("bad_record", f"file holds {len(offsets)} readable records")
        try:
            return decode_bair_frames(
                read_record(self.files[f], *offsets[r], verify=self.verify_crc), self.camera
            )
        except RecordError as e:
            raise BadVideo("bad_record", str(e)) from None
        except OSError as e:
            raise BadVideo("unreadable", e.strerror or str(e)) from None

    def _load(self, index: int, u_time: float | None, u_crop: float | None) -> torch.Tensor:
        seq = self.sequence(index)
        span = clip_span(self.frames, self.frame_stride)
        if len(seq) < span:
            raise BadVideo("too_short", f"{len(seq)} frames < {span} needed")
        s = start_frame(len(seq), span, u_time)
        return finish_clip(seq[s : s + span : self.frame_stride], self.resolution, u_crop)
