"""Issue 19: training on a labelled folder of the user's own videos with the default preset.

A 10-class folder trains with no override (the class count comes from the data, one line says so),
and the in-loop evaluation reaches metrics.jsonl, TensorBoard and the console.
"""

from __future__ import annotations

import json

import pytest

from conftest import TINY_NETWORK
from dvdgan.cli import main
from videofolders import class_names, make_class_folder


@pytest.fixture(scope="module")
def ten_classes(tmp_path_factory):
    return make_class_folder(tmp_path_factory.mktemp("own") / "videos", num_classes=10, per_class=6, frames=10,
                             size=24, seed=3)


def test_ten_class_folder_trains_with_the_default_preset_and_evaluates_in_the_loop(ten_classes, tmp_path, capsys,
                                                                                  monkeypatch):
    monkeypatch.setenv("DVDGAN_CACHE", str(tmp_path / "cache"))  # the reference classifier's cache
    from dvdgan.metrics import dataset_reference

    monkeypatch.setattr(dataset_reference, "_steps_for", lambda n_train: 20)  # the plumbing, not its accuracy
    out = tmp_path / "run"
    small = [o for o in TINY_NETWORK if not o.startswith("model.frames")]  # the default preset's 8 frames
    rc = main(["train", "--data", str(ten_classes), "--out", str(out), "--max-steps", "2", "--no-progress",
               *small, "train.eval_every=2", "train.eval_samples=20", "train.sample_every=2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "model.num_classes=10 from the dataset" in err  # no override needed, one line says so
    assert "(60 clips, 10 classes)" in err and str(ten_classes) in err  # the header names the dataset
    assert "reference classifier (10 classes): held-out accuracy" in err
    assert "step 2: accuracy" in err and "ref_fd" in err  # the console line
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 2 and lines[-1]["best_step"] == 2
    for key in ("accuracy", "ref_fd", "ref_fd_floor", "motion", "motion_real", "consistency", "consistency_real",
                "classifier_accuracy"):
        assert isinstance(lines[-1][key], float), key
    assert json.loads((out / "best.json").read_text())["step"] == 2
    assert json.loads((out / "config.json").read_text())["model"]["num_classes"] == 10
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"eval/accuracy", "eval/ref_fd", "eval/consistency"} <= set(events.Tags()["scalars"])
    assert (out / "samples" / "step_00000002.gif").exists()


def test_explicit_num_classes_that_disagrees_is_an_error_naming_the_fix(ten_classes, tmp_path, capsys):
    rc = main(["train", "--data", str(ten_classes), "--out", str(tmp_path / "r"), "--max-steps", "1",
               "--no-progress", *TINY_NETWORK, "model.num_classes=4"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "model.num_classes=10" in err and len(err.splitlines()) == 1, err


def test_class_names_come_from_the_folder(ten_classes):
    from dvdgan.config import DataConfig
    from dvdgan.data import build_dataset

    ds = build_dataset(DataConfig(dataset="folder", path=str(ten_classes)), split="train", frames=8, resolution=16)
    assert sorted(ds.class_names) == sorted(class_names(10))


def test_best_step_is_the_highest_accuracy_and_survives_a_corrupt_file(tmp_path):
    from dvdgan.rundir import record_best

    assert record_best(tmp_path, 1, {"accuracy": 0.5})["step"] == 1
    assert record_best(tmp_path, 2, {"accuracy": 0.4})["step"] == 1
    assert record_best(tmp_path, 3, {"accuracy": 0.7})["step"] == 3
    (tmp_path / "best.json").write_text('{"key": "accuracy", "value": null}')
    assert record_best(tmp_path, 4, {"accuracy": 0.1})["step"] == 4
    assert record_best(tmp_path, 5, {"ref_fd": 3.0})["step"] == 5  # no accuracy: the lowest Frechet distance
    assert record_best(tmp_path, 6, {"ref_fd": 4.0})["step"] == 5
