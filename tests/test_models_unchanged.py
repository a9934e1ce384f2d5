"""Behaviour pinned across refactorings: G outputs and D scores for fixed seeds and weights equal
the values recorded before the models were restructured (issue 14), in float64 so that the
recorded numbers do not depend on the BLAS or the CPU's vector width; configs saved before then
still load."""

from __future__ import annotations

import pytest
import torch

from dvdgan.baselines import build_straightforward_discriminator, build_straightforward_generator
from dvdgan.config import Config
from dvdgan.models import DualDiscriminator
from dvdgan.models.prediction import build_generator


def _summary(x: torch.Tensor) -> tuple[float, float]:
    """Sum and a position-weighted sum (catches permuted as well as changed entries)."""
    x = x.detach().double().flatten()
    return x.sum().item(), (x * torch.linspace(-1, 1, x.numel(), dtype=torch.float64)).sum().item()


def _outputs(cfg, b: int = 3, straightforward: bool = False) -> dict[str, tuple[float, float]]:
    torch.manual_seed(0)
    g = (build_straightforward_generator if straightforward else build_generator)(cfg).double()
    d = (build_straightforward_discriminator if straightforward else DualDiscriminator)(cfg).double()
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(b, cfg.z_dim, generator=gen, dtype=torch.float64)
    y = torch.randint(cfg.num_classes, (b,), generator=gen)
    r = cfg.resolution
    args = (z, y)
    if cfg.context_frames:
        args += (torch.rand(b, cfg.context_frames, 3, r, r, generator=gen, dtype=torch.float64) * 2 - 1,)
    out = {"g_train": _summary(g(*args))}
    g.eval()
    with torch.no_grad():
        video = g(*args)
    out["g_eval"] = _summary(video)
    if cfg.context_frames:
        video = torch.cat([args[2], video], 1)
    ds, dt = d(video, y, generator=torch.Generator().manual_seed(2))
    out["d_spatial"], out["d_temporal"] = _summary(ds), _summary(dt)
    return out


CASES = {
    "synthesis": dict(),
    "odd_frames_attention": dict(frames=5, g_attention=(8,), d_attention=(8, 4), gru_initial_state="learned",
                                 frames_per_spatial_d=3),
    "prediction": dict(context_frames=2, num_classes=1, frames=3),
}

# recorded at 3d57583 (before issue 14's restructuring)
RECORDED: dict[str, dict[str, tuple[float, float]]] = {
    'odd_frames_attention': {
        'd_spatial': (40.02882837523641, 24.231309650495596),
        'd_temporal': (-12.153101985281763, -26.962279358859277),
        'g_eval': (-2167.6488078341295, -674.398913487421),
        'g_train': (893.2937955393561, -394.63675737836945),
    },
    'prediction': {
        'd_spatial': (-31.94463847465913, -8.158581596638806),
        'd_temporal': (-2.3732784532577025, 0.6200283025651456),
        'g_eval': (1940.932124002175, -24.939861043224774),
        'g_train': (1460.5838843241993, -214.17859951261),
    },
    'synthesis': {
        'd_spatial': (35.431872410169305, 33.33092886147055),
        'd_temporal': (-0.19402293884947963, 1.3871632911445146),
        'g_eval': (-709.8915348976241, -375.2525136865652),
        'g_train': (-726.3378283365789, -110.1913003453145),
    },
}


@pytest.mark.parametrize("straightforward", [False, True], ids=["fast", "straightforward"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_equal_the_recorded_values(tiny_model_config, case, straightforward):
    got = _outputs(tiny_model_config(**CASES[case]), straightforward=straightforward)
    for key, expected in RECORDED[case].items():
        assert got[key] == pytest.approx(expected, rel=1e-6, abs=1e-6), key


def test_a_saved_config_with_model_impl_loads_with_a_warning():
    d = Config().to_dict()
    d["model"]["impl"] = "reference"  # removed in issue 14: the models have one formulation
    with pytest.warns(UserWarning, match="model.impl"):
        cfg = Config.from_dict(d)
    assert cfg == Config() and not hasattr(cfg.model, "impl")
