"""Shared fixtures: tiny, validated model configurations that build and run in milliseconds on CPU."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dvdgan.config import Config, ModelConfig

# 16x16 frames, 4 generated frames, two generator groups (4 -> 8 -> 16), three D blocks.
TINY_MODEL = dict(
    resolution=16, frames=4, g_ch=4, g_multipliers=(4, 4, 2), d_ch=4, d_multipliers=(2, 4, 4),
    frames_per_spatial_d=2, num_classes=3, z_dim=8, embed_dim=8,
)


def make_tiny_model_config(**overrides) -> ModelConfig:
    """A validated tiny ModelConfig; keyword arguments override single fields."""
    return Config(model=ModelConfig(**{**TINY_MODEL, **overrides})).validate().model


@pytest.fixture
def tiny_model_config() -> Callable[..., ModelConfig]:
    """Factory fixture: ``tiny_model_config(frames=8, context_frames=2)`` -> validated ModelConfig."""
    return make_tiny_model_config
