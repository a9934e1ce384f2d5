"""Video DiffAugment (one transform per clip, all frames alike) and ADA's adaptive p."""

from __future__ import annotations

import pytest
import torch

from dvdgan.augment import AdaptiveP, VideoAugment, parse_policy
from dvdgan.config import Config, TrainConfig
from dvdgan.errors import ConfigError

OPS = ("translation", "cutout", "color")


def static_clips(b: int = 6, t: int = 5, h: int = 16, seed: int = 0) -> torch.Tensor:
    """[b, t, 3, h, h] in [-1, 1], every frame of a clip the same image."""
    g = torch.Generator().manual_seed(seed)
    frame = torch.rand(b, 1, 3, h, h, generator=g) * 1.6 - 0.8
    return frame.expand(b, t, 3, h, h).contiguous()


@pytest.mark.parametrize("op", OPS)
def test_same_transform_for_every_frame_and_different_clips(op):
    x = static_clips()
    x[1] = x[0]  # two identical clips
    y = VideoAugment(op, p=1.0)(x, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(y, x)
    assert torch.equal(y, y[:, :1].expand_as(y)), "a static clip must stay static: one transform per clip"
    assert not torch.equal(y[0], y[1]), "identical clips get different transforms"


def test_a_moving_clip_moves_the_same_after_translation():
    x = torch.zeros(3, 4, 3, 16, 16)
    for t in range(4):
        x[:, t, :, 8, 4 + t] = 1.0  # a dot moving one pixel per frame
    y = VideoAugment("translation", p=1.0)(x, generator=torch.Generator().manual_seed(0))
    for b in range(3):
        pos = [torch.nonzero(y[b, t, 0]) for t in range(4)]
        assert all(len(p) == 1 for p in pos)
        assert [int(p[0, 1] - pos[0][0, 1]) for p in pos] == [0, 1, 2, 3]  # motion kept
        shift = pos[0][0] - torch.tensor([8, 4])
        assert shift.abs().max() <= 2  # at most 1/8 of 16 px


def test_cutout_zeroes_one_square_in_every_frame():
    x = torch.ones(4, 3, 3, 16, 16)
    y = VideoAugment("cutout", p=1.0)(x, generator=torch.Generator().manual_seed(0))
    zero = y == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))
    per_clip = zero[:, 0, 0].sum(dim=(1, 2))
    assert (per_clip > 0).all() and (per_clip <= 64).all()


def test_p_zero_and_empty_policy_are_identity_and_p_is_a_per_clip_probability():
    x = static_clips(b=400, t=2, h=8)
    assert VideoAugment("translation,cutout,color", p=0.0)(x) is x
    assert VideoAugment("", p=1.0)(x) is x
    y = VideoAugment("color", p=0.3)(x, generator=torch.Generator().manual_seed(0))
    changed = (y != x).flatten(1).any(1).float().mean()
    assert 0.22 < changed < 0.38


def test_reproducible_with_a_generator():
    x = static_clips()
    aug = VideoAugment("translation,cutout,color", p=0.7)
    a = aug(x, generator=torch.Generator().manual_seed(5))
    b = aug(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, aug(x, generator=torch.Generator().manual_seed(6)))


@pytest.mark.parametrize("policy", [*OPS, "translation,cutout,color"])
def test_gradient_flows_to_the_input(policy):
    x = static_clips(b=4).requires_grad_(True)
    VideoAugment(policy, p=1.0)(x, generator=torch.Generator().manual_seed(0)).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_unknown_op():
    with pytest.raises(ValueError):
        parse_policy("translation,flip")
    assert parse_policy(" color , cutout") == ("color", "cutout")


def test_adaptive_p_rises_when_d_is_overconfident_and_falls_otherwise():
    ada = AdaptiveP(target=0.6, interval=4, kimg=1.0)
    overconfident = torch.ones(16)  # sign(D(real)) = +1 > 0.6
    ps = [ada.update(overconfident) for _ in range(8)]
    assert ps[:3] == [0.0] * 3 and ps[3] == pytest.approx(64 / 1000) and ps[7] == pytest.approx(128 / 1000)
    assert ada.r_t == 1.0
    unsure = torch.tensor([1.0, -1.0] * 8)  # r_t = 0 < 0.6
    for _ in range(4):
        p = ada.update(unsure)
    assert p == pytest.approx(64 / 1000)
    for _ in range(200):
        p = ada.update(unsure)
    assert p == 0.0  # clamped
    for _ in range(4000):
        p = ada.update(overconfident)
    assert p == 1.0


def test_adaptive_p_state_round_trip():
    a = AdaptiveP(target=0.6, interval=3, kimg=0.5, p=0.2)
    gen = torch.Generator().manual_seed(0)
    scores = [torch.randn(8, generator=gen) + 0.8 for _ in range(20)]
    for s in scores[:7]:  # mid-interval
        a.update(s)
    b = AdaptiveP(target=0.6, interval=3, kimg=0.5)
    b.load_state_dict(a.state_dict())
    assert [a.update(s) for s in scores[7:]] == [b.update(s) for s in scores[7:]]


def test_config_fields_are_validated():
    ok = Config(train=TrainConfig(augment="translation,color", augment_p=1.0)).validate()
    assert ok.train.ada_target == 0.6
    Config(train=TrainConfig(augment="cutout", augment_adaptive=True)).validate()
    for bad in (dict(augment="flip", augment_p=1.0), dict(augment="color"), dict(augment_adaptive=True),
                dict(augment="color", augment_p=1.5), dict(augment="color", augment_adaptive=True, ada_kimg=0)):
        with pytest.raises(ConfigError):
            Config(train=TrainConfig(**bad)).validate()
