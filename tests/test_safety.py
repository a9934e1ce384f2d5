"""Issue 20: run directories that cannot be corrupted, and one clear line for every bad input.

One test (or a few) per row of the issue's table (docs/safety.md). Rows whose fix lives in the
training loop run through the trainer.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dvdgan import checkpoint as ckpt_io
from dvdgan.cli import main
from dvdgan.config import Config, apply_overrides, get_preset, load_config
from dvdgan.data.readers import list_folder
from dvdgan.data.video import encode_video
from dvdgan.errors import CheckpointError, ConfigError, DataError, DvdganError
from dvdgan.rundir import RunDirLock, check_writable, clear_run, prepare_run_dir

TINY = [
    "model.resolution=16", "model.frames=4", "model.g_ch=4", "model.g_multipliers=4,4,2", "model.d_ch=4",
    "model.d_multipliers=2,4,4", "model.frames_per_spatial_d=2", "model.z_dim=8", "model.embed_dim=8",
    "train.batch_size=4", "train.log_every=1", "train.ema_start=2", "train.ema_decay=0.9",
    "data.shapes_train_size=64", "data.shapes_test_size=32", "train.eval_every=0", "train.sample_every=0",
]


def cli(capsys, *argv: str) -> tuple[int, str]:
    """Run ``dvdgan ARGV`` in-process; returns (exit code, stderr) and checks a refusal is one line."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    if rc != 0:
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("training ", "warning:"))]
        assert len(lines) == 1 and "Traceback" not in err, err
    return rc, err


def train_cli(capsys, out: Path, *extra, steps: int = 2) -> tuple[int, str]:
    """``dvdgan train`` of the tiny config; ``extra``: KEY=VALUE overrides and --options."""
    overrides = [e for e in extra if isinstance(e, str) and "=" in e and not e.startswith("-")]
    options = [e for e in extra if not (isinstance(e, str) and "=" in e and not e.startswith("-"))]
    return cli(capsys, "train", "--preset", "shapes", *TINY, *overrides, "--out", out, "--max-steps", steps,
               "--no-progress", *options)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished tiny run: checkpoints at steps 2 and 3 (kept), config.json, TensorBoard."""
    out = tmp_path_factory.mktemp("safety") / "run"
    assert main(["train", "--preset", "shapes", *TINY, "train.checkpoint_every=2", "--out", str(out),
                 "--max-steps", "3", "--no-progress"]) == 0
    return out


def ckpt_copy(run: Path, dest: Path) -> Path:
    """A copy of the run's newest checkpoint directory (to corrupt)."""
    import shutil

    src = ckpt_io.list_checkpoints(run / "checkpoints")[-1]
    shutil.copytree(src, dest)
    return dest


# ---- row 1: training into an existing run --------------------------------------------------------


def test_row1_train_into_a_run_refuses_without_resume(run, tmp_path, capsys):
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    rc, err = train_cli(capsys, run, "train.seed=1")
    assert rc == 2 and "already holds a run" in err and "--resume" in err and "--overwrite" in err
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert before == after  # nothing touched


def test_row1_overwrite_clears_only_run_files(tmp_path, capsys):
    out = tmp_path / "r"
    assert train_cli(capsys, out, "train.checkpoint_every=1", steps=3)[0] == 0
    (out / "notes.txt").write_text("mine")
    (out / "samples").mkdir(exist_ok=True)
    rc, _ = train_cli(capsys, out, "train.seed=1", "--overwrite", steps=1)
    assert rc == 0
    assert [p.name for p in ckpt_io.list_checkpoints(out / "checkpoints")] == ["step_00000001"]  # old 2, 3 gone
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 1
    assert (out / "notes.txt").read_text() == "mine"


def test_row1_clear_run_never_removes_user_files(tmp_path):
    for name in ("checkpoints/step_00000001/meta.json", "tensorboard/x", "config.json", "run_info.json",
                 "metrics.jsonl", "best.json", "bad_videos.log", "data/video.mp4", "README"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README", "data"]


def test_row1_resume_and_overwrite_together_refused(tmp_path, capsys):
    rc, err = train_cli(capsys, tmp_path / "x", "--resume", "--overwrite")
    assert rc == 2 and "--overwrite" in err and not (tmp_path / "x").exists()


# ---- row 2: one process per run directory ---------------------------------------------------------


_HOLD = "import sys, time; from dvdgan.rundir import RunDirLock\nwith RunDirLock(sys.argv[1]):\n" \
        "    print('locked', flush=True); time.sleep(60)\n"


def _holder(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_row2_second_process_is_refused_and_sigkill_leaves_no_stale_lock(tmp_path, capsys):
    out = tmp_path / "c"
    proc = _holder(out)
    try:
        with pytest.raises(DvdganError, match=f"in use by pid {proc.pid} on "):
            RunDirLock(out).acquire()
        rc, err = train_cli(capsys, out)
        assert rc == 2 and f"pid {proc.pid}" in err
        assert not (out / "config.json").exists() and not (out / "checkpoints").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunDirLock(out):  # the kernel released the dead process's lock
        pass


def test_row2_lock_removes_the_folder_it_created_when_nothing_was_written(tmp_path):
    with RunDirLock(tmp_path / "a" / "b"):
        assert (tmp_path / "a" / "b" / ".lock").exists()
    assert not (tmp_path / "a").exists()


# ---- row 3: non-finite weights are never checkpointed ----------------------------------------------


def test_row3_save_checkpoint_refuses_nonfinite_weights_and_optimiser_state(tmp_path):
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(lin.parameters())
    lin(torch.ones(1, 2)).sum().backward()
    opt.step()
    ckpt_io.save_checkpoint(tmp_path, 1, {"generator": lin}, {"opt": opt.state_dict()}, {})
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"non-finite values in generator\.weight"):
        ckpt_io.save_checkpoint(tmp_path, 2, {"generator": lin}, {"opt": opt.state_dict()}, {})
    with torch.no_grad():
        lin.weight[0, 0] = 0.0
    opt.state[lin.weight]["exp_avg_sq"][0, 0] = float("inf")
    with pytest.raises(CheckpointError, match="exp_avg_sq"):
        ckpt_io.save_checkpoint(tmp_path, 3, {"generator": lin}, {"opt": opt.state_dict()}, {})
    assert [p.name for p in ckpt_io.list_checkpoints(tmp_path)] == ["step_00000001"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_row3_newest_finite_checkpoint_skips_a_nonfinite_one(tmp_path):
    lin = torch.nn.Linear(2, 2)
    ckpt_io.save_checkpoint(tmp_path, 1, {"g": lin}, {}, {}, keep=5)
    with torch.no_grad():
        lin.bias.fill_(float("nan"))
    ckpt_io.save_checkpoint(tmp_path, 2, {"g": lin}, {}, {}, keep=5, require_finite=False)
    assert ckpt_io.newest_finite_checkpoint(tmp_path).name == "step_00000001"


def test_row3_nan_learning_rate_is_one_line(tmp_path, capsys):
    rc, err = train_cli(capsys, tmp_path / "n", "train.lr_g=nan")
    assert rc == 2 and "train.lr_g=nan must be a finite number" in err and not (tmp_path / "n").exists()


def test_row3_diverging_run_leaves_only_finite_checkpoints(tmp_path, capsys):
    out = tmp_path / "n"
    rc, err = train_cli(capsys, out, "train.checkpoint_every=1", "train.lr_g=1e30", "train.keep_checkpoints=10",
                        steps=4)
    for ck in ckpt_io.list_checkpoints(out / "checkpoints"):
        assert all(torch.isfinite(v).all() for v in load_file(str(ck / "model.safetensors")).values()), ck
    if rc:
        assert "non-finite" in err


def test_row3_skip_mode_stops_when_skips_are_the_rule(tmp_path, capsys):
    # (with a checkpoint every step the EMA's non-finite statistics stop it even earlier, at the refused save)
    rc, err = train_cli(capsys, tmp_path / "n", "train.checkpoint_every=100", "train.lr_g=1e30",
                        "train.nonfinite=skip", steps=12)
    # stopped by the skip bound (a count or fraction of skipped updates), not by a refused save
    assert rc == 2 and re.search(r"skipped \d+", err) and "refusing to write" not in err


# ---- row 4: symlink loops in folder datasets ------------------------------------------------------


@pytest.fixture(scope="module")
def video_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    for rel in ("alpha/a.mp4", "alpha/sub/b.mp4", "beta/c.mp4"):
        encode_video(root / rel, rng.integers(0, 256, (6, 24, 24, 3), dtype=np.uint8), "h264")
    return root


def test_row4_symlink_loops_add_nothing(video_tree, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(video_tree, root)
    plain = list_folder(root)
    os.symlink(".", root / "alpha" / "loop")  # the loop
    os.symlink("..", root / "alpha" / "sub" / "up")  # a loop two levels up
    os.symlink(".", root / "gamma")  # a "class" that is the whole tree
    looped = list_folder(root)
    assert len(plain) == len(looped) == 3
    assert looped.class_names == ["alpha", "beta"] and sorted(looped.rel_paths) == sorted(plain.rel_paths)


# ---- row 5: --resume with nothing to resume -------------------------------------------------------


def test_row5_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    rc, err = train_cli(capsys, tmp_path / "typo", "--resume", steps=1)
    assert rc == 2 and "nothing to resume in" in err and "drop --resume" in err
    assert not (tmp_path / "typo").exists()
    with pytest.raises(DvdganError, match="nothing to resume"):
        prepare_run_dir(tmp_path, resume=True, overwrite=False)


# ---- row 6: disk full ----------------------------------------------------------------------------


@pytest.mark.parametrize("fail", ["safetensors", "torch.save", "meta"])
def test_row6_disk_full_while_checkpointing_is_one_line_and_leaves_no_tmp(tmp_path, monkeypatch, fail):
    from safetensors import SafetensorError

    def full(*a, **k):
        if fail == "safetensors":
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                                  '"No space left on device" })')
        if fail == "torch.save":
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 128 vs 64")
        raise OSError(28, "No space left on device")

    target = {"safetensors": "save_file", "torch.save": "torch.save", "meta": "json.dumps"}[fail]
    if target == "torch.save":
        monkeypatch.setattr(torch, "save", full)
    elif target == "json.dumps":
        monkeypatch.setattr(ckpt_io.json, "dumps", full)
    else:
        monkeypatch.setattr(ckpt_io, target, full)
    with pytest.raises(CheckpointError) as e:
        ckpt_io.save_checkpoint(tmp_path, 7, {"g": torch.nn.Linear(2, 2)}, {}, {})
    msg = str(e.value)
    assert "\n" not in msg and "step_00000007" in msg
    assert list(tmp_path.iterdir()) == []  # the temporary directory is gone


def test_row6_sample_to_a_full_disk_is_one_line(run, tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    os.symlink("/dev/full", out / f".grid.tmp{os.getpid()}.mp4")  # every write there: ENOSPC
    rc, err = cli(capsys, "sample", "--checkpoint", run, "--out", out, "--n", 4, "--classes", "0", "1",
                  "--no-progress")
    assert rc == 2 and "No space left on device" in err and str(out) in err
    assert not (out / f".grid.tmp{os.getpid()}.mp4").exists()


# ---- row 7: corrupt meta.json; a config that does not match the weights ---------------------------


@pytest.mark.parametrize("cmd", ["sample", "eval", "predict"])
def test_row7_binary_meta_json_is_one_line(run, tmp_path, capsys, cmd):
    ck = ckpt_copy(run, tmp_path / "ck")
    (ck / "meta.json").write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    extra = {"sample": ["--out", tmp_path / "o"], "eval": ["--detector", "reference", "--out", tmp_path / "o"],
             "predict": ["--evaluate"]}[cmd]
    rc, err = cli(capsys, cmd, "--checkpoint", ck, *extra, "--no-progress")
    assert rc == 2 and "corrupt meta.json" in err


@pytest.mark.parametrize("meta", [b"[1, 2]", b'{"format": 1}', b'"text"', b"{\"format\": 1, \"config\": 3}"])
def test_row7_meta_json_that_is_not_a_checkpoint_description(run, tmp_path, meta):
    ck = ckpt_copy(run, tmp_path / "ck")
    (ck / "meta.json").write_bytes(meta)
    with pytest.raises(CheckpointError):
        ckpt_io.load_meta(ck)


def test_row7_huge_config_fails_before_the_model_is_built(run, tmp_path, capsys, monkeypatch):
    ck = ckpt_copy(run, tmp_path / "ck")
    meta = json.loads((ck / "meta.json").read_text())
    meta["config"]["model"]["g_ch"] = 4096
    (ck / "meta.json").write_text(json.dumps(meta))
    import dvdgan.sampling

    def no_build(*a, **k):
        raise AssertionError("the model was built")

    monkeypatch.setattr(dvdgan.sampling, "build_generator", no_build)
    t0 = time.perf_counter()
    rc, err = cli(capsys, "sample", "--checkpoint", ck, "--out", tmp_path / "o", "--no-progress")
    assert rc == 2 and "does not match its weights" in err and time.perf_counter() - t0 < 30
    assert not (tmp_path / "o").exists()


def test_row7_check_config_matches_accepts_the_real_config(run):
    ck = ckpt_io.list_checkpoints(run / "checkpoints")[-1]
    cfg = ckpt_io.load_checkpoint_config(ck, ("generator", "generator_ema", "discriminator"))
    assert cfg.model.g_ch == 4
    wrong = apply_overrides(cfg, ["model.z_dim=9"])
    with pytest.raises(CheckpointError, match="does not match"):
        ckpt_io.check_config_matches(ck, wrong, ("generator_ema",))


# ---- rows 8 and 9: every bad value is one line, before anything is built or written -----------------


BAD_TRAIN = [
    ("train.lr_d=-1", "train.lr_d"), ("train.log_every=0", "train.log_every"),
    ("model.num_classes=0", "model.num_classes"), ("model.g_ch=0", "model.g_ch"),
    ("train.adam_betas=0.1,0.2,0.3", "train.adam_betas"), ("model.context_frames=-1", "model.context_frames"),
    ("train.device=tpu", "train.device"), ("train.device=gpu", "train.device"),
    ("train.ema_decay=2", "train.ema_decay"), ("train.checkpoint_every=-5", "train.checkpoint_every"),
    ("train.keep_checkpoints=-1", "train.keep_checkpoints"), ("model.z_dim=0", "model.z_dim"),
    ("data.frame_stride=0", "data.frame_stride"), ("model.frames=0", "model.frames"),
    ("train.lr_g=inf", "train.lr_g"), ("train.adam_betas=1,0.5", "train.adam_betas"),
    ("model.d_ch=-3", "model.d_ch"), ("train.seed=-1", "train.seed"),
]


@pytest.mark.parametrize("override, key", BAD_TRAIN)
def test_rows8_9_bad_config_values_are_one_line_and_create_nothing(tmp_path, capsys, override, key):
    rc, err = train_cli(capsys, tmp_path / "x", override)
    assert rc == 2 and key in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("steps", ["-1", "0"])
def test_row9_max_steps_below_one(tmp_path, capsys, steps):
    rc, err = cli(capsys, "train", *TINY, "--out", tmp_path / "x", "--max-steps", steps, "--no-progress")
    assert rc == 2
    assert rc == 2 and "train.max_steps" in err and not (tmp_path / "x").exists()


def test_rows8_9_validate_checks_types_of_a_config_built_in_python():
    cfg = get_preset("shapes")
    cfg.train.lr_g = "fast"
    with pytest.raises(ConfigError, match="train.lr_g expects float"):
        cfg.validate()
    cfg = get_preset("shapes")
    cfg.model.g_ch = True
    with pytest.raises(ConfigError, match="model.g_ch expects int"):
        cfg.validate()


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"[1, 2, 3]", b'{"model": 5}', b"\xff\xfe{}"])
def test_row8_config_file_that_is_binary_or_not_an_object(tmp_path, capsys, content):
    f = tmp_path / "cfg.json"
    f.write_bytes(content)
    with pytest.raises(ConfigError):
        load_config(path=str(f))
    rc, err = cli(capsys, "train", "--config", f, "--out", tmp_path / "x", "--no-progress")
    assert rc == 2 and str(f) in err and not (tmp_path / "x").exists()


def test_row8_unwritable_out(tmp_path, capsys):
    rc, err = train_cli(capsys, Path("/proc/dvdgan-x"))
    assert rc == 2 and "/proc/dvdgan-x" in err
    with pytest.raises(DvdganError, match="cannot"):
        check_writable("/proc/dvdgan-x")


@pytest.mark.parametrize("cmd", ["sample", "eval", "predict"])
def test_row8_out_that_is_a_file(run, tmp_path, capsys, cmd):
    afile = tmp_path / "afile"
    afile.write_text("x")
    extra = {"eval": ["--detector", "reference"], "predict": ["--evaluate"], "sample": []}[cmd]
    rc, err = cli(capsys, cmd, "--checkpoint", run, "--out", afile, *extra, "--no-progress")
    assert rc == 2 and "is a file" in err and afile.read_text() == "x"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only torch")
@pytest.mark.parametrize("cmd", ["sample", "eval", "predict", "train"])
def test_row8_cuda_on_a_cpu_only_torch(run, tmp_path, capsys, cmd):
    if cmd == "train":
        rc, err = train_cli(capsys, tmp_path / "x", "train.device=cuda")
    else:
        extra = {"eval": ["--detector", "reference"], "predict": ["--evaluate"], "sample": []}[cmd]
        rc, err = cli(capsys, cmd, "--checkpoint", run, "--out", tmp_path / "x", "--device", "cuda", *extra,
                      "--no-progress")
    assert rc == 2 and "CUDA" in err and not (tmp_path / "x").exists()


# ---- row 10: a failed start leaves nothing behind, and fails before building the model ------------


def _bad_videos(root: Path) -> Path:
    for rel in ("a/x.mp4", "a/y.mp4", "b/z.avi"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"not a video" * 10)
    return root


@pytest.mark.parametrize("case", ["missing", "empty", "all_bad"])
def test_row10_failed_start_leaves_nothing(tmp_path, capsys, case):
    data = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "all_bad": _bad_videos(tmp_path / "bad")}[case]
    if case == "empty":
        (data / "cls").mkdir(parents=True)
    out = tmp_path / "x"
    rc, err = train_cli(capsys, out, "--data", data)
    assert rc == 2 and not out.exists(), err


def test_row10_wrong_data_on_a_big_preset_fails_fast(tmp_path, capsys):
    t0 = time.perf_counter()
    rc, err = cli(capsys, "train", "--preset", "kinetics600-12x64", "--data", "/nonexistent", "--out",
                  tmp_path / "x", "--no-progress")
    assert rc == 2 and "/nonexistent" in err and time.perf_counter() - t0 < 20
    assert not (tmp_path / "x").exists()


# ---- row 11: --checkpoint naming another file -----------------------------------------------------


def test_row11_other_file_in_a_checkpoint_dir_is_an_error(run, tmp_path, capsys):
    ck = ckpt_io.list_checkpoints(run / "checkpoints")[-1]
    (ck / "evil.pt").write_bytes(b"x")
    try:
        with pytest.raises(CheckpointError, match="is not a checkpoint"):
            ckpt_io.resolve_checkpoint(ck / "evil.pt")
        rc, err = cli(capsys, "sample", "--checkpoint", ck / "evil.pt", "--out", tmp_path / "s", "--no-progress")
        assert rc == 2 and "evil.pt is not a checkpoint" in err
    finally:
        (ck / "evil.pt").unlink()
    for name in ckpt_io.CHECKPOINT_FILES:
        assert ckpt_io.resolve_checkpoint(ck / name) == ck


# ---- row 12: refusals are one line ----------------------------------------------------------------


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_row12_pickled_train_state_is_one_line_without_warnings(run, tmp_path, recwarn):
    ck = ckpt_copy(run, tmp_path / "ck")
    with open(ck / "train_state.pt", "wb") as f:
        pickle.dump({"opt_g": _Evil()}, f)
    with pytest.raises(CheckpointError) as e:
        ckpt_io.load_train_state(ck)
    msg = str(e.value)
    assert "\n" not in msg and "refused" in msg and "Weights only load failed" not in msg
    assert not [w for w in recwarn if "pickle" in str(w.message).lower() or "weights_only" in str(w.message)]


def test_row12_resume_with_a_pickled_train_state_is_one_line(tmp_path, capsys):
    out = tmp_path / "r"
    assert train_cli(capsys, out, "train.checkpoint_every=1", steps=1)[0] == 0
    torch.save({"x": _Evil()}, ckpt_io.list_checkpoints(out / "checkpoints")[-1] / "train_state.pt")
    rc, err = train_cli(capsys, out, "--resume", steps=2)
    assert rc == 2 and "refused" in err


# ---- row 13: prepare on bad data; empty class folders; TensorBoard after resume -------------------


def test_row13_prepare_all_bad_data_is_an_error(tmp_path, capsys):
    src = _bad_videos(tmp_path / "src")
    rc, err = cli(capsys, "prepare", "--dataset", "folder", "--src", src, "--out", tmp_path / "p",
                  "--resolution", 16, "--quiet")
    assert rc == 2 and "no usable video" in err


def test_row13_resumed_prepare_does_not_repeat_bad_log_lines(video_tree, tmp_path):
    import shutil

    from dvdgan.data.prepare import prepare

    src = tmp_path / "src"
    shutil.copytree(video_tree, src)
    (src / "beta" / "broken.mp4").write_bytes(b"junk" * 20)
    out = tmp_path / "p"
    prepare("folder", src, out, 16, shard_size=2, progress=False)
    log = (out / "bad_videos.log").read_text().splitlines()
    assert len(log) == 1
    (out / "all" / "manifest.json").unlink()  # as if killed before the manifest recorded the shards
    prepare("folder", src, out, 16, shard_size=2, progress=False)
    assert (out / "bad_videos.log").read_text().splitlines() == log


def test_row13_empty_class_folder_is_reported_not_a_class(video_tree, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(video_tree, root)
    (root / "empty").mkdir()
    fl = list_folder(root)
    assert fl.class_names == ["alpha", "beta"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty" in err[0] and "not made classes" in err[0]


def _scalar_steps(tb: Path) -> list[tuple[str, int]]:
    """(tag, step) of every scalar in the run's event files, honouring purges (purge_step)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    seen: list[tuple[str, int]] = []
    for f in sorted(tb.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        for ev in EventFileLoader(str(f)).Load():
            if ev.HasField("session_log") and ev.session_log.status == ev.session_log.START:
                seen = [(t, s) for t, s in seen if s < ev.step]
            for v in ev.summary.value:
                seen.append((v.tag, ev.step))
    return seen


def test_row13_tensorboard_logs_no_step_twice_after_resume(tmp_path, capsys):
    import shutil

    out = tmp_path / "r"
    assert train_cli(capsys, out, "train.checkpoint_every=2", "train.keep_checkpoints=5", steps=4)[0] == 0
    shutil.rmtree(ckpt_io.list_checkpoints(out / "checkpoints")[-1])  # as if killed before step 4's save
    time.sleep(1.1)  # a new event file name (one per second)
    assert train_cli(capsys, out, "--resume", steps=4)[0] == 0
    steps = _scalar_steps(out / "tensorboard")
    assert len(steps) == len(set(steps)), sorted(s for s in steps if steps.count(s) > 1)[:4]


# ---- guarantees that must still hold --------------------------------------------------------------


def test_resume_still_continues_after_the_new_checks(tmp_path, capsys):
    out = tmp_path / "r"
    assert train_cli(capsys, out, "train.checkpoint_every=1", steps=1)[0] == 0
    assert train_cli(capsys, out, "--resume", steps=2)[0] == 0
    assert ckpt_io.list_checkpoints(out / "checkpoints")[-1].name == "step_00000002"
    assert isinstance(Config.from_json((out / "config.json").read_text()), Config)
    assert not (out / ".lock").read_text().strip() == ""
    with pytest.raises(DataError):
        from dvdgan.commands.common import check_data

        check_data(apply_overrides(get_preset("shapes"), ["data.dataset=folder", "data.path=/nonexistent"]))
