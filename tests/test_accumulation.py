"""Gradient accumulation (train.grad_accum) against one larger batch.

A step of 2 accumulated micro-batches of 2 is the step of one batch of 4 in everything that does
not depend on BatchNorm's batch statistics: the loss is a mean over videos, so summing
loss / grad_accum over the micro-batches gives the gradient of the loss over all of them. G's
BN layers normalise each micro-batch with its own statistics, so in training mode G's output, and
with it every gradient, differs (README.md, docs/scaling.md). Here G's BN runs in eval mode
(running statistics, the same for any batch) and D has no BN: D's and G's gradients must then
agree up to float rounding.
"""

from __future__ import annotations

import pytest
import torch

from dvdgan.config import apply_overrides, get_preset
from dvdgan.training import Trainer

# 16x16, 4 frames; D_S judges all 4 frames (k = T), so its random choice of frames cannot differ
# between the runs (its per-frame scores are summed).
TINY = [
    "model.resolution=16", "model.frames=4", "model.g_ch=4", "model.g_multipliers=4,4,2", "model.d_ch=4",
    "model.d_multipliers=2,4,4", "model.frames_per_spatial_d=4", "model.z_dim=8", "model.embed_dim=8",
    "train.batch_size=4", "train.sample_every=0", "train.eval_every=0", "data.shapes_train_size=32",
    "data.shapes_test_size=8", "data.num_workers=0",
]


def _trainer(tmp_path, accum: int) -> Trainer:
    trainer = Trainer(apply_overrides(get_preset("shapes"), TINY + [f"train.grad_accum={accum}"]),
                      tmp_path / f"accum{accum}", progress=False)
    assert trainer.per_replica_batch * accum == 4
    # the same 4 z and y, handed out in order whatever the micro-batch size
    gen = torch.Generator().manual_seed(11)
    z, y, pos = torch.randn(8, 8, generator=gen), torch.tensor([0, 1, 2, 3, 4, 5, 0, 1]), [0]

    def sample_zy(b, generator=None):
        i = pos[0]
        pos[0] += b
        return z[i:i + b], y[i:i + b]

    trainer._sample_zy = sample_zy
    return trainer


def _step(tmp_path, accum: int, which: str, g_bn_train: bool):
    """One D (or G) update with grad_accum micro-batches; its gradients and logs. Real clips: the
    sampler's positions 0-3 in both runs (one batch of 4, or two of 2)."""
    trainer = _trainer(tmp_path, accum)
    try:
        trainer.G.train(g_bn_train)
        trainer.D.train()
        it = trainer.data_loader()
        logs = trainer.d_update(it) if which == "d" else trainer.g_update(it)
        net = trainer.D if which == "d" else trainer.G
        grads = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
    finally:
        trainer.close()
    assert grads
    return grads, logs


def _rel_diff(a: dict, b: dict) -> float:
    scale = max(v.abs().max().item() for v in b.values())
    return max((a[k] - b[k]).abs().max().item() for k in b) / scale


@pytest.mark.parametrize("which", ["d", "g"])
def test_accumulated_step_equals_the_larger_batch_without_bn_batch_statistics(tmp_path, which):
    g1, logs1 = _step(tmp_path, 1, which, g_bn_train=False)
    g2, logs2 = _step(tmp_path, 2, which, g_bn_train=False)
    assert g1.keys() == g2.keys()
    scale = max(v.abs().max().item() for v in g1.values())
    for k in g1:  # float rounding only (summation order): measured ~1e-6 of the largest entry
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-5, atol=1e-5 * scale, msg=k)
    for k in logs1:  # the logged losses and scores are means over all 4 videos
        assert logs2[k] == pytest.approx(logs1[k], rel=1e-5, abs=1e-6), k


@pytest.mark.parametrize("which", ["d", "g"])
def test_accumulation_is_not_a_larger_batch_for_bn(tmp_path, which):
    # G's BN in training mode normalises each micro-batch of 2 with its own statistics: the fake
    # videos, hence D's gradients and G's, differ from those of one batch of 4 (by tens of percent).
    g1, _ = _step(tmp_path, 1, which, g_bn_train=True)
    g2, _ = _step(tmp_path, 2, which, g_bn_train=True)
    assert _rel_diff(g2, g1) > 1e-2
