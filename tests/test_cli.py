"""The command line as a whole: shared flags with one spelling, help on every flag, --version,
--config layered on the preset, honest metric names, export-clips feeding predict, bench --json
refusing to overwrite, and checkpoint file modes."""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, TINY_NETWORK
from dvdgan.checkpoint import save_checkpoint
from dvdgan.cli import build_parser, main
from dvdgan.commands.common import apply_common_arguments
from dvdgan.config import apply_overrides, get_preset, load_config
from dvdgan.models.prediction import build_generator

COMPUTING = ("train", "sample", "eval", "predict", "stats", "bench", "export-clips", "demo", "prepare")
WITH_DEVICE = ("train", "sample", "eval", "predict", "stats", "bench", "demo")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_flag_of_every_command_has_help():
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in {"dvdgan": build_parser(), **subparsers()}.items()
               for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert missing == []
    for p in subparsers().values():
        p.format_help()  # renders (no stray % in a help text)


def test_shared_flags_have_one_spelling_and_device_defaults_to_auto():
    subs = subparsers()
    for name in COMPUTING:
        flags = {s for a in subs[name]._actions for s in a.option_strings}
        assert {"--threads", "--no-progress"} <= flags or name == "demo", name
        assert "--threads" in flags, name
        if name in WITH_DEVICE:
            assert "--device" in flags, name
    for name in ("sample", "eval", "predict", "stats", "bench", "demo"):
        assert subs[name].get_default("device") == "auto", name
    for name in ("train", "stats", "prepare", "bench"):
        assert "--num-workers" in {s for a in subs[name]._actions for s in a.option_strings}, name
    # the old spellings of prepare still work, without being shown
    args = subs["prepare"].parse_args(["--dataset", "folder", "--src", "a", "--out", "b", "--resolution", "8",
                                       "--quiet", "--workers", "3"])
    assert args.no_progress and args.num_workers == 3
    assert "--quiet" not in subs["prepare"].format_help() and "--workers" not in subs["prepare"].format_help()


def test_apply_common_arguments_sets_threads_and_resolves_auto():
    before = torch.get_num_threads()
    args = argparse.Namespace(command="sample", threads=1, device="auto", num_workers=0)
    try:
        apply_common_arguments(args)
        assert torch.get_num_threads() == 1
        assert args.device == ("cuda" if torch.cuda.is_available() else "cpu")
    finally:
        torch.set_num_threads(before)


def test_version_and_bad_threads(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    import dvdgan

    assert capsys.readouterr().out.strip() == f"dvdgan {dvdgan.__version__}"
    assert main(["sample", "--checkpoint", "nope", "--out", "o", "--threads", "0"]) == 2
    assert capsys.readouterr().err == "dvdgan sample: error: --threads must be >= 1, got 0\n"


# --------------------------------------------------------------------------------------------
# --config
# --------------------------------------------------------------------------------------------


def test_partial_config_is_layered_on_the_named_preset(tmp_path):
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"train": {"lr_g": 5e-4}, "model": {"g_ch": 24}}))
    notes: list[str] = []
    cfg = load_config("shapes-fp", ["train.lr_d=3e-4"], str(partial), notice=notes.append)
    fp = get_preset("shapes-fp")
    assert cfg.model.context_frames == fp.model.context_frames and cfg.model.resolution == fp.model.resolution
    assert (cfg.train.lr_g, cfg.model.g_ch, cfg.train.lr_d) == (5e-4, 24, 3e-4)  # preset, then file, then overrides
    assert len(notes) == 1 and "preset shapes-fp" in notes[0] and "sets 2 keys" in notes[0]
    # no preset named: the default one (shapes), never the Kinetics-sized dataclass defaults
    cfg = load_config(None, [], str(partial))
    assert cfg.name == "shapes" and cfg.model.resolution == get_preset("shapes").model.resolution
    # a full saved config is itself, whatever the preset, and needs no notice
    full = tmp_path / "full.json"
    full.write_text(get_preset("kinetics600-12x64").to_json())
    notes.clear()
    assert load_config("shapes", [], str(full), notice=notes.append).to_dict() == \
        get_preset("kinetics600-12x64").to_dict() and notes == []


def test_config_on_the_command_line_says_which_preset(tmp_path, capsys):
    partial = tmp_path / "p.json"
    partial.write_text(json.dumps({"model": {"g_ch": 8}}))
    assert main(["info", "--preset", "shapes-fp", "--config", str(partial), "--json"]) == 0
    out, err = capsys.readouterr()
    info = json.loads(out)
    assert info["preset"] == "shapes-fp"
    assert info["video"]["context_frames"] == get_preset("shapes-fp").model.context_frames
    assert "come from preset shapes-fp" in err


# --------------------------------------------------------------------------------------------
# names of metrics
# --------------------------------------------------------------------------------------------


def test_reference_frechet_distance_is_not_called_fvd():
    from dvdgan.metrics.detectors import Detector
    from dvdgan.metrics.evaluate import evaluate_generator, format_table

    class Ref(Detector):
        kind, frechet_output, classes_match_dataset, num_classes = "reference", "features", True, 2
        identity = name = "reference/test"

        def _forward(self, videos, want):
            x = videos.float().mean(dim=(1, 2, 3)) / 255
            return {"features": x, "logits": 10 * x[:, :2]}

    def gen(n, truncation, seed):
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, (n, 2, 4, 4, 3), generator=g, dtype=torch.uint8), torch.zeros(n, dtype=torch.long)

    class Real:
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return gen(1, 1.0, 100 + i)[0][0], 0

    result = evaluate_generator(gen, metrics=["fvd", "accuracy"], detector=Ref(), real_dataset=Real(), n=8,
                                progress=False, real_description="shapes: test split")
    assert result["metrics"] == ["ref_fd", "accuracy"] and "ref_fd" in result["rows"][0]
    assert "fvd" not in result["rows"][0] and "fvd" not in result["detectors"]
    assert result["real"]["reference/test"]["dataset"] == "shapes: test split"
    table = format_table(result)
    assert "ref_fd" in table and "fvd" not in table and "IS:" not in table  # IS was not asked
    with_is = evaluate_generator(gen, metrics=["is"], detector=Ref(), n=8, is_splits=2, progress=False)
    assert "IS: 2 splits" in format_table(with_is)


# --------------------------------------------------------------------------------------------
# export-clips -> predict, bench --json, file modes
# --------------------------------------------------------------------------------------------


def _fp_checkpoint(root: Path) -> Path:
    cfg = apply_overrides(get_preset("shapes"), TINY + ["model.context_frames=2", "model.num_classes=1"])
    g = build_generator(cfg.model)
    return save_checkpoint(root, 1, {"generator": g, "generator_ema": g}, {}, cfg.to_dict())


def test_export_clips_feed_predict(tmp_path, capsys):
    ckpt = _fp_checkpoint(tmp_path / "fp")
    clips = tmp_path / "clips"
    assert main(["export-clips", "--checkpoint", str(ckpt), "--out", str(clips), "--n", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 clips of 6 frames at 16x16" in out and "dvdgan predict" in out
    files = sorted(clips.glob("clip_*.mp4"))
    assert len(files) == 2
    with av.open(str(files[0])) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 6 and (frames[0].width, frames[0].height) == (16, 16)
    rc = main(["predict", "--checkpoint", str(ckpt), "--input", str(clips), "--out", str(tmp_path / "pred"),
               "--n", "2", "--frame-stride", "1", "--format", "png", "--no-progress"])
    assert rc == 0 and "2 with the ground truth" in capsys.readouterr().out
    from dvdgan.commands.predict import CONTEXT_COLOUR, PREDICTED_COLOUR, TRUTH_COLOUR

    strip = np.asarray(Image.open(tmp_path / "pred" / f"{files[0].stem}.png").convert("RGB"))
    panels_h = (3 * (18 + 2) + 2) * 8  # ground truth + 2 predictions, 16 px + border, 2 px apart, x8
    legend = strip[panels_h:]  # below the panels: a square of each border colour, and its meaning
    assert 0 < legend.shape[0] < 40
    for colour in (CONTEXT_COLOUR, PREDICTED_COLOUR, TRUTH_COLOUR):
        assert (legend == np.array(colour, np.uint8)).all(axis=-1).sum() >= 25, colour
    # the built-in preset, sized by overrides, without a checkpoint
    assert main(["export-clips", "--out", str(tmp_path / "c2"), "--n", "1", "--no-progress"] + TINY_NETWORK) == 0
    assert len(list((tmp_path / "c2").glob("*.mp4"))) == 1


def test_predict_without_input_names_export_clips(tmp_path, capsys):
    assert main(["predict", "--checkpoint", str(tmp_path)]) == 2
    assert "dvdgan export-clips" in capsys.readouterr().err


def test_bench_json_is_not_overwritten_without_force(tmp_path, capsys):
    committed = tmp_path / "cpu.json"
    committed.write_text('{"keep": true}\n')
    assert main(["bench", "--json", str(committed), "--only", "flops"]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and err.count("\n") == 1
    assert committed.read_text() == '{"keep": true}\n'


def test_checkpoint_files_share_one_mode(tmp_path):
    ckpt = _fp_checkpoint(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in ckpt.iterdir()}
    assert set(modes) == {"model.safetensors", "train_state.pt", "meta.json"}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_sample_without_classes_gives_one_labelled_row_per_class(tmp_path):
    cfg = apply_overrides(get_preset("shapes"), TINY)
    g = build_generator(cfg.model)
    ckpt = save_checkpoint(tmp_path / "ck", 1, {"generator": g, "generator_ema": g}, {}, cfg.to_dict())
    out = tmp_path / "s"
    assert main(["sample", "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]) == 0
    with Image.open(out / "grid.gif") as im:
        w, h, duration = im.width, im.height, im.info["duration"]
    scale = 8  # 16 px videos are shown at 128 px
    rows, cols = 6, 3  # 6 classes, 18 videos (16 rounded up to fill every row)
    grid_h, grid_w = (rows * 17 + 1) * scale, (cols * 17 + 1) * scale
    assert grid_h < h < grid_h + 40 and w > grid_w + 60  # + a caption above, + class names on the left
    assert abs(duration - 125) <= 5  # 8 fps, as predict (GIF stores centiseconds)


def test_train_on_a_folder_names_it_and_logs_labelled_samples(tmp_path, capsys):
    from videofolders import class_names, make_class_folder

    data = make_class_folder(tmp_path / "videos", num_classes=2, per_class=2, frames=8, size=16)
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        rc = main(["train", "--out", str(out), "--data", str(data), "--max-steps", "1", "--no-progress", "--threads",
                   "1", "--num-workers", "0", "--device", "cpu"] + TINY + ["train.sample_every=1",
                                                                            "train.num_sample_videos=4"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    err = capsys.readouterr().err
    assert f"training on folder dataset {data} (4 clips, 2 classes), config shapes, on cpu" in err
    assert json.loads((out / "config.json").read_text())["data"]["num_workers"] == 0
    with Image.open(out / "samples" / "step_00000001.gif") as im:
        frame = np.asarray(im.convert("RGB"))
    scale = 8  # 16 px -> 128 px
    grid_h, grid_w = (2 * 17 + 1) * scale, (2 * 17 + 1) * scale  # one row per class, 2 samples each
    assert grid_h < frame.shape[0] < grid_h + 40  # + the caption (config, step)
    label_w = frame.shape[1] - grid_w
    assert label_w > 6 * len(class_names(2)[0])  # the class names, left of the rows
    assert frame[-grid_h:, :label_w].max() > 200  # white text in the label strip


def test_train_device_flag_is_checked(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--out", str(tmp_path / "r"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dvdgan train: error: train.device cuda: this torch cannot use CUDA") and err.count("\n") == 1
