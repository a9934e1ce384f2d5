"""Building blocks against the paper: the ConvGRU equations of B.2, BN statistics per timestep (B.2,
appendix D), spectral norm and orthogonal init (B.3), separable attention (appendix A)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from dvdgan.models.layers import (
    ConditionalBatchNorm,
    ConvGRU,
    SeparableAttention,
    SNConv2d,
    SNConv3d,
    SNEmbedding,
    SNLinear,
    TimestepBatchNorm,
    power_iteration,
)

# --------------------------------------------------------------------------------------------
# ConvGRU (B.2)
# --------------------------------------------------------------------------------------------

CIN, CHID, B, T, S = 3, 5, 2, 4, 6  # in != hidden channels, so a swapped [h; x] order cannot pass


def _gru(impl: str) -> ConvGRU:
    torch.manual_seed(0)
    gru = ConvGRU(CIN, CHID, 3, impl=impl)
    with torch.no_grad():
        # Scale the (orthogonal, sigma = 1) weights so that a gate without spectral norm would
        # differ from the reference, and give every gate a non-zero bias.
        for i, conv in enumerate((gru.reset_gate, gru.update_gate, gru.candidate)):
            conv.weight.mul_(2.0 + i)
            conv.bias.copy_(0.3 * torch.randn_like(conv.bias))
    power_iteration(gru, 20)
    return gru


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
    torch.manual_seed(1)
    x = torch.randn(B, CIN, S, S) if shared else torch.randn(B, T, CIN, S, S)
    h0 = torch.randn(B, CHID, S, S)  # non-zero initial state
    outs = {}
    for impl in ("reference", "fast"):
        gru = _gru(impl)
        # the layers really are spectrally normalised: sn_weight != weight after the scaling
        assert not torch.allclose(gru.candidate.sn_weight(), gru.candidate.weight, atol=1e-3)
        with torch.no_grad():
            expected = _reference_gru(gru, x, h0, T)
            outs[impl] = gru(x, h0, T)
        assert outs[impl].shape == (B, T, CHID, S, S)
        torch.testing.assert_close(outs[impl], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs["fast"], outs["reference"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_convgru_candidate_is_relu_not_tanh(impl):
    gru = _gru(impl)
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
