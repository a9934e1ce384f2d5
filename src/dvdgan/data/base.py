"""What every real-video dataset shares: keys, reproducible randomness, bad-video handling.

Keys (the contract with the trainer):

- ``ds[(index, sample_seed)]`` (training): every random choice for the item (start of the
  temporal run, crop offset along the longer side; B.1) comes from
  ``numpy.random.default_rng(sample_seed)``, so a batch is reproducible whatever the number of
  loader workers.
- ``ds[index]`` (evaluation): the first run and the centre crop.

Bad videos never crash a run: :meth:`ClipDataset.__getitem__` skips an item that cannot give
a clip and tries the next index with the same random numbers, up to
:data:`MAX_CONSECUTIVE_FAILURES` decode attempts (then :class:`~dvdgan.errors.DataError`). Each
bad item is counted in the process (``bad_count``, ``bad_reasons``), remembered so that it is
not decoded again, and appended to the ``bad_log`` file as one line
``<reason>\\t<path>\\t<detail>``. Lines are short and written with a single ``O_APPEND``
``write``, so the loader's worker processes can share one log. :func:`summarize_bad_log` counts
distinct files per reason (a file hit in several workers or epochs counts once).

Small video folders are decoded once: :meth:`VideoFileDataset.preload` keeps every video's frames
at the model's resolution in memory when they fit a budget (``data.cache_mb``), and clips are then
cut from memory, the same clips as decoding the file would give (tested), with no decoding
process beside training.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dvdgan.data.video import (
    BadVideo,
    clip_span,
    draw_uniforms,
    finish_clip,
    iter_frames,
    probe,
    read_clip,
    resized_size,
    start_frame,
)
from dvdgan.errors import DataError

MAX_CONSECUTIVE_FAILURES = 1000


def parse_key(key: Any) -> tuple[int, int | None]:
    """An int index (evaluation) or an (index, sample_seed) pair (training)."""
    if isinstance(key, torch.Tensor):
        key = key.tolist()
    if isinstance(key, (tuple, list)):
        if len(key) != 2:
            raise TypeError(f"a dataset key is an index or (index, sample_seed), got {key!r}")
        return int(key[0]), int(key[1])
    return int(key), None


def append_bad_log(path: str | os.PathLike | None, reason: str, item: str, detail: str = "") -> None:
    """Append ``reason<TAB>item<TAB>detail`` as one short line (one O_APPEND write)."""
    if not path:
        return
    clean = [" ".join(str(s).split()) for s in (reason, item, detail)]
    clean[2] = clean[2][:200]
    line = ("\t".join(clean) + "\n").encode("utf-8", "replace")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def summarize_bad_log(path: str | os.PathLike) -> dict[str, int]:
    """{reason: number of distinct bad files} from a bad-video log; {} if there is no log."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    seen: dict[str, set[str]] = collections.defaultdict(set)
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0]:
            seen[parts[0]].add(parts[1])
    return {reason: len(items) for reason, items in sorted(seen.items())}


class StringList(Sequence[str]):
    """An immutable list of strings in two numpy arrays.

    A Python list of 400k path strings is touched (refcounts) by every worker process and so
    gets copied page by page after ``fork``; two numpy buffers are not.
    """

    def __init__(self, strings: Sequence[str]) -> None:
        enc = [s.encode("utf-8", "surrogateescape") for s in strings]
        self._offsets = np.zeros(len(enc) + 1, dtype=np.int64)
        if enc:
            np.cumsum([len(e) for e in enc], out=self._offsets[1:])
        self._buf = np.frombuffer(b"".join(enc), dtype=np.uint8) if enc else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        a, b = self._offsets[i], self._offsets[i + 1]
        return self._buf[a:b].tobytes().decode("utf-8", "surrogateescape")


class ClipDataset(torch.utils.data.Dataset):
    """Base class: subclasses implement ``__len__``, ``_load``, ``_label`` and ``_describe``."""

    class_names: list[str]

    def __init__(self, frames: int, resolution: int, frame_stride: int, bad_log: str | None) -> None:
        if frames < 1 or resolution < 1 or frame_stride < 1:
            raise DataError(
                f"frames ({frames}), resolution ({resolution}) and frame_stride ({frame_stride}) must be >= 1"
            )
        self.frames = int(frames)
        self.resolution = int(resolution)
        self.frame_stride = int(frame_stride)
        self.bad_log = str(bad_log) if bad_log else None
        self.bad_count = 0
        self.bad_reasons: collections.Counter[str] = collections.Counter()
        self._bad: set[int] = set()

    # --- subclass interface -------------------------------------------------------------------
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, index: int, u_time: float | None, u_crop: float | None) -> torch.Tensor:
        """uint8 [frames, R, R, 3] for item ``index``; raise BadVideo if impossible."""
        raise NotImplementedError  # pragma: no cover

    def _label(self, index: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _describe(self, index: int) -> str:
        """The file (or file#record) of item ``index``, for the bad-video log."""
        return str(index)

    # --- public -------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __getitem__(self, key: Any) -> tuple[torch.Tensor, int]:
        index, seed = parse_key(key)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} videos")
        index %= n
        if seed is None:
            u_time = u_crop = None
        else:
            u_time, u_crop = draw_uniforms(np.random.default_rng(seed))
        attempts = 0
        last = ""
        for step in range(n):
            i = (index + step) % n  # deterministic substitute: the next index, same randomness
            if i in self._bad:
                continue
            if attempts >= MAX_CONSECUTIVE_FAILURES:
                break
            attempts += 1
            try:
                video = self._load(i, u_time, u_crop)
            except BadVideo as e:
                self._record_bad(i, e.reason, e.detail)
                last = f"{self._describe(i)}: {e}"
                continue
            except Exception as e:  # noqa: BLE001 - bad input must never crash a run
                self._record_bad(i, "error", f"{type(e).__name__}: {e}")
                last = f"{self._describe(i)}: {type(e).__name__}: {e}"
                continue
            return video, self._label(i)
        raise DataError(
            f"no usable video: {attempts} items tried from index {index} all failed "
            f"({len(self._bad)} of {n} known bad)"
            + (f" (see {self.bad_log})" if self.bad_log else "")
            + (f"; last: {last[:200]}" if last else "")
        )

    def _record_bad(self, index: int, reason: str, detail: str) -> None:
        self._bad.add(index)
        self.bad_count += 1
        self.bad_reasons[reason] += 1
        append_bad_log(self.bad_log, reason, self._describe(index), detail)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_cache", None)  # per-process handles (open files, memory maps)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class VideoFileDataset(ClipDataset):
    """Clips from a list of video files decoded with PyAV (:func:`dvdgan.data.video.read_clip`)."""

    def __init__(
        self,
        root: str | os.PathLike,
        rel_paths: Sequence[str],
        labels: Sequence[int],
        class_names: list[str],
        *,
        frames: int,
        resolution: int,
        frame_stride: int,
        bad_log: str | None = None,
        name: str = "videos",
    ) -> None:
        super().__init__(frames, resolution, frame_stride, bad_log)
        if len(rel_paths) != len(labels):
            raise ValueError("rel_paths and labels differ in length")
        self.root = str(root)
        self.paths = StringList(list(rel_paths))
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.name = name
        self._decoded: dict[int, np.ndarray] = {}  # preload(): index -> uint8 [N, h, w, 3]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def preloaded(self) -> int:
        """How many videos :meth:`preload` holds in memory."""
        return len(self._decoded)

    @property
    def fully_preloaded(self) -> bool:
        """Every usable video is in memory: reading a clip decodes nothing."""
        return bool(self._decoded) and len(self._decoded) + len(self._bad) >= len(self)

    def estimated_bytes(self, sample: int = 32) -> float:
        """Decoded size of every video at the clip resolution (shortest side R), estimated from
        the headers (frame count, frame size) of up to ``sample`` evenly spaced files."""
        n = len(self)
        picks = sorted({int(i) for i in np.linspace(0, n - 1, min(sample, n))}) if n else []
        sizes = []
        for i in picks:
            try:
                info = probe(self.path(i))
            except BadVideo:
                continue
            if info.frames and info.width and info.height:
                h, w = resized_size(info.height, info.width, self.resolution)
                sizes.append(info.frames * h * w * 3)
        return float(np.mean(sizes)) * n if sizes else float("inf")

    def preload(self, budget_mb: float, progress: bool = True) -> int:
        """Decode every video once into memory (frames resized to shortest side R, as clips are)
        when the estimated total fits ``budget_mb``; stop adding videos once the real total would
        pass it. Videos that cannot give a clip are recorded as bad, as a training read would.
        Returns the bytes held (0: the dataset does not fit, nothing was decoded)."""
        budget = budget_mb * 2**20
        if budget <= 0 or self.estimated_bytes() > budget:
            return 0
        from tqdm.auto import tqdm

        span, held = clip_span(self.frames, self.frame_stride), 0
        for i in tqdm(range(len(self)), desc="decoding videos into memory", unit="video", disable=not progress,
                      dynamic_ncols=True, mininterval=1.0):
            if i in self._bad or i in self._decoded:
                continue
            try:
                frames = list(iter_frames(self.path(i), self.resolution))
            except BadVideo as e:
                self._record_bad(i, e.reason, e.detail)
                continue
            except Exception as e:  # noqa: BLE001 - bad input must never crash a run
                self._record_bad(i, "error", f"{type(e).__name__}: {e}")
                continue
            if len(frames) < span:
                self._record_bad(i, "too_short", f"{len(frames)} frames < {span} needed")
                continue
            video = np.stack(frames)
            if held + video.nbytes > budget:
                break
            self._decoded[i], held = video, held + video.nbytes
        return held

    def path(self, index: int) -> str:
        return os.path.join(self.root, self.paths[index])

    def _describe(self, index: int) -> str:
        return self.path(index)

    def _label(self, index: int) -> int:
        return int(self.labels[index])

    def _load(self, index: int, u_time: float | None, u_crop: float | None) -> torch.Tensor:
        video = self._decoded.get(index)
        if video is None:
            return read_clip(self.path(index), self.frames, self.frame_stride, self.resolution, u_time, u_crop)
        span = clip_span(self.frames, self.frame_stride)
        s = start_frame(len(video), span, u_time)  # the run read_clip chooses
        return finish_clip(video[s:s + span:self.frame_stride], self.resolution, u_crop)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name}: {len(self)} videos, {self.num_classes} classes, "
            f"{self.frames}x{self.resolution}x{self.resolution}, stride {self.frame_stride}, "
            f"root={self.root})"
        )
