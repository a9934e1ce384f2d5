"""The generator of B.2 and DVD-GAN-FP's (B.4): shapes, tanh range, per-timestep BN, final layers,
class conditioning (class ids or a given class embedding), the conditioning stack, and the networks
against their straightforward formulation (dvdgan/baselines.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dvdgan.baselines import StraightforwardConvGRU, build_straightforward_generator
from dvdgan.models import Generator
from dvdgan.models.layers import ConditionalBatchNorm, TimestepBatchNorm
from dvdgan.models.prediction import PredictionGenerator, build_generator

B = 2


def _inputs(cfg, seed: int = 0, b: int = B):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, cfg.z_dim, generator=g)
    y = torch.randint(cfg.num_classes, (b,), generator=g)
    return z, y


def _context(cfg, seed: int = 0, b: int = B):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, cfg.context_frames, 3, cfg.resolution, cfg.resolution, generator=g) * 2 - 1


def test_generator_output_shape_and_tanh_range(tiny_model_config):
    cfg = tiny_model_config()
    torch.manual_seed(0)
    g = Generator(cfg)
    z, y = _inputs(cfg)
    out = g(z * 20, y)  # large z: saturates tanh somewhere
    assert out.shape == (B, cfg.frames, 3, cfg.resolution, cfg.resolution)
    assert out.abs().max() <= 1.0
    assert torch.isfinite(out).all()


def test_every_bn_keeps_running_stats_per_timestep(tiny_model_config):
    cfg = tiny_model_config()
    g = Generator(cfg)
    bns = [m for m in g.modules() if isinstance(m, TimestepBatchNorm)]
    # two GBlocks x two CBNs per group, plus the final BN
    assert len(bns) == 4 * cfg.num_groups + 1
    for bn in bns:
        assert isinstance(bn, ConditionalBatchNorm)  # B.2: [z; e(y)] feeds every BN of G
        assert bn.frames == cfg.frames
        channels = bn.gain.out_features
        assert bn.gain.in_features == cfg.z_dim + cfg.embed_dim
        assert bn.running_mean.numel() == bn.running_var.numel() == cfg.frames * channels


def test_final_layers_are_bn_relu_conv_tanh(tiny_model_config):
    """Appendix D: G ends with BN -> relu -> conv -> tanh."""
    cfg = tiny_model_config()
    torch.manual_seed(0)
    g = Generator(cfg)
    assert isinstance(g.out_bn, ConditionalBatchNorm)
    assert g.out_bn.gain.out_features == g.out_conv.in_channels == cfg.g_ch * cfg.g_multipliers[-1]
    assert g.out_conv.out_channels == 3 and g.out_conv.kernel_size == (3, 3)
    seen = {}
    g.out_bn.register_forward_hook(lambda m, a, o: seen.__setitem__("bn_out", o))
    g.out_conv.register_forward_hook(lambda m, a, o: seen.update(conv_in=a[0], conv_out=o))
    out = g(*_inputs(cfg))
    torch.testing.assert_close(seen["conv_in"], F.relu(seen["bn_out"]), rtol=0, atol=0)
    torch.testing.assert_close(out.flatten(0, 1), torch.tanh(seen["conv_out"]), rtol=0, atol=0)


def test_class_conditioning_changes_the_output(tiny_model_config):
    cfg = tiny_model_config()
    torch.manual_seed(0)
    g = Generator(cfg).eval()
    z, _ = _inputs(cfg)
    with torch.no_grad():
        a = g(z, torch.tensor([0, 0]))
        b = g(z, torch.tensor([1, 1]))
        a2 = g(z, torch.tensor([0, 0]))
    torch.testing.assert_close(a, a2, rtol=0, atol=0)
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("init", ["orthogonal", "normal"])
def test_class_embedding_initial_scale(tiny_model_config, init):
    """model.g_embed_init: "orthogonal" gives unit-norm rows of e(y) (BigGAN-PyTorch), "normal" gives
    N(0, 1) entries, so |e(y)| ~ sqrt(embed_dim) ~ |z| and the class is as loud as z at step 0."""
    cfg = tiny_model_config(embed_dim=64, num_classes=6, g_embed_init=init)
    torch.manual_seed(0)
    norms = Generator(cfg).embed.weight.detach().norm(dim=1)
    if init == "orthogonal":
        torch.testing.assert_close(norms, torch.ones(6), rtol=0, atol=1e-5)
    else:
        assert ((norms > 0.7 * 8) & (norms < 1.3 * 8)).all(), norms  # sqrt(64) = 8
        assert norms.std() > 1e-3  # drawn, not normalised


def test_eval_mode_sample_does_not_depend_on_the_rest_of_the_batch(tiny_model_config):
    """Appendix D: BN statistics must not make a sample depend on its batch at sampling time."""
    cfg = tiny_model_config()
    torch.manual_seed(0)
    g = Generator(cfg)
    for s in range(3):  # populate the running statistics
        g(*_inputs(cfg, seed=10 + s, b=4))
    g.eval()
    z, y = _inputs(cfg, seed=1, b=3)
    with torch.no_grad():
        together = g(z, y)
        alone = g(z[1:2], y[1:2])
    torch.testing.assert_close(together[1:2], alone, rtol=1e-5, atol=1e-5)


def test_changing_a_later_timestep_does_not_affect_earlier_frames(tiny_model_config):
    """The ConvGRU is causal: frame t is computed from frames <= t only, and BN does not
    leak information across timesteps (stats per timestep), even in training mode."""
    cfg = tiny_model_config()
    torch.manual_seed(0)
    g = Generator(cfg)
    first_group = g.groups[0]
    captured = {}

    def perturb_last_frame(module, args, output):
        if captured.get("perturb"):
            output = output.clone()
            output[:, -1] = output[:, -1] * 3 + 1  # hidden states of the last timestep only
        return output

    first_group.gru.register_forward_hook(perturb_last_frame)
    z, y = _inputs(cfg, b=3)
    a = g(z, y)
    captured["perturb"] = True
    b = g(z, y)
    torch.testing.assert_close(a[:, :-1], b[:, :-1], rtol=0, atol=1e-6)
    assert (a[:, -1] - b[:, -1]).abs().max() > 1e-4


def test_class_embedding_replaces_e_of_y(tiny_model_config):
    """BigGAN-style class interpolation: G takes the class embedding itself; e(y) gives G(z, y)."""
    cfg = tiny_model_config()
    torch.manual_seed(0)
    g = Generator(cfg)
    z, y = _inputs(cfg, b=3)
    for mode in ("train", "eval"):
        g.train(mode == "train")
        with torch.no_grad():
            by_id = g(z, y)
            by_embedding = g(z, class_embedding=g.embed(y))
            halfway = g(z, class_embedding=(g.embed.weight[0] + g.embed.weight[1]).expand(3, -1) / 2)
        torch.testing.assert_close(by_embedding, by_id, rtol=0, atol=0)
        assert (halfway - by_id).abs().max() > 1e-4
    with pytest.raises(ValueError, match="exactly one"):
        g(z, y, class_embedding=g.embed(y))
    with pytest.raises(ValueError, match="exactly one"):
        g(z)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_generator_equals_its_straightforward_formulation(tiny_model_config, mode):
    torch.manual_seed(0)
    oracle = build_straightforward_generator(tiny_model_config(gru_initial_state="learned"))
    with torch.no_grad():
        for p in oracle.parameters():  # learned initial states, biases: nothing at its initial zero
            p.add_(0.05 * torch.randn_like(p))
    cfg = oracle.cfg
    fast = Generator(cfg)
    fast.load_state_dict(oracle.state_dict())  # the same keys: checkpoints load both ways
    if mode == "eval":
        for s in range(2):
            fast(*_inputs(cfg, seed=20 + s))
            oracle(*_inputs(cfg, seed=20 + s))
        fast.eval()
        oracle.eval()
    z, y = _inputs(cfg)
    a, b = fast(z, y), oracle(z, y)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for k, v in fast.state_dict().items():  # running statistics evolve identically
        torch.testing.assert_close(v, oracle.state_dict()[k], rtol=1e-5, atol=1e-5, msg=k)
    if mode == "train":
        a.square().mean().backward()
        b.square().mean().backward()
        for (name, p), q in zip(fast.named_parameters(), oracle.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


# --------------------------------------------------------------------------------------------
# DVD-GAN-FP (B.4)
# --------------------------------------------------------------------------------------------


def _fp_config(tiny_model_config, **kw):
    return tiny_model_config(context_frames=2, num_classes=1, **kw)


def test_build_generator_picks_the_variant(tiny_model_config):
    assert type(build_generator(tiny_model_config())) is Generator
    assert isinstance(build_generator(_fp_config(tiny_model_config)), PredictionGenerator)


def test_conditioning_stack_feeds_every_groups_initial_state(tiny_model_config):
    cfg = _fp_config(tiny_model_config)
    torch.manual_seed(0)
    g = build_generator(cfg)
    ctx = _context(cfg)
    states = g.conditioning(ctx)
    assert len(states) == len(g.groups) == cfg.num_groups
    assert g.state_resolutions == [4 * 2**i for i in range(cfg.num_groups)]  # smallest first
    for s, r, c, group in zip(states, g.state_resolutions, g.state_channels, g.groups):
        assert s.shape == (B, c, r, r)
        assert c == group.gru.hidden_channels and r == group.resolution
        assert (s >= 0).all()  # 3x3 conv -> relu
    # the ConvGRU of every group starts from the conditioning stack's state
    h0s = []
    hooks = [grp.gru.register_forward_pre_hook(lambda m, a: h0s.append(a[1])) for grp in g.groups]
    z, y = _inputs(cfg)
    with torch.no_grad():
        out = g(z, y, ctx)
    for h in hooks:
        h.remove()
    assert out.shape == (B, cfg.frames, 3, cfg.resolution, cfg.resolution)
    assert len(h0s) == len(states)
    for h0, s in zip(h0s, states):
        torch.testing.assert_close(h0, s, rtol=1e-6, atol=1e-6)


def test_conditioning_stack_stacks_the_context_frames_on_channels(tiny_model_config):
    """Each context frame goes through the stack separately; a state depends on every frame."""
    cfg = _fp_config(tiny_model_config)
    torch.manual_seed(0)
    g = build_generator(cfg)
    ctx = _context(cfg)
    with torch.no_grad():
        base = g.conditioning(ctx)
        for c in range(cfg.context_frames):
            ctx2 = ctx.clone()
            ctx2[:, c] = -ctx2[:, c]
            ctx2[1] = ctx[1]  # video 1 unchanged: videos are processed independently
            changed = g.conditioning(ctx2)
            for s0, s1 in zip(base, changed):
                assert (s0[0] - s1[0]).abs().max() > 1e-5
                torch.testing.assert_close(s0[1], s1[1], rtol=0, atol=1e-6)


def test_prediction_output_depends_on_context_and_z(tiny_model_config):
    cfg = _fp_config(tiny_model_config)
    torch.manual_seed(0)
    g = build_generator(cfg).eval()
    z, _ = _inputs(cfg)
    y = torch.zeros(B, dtype=torch.long)  # B.4: class id fixed to 0
    ctx = _context(cfg)
    with torch.no_grad():
        base = g(z, y, ctx)
        other_ctx = g(z, y, _context(cfg, seed=1))
        other_z = g(torch.randn_like(z), y, ctx)
    assert base.shape == (B, cfg.frames, 3, cfg.resolution, cfg.resolution)
    assert (base - other_ctx).abs().max() > 1e-4
    assert (base - other_z).abs().max() > 1e-4
    with pytest.raises(ValueError, match="context"):
        g(z, y)


def test_prediction_generator_equals_its_straightforward_formulation(tiny_model_config):
    torch.manual_seed(0)
    fast = build_generator(_fp_config(tiny_model_config))
    oracle = build_straightforward_generator(fast.cfg)
    assert type(oracle) is PredictionGenerator
    assert all(type(g.gru) is StraightforwardConvGRU for g in oracle.groups)
    oracle.load_state_dict(fast.state_dict())
    z, y = _inputs(fast.cfg)
    ctx = _context(fast.cfg)
    torch.testing.assert_close(fast(z, y, ctx), oracle(z, y, ctx), rtol=1e-5, atol=1e-5)
    e = fast.embed(y).detach()
    torch.testing.assert_close(fast(z, None, ctx, class_embedding=e), oracle(z, y, ctx), rtol=1e-5, atol=1e-5)
