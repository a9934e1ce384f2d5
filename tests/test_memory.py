"""The memory planner (dvdgan.memory, ``dvdgan info --memory``): its fake-tensor estimate of a
training step's peak against the peak of a real Trainer step on real CPU tensors, its batch line,
the largest-batch search, and the command line."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_cfg
from dvdgan.cli import main
from dvdgan.errors import DvdganError
from dvdgan.memory import GB, batch_line, compare, estimate_step, largest_batch, parse_size, predict_peak

MINIMAL = ["model.resolution=8", "model.g_multipliers=2,1", "model.d_multipliers=1,2", "model.frames=2",
           "model.frames_per_spatial_d=1"]


CONFIGS = {  # name: (overrides of the tiny config, per-replica batch)
    "fp32": ((), 4),
    "bf16+checkpointing": (("train.bf16=true", "train.activation_checkpointing=true"), 4),
    "prediction+accumulation": (("model.context_frames=1", "model.num_classes=1", "train.grad_accum=2", *MINIMAL), 3),
}


@pytest.fixture(scope="module")
def compared() -> dict[str, dict]:
    return {name: compare(tiny_cfg(*extra), batch, "cpu") for name, (extra, batch) in CONFIGS.items()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_estimate_matches_the_real_step_within_15_percent(compared, name):
    """Estimated (fake tensors) against measured (a real Trainer.train_step on real CPU tensors,
    live storages counted the same way, after a warm-up step): within 15 % (it is within 1 %)."""
    r = compared[name]
    assert 0.85 < r["ratio"] < 1.15, r
    est = r["estimate"]
    s = est["state"]
    assert s["adam"] == 2 * (s["weights_g"] + s["weights_d"]) and s["ema_g"] == s["weights_g"]
    assert est["state_bytes"] >= sum(s.values())  # plus buffers (BN statistics, SN vectors)
    assert est["activations_bytes"] > 0 and "rss_growth_bytes" in r["measured"]


def test_bf16_and_checkpointing_need_less_activation_memory(compared):
    plain, both = compared["fp32"]["estimate"], compared["bf16+checkpointing"]["estimate"]
    assert plain["state_bytes"] == both["state_bytes"]  # weights, gradients, Adam stay fp32
    assert both["activations_bytes"] < 0.7 * plain["activations_bytes"]


def test_peak_is_affine_in_the_batch_per_phase():
    cfg = tiny_cfg(*MINIMAL)
    line = batch_line(cfg, target="cpu")
    assert set(line["phases"]) == {"d_update", "d_optimizer", "g_update", "g_optimizer", "ema_update"}
    for net in ("d", "g"):  # Adam's step holds only what the update's locals still hold
        assert line["phases"][f"{net}_optimizer"][1] < line["phases"][f"{net}_update"][1]
    at6 = estimate_step(cfg, 6, target="cpu")["peak_bytes"]
    assert abs(predict_peak(line, 6) - at6) <= 0.01 * at6


def _fake_estimate(fixed: dict[str, int], per_video: dict[str, int]):
    calls = []

    def estimate(cfg, b, round_to=None, **kw):
        calls.append(b)
        phases = {k: fixed[k] + per_video[k] * b for k in fixed}
        return {"peak_bytes": max(phases.values()), "phase_peak_bytes": phases}

    return estimate, calls


def test_largest_batch_search():
    """The line's phases cross (G update steeper, D update larger at batch 1): the search uses
    the largest phase at every batch; overhead and fragmentation are left free."""
    est, calls = _fake_estimate({"d_update": 10 * GB, "g_update": 5 * GB}, {"d_update": GB, "g_update": 2 * GB})
    r = largest_batch(None, 80 * GB, estimate=est, overhead=2 * GB, fragmentation=0.1)
    # g_update = 5 + 2b GB; 1.1 (5 + 2b) + 2 <= 80  ->  b <= 32.95
    assert r["largest"] == 32 and r["estimated_peak_bytes"] == 69 * GB
    assert calls == [8, 32, 32]  # the line (batches 8 and 32), then the check at 32
    assert largest_batch(None, 10 * GB, estimate=est)["largest"] == 0  # the state alone does not fit
    est2, _ = _fake_estimate({"d_update": 10 * GB, "g_update": 5 * GB}, {"d_update": GB, "g_update": 2 * GB})
    # 14 GB free: at batch 4 the D update (10 + 4 GB) binds, not the G update (5 + 8 GB)
    assert largest_batch(None, 16 * GB, estimate=est2, overhead=2 * GB, fragmentation=0.0)["largest"] == 4


def test_parse_size():
    assert parse_size("80GB") == 80e9 and parse_size("40 GiB") == 40 * 2**30 and parse_size("24e9") == 24e9
    for bad in ("banana", "-3GB", "0"):
        with pytest.raises(DvdganError):
            parse_size(bad)


def test_info_memory_command(capsys):
    args = ["info", "--memory", "--device-memory", "3GB", *MINIMAL, "train.batch_size=2"]
    assert main([*args, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["largest_batch"] >= 1 and r["largest_batch_bf16_checkpointing"] >= r["largest_batch"]
    assert r["fits"] and r["estimate"]["batch"] == r["largest_batch"]
    assert main([*args, "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "at batch 2: peak" in out and "largest per-replica batch" in out and "BatchNorm" in out


@pytest.mark.parametrize("bad", [["--device-memory", "lots"], ["--batch", "0"], ["--replicas", "0"]])
def test_info_memory_bad_input(capsys, bad):
    assert main(["info", "--memory", *bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
