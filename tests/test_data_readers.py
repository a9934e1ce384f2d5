"""UCF-101, Kinetics-600 and class-folder layouts; the factory; bad-video skipping and logging."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dvdgan.config import DataConfig
from dvdgan.data import build_dataset, summarize_bad_log
from dvdgan.data.readers import list_folder, list_kinetics, list_ucf101, normalise_label, read_kinetics_csv
from dvdgan.data.sampler import ClipSampler
from dvdgan.data.video import encode_video
from dvdgan.errors import DataError


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory) -> dict[str, bytes]:
    """A few tiny encoded videos (bytes), copied wherever a fixture tree needs a file."""
    d = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (24, 48, 64, 3), dtype=np.uint8)
    frames[:, :, :8] = np.arange(24, dtype=np.uint8)[:, None, None, None] * 10  # frame-dependent
    return {
        "avi": encode_video(d / "a.avi", frames, "mpeg4").read_bytes(),
        "mp4": encode_video(d / "a.mp4", frames, "h264").read_bytes(),
        "short": encode_video(d / "s.mp4", frames[:4], "h264").read_bytes(),
    }


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _cfg(dataset: str, path, **kw) -> DataConfig:
    return DataConfig(dataset=dataset, path=str(path), frame_stride=kw.pop("frame_stride", 1), **kw)


# ---- UCF-101 ---------------------------------------------------------------------------------

UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
UCF_TRAIN = [
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 1),
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c02.avi", 1),
    ("HandstandPushups/v_HandStandPushups_g08_c01.avi", 2),  # the quirk: folder vs file case
    ("YoYo/v_YoYo_g10_c03.avi", 3),
]
UCF_TEST = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "HandstandPushups/v_HandStandPushups_g01_c02.avi"]


def _ucf_lists(d: Path, crlf: bool = True) -> None:
    nl = "\r\n" if crlf else "\n"
    d.mkdir(parents=True, exist_ok=True)
    (d / "classInd.txt").write_bytes(
        nl.join(f"{i + 1} {c}" for i, c in enumerate(UCF_CLASSES)).encode() + nl.encode()
    )
    (d / "trainlist01.txt").write_bytes((nl.join(f"{p} {i}" for p, i in UCF_TRAIN) + nl).encode())
    (d / "testlist01.txt").write_bytes((nl.join(UCF_TEST) + nl).encode())


def _ucf_tree(root: Path, avi: bytes, flat: bool = False) -> Path:
    vroot = root / ("UCF101" if flat else "UCF-101")
    for p in [p for p, _ in UCF_TRAIN] + UCF_TEST:
        folder, name = p.split("/")
        _put(vroot / name if flat else vroot / folder / name, avi)
    _ucf_lists(root / "ucfTrainTestlist")
    return vroot


def test_ucf101_class_folders(tmp_path, clip_bytes):
    vroot = _ucf_tree(tmp_path, clip_bytes["avi"])
    for path in (vroot, tmp_path):  # the UCF-101 folder itself, or the folder holding it
        fl = list_ucf101(path, "train", 1)
        assert fl.class_names == UCF_CLASSES
        assert [Path(p).name for p in fl.rel_paths] == [Path(p).name for p, _ in UCF_TRAIN]
        assert fl.labels == [0, 0, 1, 2]  # label from the folder part, 0-based
    assert list_ucf101(vroot, "test", 1).labels == [0, 1]
    assert len(list_ucf101(vroot, "all", 1)) == 6
    ds = build_dataset(_cfg("ucf101", vroot), split="train", frames=8, resolution=32)
    assert len(ds) == 4 and ds.num_classes == 3
    v, y = ds[(2, 7)]
    assert v.shape == (8, 32, 32, 3) and v.dtype == torch.uint8 and y == 1


def test_ucf101_flat_mirror_and_recognition_task_folder(tmp_path, clip_bytes):
    vroot = _ucf_tree(tmp_path, clip_bytes["avi"], flat=True)
    shutil.move(str(tmp_path / "ucfTrainTestlist"), str(tmp_path / "UCF101TrainTestSplits-RecognitionTask"))
    (tmp_path / "UCF101TrainTestSplits-RecognitionTask" / "ucfTrainTestlist").mkdir()
    for f in (tmp_path / "UCF101TrainTestSplits-RecognitionTask").glob("*.txt"):
        shutil.move(
            str(f), str(tmp_path / "UCF101TrainTestSplits-RecognitionTask" / "ucfTrainTestlist" / f.name)
        )
    fl = list_ucf101(vroot, "train", 1)
    assert fl.labels == [0, 0, 1, 2] and all("/" not in p for p in fl.rel_paths)
    # lists without a folder part: class from the file name, case-insensitively (HandStand)
    lists = tmp_path / "UCF101TrainTestSplits-RecognitionTask" / "ucfTrainTestlist"
    (lists / "testlist01.txt").write_text("v_HandStandPushups_g01_c02.avi\nv_YoYo_g10_c03.avi\n")
    assert list_ucf101(vroot, "test", 1).labels == [1, 2]


def test_ucf101_errors_and_missing_files(tmp_path, clip_bytes):
    vroot = _ucf_tree(tmp_path, clip_bytes["avi"])
    with pytest.raises(DataError, match="split file"):
        list_ucf101(vroot, "train", 2)
    (vroot / "YoYo" / "v_YoYo_g10_c03.avi").unlink()
    log = tmp_path / "bad.log"
    ds = build_dataset(_cfg("ucf101", vroot), split="train", frames=8, resolution=32, bad_log=str(log))
    assert len(ds) == 3
    assert summarize_bad_log(log) == {"missing": 1}
    shutil.rmtree(vroot / "YoYo")
    with pytest.raises(DataError, match="class folder 'YoYo' missing"):
        list_ucf101(vroot, "train", 1)
    shutil.rmtree(tmp_path / "ucfTrainTestlist")
    with pytest.raises(DataError, match="split files not found"):
        list_ucf101(vroot, "train", 1)


# ---- Kinetics-600 ----------------------------------------------------------------------------

K_ROWS = [  # label, youtube id, start, end, split
    ("hugging (not baby)", "-abcdefghij", 10, 20, "train"),  # id starts with '-'
    ("hugging (not baby)", "ab_cd-ef_gh", 0, 10, "train"),  # id contains '_'
    ("passing American football (in game)", "ABCDEFGHIJK", 5, 15, "train"),
    ("zumba", "zzzzzzzzzzz", 100, 110, "train"),  # in the CSV, not on disk
    ("zumba", "vvvvvvvvvvv", 3, 13, "validate"),
]


def _clip_name(yid: str, t0: int, t1: int) -> str:
    return f"{yid}_{t0:06d}_{t1:06d}.mp4"


def _write_csv(path: Path, variant: str) -> Path:
    lines = []
    if variant == "plain":
        lines.append("label,youtube_id,time_start,time_end,split")
        lines += [
            f'"{lab}",{y},{a},{b},{s}' if "," in lab else f"{lab},{y},{a},{b},{s}"
            for lab, y, a, b, s in K_ROWS
        ]
    elif variant == "quoted_is_cc":
        lines.append("label,youtube_id,time_start,time_end,split,is_cc")
        lines += [f'"{lab}",{y},{a},{b},{s},0' for lab, y, a, b, s in K_ROWS]
    elif variant == "test":
        lines.append("youtube_id,time_start,time_end,split")
        lines += [f"{y},{a},{b},test" for _, y, a, b, _ in K_ROWS]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("variant", ["plain", "quoted_is_cc"])
def test_kinetics_csv_variants(tmp_path, variant):
    rows = read_kinetics_csv(_write_csv(tmp_path / "train.csv", variant))
    assert [(r.label, r.youtube_id, r.time_start, r.time_end, r.split) for r in rows] == [
        (lab, y, a, b, "val" if s == "validate" else s) for lab, y, a, b, s in K_ROWS
    ]


def test_normalise_label_variants():
    verbatim = "passing American football (in game)"
    for folder in (verbatim, "passing_American_football_in_game", "passing_American_football_(in_game)"):
        assert normalise_label(folder) == normalise_label(verbatim)


@pytest.mark.parametrize("folders", ["verbatim", "torchvision", "mmaction2", "flat"])
@pytest.mark.parametrize("split_level", [True, False])
def test_kinetics_layouts(tmp_path, clip_bytes, folders, split_level):
    name = {
        "verbatim": lambda s: s,
        "torchvision": lambda s: s.replace(" ", "_").replace("(", "").replace(")", "").replace('"', ""),
        "mmaction2": lambda s: s.replace(" ", "_"),
        "flat": lambda s: "",
    }[folders]
    base = tmp_path / "k600"
    vdir = base / "train" if split_level else base
    for lab, y, a, b, s in K_ROWS:
        if y == "zzzzzzzzzzz" or s != "train":
            continue
        _put(vdir / name(lab) / _clip_name(y, a, b), clip_bytes["mp4"])
    _put(vdir / "stray" / _clip_name("notincsv123", 0, 10), clip_bytes["mp4"])  # ignored
    _write_csv(base / "annotations" / "kinetics_600_train.csv", "plain")
    fl = list_kinetics(base, "train")
    assert fl.class_names == sorted({r[0] for r in K_ROWS})
    got = sorted((Path(p).name[:11], lab) for p, lab in zip(fl.rel_paths, fl.labels))
    cls = fl.class_names.index
    assert got == sorted(
        [
            ("-abcdefghij", cls("hugging (not baby)")),
            ("ABCDEFGHIJK", cls("passing American football (in game)")),
            ("ab_cd-ef_gh", cls("hugging (not baby)")),
        ]
    )
    ds = build_dataset(_cfg("kinetics600", base, frame_stride=2), split="train", frames=6, resolution=32)
    v, _ = ds[(0, 1)]
    assert v.shape == (6, 32, 32, 3)
    with pytest.raises(DataError, match="no Kinetics annotations CSV for split 'test'"):
        list_kinetics(base, "test")


def test_kinetics_unlabelled_test_csv_labels_from_folders(tmp_path, clip_bytes):
    base = tmp_path / "k"
    _write_csv(base / "ann" / "train.csv", "plain")
    _write_csv(base / "ann" / "test.csv", "test")
    _put(base / "test" / "hugging_not_baby" / _clip_name("-abcdefghij", 10, 20), clip_bytes["mp4"])
    _put(base / "test" / "unknown_folder" / _clip_name("ABCDEFGHIJK", 5, 15), clip_bytes["mp4"])
    _put(base / "test" / "ab_cd-ef_gh.mp4", clip_bytes["mp4"])  # bare <youtube_id>.mp4
    fl = list_kinetics(base, "test", str(base / "ann"))
    assert fl.class_names == sorted({r[0] for r in K_ROWS})  # from the labelled CSV beside
    by_id = {Path(p).name[:11]: lab for p, lab in zip(fl.rel_paths, fl.labels)}
    assert by_id == {
        "-abcdefghij": fl.class_names.index("hugging (not baby)"),
        "ABCDEFGHIJK": -1,
        "ab_cd-ef_gh": -1,
    }
    # an explicit CSV file for the wrong split is refused with a clear message
    with pytest.raises(DataError, match="no rows of split 'test'"):
        list_kinetics(base, "test", str(base / "ann" / "train.csv"))
    # a {split} pattern
    assert len(list_kinetics(base, "test", str(base / "ann" / "{split}.csv"))) == 3


# ---- generic folder, factory errors, bad videos ------------------------------------------------


def test_folder_with_and_without_split_level(tmp_path, clip_bytes):
    _put(tmp_path / "a" / "cats" / "x.mp4", clip_bytes["mp4"])
    _put(tmp_path / "a" / "dogs" / "sub" / "y.avi", clip_bytes["avi"])
    _put(tmp_path / "a" / "dogs" / "notes.txt", b"not a video")
    fl = list_folder(tmp_path / "a", "train")
    assert fl.class_names == ["cats", "dogs"] and fl.labels == [0, 1] and len(fl) == 2
    _put(tmp_path / "b" / "train" / "cats" / "x.mp4", clip_bytes["mp4"])
    _put(tmp_path / "b" / "test" / "dogs" / "y.mp4", clip_bytes["mp4"])
    tr, te = list_folder(tmp_path / "b", "train"), list_folder(tmp_path / "b", "test")
    assert tr.class_names == te.class_names == ["cats", "dogs"]
    assert tr.labels == [0] and te.labels == [1]


def test_factory_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(_cfg("folder", tmp_path / "nope"), split="train", frames=4, resolution=32)
    with pytest.raises(DataError, match="not set"):
        build_dataset(DataConfig(dataset="ucf101", path=None), split="train", frames=4, resolution=32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        build_dataset(_cfg("folder", tmp_path / "empty"), split="train", frames=4, resolution=32)
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(DataError, match="no video files"):
        build_dataset(_cfg("folder", tmp_path / "empty"), split="train", frames=4, resolution=32)
    with pytest.raises(DataError, match="not a prepared dataset"):
        build_dataset(_cfg("prepared", tmp_path / "empty"), split="train", frames=4, resolution=32)


def test_bad_videos_skipped_and_logged(tmp_path, clip_bytes):
    root = tmp_path / "v"
    _put(root / "a" / "0_good.mp4", clip_bytes["mp4"])
    _put(root / "a" / "1_empty.mp4", b"")
    _put(root / "a" / "2_garbage.avi", np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes())
    _put(root / "b" / "3_short.mp4", clip_bytes["short"])
    _put(root / "b" / "4_trunc.mp4", clip_bytes["mp4"][: len(clip_bytes["mp4"]) // 2])
    _put(root / "b" / "5_good.avi", clip_bytes["avi"])
    log = tmp_path / "bad.log"
    ds = build_dataset(_cfg("folder", root), split="train", frames=8, resolution=32, bad_log=str(log))
    assert len(ds) == 6
    good5 = ds[(5, 3)][0]
    # items 1-4 are bad: each is replaced by the next good item (5), with the same sample seed
    for i in (1, 2, 3, 4):
        v, y = ds[(i, 3)]
        assert torch.equal(v, good5) and y == 1
    assert torch.equal(ds[(0, 3)][0], ds[(0, 3)][0])
    assert ds.bad_count == 4
    assert dict(ds.bad_reasons) == summarize_bad_log(log)
    summary = summarize_bad_log(log)
    assert summary["empty"] == 1 and summary["too_short"] == 1 and sum(summary.values()) == 4
    lines = log.read_text().splitlines()
    assert len(lines) == 4 and all(len(ln.split("\t")) == 3 and len(ln) < 400 for ln in lines)
    # a second process (fresh dataset) appends; distinct files are counted once
    ds2 = build_dataset(_cfg("folder", root), split="train", frames=8, resolution=32, bad_log=str(log))
    ds2[1]
    assert len(log.read_text().splitlines()) == 8 and summarize_bad_log(log) == summary
    # every candidate fails: a clear error, not an endless loop
    for p in (root / "a" / "0_good.mp4", root / "b" / "5_good.avi"):
        p.write_bytes(b"")
    ds3 = build_dataset(_cfg("folder", root), split="train", frames=8, resolution=32)
    with pytest.raises(DataError, match="no usable video"):
        ds3[(0, 1)]
    with pytest.raises(IndexError):
        ds3[6]


def test_keys_determinism_and_workers(tmp_path, clip_bytes):
    for c in range(2):
        for j in range(3):
            _put(tmp_path / f"c{c}" / f"{j}.mp4", clip_bytes["mp4"])
    ds = build_dataset(_cfg("folder", tmp_path), split="train", frames=6, resolution=32)
    a, b = ds[(1, 42)][0], ds[(1, 42)][0]
    assert torch.equal(a, b)
    clips = [ds[(1, s)][0] for s in range(8)]
    assert any(not torch.equal(clips[0], c) for c in clips[1:])  # seeds choose start / crop
    assert torch.equal(ds[1][0], ds[1][0])  # int key: deterministic first run, centre crop
    assert ds[1][0].shape == (6, 32, 32, 3)
    sampler = ClipSampler(len(ds), seed=3, num_samples=8)
    keys = list(sampler)
    assert keys == list(ClipSampler(len(ds), seed=3, num_samples=8)) and len({k[1] for k in keys}) == 8
    batches = {}
    for workers in (0, 2):
        dl = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers)
        batches[workers] = [(v.clone(), y.clone()) for v, y in dl]
    for (v0, y0), (v2, y2) in zip(batches[0], batches[2]):
        assert torch.equal(v0, v2) and torch.equal(y0, y2)


def test_factory_dispatches_shapes():
    pytest.importorskip("dvdgan.data.shapes")
    ds = build_dataset(
        DataConfig(dataset="shapes", shapes_train_size=10, shapes_test_size=4),
        split="test",
        frames=4,
        resolution=16,
    )
    assert len(ds) == 4
    v, y = ds[(1, 2)]
    assert v.shape == (4, 16, 16, 3) and v.dtype == torch.uint8 and 0 <= y < ds.num_classes
