"""Writing the prepared format (``dvdgan prepare``); :mod:`dvdgan.data.prepared` reads it.

``prepare()`` (``dvdgan prepare``) decodes each source video once with PyAV, resizes its
shortest side to R with the same kernel as the raw readers
(:func:`dvdgan.data.video.iter_frames` with the resolution, as ``read_clip`` decodes; BAIR
frames: :func:`~dvdgan.data.video.resize_short_side`) and stores the *whole resized frame*
(``crop="full"``, default), so training still takes its random crop along the longer side
(B.1) and gets pixel-identical clips to the raw reader for the same key. ``crop="center"``
stores only the centre R x R square (25 % less disk for 4:3 video; crops are then always
centred). ``frame_stride`` > 1 keeps every k-th frame (the dataset's ``data.frame_stride`` must
then be a multiple of it); ``max_frames`` keeps at most that many stored frames per video.


The layout and the reader are described in :mod:`dvdgan.data.prepared`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dvdgan.data.base import append_bad_log
from dvdgan.data.prepared import FORMAT, META_NAME, VERSION, read_meta
from dvdgan.data.video import (
    RESIZE_METHOD,
    BadVideo,
    crop_long_side,
    crop_offset,
    iter_frames,
    resize_short_side,
)
from dvdgan.errors import DataError

SOURCE_DATASETS = ("ucf101", "kinetics600", "bair", "folder")
DEFAULT_SHARD_SIZE = 128
_RESIZE_CHUNK = 32  # frames resized at a time while preparing


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, json.dumps(obj, separators=(",", ":")).encode())



# Sources: what prepare() iterates over
# ----------------------------------------------------------------------------------------------


@dataclass
class _Source:
    """One split of a source dataset: item names, labels and how to read an item's frames."""

    kind: str  # "files" | "bair"
    names: list[str]  # relative paths, or "<tfrecord file>#<record>"
    labels: list[int]
    class_names: list[str]
    root: str
    camera: str = "image_aux1"

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for n, lab in zip(self.names, self.labels):
            h.update(f"{n}\0{lab}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()


def _list_source(
    dataset: str, src: str, split: str, *, ucf_split: int, kinetics_csv: str | None, bair_camera: str
) -> _Source:
    from dvdgan.data import readers

    if dataset == "bair":
        from dvdgan.data.bair import declared_count, find_bair_split

        files = find_bair_split(src, split)
        names = [f"{f.name}#{r}" for f in files for r in range(declared_count(f))]
        return _Source("bair", names, [0] * len(names), ["robot_pushing"], str(files[0].parent), bair_camera)
    if dataset == "ucf101":
        fl = readers.list_ucf101(src, split, ucf_split)
    elif dataset == "kinetics600":
        fl = readers.list_kinetics(src, split, kinetics_csv)
    elif dataset == "folder":
        fl = readers.list_folder(src, split)
    else:
        raise DataError(f"prepare: unknown dataset {dataset!r} (one of {', '.join(SOURCE_DATASETS)})")
    return _Source("files", list(fl.rel_paths), list(fl.labels), fl.class_names, fl.root)


def _splits_for(dataset: str, src: str, split: str) -> list[str]:
    from dvdgan.data.readers import SPLIT_ALIASES, canonical_split, class_dirs, split_dir

    if split != "all":
        return [canonical_split(split)]
    if dataset in ("ucf101", "bair"):
        return ["train", "test"]
    if dataset == "kinetics600":
        return ["train", "val", "test"]
    root = Path(src)
    found = [s for s in SPLIT_ALIASES if (d := split_dir(root, s)) is not None and class_dirs(d)]
    return found or ["all"]


# ----------------------------------------------------------------------------------------------
# Writing one shard (runs in worker processes)
# ----------------------------------------------------------------------------------------------


@dataclass
class _ShardJob:
    split_dir: str
    shard: int
    kind: str
    root: str
    camera: str
    names: list[str]
    labels: list[int]
    resolution: int
    crop: str
    frame_stride: int
    max_frames: int | None
    min_frames: int
    bad_log: str


def _frames_of(job: _ShardJob, name: str):
    """Iterator of RGB uint8 [H, W, 3] frames of one source item."""
    if job.kind == "bair":
        from dvdgan.data.bair import decode_bair_frames
        from dvdgan.data.tfrecord import RecordError, read_record

        fname, rec = name.rsplit("#", 1)
        path = os.path.join(job.root, fname)
        offsets = _scan_records_cached(path)
        if int(rec) >= len(offsets):
            raise BadVideo("bad_record", f"file holds {len(offsets)} readable records")
        try:
            return iter(decode_bair_frames(read_record(path, *offsets[int(rec)]), job.camera))
        except RecordError as e:
            raise BadVideo("bad_record", str(e)) from None
    return iter_frames(os.path.join(job.root, name), job.resolution)  # scaled as read_clip scales


@functools.lru_cache(maxsize=4)
def _scan_records_cached(path: str) -> list[tuple[int, int]]:
    from dvdgan.data.tfrecord import scan_records

    return scan_records(path)


def _write_video(job: _ShardJob, name: str, f) -> tuple[int, int, int]:
    """Decode, subsample, resize and append one video to file ``f``: (T, H, W)."""
    t = h = w = 0
    chunk: list[np.ndarray] = []

    def flush() -> None:
        nonlocal h, w
        x = resize_short_side(np.stack(chunk), job.resolution)
        if job.crop == "center":
            x = crop_long_side(
                x, job.resolution, crop_offset(max(x.shape[1], x.shape[2]), job.resolution, None)
            )
        x = np.ascontiguousarray(x.numpy())
        if h and (h, w) != (x.shape[1], x.shape[2]):
            raise BadVideo("decode_error", "frame size changes mid-video")
        h, w = int(x.shape[1]), int(x.shape[2])
        f.write(x.tobytes())
        chunk.clear()

    for i, frame in enumerate(_frames_of(job, name)):
        if i % job.frame_stride:
            continue
        if chunk and frame.shape != chunk[0].shape:
            flush()
        chunk.append(frame)
        t += 1
        if len(chunk) == _RESIZE_CHUNK:
            flush()
        if job.max_frames and t >= job.max_frames:
            break
    if chunk:
        flush()
    return t, h, w


def _run_shard(job: _ShardJob, tick: Callable[[int], object] | None = None) -> dict[str, Any]:
    """Write shard ``job.shard``; ``tick(1)`` after each video when run in-process."""
    torch.set_num_threads(1)
    d = Path(job.split_dir)
    final = d / f"shard-{job.shard:05d}.bin"
    tmp = d / f".shard-{job.shard:05d}.bin.tmp{os.getpid()}"
    videos: list[list[Any]] = []
    bad: list[list[str]] = []
    frames_total = 0
    with open(tmp, "wb") as f:
        for name, label in zip(job.names, job.labels):
            start = f.tell()
            try:
                t, h, w = _write_video(job, name, f)
                if t < max(job.min_frames, 1):
                    raise BadVideo(
                        "too_short" if t else "decode_error", f"{t} frames < {max(job.min_frames, 1)}"
                    )
            except BadVideo as e:
                f.seek(start)
                f.truncate()
                bad.append([name, e.reason, e.detail[:200]])
                continue
            except Exception as e:  # noqa: BLE001 - one bad video must not stop a long prepare
                f.seek(start)
                f.truncate()
                bad.append([name, "error", f"{type(e).__name__}: {e}"[:200]])
                continue
            finally:
                if tick is not None:
                    tick(1)
            videos.append([name, int(label), t, h, w, start])
            frames_total += t
        nbytes = f.tell()
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _write_json(d / f"shard-{job.shard:05d}.json", {"videos": videos, "bad": bad})
    return {
        "shard": job.shard,
        "videos": len(videos),
        "frames": frames_total,
        "bytes": nbytes,
        "bad": len(bad),
        "bad_reasons": dict(Counter(b[1] for b in bad)),
        "items": len(job.names),
        "bad_items": [[os.path.join(job.root, b[0]), b[1], b[2]] for b in bad],  # for bad_videos.log
    }


# ----------------------------------------------------------------------------------------------
# prepare()
# ----------------------------------------------------------------------------------------------


def prepare(
    dataset_name: str,
    src: str | os.PathLike,
    out: str | os.PathLike,
    resolution: int,
    *,
    split: str = "all",
    ucf_split: int = 1,
    kinetics_csv: str | None = None,
    bair_camera: str = "image_aux1",
    crop: str = "full",
    frame_stride: int = 1,
    max_frames: int | None = None,
    min_frames: int = 1,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode ``dataset_name`` at ``src`` once into the prepared format at ``out``.

    Resumable: finished shards (listed in ``<split>/manifest.json``) are not redone. Returns a
    summary {split: {videos, frames, bytes, bad, bad_reasons, shards, skipped_shards}} and
    prints one (plus a tqdm bar) when ``progress``. Raises DataError on unusable input.
    """
    if dataset_name not in SOURCE_DATASETS:
        raise DataError(f"prepare: unknown dataset {dataset_name!r} (one of {', '.join(SOURCE_DATASETS)})")
    if resolution < 1 or frame_stride < 1 or shard_size < 1:
        raise DataError("prepare: resolution, frame_stride and shard_size must be >= 1")
    if crop not in ("full", "center"):
        raise DataError(f"prepare: crop must be 'full' or 'center', not {crop!r}")
    src_p = Path(src).expanduser()
    if not src_p.exists():
        raise DataError(f"source path {src_p} does not exist")
    out_p = Path(out).expanduser()
    if out_p.exists() and not out_p.is_dir():
        raise DataError(f"output path {out_p} is not a folder")
    out_p.mkdir(parents=True, exist_ok=True)
    settings = {
        "dataset": dataset_name,
        "resolution": int(resolution),
        "crop": crop,
        "frame_stride": int(frame_stride),
        "max_frames": max_frames,
        "min_frames": int(min_frames),
    }
    if (out_p / META_NAME).exists():
        meta = read_meta(out_p)
        diff = [k for k, v in settings.items() if meta.get(k) != v]
        if diff:
            raise DataError(
                f"{out_p} was prepared with {diff[0]}={meta.get(diff[0])!r}, not {settings[diff[0]]!r}; "
                "use another --out"
            )
    else:
        meta = {
            "format": FORMAT,
            "version": VERSION,
            **settings,
            "resize": RESIZE_METHOD,
            "source": str(src_p.resolve()),
            "splits": {},
        }
    bad_log = str(out_p / "bad_videos.log")
    say = print if progress else (lambda *a, **k: None)

    splits = _splits_for(dataset_name, str(src_p), split)
    sources: dict[str, _Source] = {}
    for sp in splits:
        try:
            sources[sp] = _list_source(
                dataset_name,
                str(src_p),
                sp,
                ucf_split=ucf_split,
                kinetics_csv=kinetics_csv,
                bair_camera=bair_camera,
            )
        except DataError as e:
            if split != "all" or dataset_name != "kinetics600":
                raise
            say(f"skipping split {sp}: {e}")
    if not sources:
        raise DataError(f"no split of {src_p} could be listed")

    summary: dict[str, Any] = {}
    for sp, source in sources.items():
        summary[sp] = _prepare_split(
            out_p, meta, sp, source, settings, shard_size, workers, bad_log, progress
        )
    s_all = {k: sum(v[k] for v in summary.values()) for k in ("videos", "frames", "bytes", "bad")}
    reasons = Counter()
    for v in summary.values():
        reasons.update(v["bad_reasons"])
    say(
        f"prepared {s_all['videos']} videos ({s_all['frames']} frames, {s_all['bytes'] / 2**30:.2f} GiB) "
        f"into {out_p} [" + ", ".join(f"{k}: {v['videos']}" for k, v in summary.items()) + "]"
    )
    if s_all["videos"] == 0:
        detail = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())) or "no items"
        raise DataError(f"prepare: no usable video in {src_p} ({s_all['bad']} skipped: {detail}; see {bad_log})")
    if s_all["bad"]:
        say(
            f"skipped {s_all['bad']} bad videos: "
            + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
            + f" (see {bad_log})"
        )
    return summary


def _logged_items(bad_log: str) -> set[tuple[str, str]]:
    """(reason, item) of the lines already in bad_videos.log (a resumed prepare adds no repeats)."""
    try:
        text = Path(bad_log).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return set()
    return {(p[0], p[1]) for p in (ln.split("\t") for ln in text.splitlines()) if len(p) >= 2}


def _prepare_split(
    out_p: Path,
    meta: dict[str, Any],
    split: str,
    source: _Source,
    settings: dict[str, Any],
    shard_size: int,
    workers: int,
    bad_log: str,
    progress: bool,
) -> dict[str, Any]:
    from tqdm import tqdm

    n = len(source.names)
    fp = source.fingerprint()
    prev = meta["splits"].get(split)
    if prev is not None:
        if prev["fingerprint"] != fp:
            raise DataError(
                f"the {split} source list changed since {out_p} was partly prepared "
                f"({prev['num_items']} -> {n} items); use another --out"
            )
        shard_size = int(prev["shard_size"])
    num_shards = (n + shard_size - 1) // shard_size
    meta["splits"][split] = {
        "num_items": n,
        "shard_size": shard_size,
        "num_shards": num_shards,
        "fingerprint": fp,
        "class_names": source.class_names,
    }
    _write_json(out_p / META_NAME, meta)
    d = out_p / split
    d.mkdir(exist_ok=True)
    for stale in d.glob(".shard-*.tmp*"):  # left by an interrupted run
        stale.unlink(missing_ok=True)
    man_path = d / "manifest.json"
    manifest = json.loads(man_path.read_text()) if man_path.exists() else {"completed": {}}
    done = manifest["completed"]
    todo = [k for k in range(num_shards) if f"{k:05d}" not in done]
    jobs = [
        _ShardJob(
            str(d),
            k,
            source.kind,
            source.root,
            source.camera,
            source.names[k * shard_size : (k + 1) * shard_size],
            source.labels[k * shard_size : (k + 1) * shard_size],
            settings["resolution"],
            settings["crop"],
            settings["frame_stride"],
            settings["max_frames"],
            settings["min_frames"],
            bad_log,
        )
        for k in todo
    ]
    items_done = sum(v["items"] for v in done.values())
    bar = tqdm(
        total=n,
        initial=items_done,
        desc=f"prepare {split}",
        unit="video",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )

    logged = _logged_items(bad_log)

    def finish(res: dict[str, Any]) -> None:
        # the log first, then the manifest: a shard redone after a kill in between logs nothing twice
        for item, reason, detail in res["bad_items"]:
            if (reason, " ".join(item.split())) not in logged:
                append_bad_log(bad_log, reason, item, detail)
                logged.add((reason, " ".join(item.split())))
        done[f"{res['shard']:05d}"] = {
            k: res[k] for k in ("videos", "frames", "bytes", "bad", "bad_reasons", "items")
        }
        _write_json(man_path, manifest)

    t0 = time.time()
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                finish(_run_shard(job, bar.update))
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(min(workers, len(jobs))) as pool:
                for res in pool.imap_unordered(_run_shard, jobs):
                    finish(res)
                    bar.update(res["items"])
    finally:
        bar.close()
    totals = {k: sum(v[k] for v in done.values()) for k in ("videos", "frames", "bytes", "bad")}
    reasons: Counter[str] = Counter()
    for v in done.values():
        reasons.update(v["bad_reasons"])
    return {
        **totals,
        "bad_reasons": dict(reasons),
        "shards": num_shards,
        "skipped_shards": num_shards - len(jobs),
        "seconds": time.time() - t0,
    }


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
__all__ = ["prepare", "DEFAULT_SHARD_SIZE", "SOURCE_DATASETS"]
