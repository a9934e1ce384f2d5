"""Pretrained generators: ``export-generator`` strips a checkpoint to its EMA generator, the result
samples exactly like the full checkpoint, and ``pretrained:NAME`` resolves to the generators
shipped inside the package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import tiny_run
from dvdgan import pretrained
from dvdgan.checkpoint import resolve_checkpoint
from dvdgan.cli import main
from dvdgan.errors import CheckpointError
from dvdgan.sampling import generate, load_generator


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("run"), steps=2)


def test_export_keeps_only_the_ema_generator_and_samples_the_same(run_dir, tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["export-generator", "--checkpoint", str(run_dir), "--out", str(out)]) == 0
    assert "step 2" in capsys.readouterr().out
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("generator_ema.") for k in keys)
    assert (out / "model.safetensors").stat().st_mode == (out / "meta.json").stat().st_mode
    meta = json.loads((out / "meta.json").read_text())
    assert meta["step"] == 2 and meta["generator_only"] and meta["config"]["model"]["resolution"] == 16
    full = generate(run_dir, classes=[0, 1], n=4, seed=5)
    small = generate(out, classes=[0, 1], n=4, seed=5)
    assert torch.equal(full, small)
    # only the EMA generator is there: asking for the raw one is one clear error
    with pytest.raises(CheckpointError, match="generator.embed.weight is missing"):
        load_generator(out, ema=False)
    # refuses to write into a non-empty directory
    assert main(["export-generator", "--checkpoint", str(run_dir), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_pretrained_names_resolve_to_the_package_weights(run_dir, tmp_path, monkeypatch, capsys):
    weights = tmp_path / "weights"
    pretrained.export_generator(run_dir, weights / "tiny")
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", weights)
    assert pretrained.available() == ["tiny"]
    assert resolve_checkpoint("pretrained:tiny") == weights / "tiny"
    assert generate("pretrained:tiny", n=2).shape == (2, 4, 16, 16, 3)
    with pytest.raises(CheckpointError, match="no pretrained model 'nope'; available: tiny"):
        resolve_checkpoint("pretrained:nope")
    assert main(["sample", "--checkpoint", "pretrained:nope", "--out", str(tmp_path / "s")]) == 2
    assert "available: tiny" in capsys.readouterr().err


def test_the_shipped_shapes_generator_loads_and_samples_every_class():
    assert "shapes" in pretrained.available()
    g, cfg = load_generator("pretrained:shapes")
    assert cfg.name == "shapes" and cfg.model.num_classes == 6
    meta = json.loads((pretrained.WEIGHTS_DIR / "shapes" / "meta.json").read_text())
    assert meta["step"] == cfg.train.max_steps  # the preset's full run
    videos = generate("pretrained:shapes", classes=list(range(6)), n=6, seed=0)
    assert videos.shape == (6, cfg.model.frames, 32, 32, 3)
    # a trained generator: frames of one sample differ (it moves), samples of classes differ
    v = videos.float()
    assert (v[:, 1:] - v[:, :-1]).abs().mean() > 1.0
    assert (v[0] - v[3]).abs().mean() > 1.0
