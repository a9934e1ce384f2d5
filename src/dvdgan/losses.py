"""Hinge losses of section 2.2, applied to both discriminators' scores and summed (3.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_hinge_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """D minimises E[relu(1 - D(x))] + E[relu(1 + D(G(z)))] (2.2)."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def g_hinge_loss(fake: torch.Tensor) -> torch.Tensor:
    """G maximises E[D(G(z))] (2.2)."""
    return -fake.mean()


def dual_d_loss(real_scores: tuple[torch.Tensor, torch.Tensor], fake_scores: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum of the D_S and D_T hinge losses; also returns the parts for logging."""
    ls = d_hinge_loss(real_scores[0], fake_scores[0])
    lt = d_hinge_loss(real_scores[1], fake_scores[1])
    return ls + lt, {"d_loss_spatial": ls.detach(), "d_loss_temporal": lt.detach()}


def dual_g_loss(fake_scores: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ls, lt = g_hinge_loss(fake_scores[0]), g_hinge_loss(fake_scores[1])
    return ls + lt, {"g_loss_spatial": ls.detach(), "g_loss_temporal": lt.detach()}
