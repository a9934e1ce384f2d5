"""Shared fixtures: tiny, validated configurations that build and run in milliseconds on CPU.

Test modules import the plain helpers too: ``from conftest import TINY, tiny_cfg``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dvdgan.config import Config, ModelConfig, apply_overrides, get_preset

# 16x16 frames, 4 generated frames, two generator groups (4 -> 8 -> 16), three D blocks.
TINY_MODEL = dict(
    resolution=16, frames=4, g_ch=4, g_multipliers=(4, 4, 2), d_ch=4, d_multipliers=(2, 4, 4),
    frames_per_spatial_d=2, num_classes=3, z_dim=8, embed_dim=8,
)
# The same network as overrides of the default (shapes) preset, with a training set-up that logs
# every step, keeps no samples and an effective batch of 4.
TINY_NETWORK = [
    "model.resolution=16", "model.frames=4", "model.g_ch=4", "model.g_multipliers=4,4,2", "model.d_ch=4",
    "model.d_multipliers=2,4,4", "model.frames_per_spatial_d=2", "model.z_dim=8", "model.embed_dim=8",
    "train.batch_size=4",
]
TINY = TINY_NETWORK + [
    "train.sample_every=0", "train.eval_every=0", "train.log_every=1", "train.ema_start=2", "train.ema_decay=0.9",
    "data.shapes_train_size=64", "data.shapes_test_size=32", "data.num_workers=0",
]


def make_tiny_model_config(**overrides) -> ModelConfig:
    """A validated tiny ModelConfig; keyword arguments override single fields."""
    return Config(model=ModelConfig(**{**TINY_MODEL, **overrides})).validate().model


def tiny_cfg(*extra: str) -> Config:
    """The shapes preset with the TINY overrides, then ``extra`` ones."""
    return apply_overrides(get_preset("shapes"), TINY + list(extra))


def tiny_run(out: Path, steps: int) -> Path:
    """Train the tiny shapes config for ``steps`` steps into run directory ``out`` (one checkpoint, at
    the end); returns ``out``."""
    from dvdgan.training import train

    train(tiny_cfg("train.checkpoint_every=100"), out, max_steps=steps, progress=False)
    return out


@pytest.fixture
def tiny_model_config() -> Callable[..., ModelConfig]:
    """Factory fixture: ``tiny_model_config(frames=8, context_frames=2)`` -> validated ModelConfig."""
    return make_tiny_model_config
