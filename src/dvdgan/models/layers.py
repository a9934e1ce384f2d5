"""Building blocks of DVD-GAN: spectral norm, per-timestep conditional BN, ConvGRU, residual
blocks and separable attention.

Layout convention inside the networks: a video is [B, T, C, H, W]; per-frame layers fold time
into the batch ([B*T, C, H, W], time-major inside each video) and are told T where it matters
(batch normalisation).
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as torch_checkpoint

# --------------------------------------------------------------------------------------------
# Spectral normalisation (B.3: "Spectral Normalization for all weight layers")
# --------------------------------------------------------------------------------------------


class SpectralNorm:
    """Mixin: the layer's weight is divided by its largest singular value (B.3).

    sigma is estimated by power iteration with a persistent vector ``sn_u``. The iteration is
    not run inside ``forward``: the trainer calls :func:`power_iteration` once per update of
    the network (so a forward on real and one on fake, or T ConvGRU steps, all see the same
    sigma). Gradients flow through sigma = u^T W v with u, v held constant, as in Miyato et al.
    """

    def __init__(self, *args, sn_eps: float = 1e-6, **kwargs):
        super().__init__(*args, **kwargs)  # the layer's own constructor (nn.Conv2d, ...)
        self.sn_eps = sn_eps
        u = torch.randn(1, self.weight.shape[0], device=self.weight.device, dtype=self.weight.dtype)
        self.register_buffer("sn_u", F.normalize(u, dim=1, eps=sn_eps))
        # Orthogonal initialisation of every weight (B.3).
        if not self.weight.is_meta:
            nn.init.orthogonal_(self.weight)
        if getattr(self, "bias", None) is not None and not self.bias.is_meta:
            nn.init.zeros_(self.bias)

    @torch.no_grad()
    def power_iteration(self, n: int = 1) -> None:
        w = self.weight.flatten(1)
        u = self.sn_u
        for _ in range(n):
            v = F.normalize(u @ w, dim=1, eps=self.sn_eps)
            u = F.normalize(v @ w.t(), dim=1, eps=self.sn_eps)
        self.sn_u.copy_(u)

    def sn_weight(self) -> torch.Tensor:
        w = self.weight.flatten(1)
        with torch.no_grad():
            u = self.sn_u
            v = F.normalize(u @ w, dim=1, eps=self.sn_eps)
        sigma = (u @ w @ v.t()).squeeze()
        return self.weight / sigma


class SNConv2d(SpectralNorm, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.sn_weight(), self.bias)


class SNConv3d(SpectralNorm, nn.Conv3d):
    forward = SNConv2d.forward


class SNLinear(SpectralNorm, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.sn_weight(), self.bias)


class SNEmbedding(SpectralNorm, nn.Embedding):
    """Class embedding of the projection discriminator (Miyato & Koyama), spectrally normed."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return F.embedding(y, self.sn_weight())


def power_iteration(module: nn.Module, n: int = 1) -> None:
    """Advance the power iteration of every spectrally normalised layer in ``module``."""
    for m in module.modules():
        if isinstance(m, SpectralNorm):
            m.power_iteration(n)


# --------------------------------------------------------------------------------------------
# Exact fusions of a 3x3 convolution with nearest upsampling / average pooling
# --------------------------------------------------------------------------------------------


def _box_filter(w: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Full convolution of every kernel in ``w`` with a box of ones of size 2 along ``dims``
    (each of those kernel dimensions grows by one)."""
    for d in dims:
        zero = w.new_zeros(w.shape[:d] + (1,) + w.shape[d + 1:])
        w = torch.cat([w, zero], d) + torch.cat([zero, w], d)
    return w


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``conv2d(interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)`` as one
    stride-2 transposed convolution with a 4x4 kernel (the flipped 3x3 kernel convolved with a
    2x2 box): the same function, at 4/9 of the multiply-adds and without the upsampled tensor."""
    k = _box_filter(weight.flip(2, 3), (2, 3)).transpose(0, 1)  # [Cin, Cout, 4, 4]
    return F.conv_transpose2d(x, k, bias, stride=2, padding=1)


def conv3x3_avg_pool(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     pool: tuple[int, ...]) -> torch.Tensor:
    """``avg_pool(conv(x, weight, bias, padding=1), pool)`` (2-D or 3-D, pool entries 1 or 2) as one
    strided convolution whose kernel is the 3x3(x3) kernel convolved with the pooling box:
    the same function (exact when every pooled size is even, or 2-D floor-mode pooling)."""
    dims = tuple(2 + i for i, k in enumerate(pool) if k == 2)
    k = _box_filter(weight, dims) / (2 ** len(dims))
    conv = F.conv2d if weight.dim() == 4 else F.conv3d
    return conv(x, k, bias, stride=pool, padding=1)


# --------------------------------------------------------------------------------------------
# Batch normalisation with statistics per timestep (B.2, appendix D)
# --------------------------------------------------------------------------------------------


def _per_timestep_batch_norm(
    x: torch.Tensor, frames: int, running_mean, running_var, training: bool, momentum: float, eps: float,
    cross_replica: bool,
) -> torch.Tensor:
    """Normalise [B*T, C, H, W] with mean/var over (B, H, W) separately for every (t, c).

    B.2: "We do not reduce over the time dimension when calculating Batch Normalization
    statistics." Viewing the tensor as [B, T*C, H, W] makes every (timestep, channel) pair its
    own BN channel, with its own running statistics.
    """
    bt, c, h, w = x.shape
    xv = x.reshape(bt // frames, frames * c, h, w)
    if cross_replica and training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # Cross-replica BN: statistics over the global batch (still per timestep), in at least
        # fp32. Two passes, like F.batch_norm (E[x^2] - E[x]^2 loses the variance to cancellation
        # where |mean| >> std); autograd through the all_reduces gives BN's gradient over the
        # concatenated batch (tests/test_distributed.py).
        xf = xv.to(torch.promote_types(xv.dtype, torch.float32))
        n_local = torch.tensor([xv.shape[0] * h * w], device=x.device, dtype=xf.dtype)
        sums = _AllReduceSum.apply(torch.cat([xf.sum(dim=(0, 2, 3)), n_local]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = xf - mean.view(1, -1, 1, 1)
        var = _AllReduceSum.apply((centred * centred).sum(dim=(0, 2, 3))) / n
        if running_mean is not None:
            with torch.no_grad():
                unbiased = var * n / (n - 1).clamp_min(1)
                running_mean.lerp_(mean.detach().to(running_mean.dtype), momentum)
                running_var.lerp_(unbiased.detach().to(running_var.dtype), momentum)
        out = (centred * torch.rsqrt(var.view(1, -1, 1, 1) + eps)).to(xv.dtype)
    else:
        out = F.batch_norm(xv, running_mean, running_var, None, None, training, momentum, eps)
    return out.reshape(bt, c, h, w)


class _AllReduceSum(torch.autograd.Function):
    """all_reduce(SUM) whose backward is also an all_reduce(SUM) (gradients of global stats)."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g)
        return g


class TimestepBatchNorm(nn.Module):
    """BN with a learned affine whose statistics are kept separately for every timestep."""

    def __init__(self, channels: int, frames: int, eps: float = 1e-4, momentum: float = 0.1,
                 cross_replica: bool = False):
        super().__init__()
        self.frames, self.eps, self.momentum, self.cross_replica = frames, eps, momentum, cross_replica
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(frames * channels))
        self.register_buffer("running_var", torch.ones(frames * channels))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return _per_timestep_batch_norm(
            x, self.frames, self.running_mean, self.running_var, self.training, self.momentum, self.eps,
            self.cross_replica,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class ConditionalBatchNorm(TimestepBatchNorm):
    """Class-conditional BN (B.3): BN without a learned affine, then a per-channel gain and bias
    that are (spectrally normed) linear functions of the conditioning vector [z; e(y)] (B.2)."""

    def __init__(self, channels: int, cond_dim: int, frames: int, eps: float = 1e-4, momentum: float = 0.1,
                 cross_replica: bool = False, sn_eps: float = 1e-6):
        super().__init__(channels, frames, eps, momentum, cross_replica)
        del self.weight, self.bias
        self.gain = SNLinear(cond_dim, channels, sn_eps=sn_eps)
        self.bias = SNLinear(cond_dim, channels, sn_eps=sn_eps)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x: [B*T, C, H, W]; cond: [B, cond_dim], shared by all T frames of a video: the gain and
        bias of each video broadcast over its frames, bias + BN(x) * (1 + gain) in one pass."""
        bt, c, h, w = x.shape
        b = cond.shape[0]
        gain = (1 + self.gain(cond)).view(b, 1, c, 1, 1)
        bias = self.bias(cond).view(b, 1, c, 1, 1)
        return torch.addcmul(bias, self.normalize(x).view(b, bt // b, c, h, w), gain).view(bt, c, h, w)


# --------------------------------------------------------------------------------------------
# Activation checkpointing (train.activation_checkpointing): a per-block option
# --------------------------------------------------------------------------------------------


def checkpointable(forward):
    """Decorator of a block's ``forward``: with ``self.checkpoint_activations`` set (and autograd
    on), the block's activations are recomputed in backward instead of kept
    (``torch.utils.checkpoint``, non-reentrant, so it composes with DDP). The recomputation runs
    BN layers again in training mode: their running statistics are restored afterwards, so they
    move once per forward, as without checkpointing."""

    @functools.wraps(forward)
    def run(self, *args, **kwargs):
        if not (self.checkpoint_activations and torch.is_grad_enabled()):
            return forward(self, *args, **kwargs)
        calls = [0]

        def once(*a, **k):
            calls[0] += 1
            if calls[0] == 1:  # the forward pass: BN running statistics update once, here
                return forward(self, *a, **k)
            bns = [m for m in self.modules() if isinstance(m, TimestepBatchNorm)]
            saved = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
            try:  # the recomputation in backward (which may stop early, by an exception)
                return forward(self, *a, **k)
            finally:  # ... leaves the statistics as they were
                for m, (mean, var) in zip(bns, saved):
                    m.running_mean.copy_(mean)
                    m.running_var.copy_(var)

        # No randomness inside ConvGRUs or residual blocks: no RNG state to stash.
        return torch_checkpoint(once, *args, use_reentrant=False, preserve_rng_state=False, **kwargs)

    return run


def set_activation_checkpointing(module: nn.Module, enabled: bool) -> int:
    """Set ``checkpoint_activations`` on every ConvGRU and GBlock of G and every DBlock of D and
    of DVD-GAN-FP's conditioning stack in ``module``; returns how many blocks there are. Blocks
    rather than whole generator groups: the largest group of the 48-frame presets alone holds
    several GB per video (docs/scaling.md). Parameter names, hence checkpoints, are unchanged."""
    blocks = [m for m in module.modules() if isinstance(m, (ConvGRU, GBlock, DBlock))]
    for m in blocks:
        m.checkpoint_activations = enabled
    return len(blocks)


# --------------------------------------------------------------------------------------------
# ConvGRU (B.2)
# --------------------------------------------------------------------------------------------


class ConvGRU(nn.Module):
    """Convolutional GRU of B.2, unrolled once per frame:

        r   = sigmoid(W_r *3 [h_{t-1}; x_t] + b_r)
        u   = sigmoid(W_u *3 [h_{t-1}; x_t] + b_u)
        c   = relu(W_c *3 [x_t; r . h_{t-1}] + b_c)          (relu, not tanh)
        h_t = u . h_{t-1} + (1 - u) . c

    Each W is its own spectrally normalised layer, normalised once per call. Since
    W * [h; x] = W_h * h + W_x * x, the input parts of the three convolutions run for all frames
    at once, outside the recurrence (once only when the input is the same for every frame).
    """

    checkpoint_activations = False

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3, sn_eps: float = 1e-6):
        super().__init__()
        p = kernel_size // 2
        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        cat = in_channels + hidden_channels
        self.reset_gate = SNConv2d(cat, hidden_channels, kernel_size, padding=p, sn_eps=sn_eps)  # W_r on [h; x]
        self.update_gate = SNConv2d(cat, hidden_channels, kernel_size, padding=p, sn_eps=sn_eps)  # W_u on [h; x]
        self.candidate = SNConv2d(cat, hidden_channels, kernel_size, padding=p, sn_eps=sn_eps)  # W_c on [x; r.h]

    @checkpointable
    def forward(self, x: torch.Tensor, h0: torch.Tensor | None, frames: int) -> torch.Tensor:
        """x: [B, T, Cin, H, W], or [B, Cin, H, W] used as the input at every frame.
        h0: [B, Chid, H, W], or None for zeros. Returns the hidden states [B, T, Chid, H, W]."""
        ch, cin, pad = self.hidden_channels, self.in_channels, self.candidate.padding
        wr, wu, wc = self.reset_gate.sn_weight(), self.update_gate.sn_weight(), self.candidate.sn_weight()
        w_x = torch.cat([wr[:, ch:], wu[:, ch:], wc[:, :cin]], 0)  # W_x of r, u, c: one conv
        b_x = torch.cat([self.reset_gate.bias, self.update_gate.bias, self.candidate.bias])
        w_h_ru, w_h_c = torch.cat([wr[:, :ch], wu[:, :ch]], 0), wc[:, cin:]
        if x.dim() == 4:  # the same input at every frame: W_x * x once
            gxs = [F.conv2d(x, w_x, b_x, padding=pad)] * frames
        else:
            gxs = F.conv2d(x.flatten(0, 1), w_x, b_x, padding=pad).unflatten(0, x.shape[:2]).unbind(1)
        h, out = h0, []
        for gx in gxs:
            gx_ru, gx_c = gx.split([2 * ch, ch], 1)
            if h is None:  # zero state: W_h * 0 = 0, so r does not matter and h_1 = (1 - u) c
                h = torch.relu(gx_c) * (1 - torch.sigmoid(gx_ru[:, ch:]))
            else:
                r, u = torch.sigmoid(F.conv2d(h, w_h_ru, padding=pad).add_(gx_ru)).split(ch, 1)
                c = torch.relu(F.conv2d(r * h, w_h_c, padding=pad).add_(gx_c))
                h = torch.lerp(c, h, u)  # u*h + (1-u)*c
            out.append(h)
        return torch.stack(out, 1)


# --------------------------------------------------------------------------------------------
# Residual blocks (Figure 7; BigGAN)
# --------------------------------------------------------------------------------------------


class GBlock(nn.Module):
    """BigGAN generator block applied per frame (time folded into batch, B.2):
    CBN -> relu -> [upsample] -> conv3x3 -> CBN -> relu -> conv3x3, plus a 1x1 shortcut.

    Nearest upsampling followed by the 3x3 conv runs as one transposed convolution
    (:func:`upsample_conv3x3`), and the 1x1 shortcut before the upsampling (they commute)."""

    checkpoint_activations = False

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, frames: int, upsample: bool, bn_eps: float = 1e-4,
                 bn_momentum: float = 0.1, cross_replica: bool = False, sn_eps: float = 1e-6):
        super().__init__()
        bn = dict(cond_dim=cond_dim, frames=frames, eps=bn_eps, momentum=bn_momentum, cross_replica=cross_replica,
                  sn_eps=sn_eps)
        self.upsample = upsample
        self.bn1 = ConditionalBatchNorm(in_ch, **bn)
        # no bias: it would be removed by the BN that follows
        self.conv1 = SNConv2d(in_ch, out_ch, 3, padding=1, bias=False, sn_eps=sn_eps)
        self.bn2 = ConditionalBatchNorm(out_ch, **bn)
        self.conv2 = SNConv2d(out_ch, out_ch, 3, padding=1, sn_eps=sn_eps)
        self.shortcut = SNConv2d(in_ch, out_ch, 1, sn_eps=sn_eps) if (in_ch != out_ch or upsample) else None

    @checkpointable
    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(x, cond), inplace=True)
        h = upsample_conv3x3(h, self.conv1.sn_weight(), self.conv1.bias) if self.upsample else self.conv1(h)
        h = self.conv2(F.relu(self.bn2(h, cond), inplace=True))
        if self.shortcut is not None:
            x = self.shortcut(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return h.add_(x)


class DBlock(nn.Module):
    """BigGAN discriminator block, 2-D or 3-D (3x3x3 convs; the first two blocks of D_T, B.2):
    [relu] -> conv -> relu -> conv -> [avg-pool], plus a 1x1 shortcut.

    Runs in channels-last layout; the second conv and the average pooling run as one strided
    convolution (:func:`conv3x3_avg_pool`), and the 1x1 shortcut after the pooling (they commute)."""

    checkpoint_activations = False

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, preactivation: bool = True, dims: int = 2,
                 downsample_time: bool = False, sn_eps: float = 1e-6):
        super().__init__()
        conv = SNConv2d if dims == 2 else SNConv3d
        self.dims, self.downsample, self.preactivation = dims, downsample, preactivation
        self.downsample_time = downsample_time
        self.conv1 = conv(in_ch, out_ch, 3, padding=1, sn_eps=sn_eps)
        self.conv2 = conv(out_ch, out_ch, 3, padding=1, sn_eps=sn_eps)
        self.shortcut = conv(in_ch, out_ch, 1, sn_eps=sn_eps) if (in_ch != out_ch or downsample) else None

    def pool_size(self, x: torch.Tensor) -> tuple[int, ...]:
        if self.dims == 2:
            return (2, 2)
        return (2 if (self.downsample_time and x.shape[2] > 1) else 1, 2, 2)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """2x average pooling (3-D: time too, with ``downsample_time``; ceil mode for odd T)."""
        if not self.downsample:
            return x
        return F.avg_pool2d(x, 2) if self.dims == 2 else F.avg_pool3d(x, self.pool_size(x), ceil_mode=True)

    @checkpointable
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last if self.dims == 2 else torch.channels_last_3d)
        h = F.relu(x) if self.preactivation else x
        h = F.relu(self.conv1(h), inplace=True)
        pool = self.pool_size(h)
        # ceil-mode 3-D pooling of an odd size averages a partial window: conv, then pool
        if self.downsample and (self.dims == 2 or all(n % k == 0 for n, k in zip(h.shape[2:], pool))):
            h = conv3x3_avg_pool(h, self.conv2.sn_weight(), self.conv2.bias, pool)
        else:
            h = self.pool(self.conv2(h))
        if self.shortcut is not None:
            x = self.shortcut(self.pool(x))  # 1x1 conv and average pooling commute
        return h.add_(x)


# --------------------------------------------------------------------------------------------
# Separable attention (appendix A)
# --------------------------------------------------------------------------------------------


class SeparableAttention(nn.Module):
    """Self-attention over T, then H, then W (appendix A), each with its own Q, K, V of shape
    [C, C] (spectrally normed), added to the input through a learned gain (initialised to 0,
    as BigGAN's attention, so inserting the block does not disturb a network at init).

    Memory: max(H^2 W T, H W^2 T, H W T^2) attention entries per video instead of (H W T)^2.
    """

    def __init__(self, channels: int, sn_eps: float = 1e-6):
        super().__init__()
        self.qkv = nn.ModuleList(
            [SNLinear(channels, 3 * channels, bias=False, sn_eps=sn_eps) for _ in range(3)]
        )
        self.gamma = nn.Parameter(torch.zeros(()))
        self.last_attention_sizes: list[int] = []  # numbers of attention entries, for tests

    def _attend(self, x: torch.Tensor, proj: SNLinear) -> torch.Tensor:
        # x: [N, L, C] -> softmax[XQ (XK)^T] XV over the L axis
        q, k, v = proj(x).chunk(3, -1)
        a = torch.softmax(q @ k.transpose(1, 2), dim=-1)
        self.last_attention_sizes.append(a.numel())
        return a @ v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, C, H, W] -> same shape."""
        self.last_attention_sizes = []
        b, t, c, h, w = x.shape
        y = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, c)  # attend over time
        y = self._attend(y, self.qkv[0]).view(b, h, w, t, c)
        y = y.permute(0, 2, 3, 1, 4).reshape(b * w * t, h, c)  # over height
        y = self._attend(y, self.qkv[1]).view(b, w, t, h, c)
        y = y.permute(0, 2, 3, 1, 4).reshape(b * t * h, w, c)  # over width
        y = self._attend(y, self.qkv[2]).view(b, t, h, w, c)
        return x + self.gamma * y.permute(0, 1, 4, 2, 3)
