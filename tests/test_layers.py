"""Building blocks against the paper: the ConvGRU equations of B.2, BN statistics per timestep (B.2,
appendix D), spectral norm and orthogonal init (B.3), separable attention (appendix A); every block
against its straightforward formulation (dvdgan/baselines.py); activation checkpointing."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from dvdgan.baselines import make_straightforward
from dvdgan.models import DualDiscriminator
from dvdgan.models.layers import (
    ConditionalBatchNorm,
    ConvGRU,
    DBlock,
    GBlock,
    SeparableAttention,
    SNConv2d,
    SNConv3d,
    SNEmbedding,
    SNLinear,
    TimestepBatchNorm,
    conv3x3_avg_pool,
    power_iteration,
    set_activation_checkpointing,
    upsample_conv3x3,
)
from dvdgan.models.prediction import build_generator

# --------------------------------------------------------------------------------------------
# ConvGRU (B.2)
# --------------------------------------------------------------------------------------------

CIN, CHID, B, T, S = 3, 5, 2, 4, 6  # in != hidden channels, so a swapped [h; x] order cannot pass


def _gru(straightforward: bool) -> ConvGRU:
    torch.manual_seed(0)
    gru = ConvGRU(CIN, CHID, 3)
    with torch.no_grad():
        # Scale the (orthogonal, sigma = 1) weights so that a gate without spectral norm would
        # differ from the reference, and give every gate a non-zero bias.
        for i, conv in enumerate((gru.reset_gate, gru.update_gate, gru.candidate)):
            conv.weight.mul_(2.0 + i)
            conv.bias.copy_(0.3 * torch.randn_like(conv.bias))
    power_iteration(gru, 20)
    return make_straightforward(gru) if straightforward else gru


def _reference_gru(gru: ConvGRU, x: torch.Tensor, h0: torch.Tensor, frames: int) -> torch.Tensor:
    """The four equations of B.2, literally (3x3 convs, sigma, sigma, relu)."""
    wr, br = gru.reset_gate.sn_weight(), gru.reset_gate.bias
    wu, bu = gru.update_gate.sn_weight(), gru.update_gate.bias
    wc, bc = gru.candidate.sn_weight(), gru.candidate.bias
    h, out = h0, []
    for t in range(frames):
        xt = x if x.dim() == 4 else x[:, t]
        r = torch.sigmoid(F.conv2d(torch.cat([h, xt], 1), wr, br, padding=1))
        u = torch.sigmoid(F.conv2d(torch.cat([h, xt], 1), wu, bu, padding=1))
        c = torch.relu(F.conv2d(torch.cat([xt, r * h], 1), wc, bc, padding=1))
        h = u * h + (1 - u) * c
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("shared", [False, True], ids=["per_frame_input", "shared_input"])
def test_convgru_matches_the_b2_equations(shared):
    """Both formulations against the equations written out by hand, in float64."""
    torch.manual_seed(1)
    x = torch.randn(B, CIN, S, S) if shared else torch.randn(B, T, CIN, S, S)
    x, h0 = x.double(), torch.randn(B, CHID, S, S, dtype=torch.float64)  # non-zero initial state
    for straightforward in (True, False):
        gru = _gru(straightforward).double()
        # the layers really are spectrally normalised: sn_weight != weight after the scaling
        assert not torch.allclose(gru.candidate.sn_weight(), gru.candidate.weight, atol=1e-3)
        with torch.no_grad():
            out = gru(x, h0, T)
            assert out.shape == (B, T, CHID, S, S)
            torch.testing.assert_close(out, _reference_gru(gru, x, h0, T), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("straightforward", [True, False], ids=["straightforward", "fast"])
def test_convgru_candidate_is_relu_not_tanh(straightforward):
    gru = _gru(straightforward)
    x, h0 = torch.zeros(B, T, CIN, S, S), torch.zeros(B, CHID, S, S)
    # With x = h = 0 every pre-activation is its bias: h_1 = (1 - sigmoid(b_u)) * rho(b_c).
    with torch.no_grad():
        gru.candidate.bias.fill_(-5.0)  # relu -> c = 0 exactly (tanh would give -1)
        assert torch.equal(gru(x, h0, T), torch.zeros(B, T, CHID, S, S))
        gru.candidate.bias.fill_(3.0)  # relu -> c = 3 (tanh would be < 1)
        h1 = gru(x[:, :1], h0, 1)[:, 0]
    expected = (1 - torch.sigmoid(gru.update_gate.bias)).view(1, -1, 1, 1) * 3.0
    torch.testing.assert_close(h1, expected.expand_as(h1), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Batch normalisation per timestep (B.2: "We do not reduce over the time dimension")
# --------------------------------------------------------------------------------------------

BN_B, BN_T, BN_C, BN_H = 4, 3, 2, 3
COND = 5


def _bn(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "timestep":
        bn = TimestepBatchNorm(BN_C, BN_T)
        with torch.no_grad():
            bn.weight.copy_(torch.rand(BN_C) + 0.5)
            bn.bias.copy_(torch.randn(BN_C))
        return bn
    bn = ConditionalBatchNorm(BN_C, COND, BN_T)
    with torch.no_grad():
        bn.bias.bias.copy_(torch.randn(BN_C))
    return bn


def _call(bn: nn.Module, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    return bn(x, cond) if isinstance(bn, ConditionalBatchNorm) else bn(x)


def _video_batch(seed: int) -> torch.Tensor:
    """[B*T, C, H, W] (time-major inside each video) whose statistics differ per timestep."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BN_B, BN_T, BN_C, BN_H, BN_H, generator=g)
    t = torch.arange(BN_T, dtype=torch.float32).view(1, BN_T, 1, 1, 1)
    return (x * (1 + t) + 3 * t).flatten(0, 1)


@pytest.mark.parametrize("kind", ["timestep", "conditional"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_bn_output_at_t_depends_only_on_timestep_t(kind, mode):
    bn = _bn(kind)
    cond = torch.randn(BN_B, COND)
    if mode == "eval":
        for i in range(5):  # populate the running statistics, then switch to eval
            _call(bn, _video_batch(100 + i), cond)
        bn.eval()
    assert bn.running_mean.numel() == bn.running_var.numel() == BN_T * BN_C  # one per (t, c)
    x = _video_batch(0)
    perturbed = x.clone().view(BN_B, BN_T, BN_C, BN_H, BN_H)
    t_changed = 1
    perturbed[:, t_changed] = perturbed[:, t_changed] * (1 + 2 * torch.rand_like(perturbed[:, t_changed])) + 1
    stats_before = (bn.running_mean.clone(), bn.running_var.clone())
    with torch.no_grad():
        out = _call(bn, x, cond).view(BN_B, BN_T, BN_C, BN_H, BN_H)
        stats_x = (bn.running_mean.clone(), bn.running_var.clone())
        bn.running_mean.copy_(stats_before[0])
        bn.running_var.copy_(stats_before[1])
        out_p = _call(bn, perturbed.flatten(0, 1), cond).view(BN_B, BN_T, BN_C, BN_H, BN_H)
        stats_p = (bn.running_mean.clone(), bn.running_var.clone())
    for t in range(BN_T):
        if t == t_changed:
            assert not torch.allclose(out[:, t], out_p[:, t], atol=1e-3)
        else:
            torch.testing.assert_close(out[:, t], out_p[:, t], rtol=0, atol=1e-6)
    # running statistics: only the perturbed timestep's entries move (training mode only updates)
    for sx, sp in zip(stats_x, stats_p):
        sx, sp = sx.view(BN_T, BN_C), sp.view(BN_T, BN_C)
        for t in range(BN_T):
            if t == t_changed and mode == "train":
                assert not torch.allclose(sx[t], sp[t])
            else:
                torch.testing.assert_close(sx[t], sp[t], rtol=0, atol=1e-6)


def test_bn_running_stats_are_per_timestep_and_used_in_eval():
    bn = _bn("timestep")
    bn.momentum = 1.0  # running stats = the last batch's statistics
    x = _video_batch(7)
    bn(x)
    xv = x.view(BN_B, BN_T, BN_C, BN_H, BN_H)
    mean = xv.mean(dim=(0, 3, 4))  # [T, C]: over batch and space, never over time
    var = xv.var(dim=(0, 3, 4), unbiased=True)
    torch.testing.assert_close(bn.running_mean.view(BN_T, BN_C), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var.view(BN_T, BN_C), var, rtol=1e-5, atol=1e-5)
    assert (mean[1:] - mean[:-1]).abs().min() > 1  # the timesteps really have different statistics
    bn.eval()
    with torch.no_grad():
        out = bn(x).view(BN_B, BN_T, BN_C, BN_H, BN_H)
    norm = (xv - mean[None, :, :, None, None]) / torch.sqrt(var[None, :, :, None, None] + bn.eps)
    expected = norm * bn.weight.view(1, 1, -1, 1, 1) + bn.bias.view(1, 1, -1, 1, 1)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_conditional_bn_uses_each_videos_conditioning_for_all_its_frames():
    bn = _bn("conditional").eval()
    x = _video_batch(3)
    cond = torch.randn(BN_B, COND)
    cond2 = cond.clone()
    cond2[2] += 1.0
    with torch.no_grad():
        a = bn(x, cond).view(BN_B, BN_T, BN_C, BN_H, BN_H)
        b = bn(x, cond2).view(BN_B, BN_T, BN_C, BN_H, BN_H)
    changed = (a - b).abs().amax(dim=(2, 3, 4)) > 1e-4  # [B, T]
    assert changed[2].all() and not changed[[0, 1, 3]].any()


# --------------------------------------------------------------------------------------------
# Spectral norm and orthogonal init (B.3)
# --------------------------------------------------------------------------------------------


def _sn_layers() -> dict[str, nn.Module]:
    return {
        "conv2d": SNConv2d(6, 8, 3, padding=1),
        "conv3d": SNConv3d(4, 5, 3, padding=1),
        "linear": SNLinear(7, 5),
        "embedding": SNEmbedding(5, 9),
    }


@pytest.mark.parametrize("name", ["conv2d", "conv3d", "linear", "embedding"])
def test_orthogonal_init(name):
    torch.manual_seed(0)
    layer = _sn_layers()[name]
    w = layer.weight.detach().flatten(1)
    gram = w @ w.t() if w.shape[0] <= w.shape[1] else w.t() @ w
    torch.testing.assert_close(gram, torch.eye(gram.shape[0]), rtol=0, atol=1e-5)
    if getattr(layer, "bias", None) is not None:
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


@pytest.mark.parametrize("name", ["conv2d", "conv3d", "linear", "embedding"])
def test_spectral_norm_keeps_largest_singular_value_near_one(name):
    torch.manual_seed(0)
    layer = _sn_layers()[name]
    with torch.no_grad():
        layer.weight.copy_(5 * torch.randn_like(layer.weight))  # sigma(W) far from 1
    assert torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2) > 5
    for _ in range(30):
        layer.power_iteration()
    with torch.no_grad():
        w_sn = layer.sn_weight()
    assert torch.linalg.matrix_norm(w_sn.flatten(1), ord=2).item() == pytest.approx(1.0, abs=2e-2)
    # ... and the forward pass uses the normalised weight
    exact = layer.weight.detach() / torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
    with torch.no_grad():
        if name == "embedding":
            y = torch.tensor([0, 3, 4])
            torch.testing.assert_close(layer(y), exact[y], rtol=2e-2, atol=2e-2)
        elif name == "linear":
            x = torch.randn(3, 7)
            torch.testing.assert_close(layer(x), F.linear(x, exact, layer.bias), rtol=2e-2, atol=2e-2)
        elif name == "conv2d":
            x = torch.randn(1, 6, 5, 5)
            expected = F.conv2d(x, exact, layer.bias, padding=1)
            torch.testing.assert_close(layer(x), expected, rtol=2e-2, atol=2e-2)
        else:
            x = torch.randn(1, 4, 3, 4, 4)
            expected = F.conv3d(x, exact, layer.bias, padding=1)
            torch.testing.assert_close(layer(x), expected, rtol=2e-2, atol=2e-2)


def test_power_iteration_helper_reaches_every_sn_layer():
    torch.manual_seed(0)
    net = nn.ModuleDict(_sn_layers())
    with torch.no_grad():
        for m in net.values():
            m.weight.mul_(3 + torch.rand(()))
    power_iteration(net, 30)
    for name, m in net.items():
        with torch.no_grad():
            sigma = torch.linalg.matrix_norm(m.sn_weight().flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=2e-2), name


# --------------------------------------------------------------------------------------------
# Separable attention (appendix A)
# --------------------------------------------------------------------------------------------


def _attention(c: int, gamma: float = 1.0) -> SeparableAttention:
    torch.manual_seed(0)
    att = SeparableAttention(c)
    with torch.no_grad():
        att.gamma.fill_(gamma)
    return att


def _reference_separable_attention(att: SeparableAttention, x: torch.Tensor) -> torch.Tensor:
    """Appendix A: softmax[XQ (XK)^T] XV over T, then H, then W; written with einsum on [B,T,H,W,C]."""
    y = x.permute(0, 1, 3, 4, 2)  # [B, T, H, W, C]
    for axis, proj in zip("thw", att.qkv):
        q, k, v = (y @ proj.sn_weight().t()).chunk(3, -1)
        i, j = "BTHWc", "BTHWc".replace(axis.upper(), "s")
        logits = torch.einsum(f"{i},{j}->BTHWs", q, k)
        a = torch.softmax(logits, -1)
        y = torch.einsum(f"BTHWs,{j}->{i}", a, v)
    return x + att.gamma * y.permute(0, 1, 4, 2, 3)


def test_separable_attention_matches_appendix_a():
    att = _attention(4, gamma=0.7)
    x = torch.randn(2, 3, 4, 5, 6)
    with torch.no_grad():
        out = att(x)
        torch.testing.assert_close(out, _reference_separable_attention(att, x), rtol=1e-5, atol=1e-5)
    assert out.shape == x.shape


def test_separable_attention_mixes_all_of_t_h_and_w():
    b, t, c, h, w = 2, 3, 4, 5, 6
    att = _attention(c)
    x = torch.randn(b, t, c, h, w)
    x2 = x.clone()
    x2[:, 0, :, 0, 0] += 3.0  # perturb one spatio-temporal position (t0, h0, w0) = (0, 0, 0)
    with torch.no_grad():
        out, out2 = att(x), att(x2)
    assert out.shape == (b, t, c, h, w)
    diff = (out - out2).abs().amax(dim=(0, 2))  # [T, H, W]
    # a position that differs from the perturbed one in ALL of t, h and w is reached
    assert diff[t - 1, h - 1, w - 1] > 1e-4
    assert (diff > 1e-4).all()


def test_separable_attention_sizes():
    b, t, c, h, w = 2, 3, 4, 5, 6
    att = _attention(c)
    with torch.no_grad():
        att(torch.randn(b, t, c, h, w))
    assert att.last_attention_sizes == [b * h * w * t * t, b * w * t * h * h, b * t * h * w * w]
    assert max(att.last_attention_sizes) * 10 < b * (h * w * t) ** 2


class _LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any op produces (a proxy for peak memory)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                self.largest = max(self.largest, o.numel())
        return out


def _largest(b: int, t: int, c: int, h: int, w: int) -> tuple[int, int]:
    att = _attention(c)
    x = torch.randn(b, t, c, h, w)
    with torch.no_grad(), _LargestTensor() as mode:
        att(x)
    return mode.largest, max(att.last_attention_sizes)


def test_separable_attention_memory_scales_as_max_of_the_three_axes():
    # T dominates: the T^2 map is the largest; doubling T multiplies it by 4 (at most)
    peak, amap = _largest(1, 16, 2, 2, 2)
    peak2, amap2 = _largest(1, 32, 2, 2, 2)
    assert amap2 == 4 * amap
    assert peak2 <= 4.01 * peak
    # H dominates: H^2 W T grows linearly in T (full attention, (HWT)^2, would grow by 4)
    peak, amap = _largest(1, 2, 2, 16, 2)
    peak2, amap2 = _largest(1, 4, 2, 16, 2)
    assert amap2 == 2 * amap
    assert peak2 <= 2.01 * peak
    assert peak2 * 4 <= (16 * 2 * 4) ** 2  # far below one full (HWT)^2 attention map


# --------------------------------------------------------------------------------------------
# Every block against its straightforward formulation (dvdgan/baselines.py), in float64
# --------------------------------------------------------------------------------------------


def _pair(module: nn.Module) -> tuple[nn.Module, nn.Module]:
    module = module.double()
    power_iteration(module, 2)
    return module, make_straightforward(copy.deepcopy(module))


def _run(module, inputs, call):
    xs = [x.detach().double().requires_grad_() if x.is_floating_point() else x for x in inputs]
    out = call(module, *xs)
    out = out if isinstance(out, torch.Tensor) else sum(o.sum() for o in out)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), [p.grad for p in module.parameters()] + [x.grad for x in xs if x.is_floating_point()]


def assert_same_function(module, inputs, call=lambda m, *x: m(*x)):
    """Outputs, gradients (parameters and inputs) and buffers (BN running statistics) of the
    block equal those of its straightforward formulation, in training and in eval mode."""
    fast, oracle = _pair(module)
    assert type(oracle) is not type(fast) and oracle.state_dict().keys() == fast.state_dict().keys()
    for train in (True, False):
        fast.train(train)
        oracle.train(train)
        of, gf = _run(fast, inputs, call)
        oo, go = _run(oracle, inputs, call)
        torch.testing.assert_close(of, oo, rtol=1e-9, atol=1e-10)
        assert len(gf) == len(go)
        for a, b in zip(gf, go):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
        for a, b in zip(fast.buffers(), oracle.buffers()):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
        fast.zero_grad(set_to_none=True)
        oracle.zero_grad(set_to_none=True)


@pytest.mark.parametrize("dims,pool", [(2, (2, 2)), (3, (2, 2, 2)), (3, (1, 2, 2))])
def test_conv3x3_avg_pool_is_the_literal_composition(dims, pool):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *((6,) if dims == 3 else ()), 8, 10, dtype=torch.double)
    w = torch.randn(5, 3, *(3,) * dims, dtype=torch.double)
    b = torch.randn(5, dtype=torch.double)
    conv, avg = (F.conv2d, F.avg_pool2d) if dims == 2 else (F.conv3d, F.avg_pool3d)
    torch.testing.assert_close(conv3x3_avg_pool(x, w, b, pool), avg(conv(x, w, b, padding=1), pool))


def test_conv3x3_avg_pool_odd_size_2d_floor_mode():
    x = torch.randn(1, 2, 7, 9, dtype=torch.double)
    w = torch.randn(3, 2, 3, 3, dtype=torch.double)
    torch.testing.assert_close(conv3x3_avg_pool(x, w, None, (2, 2)), F.avg_pool2d(F.conv2d(x, w, padding=1), 2))


def test_upsample_conv3x3_is_the_literal_composition():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 7, dtype=torch.double)
    w = torch.randn(6, 4, 3, 3, dtype=torch.double)
    b = torch.randn(6, dtype=torch.double)
    ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, b, padding=1)
    torch.testing.assert_close(upsample_conv3x3(x, w, b), ref)


def test_conditional_bn_equals_straightforward():
    torch.manual_seed(0)
    bn = ConditionalBatchNorm(5, cond_dim=6, frames=3)
    assert_same_function(bn, [torch.randn(2 * 3, 5, 4, 4), torch.randn(2, 6)])


@pytest.mark.parametrize("upsample,in_ch,out_ch", [(True, 6, 4), (False, 4, 4), (False, 4, 6)])
def test_gblock_equals_straightforward(upsample, in_ch, out_ch):
    torch.manual_seed(0)
    blk = GBlock(in_ch, out_ch, cond_dim=5, frames=3, upsample=upsample)
    assert_same_function(blk, [torch.randn(2 * 3, in_ch, 4, 4), torch.randn(2, 5)])


@pytest.mark.parametrize("dims,preact,down,time_down,t", [
    (2, False, True, False, 1), (2, True, True, False, 1), (2, True, False, False, 1),
    (3, False, True, True, 4), (3, True, True, True, 3), (3, True, True, False, 4), (3, True, True, True, 1),
])
def test_dblock_equals_straightforward(dims, preact, down, time_down, t):
    torch.manual_seed(0)
    blk = DBlock(3, 5, downsample=down, preactivation=preact, dims=dims, downsample_time=time_down)
    shape = (2, 3, t, 8, 8) if dims == 3 else (4, 3, 8, 8)
    assert_same_function(blk, [torch.randn(shape)])


@pytest.mark.parametrize("shared", [True, False])
def test_convgru_equals_straightforward_from_a_zero_state(shared):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5) if shared else torch.randn(2, 4, 3, 5, 5)
    assert_same_function(ConvGRU(3, 4), [x], lambda m, x: m(x, None, 4))
    fast, oracle = _pair(ConvGRU(3, 4))  # h0 = None is the zero state
    torch.testing.assert_close(fast(x.double(), None, 4), oracle(x.double(), torch.zeros(2, 4, 5, 5).double(), 4),
                               rtol=1e-9, atol=1e-10)


# --------------------------------------------------------------------------------------------
# Activation checkpointing: a per-block option, the same function and running statistics
# --------------------------------------------------------------------------------------------


def test_activation_checkpointing_changes_nothing_but_memory(tiny_model_config):
    cfg = tiny_model_config(context_frames=2, num_classes=1, d_attention=(4,))  # G, conditioning stack, D
    torch.manual_seed(0)
    nets = {"g": build_generator(cfg).double(), "d": DualDiscriminator(cfg).double()}
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3, cfg.z_dim, generator=gen, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)
    ctx = torch.rand(3, 2, 3, 16, 16, generator=gen, dtype=torch.float64)
    results = {}
    for enabled in (False, True):
        g, d = copy.deepcopy(nets["g"]), copy.deepcopy(nets["d"])
        n = set_activation_checkpointing(g, enabled) + set_activation_checkpointing(d, enabled)
        assert n == 2 * cfg.num_groups + cfg.num_groups + 3 * len(cfg.d_multipliers)  # GRUs, GBlocks, DBlocks
        recomputed = []
        for blk in g.modules():
            if isinstance(blk, GBlock):
                blk.bn1.register_forward_hook(lambda m, a, o, seen=recomputed: seen.append(m))  # inside
        video = torch.cat([ctx, g(z, y, ctx)], 1)
        ds, dt = d(video, y, frame_indices=torch.tensor([[2, 4]] * 3))
        loss = (ds - 2 * dt).sum()
        forwards = len(recomputed)
        loss.backward()
        assert len(recomputed) == (2 * forwards if enabled else forwards)  # the blocks really ran again
        results[enabled] = (loss.detach(), [p.grad for p in [*g.parameters(), *d.parameters()]],
                            [b.clone() for b in g.buffers()])
    (l0, g0, b0), (l1, g1, b1) = results[False], results[True]
    torch.testing.assert_close(l1, l0, rtol=0, atol=0)
    for a, b in zip(g1, g0):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(b1, b0):  # BN running statistics moved once, as without checkpointing
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(b0, nets["g"].buffers()))  # ... and they did move
