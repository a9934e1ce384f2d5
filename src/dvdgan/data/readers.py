"""Listing the videos of UCF-101, Kinetics-600 and generic class folders.

Every lister returns a :class:`FileList` (root, relative paths, 0-based labels, class names)
from names alone: no file is opened at construction, so a 400k-clip Kinetics tree lists in
seconds. :func:`open_file_list` wraps one in a :class:`~dvdgan.data.base.VideoFileDataset`.
The on-disk variants accepted are the published ones (the project notes' DATASETS.md):

**UCF-101** (``path`` = the ``UCF-101`` folder, the flat ``UCF101`` mirror, or a folder holding
either). Split files ``ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt`` are looked for
inside ``path``, beside it, and under ``UCF101TrainTestSplits-RecognitionTask/``. Lines are
stripped (CRLF or LF). The label comes from the folder part of a list entry (``Class/v_...``),
matched case-insensitively against ``classInd`` (the ``HandstandPushups`` folder holds
``v_HandStandPushups_*`` files); entries without a folder part take the class from the file
name (``v_<Class>_gXX_cYY``). Files are found by case-insensitive basename anywhere under the
video root, which covers class folders and the flat mirror alike. Splits: ``train``, ``test``,
``all`` (train + test of ``ucf_split``). Listed files that are missing are logged (reason
``missing``) and left out; a class folder missing from a class-folder tree is an error.

**Kinetics-600** (``path`` = the clip tree, with or without a ``train/ val/ test/`` level; class
folders optional). Annotations: ``data.kinetics_csv`` (a CSV file, a folder of CSVs, or a
pattern with ``{split}``), else a ``*<split>.csv`` in ``path``, ``path/annotations``, the parent
folder or ``parent/annotations``. CSV variants: header ``label,youtube_id,time_start,time_end,
split`` with or without a trailing ``is_cc``, quoted or unquoted labels, a test CSV without the
label column; rows are filtered by the ``split`` column (``val``/``valid``/``validate`` are the
same split). Clip files ``<youtube_id>_<start:06d>_<end:06d>.<ext>``; the YouTube id is
``name[:11]`` (it may contain ``_`` or start with ``-``), a bare ``<youtube_id>.<ext>`` also
matches when the id is unique in the CSV. ``class_names`` are the sorted CSV labels (for an
unlabelled test CSV: those of a labelled CSV beside it). Labels come from the CSV; for an
unlabelled CSV from the class folder, matched to the labels after normalising both (lower case,
only letters and digits kept: verbatim, torchvision and mmaction2 folder names all match); a
clip with no label at all gets ``-1``.

**Generic folder** (``path/<class>/**/<video>`` or ``path/<split>/<class>/...``): any container
PyAV opens, by extension (:data:`~dvdgan.data.video.VIDEO_EXTENSIONS`). Class names are the
sorted class-folder names (the union over the split folders when there is a split level).
Without a split level every split sees the same videos.
"""

from __future__ import annotations

import csv
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dvdgan.data.base import VideoFileDataset, append_bad_log
from dvdgan.data.video import VIDEO_EXTENSIONS
from dvdgan.errors import DataError

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training", "trainval"),
    "val": ("val", "valid", "validate", "validation"),
    "test": ("test", "testing"),
}


def canonical_split(split: str) -> str:
    s = split.strip().lower()
    for canon, aliases in SPLIT_ALIASES.items():
        if s in aliases:
            return canon
    return s


@dataclass
class FileList:
    """Videos of one split: paths relative to ``root``, 0-based labels, class names."""

    root: str
    rel_paths: list[str]
    labels: list[int]
    class_names: list[str]
    name: str
    missing: list[str] = field(default_factory=list)  # listed but not on disk

    def __len__(self) -> int:
        return len(self.rel_paths)


def open_file_list(
    fl: FileList, *, frames: int, resolution: int, frame_stride: int, bad_log: str | None = None
) -> VideoFileDataset:
    """A dataset over a :class:`FileList`; listed-but-missing files go to ``bad_log`` once."""
    for p in fl.missing:
        append_bad_log(bad_log, "missing", p, "listed but not found")
    return VideoFileDataset(
        fl.root,
        fl.rel_paths,
        fl.labels,
        fl.class_names,
        frames=frames,
        resolution=resolution,
        frame_stride=frame_stride,
        bad_log=bad_log,
        name=fl.name,
    )


def _require_dir(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{what} path {p} does not exist")
    if not p.is_dir():
        raise DataError(f"{what} path {p} is not a folder")
    return p


def _is_video(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def _walk_videos(root: Path, seen: set[str] | None = None) -> list[str]:
    """Relative paths of every video file under ``root`` (sorted, hidden entries skipped).
    Symbolic links to folders are followed, but every real folder is read once: a link loop
    (``ln -s . loop``) or two links to one folder add nothing. ``seen``: real paths already
    read (shared between calls to read each folder once across several roots)."""
    seen = set() if seen is None else seen
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        for f in sorted(filenames):
            if _is_video(f):
                out.append(f if rel == "." else os.path.join(rel, f))
    return out


def _read_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


# ----------------------------------------------------------------------------------------------
# UCF-101
# ----------------------------------------------------------------------------------------------


def _find_ucf_lists(root: Path) -> Path | None:
    for base in (root, root.parent, root.parent.parent):
        for sub in ("ucfTrainTestlist", "UCF101TrainTestSplits-RecognitionTask/ucfTrainTestlist"):
            cand = base / sub
            if (cand / "classInd.txt").is_file():
                return cand
    return None


def _find_ucf_video_root(root: Path) -> Path:
    for cand in (root / "UCF-101", root / "UCF101", root / "ucf101"):
        if cand.is_dir():
            return cand
    return root


def _ucf_class_from_name(fname: str) -> str:
    stem = os.path.splitext(os.path.basename(fname))[0]
    if stem.lower().startswith("v_"):
        stem = stem[2:]
    parts = stem.rsplit("_", 2)  # <Class>_gXX_cYY
    return parts[0] if len(parts) == 3 else stem


def list_ucf101(path: str | os.PathLike, split: str = "train", ucf_split: int = 1) -> FileList:
    """UCF-101 ``split`` (train / test / all) of official split ``ucf_split`` (1, 2 or 3)."""
    root = _require_dir(path, "UCF-101")
    if ucf_split not in (1, 2, 3):
        raise DataError(f"data.ucf_split must be 1, 2 or 3, got {ucf_split}")
    split = canonical_split(split)
    if split not in ("train", "test", "all"):
        raise DataError(f"UCF-101 has splits train, test and all, not {split!r}")
    lists = _find_ucf_lists(root)
    if lists is None:
        raise DataError(
            f"UCF-101 split files not found: no ucfTrainTestlist/classInd.txt in or beside {root}"
        )
    classes: list[str] = []
    for ln in _read_lines(lists / "classInd.txt"):
        parts = ln.split()
        if len(parts) >= 2:
            classes.append(parts[1])
    if not classes:
        raise DataError(f"{lists / 'classInd.txt'} lists no classes")
    by_lower = {c.lower(): i for i, c in enumerate(classes)}

    entries: list[str] = []
    for kind in ["train", "test"] if split == "all" else [split]:
        f = lists / f"{kind}list0{ucf_split}.txt"
        if not f.is_file():
            raise DataError(f"UCF-101 split file {f} not found")
        entries += [ln.split()[0].replace("\\", "/") for ln in _read_lines(f)]

    vroot = _find_ucf_video_root(root)
    on_disk = _walk_videos(vroot)
    if not on_disk:
        raise DataError(
            f"no UCF-101 videos under {vroot} (expected UCF-101/<Class>/v_*.avi or UCF101/v_*.avi)"
        )
    by_base = {os.path.basename(p).lower(): p for p in on_disk}
    nested = any(os.sep in p for p in on_disk)
    if nested:
        present = {c.lower() for c in class_dirs(vroot)}
        absent = [c for c in classes if c.lower() not in present]
        if absent:
            raise DataError(
                f"UCF-101 class folder {absent[0]!r} missing under {vroot} "
                f"({len(absent)} of {len(classes)} missing)"
            )

    rel, labels, missing = [], [], []
    for e in entries:
        folder, _, fname = e.rpartition("/")
        cls = folder.split("/")[-1] if folder else _ucf_class_from_name(fname)
        label = by_lower.get(cls.lower())
        if label is None:
            label = by_lower.get(_ucf_class_from_name(fname).lower())
        if label is None:
            raise DataError(f"UCF-101 list entry {e!r}: class {cls!r} is not in classInd.txt")
        p = by_base.get(fname.lower())
        if p is None:
            missing.append(str(vroot / e))
            continue
        rel.append(p)
        labels.append(label)
    if not rel:
        raise DataError(
            f"none of the {len(entries)} UCF-101 {split} videos of split {ucf_split} is under {vroot}"
        )
    return FileList(str(vroot), rel, labels, classes, f"ucf101/{split}{ucf_split}", missing)


# ----------------------------------------------------------------------------------------------
# Kinetics-600
# ----------------------------------------------------------------------------------------------


def normalise_label(s: str) -> str:
    """Folder name or CSV label -> lower-case letters and digits only (matches all variants)."""
    return re.sub(r"[^0-9a-z]+", "", s.lower())


@dataclass
class KineticsRow:
    label: str | None
    youtube_id: str
    time_start: int
    time_end: int
    split: str | None


def read_kinetics_csv(path: str | os.PathLike) -> list[KineticsRow]:
    """Rows of a Kinetics annotations CSV (any of the published variants)."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DataError(f"cannot read Kinetics CSV {p}: {e.strerror}") from None
    if not rows:
        raise DataError(f"Kinetics CSV {p} is empty")
    header = [h.strip().lower() for h in rows[0]]
    if "youtube_id" not in header:
        raise DataError(f"Kinetics CSV {p} has no youtube_id column (header: {','.join(rows[0])[:100]})")
    col = {h: i for i, h in enumerate(header)}
    out = []
    for r in rows[1:]:
        if not r or all(not x.strip() for x in r):
            continue
        try:
            yid = r[col["youtube_id"]].strip()
            t0 = int(float(r[col["time_start"]])) if "time_start" in col else 0
            t1 = int(float(r[col["time_end"]])) if "time_end" in col else 0
        except (IndexError, ValueError):
            continue  # a malformed row: skip it
        label = r[col["label"]].strip() if "label" in col and col["label"] < len(r) else None
        sp = r[col["split"]].strip() if "split" in col and col["split"] < len(r) else None
        out.append(KineticsRow(label or None, yid, t0, t1, canonical_split(sp) if sp else None))
    return out


def _csv_split(path: Path) -> str | None:
    tokens = [t for t in re.split(r"[^0-9a-z]+", path.stem.lower()) if t]
    return canonical_split(tokens[-1]) if tokens else None


def _find_kinetics_csv(root: Path, split: str, hint: str | None) -> Path:
    if hint:
        if "{split}" in hint:
            for alias in SPLIT_ALIASES.get(split, (split,)):
                cand = Path(hint.format(split=alias)).expanduser()
                if cand.is_file():
                    return cand
            raise DataError(f"no Kinetics CSV for split {split!r} matches data.kinetics_csv={hint}")
        h = Path(hint).expanduser()
        if h.is_file():
            return h
        if not h.is_dir():
            raise DataError(f"data.kinetics_csv={hint} does not exist")
        dirs = [h]
    else:
        dirs = [root, root / "annotations", root.parent, root.parent / "annotations"]
    found = []
    for d in dirs:
        if d.is_dir():
            found += sorted(p for p in d.glob("*.csv") if _csv_split(p) == split)
        if found:
            break
    if not found:
        where = ", ".join(str(d) for d in dirs)
        raise DataError(
            f"no Kinetics annotations CSV for split {split!r} (looked for *{split}.csv in {where}); "
            "set data.kinetics_csv"
        )
    found.sort(key=lambda p: ("600" not in p.name, p.name))
    return found[0]


def split_dir(root: Path, split: str) -> Path | None:
    """The sub-folder of ``root`` holding ``split`` under any of its usual spellings, or None."""
    for alias in SPLIT_ALIASES.get(split, (split,)):
        for name in (alias, alias.capitalize(), alias.upper()):
            if (root / name).is_dir():
                return root / name
    return None


def _parse_clip_name(fname: str) -> tuple[str, int | None, int | None]:
    stem = os.path.splitext(os.path.basename(fname))[0]
    yid = stem[:11]  # YouTube ids are 11 characters and may contain '_' or start with '-'
    rest = stem[12:].split("_")
    if len(stem) > 11 and stem[11] == "_" and len(rest) >= 2:
        try:
            return yid, int(rest[0]), int(rest[1])
        except ValueError:
            pass
    return yid, None, None


def list_kinetics(path: str | os.PathLike, split: str = "train", csv_path: str | None = None) -> FileList:
    """Kinetics clips of ``split`` that are both on disk and in the annotations CSV."""
    root = _require_dir(path, "Kinetics")
    split = canonical_split(split)
    csv_file = _find_kinetics_csv(root, split, csv_path)
    rows = read_kinetics_csv(csv_file)
    if any(r.split for r in rows):
        wanted = [r for r in rows if r.split == split]
        if not wanted and rows:
            have = sorted({r.split or "?" for r in rows})
            raise DataError(
                f"Kinetics CSV {csv_file} has no rows of split {split!r} (it has: {', '.join(have)})"
            )
        rows = wanted
    labelled = any(r.label for r in rows)
    if labelled:
        class_names = sorted({r.label for r in rows if r.label})
    else:  # an unlabelled (test) CSV: take the class list from a labelled CSV beside it
        class_names = []
        for other in sorted(csv_file.parent.glob("*.csv")):
            if other != csv_file:
                try:
                    labs = {r.label for r in read_kinetics_csv(other) if r.label}
                except DataError:
                    continue
                if labs:
                    class_names = sorted(labs)
                    break
    norm: dict[str, int | None] = {}
    for i, c in enumerate(class_names):
        k = normalise_label(c)
        norm[k] = None if k in norm else i  # ambiguous after normalising: no folder mapping
    index_of = {c: i for i, c in enumerate(class_names)}

    by_key: dict[tuple[str, int, int], KineticsRow] = {}
    by_id: dict[str, list[KineticsRow]] = {}
    for r in rows:
        by_key.setdefault((r.youtube_id, r.time_start, r.time_end), r)
        by_id.setdefault(r.youtube_id, []).append(r)

    vroot = split_dir(root, split) or root
    files = _walk_videos(vroot)
    if not files:
        raise DataError(f"no video files under {vroot}")
    rel, labels, used = [], [], set()
    for f in files:
        yid, t0, t1 = _parse_clip_name(f)
        row = by_key.get((yid, t0, t1)) if t0 is not None else None
        if row is None:
            cands = by_id.get(yid, [])
            row = cands[0] if t0 is None and len(cands) == 1 else None  # bare <youtube_id>.mp4
        if row is None:
            continue  # not in this split's annotations
        key = (row.youtube_id, row.time_start, row.time_end)
        if key in used:
            continue  # the same clip twice on disk: keep the first
        used.add(key)
        if row.label is not None:
            label = index_of[row.label]
        else:
            folder = f.split(os.sep)[-2] if os.sep in f else ""
            label = norm.get(normalise_label(folder)) if folder else None
            label = -1 if label is None else label
        rel.append(f)
        labels.append(label)
    if not rel:
        raise DataError(
            f"none of the {len(files)} video files under {vroot} matches a row of {csv_file} "
            f"(expected <youtube_id>_<start:06d>_<end:06d>.mp4)"
        )
    return FileList(str(vroot), rel, labels, class_names, f"kinetics/{split}")


# ----------------------------------------------------------------------------------------------
# Generic class folders
# ----------------------------------------------------------------------------------------------


def class_dirs(p: Path) -> list[str]:
    """Sorted names of the visible sub-folders of ``p`` (one per class)."""
    return sorted(e.name for e in os.scandir(p) if e.is_dir() and not e.name.startswith("."))


def list_folder(path: str | os.PathLike, split: str = "train") -> FileList:
    """``path/<class>/...`` (or ``path/<split>/<class>/...``): one sub-folder per class."""
    root = _require_dir(path, "video folder")
    split_dirs = {
        canon: d for canon in SPLIT_ALIASES if (d := split_dir(root, canon)) is not None and class_dirs(d)
    }
    if split_dirs:
        sp = canonical_split(split)
        if sp not in split_dirs:
            raise DataError(
                f"{root} has split folders {', '.join(sorted(split_dirs))} but none for {split!r}"
            )
        vroot = split_dirs[sp]
        roots = list(split_dirs.values())
    else:
        vroot = root
        roots = [root]
    # every split folder's class folders, listed once; a class needs a video in some split
    found: dict[Path, dict[str, list[str]]] = {}
    for d in roots:
        seen = {os.path.realpath(d)}  # a class folder linking back to the root adds nothing
        found[d] = {c: _walk_videos(d / c, seen) for c in class_dirs(d)}
    all_dirs = sorted({c for per in found.values() for c in per})
    class_names = sorted({c for per in found.values() for c, files in per.items() if files})
    if not all_dirs:
        raise DataError(f"{vroot} has no class sub-folders (expected <class>/<video> files)")
    if not class_names:
        raise DataError(f"no video files in the class folders of {vroot}")
    empty = [c for c in all_dirs if c not in class_names]
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        print(f"warning: {root}: {len(empty)} class folder(s) without a video, not made classes: {shown}",
              file=sys.stderr)
    index_of = {c: i for i, c in enumerate(class_names)}
    rel, labels = [], []
    for c, files in found[vroot].items():
        for f in files:
            rel.append(os.path.join(c, f))
            labels.append(index_of[c])
    if not rel:
        raise DataError(f"no video files in the class folders of {vroot}")
    return FileList(str(vroot), rel, labels, class_names, f"folder/{split}")
