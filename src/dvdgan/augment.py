"""Data-efficient GAN training for video: differentiable augmentation and ADA's adaptive p.

:class:`VideoAugment` is DiffAugment (Zhao et al. 2020) for clips ``[B, T, 3, H, W]`` in [-1, 1]:
one random transform per clip, the same for every frame of it (a per-frame transform would add
motion that is not in the data and the temporal discriminator would learn it), each operation
applied to a clip with probability ``p`` (ADA, Karras et al. 2020; DiffAugment is ``p = 1``).
Every operation is differentiable w.r.t. the video, so the generator is trained through it:
the same augmentation must be applied to real and generated clips, before both discriminators,
in D steps and in the G step. Operations (``policy``, comma separated):

* ``translation``: integer shift of up to 1/8 of the frame size in x and y, zero (mid-grey) fill;
* ``cutout``: a square of half the frame size at a random position set to 0, in every frame;
* ``color``: brightness (+U(-0.5, 0.5)), saturation (x U(0, 2) around the pixel's channel mean)
  and contrast (x U(0.5, 1.5) around the clip's mean), each drawn once per clip.

:class:`AdaptiveP` is ADA's overfitting heuristic: ``r_t = E[sign(D(real))]`` over the last
``interval`` discriminator updates; ``p`` moves by ``sign(r_t - target) * images / (kimg * 1000)``
(so it can go from 0 to 1 in ``kimg`` thousand real images), clamped to [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["AUGMENTATIONS", "VideoAugment", "AdaptiveP", "parse_policy"]

AUGMENTATIONS = ("translation", "cutout", "color")
TRANSLATION_RATIO = 0.125  # DiffAugment's default shift range (fraction of the frame size)
CUTOUT_RATIO = 0.5  # DiffAugment's default cutout size (fraction of the frame size)


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"translation,color"`` -> ("translation", "color"); "" -> (); unknown names raise ValueError."""
    ops = tuple(s.strip() for s in policy.split(",") if s.strip())
    for op in ops:
        if op not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {op!r} (one of {', '.join(AUGMENTATIONS)})")
    return ops


def _rand(shape: tuple[int, ...], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U(0, 1) drawn on the generator's device (CPU by default), then moved to x's."""
    dev = generator.device if generator is not None else x.device
    return torch.rand(shape, generator=generator, device=dev).to(device=x.device, dtype=x.dtype)


def _randint(high: torch.Tensor | int, low: int, shape: tuple[int, ...], x: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
    """Integers in [low, high] (inclusive), drawn like :func:`_rand`."""
    u = _rand(shape, x, generator).double()
    return (low + torch.floor(u * (high - low + 1))).long().clamp(max=high)


def _color(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    b = x.shape[0]
    x = x + (_rand((b, 1, 1, 1, 1), x, g) - 0.5)  # brightness
    mean = x.mean(dim=2, keepdim=True)
    x = (x - mean) * (_rand((b, 1, 1, 1, 1), x, g) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)  # over the whole clip: one map for all frames
    return (x - mean) * (_rand((b, 1, 1, 1, 1), x, g) + 0.5) + mean  # contrast


def _translation(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    b, t, c, h, w = x.shape
    sy, sx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy = _randint(sy, -sy, (b,), x, g)
    dx = _randint(sx, -sx, (b,), x, g)
    padded = F.pad(x.reshape(b, t * c, h, w), (sx, sx, sy, sy))  # zeros = mid-grey in [-1, 1]
    rows = torch.arange(h, device=x.device)[None] + sy - dy[:, None]  # [b, h]: source row of each row
    cols = torch.arange(w, device=x.device)[None] + sx - dx[:, None]  # [b, w]
    out = padded.gather(2, rows[:, None, :, None].expand(b, t * c, h, w + 2 * sx))
    out = out.gather(3, cols[:, None, None, :].expand(b, t * c, h, w))
    return out.reshape(b, t, c, h, w)


def _cutout(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    b, _, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy = _randint(h - 1, 0, (b,), x, g)  # centre of the square (it may stick out of the frame)
    cx = _randint(w - 1, 0, (b,), x, g)
    ys = torch.arange(h, device=x.device)[None] - (cy[:, None] - ch // 2)  # [b, h]
    xs = torch.arange(w, device=x.device)[None] - (cx[:, None] - cw // 2)
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]  # [b, h, w]
    return x * (~inside).to(x.dtype)[:, None, None]


_OPS = {"translation": _translation, "cutout": _cutout, "color": _color}


class VideoAugment:
    """``VideoAugment("translation,cutout,color", p)(x, generator=None)`` -> augmented ``x``.

    ``x``: float ``[B, T, C, H, W]``; each operation of the policy (applied in the order
    color, translation, cutout as DiffAugment does) is drawn for each clip with probability ``p``
    and, when drawn, one random setting is used for all of the clip's frames. ``p`` may be changed
    between calls (e.g. ``aug.p = adaptive.p``). With an empty policy or ``p == 0`` the input is
    returned unchanged (the same tensor).
    """

    def __init__(self, policy: str, p: float = 1.0) -> None:
        ops = parse_policy(policy)
        self.ops = tuple(op for op in ("color", "translation", "cutout") if op in ops)
        self.p = float(p)

    @property
    def active(self) -> bool:
        return bool(self.ops) and self.p > 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"expected videos [B, T, C, H, W], got {tuple(x.shape)}")
        if not self.active:
            return x
        b = x.shape[0]
        for op in self.ops:
            if self.p >= 1:
                x = _OPS[op](x, generator)
            else:
                apply = (_rand((b,), x, generator) < self.p).to(x.dtype)[:, None, None, None, None]
                x = apply * _OPS[op](x, generator) + (1 - apply) * x
        return x

    def __repr__(self) -> str:
        return f"VideoAugment({','.join(self.ops)!r}, p={self.p:.3f})"


class AdaptiveP:
    """ADA's adaptive augmentation probability.

    ``update(d_real_scores)`` after every discriminator update, with D's raw scores on that
    update's real clips (any shape; the number of clips counted is ``n_images`` or the first
    dimension); every ``interval`` calls ``r_t = mean(sign(scores))`` over them and
    ``p += sign(r_t - target) * images / (kimg * 1000)``, clamped to [0, 1]. Returns ``p``.
    ``state_dict()`` / ``load_state_dict()`` make a resumed run continue exactly.
    """

    def __init__(self, target: float = 0.6, interval: int = 4, kimg: float = 10.0, p: float = 0.0) -> None:
        if not 0 < target < 1 or interval < 1 or kimg <= 0 or not 0 <= p <= 1:
            raise ValueError(f"AdaptiveP: target in (0, 1), interval >= 1, kimg > 0, p in [0, 1] "
                             f"(got {target}, {interval}, {kimg}, {p})")
        self.target, self.interval, self.kimg = float(target), int(interval), float(kimg)
        self.p = float(p)
        self._sign_sum = 0.0  # sum of sign(D(real)) since the last adjustment
        self._count = 0  # scores summed
        self._images = 0  # real clips seen since the last adjustment
        self._calls = 0
        self.r_t = float("nan")  # the last r_t used

    def update(self, d_real_scores: torch.Tensor, n_images: int | None = None) -> float:
        s = d_real_scores.detach()
        self._sign_sum += float(torch.sign(s).sum())
        self._count += s.numel()
        self._images += int(n_images if n_images is not None else (s.shape[0] if s.ndim else 1))
        self._calls += 1
        if self._calls % self.interval == 0 and self._count:
            self.r_t = self._sign_sum / self._count
            step = self._images / (self.kimg * 1000)
            # ADA: the sign of (r_t - target) says whether D is overfitting the reals
            direction = (self.r_t > self.target) - (self.r_t < self.target)
            self.p = min(1.0, max(0.0, self.p + direction * step))
            self._sign_sum, self._count, self._images = 0.0, 0, 0
        return self.p

    def state_dict(self) -> dict[str, float]:
        return {"p": self.p, "sign_sum": self._sign_sum, "count": float(self._count),
                "images": float(self._images), "calls": float(self._calls), "r_t": self.r_t,
                "target": self.target, "interval": float(self.interval), "kimg": self.kimg}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.p = float(state["p"])
        self._sign_sum = float(state["sign_sum"])
        self._count = int(state["count"])
        self._images = int(state["images"])
        self._calls = int(state["calls"])
        self.r_t = float(state.get("r_t", float("nan")))

    def __repr__(self) -> str:
        return f"AdaptiveP(p={self.p:.4f}, target={self.target}, interval={self.interval}, kimg={self.kimg})"
