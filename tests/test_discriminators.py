"""The dual discriminator of section 3.1 / B.2 and the hinge losses of 2.2: D_S judges k frames
per video at full resolution and sums their scores, D_T judges all frames after phi, both
projection-conditioned; the FP variant never lets D_S sample the conditioning frames (B.4); D
against its straightforward formulation (dvdgan/baselines.py)."""

from __future__ import annotations

import pytest
import torch

from dvdgan.baselines import build_straightforward_discriminator
from dvdgan.losses import d_hinge_loss, dual_d_loss, dual_g_loss, g_hinge_loss
from dvdgan.models import DualDiscriminator, SpatialDiscriminator, TemporalDiscriminator
from dvdgan.models.discriminators import downsample_phi, sample_frame_indices
from dvdgan.models.layers import DBlock, SeparableAttention


def _coded_video(b: int, t: int, res: int) -> torch.Tensor:
    """[B, T, 3, H, W] whose every pixel of frame (i, j) equals 100 * i + j."""
    code = 100 * torch.arange(b).view(b, 1) + torch.arange(t).view(1, t)
    return code.float().view(b, t, 1, 1, 1).expand(b, t, 3, res, res).contiguous()


def _decode(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    code = frames[:, :, 0, 0, 0].long()
    return code // 100, code % 100  # (video index, frame index), each [B, k]


# --------------------------------------------------------------------------------------------
# D_S: k full-resolution frames per video (3.1)
# --------------------------------------------------------------------------------------------


def test_spatial_d_gets_k_distinct_full_resolution_frames_per_video(tiny_model_config):
    cfg = tiny_model_config(frames=8, frames_per_spatial_d=2)
    torch.manual_seed(0)
    ds = SpatialDiscriminator(cfg)
    b, t, k, res = 16, 8, 2, cfg.resolution
    video = _coded_video(b, t, res)
    seen = []
    orig = ds.score_frames
    ds.score_frames = lambda frames, y: (seen.append(frames), orig(frames, y))[1]
    score = ds(video, torch.zeros(b, dtype=torch.long))
    assert score.shape == (b,)
    (frames,) = seen
    assert frames.shape == (b, k, 3, res, res)  # exactly k frames, full resolution
    vid, idx = _decode(frames)
    assert torch.equal(vid, torch.arange(b).view(b, 1).expand(b, k))  # each video's own frames
    assert torch.equal(frames, video[torch.arange(b)[:, None], idx])  # untouched pixels
    assert all(len(set(row.tolist())) == k for row in idx)  # no replacement
    assert len({tuple(row.tolist()) for row in idx}) > 1  # different videos, different frames


def test_spatial_d_per_video_draws_are_uniform_and_independent(tiny_model_config):
    cfg = tiny_model_config(frames=8, frames_per_spatial_d=2)
    ds = SpatialDiscriminator(cfg)
    video = _coded_video(16, 8, cfg.resolution)
    torch.manual_seed(0)
    counts = torch.zeros(8)
    distinct_rows = []
    for _ in range(50):
        _, idx = _decode(ds.sample_frames(video))
        counts += torch.bincount(idx.flatten(), minlength=8)
        distinct_rows.append(len({tuple(r.tolist()) for r in idx}))
    # 50 * 16 * 2 = 1600 draws over 8 frames: 200 expected per frame, sd ~ 13
    assert counts.sum() == 1600
    assert (counts - 200).abs().max() < 60
    assert min(distinct_rows) > 4  # 28 possible pairs: 16 videos virtually never share one draw


def test_spatial_d_per_batch_sampling_uses_one_draw(tiny_model_config):
    cfg = tiny_model_config(frames=8, frames_per_spatial_d=3, spatial_d_sampling="per_batch")
    ds = SpatialDiscriminator(cfg)
    video = _coded_video(16, 8, cfg.resolution)
    torch.manual_seed(0)
    draws = set()
    for _ in range(10):
        _, idx = _decode(ds.sample_frames(video))
        assert (idx == idx[:1]).all()
        draws.add(tuple(idx[0].tolist()))
    assert len(draws) > 1  # still random from batch to batch


def test_spatial_d_sampling_with_replacement_allows_repeats(tiny_model_config):
    cfg = tiny_model_config(frames=4, frames_per_spatial_d=6, spatial_d_replacement=True)
    ds = SpatialDiscriminator(cfg)
    torch.manual_seed(0)
    _, idx = _decode(ds.sample_frames(_coded_video(8, 4, cfg.resolution)))
    assert idx.shape == (8, 6) and idx.min() >= 0 and idx.max() < 4


def test_spatial_d_never_samples_the_conditioning_frames(tiny_model_config):
    cfg = tiny_model_config(frames=5, context_frames=3, num_classes=1, frames_per_spatial_d=2)
    ds = SpatialDiscriminator(cfg)
    video = _coded_video(16, cfg.total_frames, cfg.resolution)
    torch.manual_seed(0)
    counts = torch.zeros(cfg.total_frames)
    for _ in range(40):
        frames = ds.sample_frames(video)
        assert frames.shape == (16, 2, 3, cfg.resolution, cfg.resolution)
        counts += torch.bincount(_decode(frames)[1].flatten(), minlength=cfg.total_frames)
    assert counts[:3].sum() == 0  # B.4: the first C frames are never chosen
    assert (counts[3:] > 0).all()  # every generated frame is


def test_sample_frame_indices_generator_is_reproducible():
    a = sample_frame_indices(4, 10, 3, generator=torch.Generator().manual_seed(5))
    b = sample_frame_indices(4, 10, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (4, 3)
    assert (a[:, 1:] > a[:, :-1]).all()  # sorted in time, distinct


def test_spatial_score_is_the_sum_of_per_frame_scores(tiny_model_config):
    cfg = tiny_model_config(frames=6, frames_per_spatial_d=3)
    torch.manual_seed(0)
    ds = SpatialDiscriminator(cfg)
    video = torch.randn(3, 6, 3, cfg.resolution, cfg.resolution)
    y = torch.tensor([0, 1, 2])
    with torch.no_grad():
        torch.manual_seed(7)
        score = ds(video, y)
        torch.manual_seed(7)
        per_frame = ds.score_frames(ds.sample_frames(video), y)
        assert per_frame.shape == (3, 3)
        torch.testing.assert_close(score, per_frame.sum(1), rtol=1e-5, atol=1e-5)
        # each frame is judged individually: permuting the frames permutes the per-frame scores
        frames = ds.sample_frames(video)
        perm = torch.tensor([2, 0, 1])
        torch.testing.assert_close(ds.score_frames(frames[:, perm], y), ds.score_frames(frames, y)[:, perm],
                                   rtol=1e-5, atol=1e-5)


def test_spatial_d_judges_explicit_frame_indices(tiny_model_config):
    cfg = tiny_model_config(frames=6, frames_per_spatial_d=2)
    torch.manual_seed(0)
    d = DualDiscriminator(cfg)
    video = torch.randn(3, 6, 3, cfg.resolution, cfg.resolution)
    y = torch.tensor([0, 1, 2])
    idx = torch.tensor([[0, 5], [1, 2], [3, 3]])
    with torch.no_grad():
        ds, dt = d(video, y, frame_indices=idx)
        expected = d.spatial.score_frames(video[torch.arange(3)[:, None], idx], y).sum(1)
        torch.testing.assert_close(ds, expected, rtol=0, atol=0)
        torch.testing.assert_close(dt, d.temporal(video, y), rtol=0, atol=0)  # D_T: every frame
        other = d.spatial(video, y, frame_indices=torch.tensor([[0, 4], [1, 2], [3, 3]]))
    assert (other[0] - ds[0]).abs() > 1e-6 and torch.equal(other[1:], ds[1:])


def test_global_frame_draws_sliced_per_replica_equal_one_process(tiny_model_config):
    """data_sharding="split": each replica judges its rows of one global draw of the k frames,
    exactly what one process judging the whole batch draws from the same generator."""
    cfg = tiny_model_config(frames=5, context_frames=2, num_classes=1, frames_per_spatial_d=2)
    torch.manual_seed(0)
    ds = SpatialDiscriminator(cfg)
    video = torch.randn(4, cfg.total_frames, 3, cfg.resolution, cfg.resolution)
    y = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        whole = ds(video, y, generator=torch.Generator().manual_seed(3))
        idx = ds.draw_frame_indices(4, cfg.total_frames, generator=torch.Generator().manual_seed(3))
        assert idx.min() >= cfg.context_frames  # B.4: never a conditioning frame
        parts = [ds(video[rows], y[rows], frame_indices=idx[rows]) for rows in (slice(0, 2), slice(2, 4))]
    torch.testing.assert_close(torch.cat(parts), whole, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# D_T: all frames after phi (3.1, 4.3)
# --------------------------------------------------------------------------------------------


def _capture_temporal_input(dt: TemporalDiscriminator, video, y) -> torch.Tensor:
    seen = []
    orig = dt.score_downsampled
    dt.score_downsampled = lambda x, y: (seen.append(x), orig(x, y))[1]
    score = dt(video, y)
    assert score.shape == (video.shape[0],)
    (x,) = seen
    return x


@pytest.mark.parametrize("mode,div", [("avg2", 2), ("avg4", 4), ("identity", 1)])
def test_temporal_d_gets_all_frames_after_phi(tiny_model_config, mode, div):
    cfg = tiny_model_config(temporal_downsample=mode)
    torch.manual_seed(0)
    dt = TemporalDiscriminator(cfg)
    b, t, res = 2, cfg.frames, cfg.resolution
    video = torch.randn(b, t, 3, res, res)
    x = _capture_temporal_input(dt, video, torch.zeros(b, dtype=torch.long))
    assert x.shape == (b, t, 3, res // div, res // div)
    assert dt.input_resolution == res // div
    expected = video.view(b, t, 3, res // div, div, res // div, div).mean(dim=(4, 6))  # div x div average
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)


def test_temporal_d_crop_half_is_a_contiguous_crop(tiny_model_config):
    cfg = tiny_model_config(temporal_downsample="crop_half")
    torch.manual_seed(0)
    dt = TemporalDiscriminator(cfg)
    b, t, res = 6, cfg.frames, cfg.resolution
    video = torch.arange(b * t * 3 * res * res, dtype=torch.float32).view(b, t, 3, res, res)
    x = _capture_temporal_input(dt, video, torch.zeros(b, dtype=torch.long))
    half = res // 2
    assert x.shape == (b, t, 3, half, half)
    offsets = set()
    for i in range(b):
        flat = int(x[i, 0, 0, 0, 0]) - i * t * 3 * res * res
        oy, ox = divmod(flat, res)
        assert 0 <= oy <= res - half and 0 <= ox <= res - half
        assert torch.equal(x[i], video[i, :, :, oy:oy + half, ox:ox + half])
        offsets.add((oy, ox))
    assert len({o[0] for o in offsets}) > 1 and len({o[1] for o in offsets}) > 1  # random per video


def test_temporal_d_sees_context_and_generated_frames(tiny_model_config):
    """B.4: D_T operates on the concatenation of the C conditioning and T generated frames: on an
    odd count (5), every frame counts (3-D pooling with a partial last window), as the
    straightforward formulation computes it."""
    cfg = tiny_model_config(frames=3, context_frames=2, num_classes=1)
    torch.manual_seed(0)
    d = DualDiscriminator(cfg)
    oracle = build_straightforward_discriminator(cfg)
    oracle.load_state_dict(d.state_dict())
    video = torch.randn(2, cfg.total_frames, 3, cfg.resolution, cfg.resolution)
    y = torch.zeros(2, dtype=torch.long)
    x = _capture_temporal_input(d.temporal, video, y)
    assert x.shape[1] == cfg.total_frames == 5
    with torch.no_grad():
        score = d.temporal(video, y)
        torch.testing.assert_close(score, oracle.temporal(video, y), rtol=1e-5, atol=1e-5)
        for t in (0, 4):  # the first (context) and the last generated frame both move the score
            changed = video.clone()
            changed[0, t] += 1
            moved = d.temporal(changed, y)
            assert (moved[0] - score[0]).abs() > 1e-5 and torch.equal(moved[1], score[1])
            torch.testing.assert_close(moved, oracle.temporal(changed, y), rtol=1e-5, atol=1e-5)


def test_temporal_d_first_blocks_are_3d(tiny_model_config):
    cfg = tiny_model_config()
    dt = TemporalDiscriminator(cfg)
    assert [blk.dims for blk in dt.blocks3d] == [3, 3]  # B.2: the first two residual blocks are 3-D (3x3x3)
    assert [blk.dims for blk in dt.blocks2d] == [2]
    assert dt.blocks3d[0].conv1.kernel_size == (3, 3, 3)


def test_temporal_d_loads_a_state_dict_of_the_old_layout(tiny_model_config):
    """Checkpoints written when D_T had one list ``blocks`` (attention included) still load."""
    cfg = tiny_model_config(d_attention=(4,))
    torch.manual_seed(0)
    d = DualDiscriminator(cfg)
    assert [type(b) for b in d.temporal.blocks3d] == [DBlock, SeparableAttention, DBlock]
    with torch.no_grad():
        d.temporal.blocks3d[1].gamma.fill_(0.5)  # attention active
    old_names = {"blocks3d.0.": "blocks.0.", "blocks3d.1.": "blocks.1.", "blocks3d.2.": "blocks.2.",
                 "blocks2d.0.": "blocks.3."}  # the old layout, written out
    old = {}
    for k, v in d.state_dict().items():
        for new_prefix, old_prefix in old_names.items():
            k = k.replace("temporal." + new_prefix, "temporal." + old_prefix)
        old[k] = v
    assert "temporal.blocks.3.conv1.weight" in old and not any("blocks3d" in k for k in old)
    torch.manual_seed(1)
    loaded = DualDiscriminator(cfg)
    loaded.load_state_dict(old)  # strict
    for k, v in d.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    video = torch.randn(2, cfg.frames, 3, cfg.resolution, cfg.resolution)
    y = torch.tensor([0, 2])
    with torch.no_grad():
        torch.testing.assert_close(loaded.temporal(video, y), d.temporal(video, y), rtol=0, atol=0)
    torch.manual_seed(1)
    dt = TemporalDiscriminator(cfg)  # D_T alone, keys without the "temporal." prefix
    dt.load_state_dict({k.removeprefix("temporal."): v for k, v in old.items() if k.startswith("temporal.")})
    assert torch.equal(dt.blocks2d[0].conv2.weight, d.temporal.blocks2d[0].conv2.weight)


@pytest.mark.parametrize("model", [
    dict(frames=5, frames_per_spatial_d=3, d_attention=(8, 4)),
    dict(frames=3, context_frames=2, num_classes=1, temporal_d_3d_blocks=1, temporal_d_downsample_time=False),
])
def test_discriminator_equals_its_straightforward_formulation(tiny_model_config, model):
    cfg = tiny_model_config(**model)
    torch.manual_seed(0)
    fast = DualDiscriminator(cfg)
    with torch.no_grad():
        for p in fast.parameters():  # attention gains and biases: nothing at its initial zero
            p.add_(0.05 * torch.randn_like(p))
    oracle = build_straightforward_discriminator(cfg)
    oracle.load_state_dict(fast.state_dict())
    video = torch.randn(3, cfg.total_frames, 3, cfg.resolution, cfg.resolution)
    y = torch.tensor([0, 0, 0]) if cfg.num_classes == 1 else torch.tensor([0, 1, 2])
    outs = [net(video, y, generator=torch.Generator().manual_seed(4)) for net in (fast, oracle)]
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for ds, dt in outs:
        (ds - 2 * dt).sum().backward()
    for (name, p), q in zip(fast.named_parameters(), oracle.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_temporal_d_score_depends_on_frame_order(tiny_model_config):
    cfg = tiny_model_config()
    torch.manual_seed(0)
    dt = TemporalDiscriminator(cfg)
    video = torch.randn(2, cfg.frames, 3, cfg.resolution, cfg.resolution)
    y = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        a, b = dt(video, y), dt(video.flip(1), y)
    assert (a - b).abs().max() > 1e-6


def test_phi_rejects_unknown_modes():
    with pytest.raises(ValueError):
        downsample_phi(torch.zeros(1, 2, 3, 4, 4), "bogus")


# --------------------------------------------------------------------------------------------
# Projection class conditioning (B.3) and the pixel budget (3.1)
# --------------------------------------------------------------------------------------------


def test_class_conditioning_changes_both_scores(tiny_model_config):
    cfg = tiny_model_config()
    torch.manual_seed(0)
    d = DualDiscriminator(cfg)
    video = torch.randn(2, cfg.frames, 3, cfg.resolution, cfg.resolution)
    scores = {}
    with torch.no_grad():
        for c in (0, 1):
            y = torch.full((2,), c, dtype=torch.long)
            scores[c] = d(video, y, generator=torch.Generator().manual_seed(3))
        same = d(video, torch.zeros(2, dtype=torch.long), generator=torch.Generator().manual_seed(3))
    for i in range(2):  # D_S and D_T
        torch.testing.assert_close(scores[0][i], same[i], rtol=0, atol=0)
        assert (scores[0][i] - scores[1][i]).abs().min() > 1e-6


def test_pixels_per_video_of_the_paper_example():
    """3.1: 48 frames at 128x128: 786,432 pixels -> 8x128x128 + 48x64x64 = 327,680 (58 % fewer)."""
    from dvdgan.config import ModelConfig

    cfg = ModelConfig(resolution=128, frames=48, g_ch=1, d_ch=1, g_multipliers=(1,) * 6,
                      d_multipliers=(1,) * 6, frames_per_spatial_d=8, num_classes=2, z_dim=2, embed_dim=2)
    with torch.device("meta"):
        d = DualDiscriminator(cfg)
    assert d.pixels_per_video(48) == {"spatial": 131072, "temporal": 196608, "total": 327680,
                                      "full_video": 786432}


# --------------------------------------------------------------------------------------------
# Hinge losses (2.2)
# --------------------------------------------------------------------------------------------


def test_d_hinge_loss_on_hand_picked_scores():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - real) = 0, 0.5, 2
    fake = torch.tensor([-2.0, 0.0, 0.5])  # relu(1 + fake) = 0, 1, 1.5
    assert d_hinge_loss(real, fake).item() == pytest.approx(2.5 / 3 + 2.5 / 3)
    # confident and correct -> zero loss (the hinge saturates)
    assert d_hinge_loss(torch.tensor([1.0, 5.0]), torch.tensor([-1.0, -3.0])).item() == 0.0


def test_g_hinge_loss_on_hand_picked_scores():
    fake = torch.tensor([-2.0, 0.0, 5.0])
    assert g_hinge_loss(fake).item() == pytest.approx(-1.0)  # -E[D(G(z))], no clipping
    fake.requires_grad_(True)
    g_hinge_loss(fake).backward()
    torch.testing.assert_close(fake.grad, torch.full((3,), -1 / 3))


def test_dual_losses_sum_both_discriminators():
    rs, rt = torch.tensor([0.0, 2.0]), torch.tensor([1.5, -0.5])
    fs, ft = torch.tensor([0.0, -3.0]), torch.tensor([1.0, 0.0])
    total, parts = dual_d_loss((rs, rt), (fs, ft))
    ls = (1.0 + 0.0) / 2 + (1.0 + 0.0) / 2  # relu(1 - [0, 2]) = 1, 0; relu(1 + [0, -3]) = 1, 0
    lt = (0.0 + 1.5) / 2 + (2.0 + 1.0) / 2  # relu(1 - [1.5, -0.5]) = 0, 1.5; relu(1 + [1, 0]) = 2, 1
    assert parts["d_loss_spatial"].item() == pytest.approx(ls)
    assert parts["d_loss_temporal"].item() == pytest.approx(lt)
    assert total.item() == pytest.approx(ls + lt)
    g_total, g_parts = dual_g_loss((fs, ft))
    assert g_parts["g_loss_spatial"].item() == pytest.approx(1.5)
    assert g_parts["g_loss_temporal"].item() == pytest.approx(-0.5)
    assert g_total.item() == pytest.approx(1.0)


def test_default_preset_d_t_sees_full_resolution_frames_and_paper_presets_pool():
    # The tiny default preset's D_T judges every frame at 32x32 (phi = identity, docs/design.md);
    # the paper presets keep 2x2 average pooling (3.1).
    from dvdgan.config import PRESETS, get_preset

    m = get_preset("shapes").model
    dt = TemporalDiscriminator(m)
    assert dt.input_resolution == m.resolution
    video = torch.randn(2, m.frames, 3, m.resolution, m.resolution)
    assert torch.equal(downsample_phi(video, m.temporal_downsample), video)
    for name in PRESETS:
        if not name.startswith("shapes"):
            assert get_preset(name).model.temporal_downsample == "avg2", name
