"""The GPU switches run on CPU with the same code as on CUDA, and match eager fp32:
train.activation_checkpointing, train.bf16 (CPU autocast) and train.compile (inductor, C++).

Every comparison starts two trainers from the same seed (the same weights, real batch, z, y and
D_S frames) and takes one training step (2 D updates + 1 G update + EMA). Adam's eps is 1 and the
learning rate 1e-2, so an update is about lr x gradient, smooth in the gradient (with the default
eps, Adam's first step is lr x sign(gradient), and rounding noise in an exactly-zero gradient
becomes a full step)."""

from __future__ import annotations

import torch

from conftest import tiny_cfg
from dvdgan.bench import FixedBatches
from dvdgan.training import Trainer

SMOOTH_ADAM = ("train.adam_eps=1", "train.lr_g=1e-2", "train.lr_d=1e-2", "train.device=cpu")


def one_step(tmp_path, name: str, *extra: str):
    cfg = tiny_cfg(*SMOOTH_ADAM, *extra)
    data = FixedBatches(cfg.model, 4)
    trainer = Trainer(cfg, tmp_path / name, progress=False, dataset=data)
    before = {n: {k: v.clone() for k, v in getattr(trainer, n).state_dict().items()} for n in ("G", "D")}
    logs = trainer.train_step(data)
    trainer.close()
    return trainer, before, logs


def updates(trainer, before, net: str) -> torch.Tensor:
    """The step's change of every weight of ``net`` (parameters only), flattened."""
    return torch.cat([(p.detach() - before[net][k]).flatten() for k, p in getattr(trainer, net).named_parameters()])


def test_activation_checkpointing_gives_the_same_step(tmp_path):
    """Recomputing each block's activations in backward changes neither the gradients nor the BN
    running statistics (which move once per forward, not again in the recomputation)."""
    plain, _, logs_plain = one_step(tmp_path, "plain")
    ckpt, before, logs_ckpt = one_step(tmp_path, "ckpt", "train.activation_checkpointing=true")
    assert all(m.checkpoint_activations for m in ckpt.G.modules() if hasattr(m, "checkpoint_activations"))
    for net in ("G", "D", "G_ema"):
        a, b = getattr(plain, net).state_dict(), getattr(ckpt, net).state_dict()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-7, msg=f"{net}.{k}")
    assert logs_ckpt["d_loss"] == logs_plain["d_loss"] and logs_ckpt["g_loss"] == logs_plain["g_loss"]
    assert updates(ckpt, before, "G").abs().max() > 1e-3  # it trained


def test_bf16_autocast_step_and_samples_are_close_to_fp32(tmp_path):
    """train.bf16 on CPU runs under autocast (it is not ignored: the step differs from fp32) and
    stays close to fp32. Tolerances: bf16 keeps 8 significant bits (relative rounding 2^-9, about
    0.2 %) in every convolution and matrix product. A D update's gradient goes through D once; G's
    goes back through D, then through G, whose batch norms subtract batch means over 4 videos
    (cancellation enlarges relative error). Measured on this tiny config: D's update differs from
    fp32 by 2 % (relative L2), G's by 16 % with cosine similarity 0.986; losses by < 1 %; samples
    by 1.5 % (relative L2), 0.15 at most on the [-1, 1] scale. Bounds below are about 2x those."""
    fp32, before32, logs32 = one_step(tmp_path, "fp32")
    bf16, before16, logs16 = one_step(tmp_path, "bf16", "train.bf16=true")
    for k in ("d_loss", "g_loss"):
        assert torch.isfinite(torch.tensor(logs16[k]))
        assert abs(logs16[k] - logs32[k]) <= 0.02 * abs(logs32[k]), k
    for net, rel_bound, cos_bound in (("D", 0.05, 0.999), ("G", 0.35, 0.95)):
        a, b = updates(fp32, before32, net), updates(bf16, before16, net)
        rel = float((b - a).norm() / a.norm())
        assert 1e-4 < rel < rel_bound, (net, rel)  # > 1e-4: bf16 was applied
        assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > cos_bound, net
    z, y = torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), torch.arange(6) % 3
    g = fp32.G_ema.eval()
    with torch.no_grad():
        x32 = g(z, y)
        with bf16.autocast:  # the trainer's own precision context
            x16 = g(z, y)
    assert x16.dtype == torch.bfloat16
    err = x16.float() - x32
    assert float(err.norm() / x32.norm()) < 0.04
    assert float(err.abs().max()) < 0.3


def test_bf16_cpu_steps_stay_finite(tmp_path):
    """torch 2.13's oneDNN bf16 conv3d weight gradient is intermittently NaN when the input has
    fewer frames than the kernel (D_T's second 3-D block sees T = 2 here: in 300 standalone
    trials of that convolution 15 gave NaN); the trainer's precision context turns oneDNN off
    under bf16 on CPU, and restores it after. Before, 3 of 16 two-step runs of this config
    stopped with a NaN loss."""
    from dvdgan.device import Precision

    assert torch._C._get_mkldnn_enabled()
    with Precision("cpu", True):
        assert not torch._C._get_mkldnn_enabled() and torch.is_autocast_enabled("cpu")
    assert torch._C._get_mkldnn_enabled() and not torch.is_autocast_enabled("cpu")
    with Precision("cpu", False):
        assert torch._C._get_mkldnn_enabled() and not torch.is_autocast_enabled("cpu")
    cfg = tiny_cfg(*SMOOTH_ADAM, "train.bf16=true")
    data = FixedBatches(cfg.model, 4)
    trainer = Trainer(cfg, tmp_path, progress=False, dataset=data)
    for _ in range(8):
        logs = trainer.train_step(data)
        assert all(torch.isfinite(torch.tensor(v)) for v in logs.values()), logs
    assert all(torch.isfinite(p).all() for p in trainer.D.parameters())
    trainer.close()


# The smallest network the trainer builds: 8x8 frames (one generator group), 2 frames, k = 1, two
# D blocks, batch 2. torch.compile's inductor backend writes and compiles C++ for every graph
# (G with and without gradients, D with its weights trained and frozen, and the backward graphs).
MINIMAL = ["model.resolution=8", "model.g_multipliers=2,1", "model.d_multipliers=1,2", "model.frames=2",
           "model.frames_per_spatial_d=1", "train.batch_size=2", "train.checkpoint_every=1"]


class Clips(FixedBatches):
    """FixedBatches as a dataset of the data loader, whose keys are (index, seed) pairs."""

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        return self.video[i], int(self.label[i])


def test_compiled_training_run_matches_eager_and_loads_eagerly(tmp_path, monkeypatch):
    """A training run with train.compile=true (inductor) runs two steps through the trainer's loop
    and checkpoints; its first step equals the eager run's up to float rounding (same weights,
    data, z, y and D_S frames: the trainer draws D_S's frames outside the compiled network); its
    last checkpoint loads into the eager generator, which samples finite videos."""
    import torch._dynamo
    import torch._inductor.config as inductor
    from safetensors.torch import load_file

    from dvdgan.checkpoint import list_checkpoints
    from dvdgan.sampling import load_generator
    from dvdgan.training import train

    # Inductor still generates and compiles C++ for every graph, but cheaper to build: no SIMD
    # (vectorised C++ is most of the compiler's time), -O0, no pool of compile processes.
    monkeypatch.setattr(inductor.cpp, "vec_isa_ok", False)
    monkeypatch.setattr(inductor, "compile_threads", 1)
    monkeypatch.setenv("TORCHINDUCTOR_DEBUG_COMPILE", "1")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for name, steps, extra in (("compiled", 2, ["train.compile=true"]), ("eager", 1, [])):
        cfg = tiny_cfg(*SMOOTH_ADAM, *MINIMAL, *extra)
        train(cfg, tmp_path / name, max_steps=steps, progress=False, dataset=Clips(cfg.model, 2))
        if name == "compiled":  # G and D, trained and frozen, were compiled
            assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 4
    compiled = list_checkpoints(tmp_path / "compiled" / "checkpoints")
    assert [p.name for p in compiled] == ["step_00000001", "step_00000002"]
    a = load_file(str(compiled[0] / "model.safetensors"))
    b = load_file(str(tmp_path / "eager" / "checkpoints" / "step_00000001" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    g, cfg = load_generator(tmp_path / "compiled")  # the newest checkpoint, step 2, into the eager model
    with torch.no_grad():
        video = g(torch.randn(2, cfg.model.z_dim), torch.tensor([0, 1]))
    assert video.shape == (2, 2, 3, 8, 8) and torch.isfinite(video).all()
    torch._dynamo.reset()
