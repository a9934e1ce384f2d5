"""The training loop: exact resume, crash safety, non-finite losses, fast == reference, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, tiny_cfg
from dvdgan.checkpoint import list_checkpoints, load_train_state
from dvdgan.cli import main
from dvdgan.training import Trainer, train


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_checkpoints(run / "checkpoints")[-1] / "model.safetensors"))


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("ema_bn_stats", ["copy", "standing"])
def test_resume_is_bit_identical(tmp_path, ema_bn_stats):
    cfg = tiny_cfg("train.checkpoint_every=100", f"train.ema_bn_stats={ema_bn_stats}")
    train(cfg, tmp_path / "straight", max_steps=4, progress=False)
    train(cfg, tmp_path / "split", max_steps=2, progress=False)
    train(cfg, tmp_path / "split", max_steps=4, resume=True, progress=False)
    assert_same(weights(tmp_path / "straight"), weights(tmp_path / "split"))
    a = load_train_state(list_checkpoints(tmp_path / "straight" / "checkpoints")[-1])
    b = load_train_state(list_checkpoints(tmp_path / "split" / "checkpoints")[-1])
    assert a["step"] == b["step"] == 4
    assert torch.equal(a["opt_d"]["state"][0]["exp_avg"], b["opt_d"]["state"][0]["exp_avg"])


def test_standing_statistics_are_the_mean_of_batch_statistics():
    from dvdgan.models.layers import TimestepBatchNorm
    from dvdgan.training.ema import standing_bn_stats

    bn = TimestepBatchNorm(3, frames=2, momentum=0.1)
    net = torch.nn.Sequential(bn).eval()
    batches = [torch.randn(4 * 2, 3, 5, 5) * (i + 1) + i for i in range(3)]  # [B*T, C, H, W]
    standing_bn_stats(net, lambda i: (batches[i],), 3)
    per_t = [x.view(4, 2 * 3, 5, 5) for x in batches]  # every (timestep, channel) is a BN channel
    mean = torch.stack([x.mean((0, 2, 3)) for x in per_t]).mean(0)
    var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in per_t]).mean(0)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5) and torch.allclose(bn.running_var, var, atol=1e-4)
    assert not net.training and bn.momentum == 0.1  # mode and momentum restored


def test_standing_statistics_are_saved_for_the_ema_generator(tmp_path):
    cfg = tiny_cfg("train.checkpoint_every=100", "train.ema_bn_stats=standing", "train.standing_stats_batches=2")
    train(cfg, tmp_path / "run", max_steps=3, progress=False)
    w = weights(tmp_path / "run")
    stats = [k for k in w if k.startswith("generator_ema.") and k.endswith("running_mean")]
    assert stats
    raw = [k.replace("generator_ema.", "generator.", 1) for k in stats]
    assert any(not torch.equal(w[a], w[b]) for a, b in zip(stats, raw))  # not G's statistics


def test_optimised_and_straightforward_steps_compute_the_same_updates(tmp_path):
    """Trainer.train_step (fused blocks, no G graph in D updates, no D weight gradients in G updates)
    against baselines.StraightforwardStep (literal updates) from the same
    weights and seeds: the weights after two full steps (2 D updates + 1 G update each) agree."""
    from dvdgan.baselines import StraightforwardStep
    from dvdgan.bench import FixedBatches

    # adam_eps: conv biases that feed a BN have an exactly-zero true gradient; with a tiny eps Adam
    # turns their rounding noise into full-size steps. The shapes preset's lr 1e-3 amplifies float
    # rounding between the formulations past the tolerance; lr 2e-4 keeps it about formulation.
    cfg = tiny_cfg("train.checkpoint_every=100", "train.adam_eps=1e-4", "train.lr_g=2e-4", "train.lr_d=2e-4")
    batches = FixedBatches(cfg.model, 4)
    trainer = Trainer(cfg, tmp_path, progress=False, dataset=batches)
    baseline = StraightforwardStep(trainer)
    start = trainer.G.state_dict()["groups.0.block1.conv1.weight"].clone()
    for seed in (1, 2):
        torch.manual_seed(seed)
        trainer.train_step(batches)
        torch.manual_seed(seed)
        baseline(batches)
    for ours, theirs in ((trainer.G, baseline.G), (trainer.D, baseline.D), (trainer.G_ema, baseline.G_ema)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-5, msg=k)
    assert not torch.allclose(start, trainer.G.state_dict()["groups.0.block1.conv1.weight"], atol=1e-5)  # it trained
    trainer.close()


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch, capsys):
    cfg = tiny_cfg("train.checkpoint_every=1")
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.train(max_steps=1)
    good = weights(tmp_path)
    import dvdgan.training.trainer as tr

    monkeypatch.setattr(tr, "dual_d_loss", lambda r, f: (torch.tensor(float("nan")), {}))
    with pytest.raises(tr.TrainingDiverged, match="non-finite discriminator loss .* last good checkpoint"):
        trainer.train(max_steps=3)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000001"]
    assert_same(good, weights(tmp_path))
    trainer.close()


def test_nonfinite_loss_can_skip(tmp_path, monkeypatch):
    import dvdgan.training.trainer as tr

    real = tr.dual_g_loss
    calls = {"n": 0}

    def flaky(scores):
        calls["n"] += 1
        loss, parts = real(scores)
        return (loss * float("inf"), parts) if calls["n"] == 1 else (loss, parts)

    monkeypatch.setattr(tr, "dual_g_loss", flaky)
    trainer = Trainer(tiny_cfg("train.nonfinite=skip", "train.checkpoint_every=100"), tmp_path, progress=False)
    trainer.train(max_steps=2)
    assert trainer.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in trainer.G.parameters())
    trainer.close()


def _cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    env["OMP_NUM_THREADS"] = "1"  # bit-identical floats need the same thread count in every run
    return env


def _train_cli(args: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dvdgan", "train", *args, "--no-progress"]
    return subprocess.Popen(cmd, env=_cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_never_leaves_a_broken_checkpoint_and_resume_matches(tmp_path):
    args = ["--preset", "shapes", *TINY, "train.checkpoint_every=1", "train.keep_checkpoints=2", "--max-steps", "8"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _train_cli([*args, "--out", str(straight)]).wait() == 0
    proc = _train_cli([*args, "--out", str(killed)])
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(killed / "checkpoints")) < 2:
        time.sleep(0.05)
    time.sleep(0.3)  # land the kill somewhere inside a step or a checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for ck in list_checkpoints(killed / "checkpoints"):  # every complete checkpoint loads
        load_file(str(ck / "model.safetensors"))
        load_train_state(ck)
    resumed = _train_cli([*args, "--out", str(killed), "--resume"])
    assert resumed.wait() == 0, resumed.stderr.read().decode()
    assert_same(weights(straight), weights(killed))


def test_run_dir_contents(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--preset", "shapes", *TINY, "train.sample_every=1", "--out", str(out),
                 "--max-steps", "2", "--no-progress"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["resolution"] == 16 and cfg["train"]["max_steps"] == 2
    assert (out / "samples" / "step_00000002.gif").exists()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    ck = list_checkpoints(out / "checkpoints")[-1]
    keys = load_file(str(ck / "model.safetensors")).keys()
    assert any(k.startswith("generator_ema.") for k in keys) and any(k.startswith("discriminator.") for k in keys)
    st = load_train_state(ck)
    assert {"opt_g", "opt_d", "rng", "step"} <= st.keys()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "nope"], "unknown preset"),
        (["model.nonsense=3"], "unknown config key model.nonsense"),
        (["model.g_ch=abc"], "model.g_ch expects int"),
        (["model.g_embed_init=uniform"], "model.g_embed_init='uniform' is not one of orthogonal, normal"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["train", *argv, "--out", str(out), "--max-steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_unwritable_run_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", *TINY, "--out", str(blocker / "run"), "--max-steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "run directory" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("videos,classes,expected", [
    (12, 6, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]),
    (12, 8, [0, 1, 2, 3, 4, 5, 6, 7]),  # 12 // 8 = 1 each, not 1 each and 5 of the last class
    (16, 7, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]),
    (4, 10, [0, 2, 5, 7]),  # fewer videos than classes: spread over the classes
])
def test_sample_grid_has_the_same_number_of_videos_per_class(tmp_path, videos, classes, expected):
    cfg = tiny_cfg(f"train.num_sample_videos={videos}", f"model.num_classes={classes}")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.fixed_y.tolist() == expected
    assert len(trainer.fixed_z) == len(expected)
    assert trainer.run_title() == "shapes"
