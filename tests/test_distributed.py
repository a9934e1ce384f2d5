"""Multi-process training on CPU (gloo): 2 processes started with torch.multiprocessing (spawn) and
the environment variables torchrun sets (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK).

* cross-replica BN == BN over the concatenated batch, values and gradients (all_reduce autograd);
  without it, each replica's G output is G on its half alone;
* 2 processes x batch 2 (train.data_sharding="split", cross-replica BN) train G, EMA G and D to the
  weights one process reaches with batch 4, and rank 0 logs the global mean losses;
* a non-finite loss on one rank makes both ranks skip the update (no DDP hang);
* a killed 2-process run resumes on 1 process with 2 accumulation steps (same effective batch);
* activation checkpointing: same outputs, gradients and BN running statistics (CPU, called directly).
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from dvdgan.checkpoint import list_checkpoints
from dvdgan.config import Config, ModelConfig, apply_overrides, get_preset
from dvdgan.models import DualDiscriminator
from dvdgan.models.generator import Generator
from dvdgan.models.layers import _per_timestep_batch_norm
from dvdgan.training import Trainer, train
from dvdgan.training.trainer import KeySampler, enable_activation_checkpointing

# As tests/test_training.py's TINY: 16x16, 4 frames, widths 4-16; effective batch 4.
TINY = [
    "model.resolution=16", "model.frames=4", "model.g_ch=4", "model.g_multipliers=4,4,2", "model.d_ch=4",
    "model.d_multipliers=2,4,4", "model.frames_per_spatial_d=2", "model.z_dim=8", "model.embed_dim=8",
    "train.batch_size=4", "train.sample_every=0", "train.log_every=1", "train.ema_start=2", "train.ema_decay=0.9",
    "data.shapes_train_size=64", "data.shapes_test_size=32", "data.num_workers=0",
]
TINY_MODEL = dict(resolution=16, frames=4, g_ch=4, g_multipliers=(4, 4, 2), d_ch=4, d_multipliers=(2, 4, 4),
                  frames_per_spatial_d=2, num_classes=3, z_dim=8, embed_dim=8)
WORLD = 2
TIMEOUT_S = 120


def tiny_cfg(*extra: str) -> Config:
    return apply_overrides(get_preset("shapes"), TINY + list(extra))


def tiny_model(**kw) -> ModelConfig:
    return Config(model=ModelConfig(**{**TINY_MODEL, **kw})).validate().model


# --------------------------------------------------------------------------------------------
# launching
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, task: str, args: tuple) -> None:
    """Child process: the environment torchrun would give it, then the task."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        globals()[task](rank, world, *args)
    except BaseException:
        traceback.print_exc()
        raise


def _launch(task: str, *args, world: int = WORLD) -> mp.ProcessContext:
    return mp.start_processes(_entry, args=(world, _free_port(), task, args), nprocs=world, join=False,
                              start_method="spawn")


def _join(ctx: mp.ProcessContext, timeout: float = TIMEOUT_S) -> None:
    deadline = time.time() + timeout
    while not ctx.join(timeout=1):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {len(ctx.processes)} processes did not finish within {timeout} s (a collective hang?)")


# --------------------------------------------------------------------------------------------
# tasks run in the child processes (module level: spawn pickles them by name)
# --------------------------------------------------------------------------------------------


def _bn_inputs(frames=3, videos=4, c=5):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(videos * frames, c, 3, 3, generator=g) * 2 + 1
    w = torch.randn(videos * frames, c, 3, 3, generator=g)
    return x, w, frames, c


def _g_inputs(cfg: ModelConfig, b: int = 4):
    g = torch.Generator().manual_seed(6)
    z = torch.randn(b, cfg.z_dim, generator=g)
    y = torch.randint(cfg.num_classes, (b,), generator=g)
    w = torch.randn(b, cfg.frames, 3, cfg.resolution, cfg.resolution, generator=g)
    return z, y, w


def _layers_task(rank: int, world: int, out: str) -> None:
    import torch.distributed as dist

    from dvdgan.training.distributed import all_ranks, any_rank, broadcast_object, init_distributed, mean_across_ranks

    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.backend) == (rank, world, "gloo")
    res: dict = {}
    # the bare cross-replica BN function, this rank's videos of the global batch
    x, w, frames, c = _bn_inputs()
    n = x.shape[0] // world
    xr = x[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    rm, rv = torch.zeros(frames * c), torch.ones(frames * c)
    out_bn = _per_timestep_batch_norm(xr, frames, rm, rv, True, 0.1, 1e-4, cross_replica=True)
    (out_bn * w[rank * n:(rank + 1) * n]).sum().backward()
    res["bn"] = {"out": out_bn.detach(), "grad": xr.grad, "running_mean": rm, "running_var": rv}
    # a whole generator, with and without cross-replica BN
    for cross in (True, False):
        cfg = tiny_model(cross_replica_bn=cross, g_embed_init="normal")
        torch.manual_seed(0)
        g = Generator(cfg)
        z, y, wv = _g_inputs(cfg)
        b = z.shape[0] // world
        sl = slice(rank * b, (rank + 1) * b)
        video = g(z[sl], y[sl])
        (video * wv[sl]).sum().backward()
        grads = {k: p.grad.clone() for k, p in g.named_parameters()}
        for v in grads.values():
            dist.all_reduce(v)  # the gradient of the global sum, as DDP's (mean) times the world size
        res[f"g_cross{cross}"] = {"out": video.detach(), "grads": grads, "buffers": dict(g.named_buffers())}
    # the collective helpers
    res["mean"] = mean_across_ranks({"a": float(rank), "b": 2.0 * rank + 1}, info, torch.device("cpu"))
    res["all"] = (all_ranks(rank == 0, info, torch.device("cpu")), all_ranks(True, info, torch.device("cpu")))
    res["any"] = (any_rank(rank == 1, info, torch.device("cpu")), any_rank(False, info, torch.device("cpu")))
    res["bcast"] = broadcast_object(f"from {rank}", info)
    torch.save(res, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _train_task(rank: int, world: int, out: str, overrides: list[str], max_steps: int) -> None:
    trainer = Trainer(tiny_cfg(*overrides), out, progress=False)
    try:
        logs = trainer.train(max_steps)
    finally:
        trainer.close()
    (Path(out) / f"logs_rank{rank}.json").write_text(json.dumps(logs))


def _skip_task(rank: int, world: int, out: str) -> None:
    import dvdgan.training.trainer as tr

    real, calls = tr.dual_g_loss, [0]

    def flaky(scores):  # rank 1's first G loss is infinite; rank 0's losses are all finite
        calls[0] += 1
        loss, parts = real(scores)
        return (loss * float("inf"), parts) if rank == 1 and calls[0] == 1 else (loss, parts)

    tr.dual_g_loss = flaky
    trainer = Trainer(tiny_cfg("train.nonfinite=skip", "train.checkpoint_every=100"), out, progress=False)
    try:
        trainer.train(2)
        result = {"skipped": trainer.skipped_steps, "step": trainer.step,
                  "g": sum(float(p.double().sum()) for p in trainer.G.parameters())}
    finally:
        trainer.close()
    (Path(out) / f"skip_rank{rank}.json").write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------


def test_slurm_variables_map_to_torchrun_ones(monkeypatch):
    from dvdgan.errors import DvdganError
    from dvdgan.training import distributed

    monkeypatch.setattr(os, "environ", dict(os.environ))  # nothing set here leaks into the other tests
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_NODELIST",
              "SLURM_NODELIST"):
        os.environ.pop(k, None)
    os.environ.update(SLURM_PROCID="5", SLURM_NTASKS="16", SLURM_LOCALID="1")
    with pytest.raises(DvdganError, match="MASTER_ADDR"):
        distributed._slurm_env()
    assert "RANK" not in os.environ
    os.environ["MASTER_ADDR"] = "node017"
    distributed._slurm_env()
    assert [os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")] == [
        "5", "16", "1", "node017", "29500"]


def test_split_sharding_slices_one_global_stream():
    glob = iter(KeySampler(50, 6, seed=3, rank=0, start_batch=7))
    shards = [iter(KeySampler(50, 6, seed=3, rank=0, start_batch=7, shard=(i, 3))) for i in range(3)]
    for _ in range(12):  # across epoch boundaries too
        assert next(glob) == [k for s in shards for k in next(s)]
    # independent (B.1): the replicas' streams differ
    a, b = iter(KeySampler(50, 4, seed=3, rank=0)), iter(KeySampler(50, 4, seed=3, rank=1))
    assert next(a) != next(b)


def test_cross_replica_bn_values_and_gradients_match_bn_on_the_concatenated_batch(tmp_path):
    _join(_launch("_layers_task", str(tmp_path)))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    tol = dict(rtol=1e-4, atol=1e-5)

    # the BN function against F.batch_norm over all videos (one process, no process group)
    x, w, frames, c = _bn_inputs()
    x = x.clone().requires_grad_(True)
    rm, rv = torch.zeros(frames * c), torch.ones(frames * c)
    ref = _per_timestep_batch_norm(x, frames, rm, rv, True, 0.1, 1e-4, cross_replica=True)
    (ref * w).sum().backward()
    torch.testing.assert_close(torch.cat([r["bn"]["out"] for r in ranks]), ref.detach(), **tol)
    torch.testing.assert_close(torch.cat([r["bn"]["grad"] for r in ranks]), x.grad, **tol)
    for r in ranks:
        torch.testing.assert_close(r["bn"]["running_mean"], rm, **tol)
        torch.testing.assert_close(r["bn"]["running_var"], rv, **tol)

    # a generator with cross-replica BN == the same generator on the concatenated batch
    for cross in (True, False):
        cfg = tiny_model(cross_replica_bn=cross, g_embed_init="normal")
        torch.manual_seed(0)
        g = Generator(cfg)
        z, y, wv = _g_inputs(cfg)
        b = z.shape[0] // WORLD
        full = g(z, y)
        got = torch.cat([r[f"g_cross{cross}"]["out"] for r in ranks])
        if cross:
            (full * wv).sum().backward()
            torch.testing.assert_close(got, full.detach(), **tol)
            # fp32 summation order differs: absolute tolerance relative to the largest gradient entry (some
            # gradients, e.g. of conv biases absorbed by the next BN, are exactly 0 up to that rounding)
            scale = 5e-6 * max(p.grad.abs().max().item() for p in g.parameters())
            for k, p in g.named_parameters():
                for r in ranks:
                    torch.testing.assert_close(r["g_crossTrue"]["grads"][k], p.grad, rtol=1e-4, atol=scale, msg=k)
            for k, buf in g.named_buffers():
                for r in ranks:
                    torch.testing.assert_close(r["g_crossTrue"]["buffers"][k], buf, **tol, msg=k)
        else:
            # without it every replica normalises with its own batch: G on each half alone
            with torch.no_grad():
                halves = torch.cat([g(z[i * b:(i + 1) * b], y[i * b:(i + 1) * b]) for i in range(WORLD)])
            torch.testing.assert_close(got, halves, **tol)
            assert not torch.allclose(got, full.detach(), rtol=1e-3, atol=1e-3)  # and that is not global BN

    # the collective helpers
    for r in ranks:
        assert r["mean"] == {"a": 0.5, "b": 2.0}
        assert r["all"] == (False, True) and r["any"] == (True, False)
        assert r["bcast"] == "from 0"


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_checkpoints(run / "checkpoints")[-1] / "model.safetensors"))


def test_two_processes_train_to_the_weights_of_one_process_on_the_global_batch(tmp_path):
    # Adam with a small eps takes a step of about lr for every gradient entry, whatever its size, so an
    # entry that is ~0 up to rounding (a conv bias absorbed by the next BN, a ReLU at its kink) steps
    # +lr in one run and -lr in the other, and a few such flips grow over steps (they did, in CI, with
    # eps 1e-4). eps = 1 makes the step ~lr * g, a smooth function of the gradient: the two runs then
    # differ by what their gradients differ by. lr 1e-2 keeps the weights moving.
    # g_embed_init is the default (orthogonal): with the shapes preset's "normal", G's first-update
    # gradients differed by up to ~0.5 % of the largest entry while D agreed to 1e-7; the cause is not
    # pinned down. G alone with "normal" and cross-replica BN matches the concatenated batch to 5e-6 of
    # the largest gradient (test_cross_replica_bn_values_and_gradients_match_bn_on_the_concatenated_batch).
    overrides = ["train.data_sharding=split", "model.cross_replica_bn=true", "train.checkpoint_every=100",
                 "train.adam_eps=1.0", "train.lr_g=1e-2", "train.lr_d=1e-2", "model.g_embed_init=orthogonal"]
    steps = 3
    two, one = tmp_path / "two", tmp_path / "one"
    ctx = _launch("_train_task", str(two), overrides, steps)
    logs_one = train(tiny_cfg(*overrides), one, max_steps=steps, progress=False)  # meanwhile, in this process
    _join(ctx)

    info = json.loads((two / "run_info.json").read_text())
    assert (info["world_size"], info["per_replica_batch"], info["grad_accum"], info["effective_batch"]) == (2, 2, 1, 4)
    assert json.loads((one / "run_info.json").read_text())["effective_batch"] == 4

    a, b = _weights(two), _weights(one)
    assert a.keys() == b.keys()
    assert any(k.startswith("generator_ema.") for k in a) and any(k.startswith("discriminator.") for k in a)
    for k in a:  # parameters of G, EMA G and D, and buffers (BN running statistics, SN vectors)
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-5, msg=k)
    # the weights did move: this is not a comparison of two initialisations
    init = Trainer(tiny_cfg(*overrides), tmp_path / "init", progress=False)
    moved = init.G.state_dict()["groups.0.block1.conv1.weight"]
    assert not torch.allclose(moved, a["generator.groups.0.block1.conv1.weight"], atol=1e-4)
    init.close()

    # rank 0 logged the means over both replicas: the one-process values
    logs_two = [json.loads((two / f"logs_rank{r}.json").read_text()) for r in range(WORLD)]
    assert logs_two[0] == logs_two[1]
    for k in ("d_loss", "d_loss_spatial", "d_loss_temporal", "g_loss", "d_spatial_real", "d_temporal_fake"):
        assert logs_two[0][k] == pytest.approx(logs_one[k], rel=1e-4, abs=1e-5), k


def test_a_nonfinite_loss_on_one_rank_makes_every_rank_skip(tmp_path):
    _join(_launch("_skip_task", str(tmp_path)))  # without the collective check: hang or gloo error
    res = [json.loads((tmp_path / f"skip_rank{r}.json").read_text()) for r in range(WORLD)]
    assert res[0] == res[1] and res[0]["skipped"] == 1 and res[0]["step"] == 2


@pytest.mark.slow
def test_killed_two_process_run_resumes_on_one_process_with_accumulation(tmp_path, capsys):
    run = tmp_path / "run"
    overrides = ["model.cross_replica_bn=true", "train.checkpoint_every=2", "train.keep_checkpoints=2"]
    ctx = _launch("_train_task", str(run), overrides, 1000)
    deadline = time.time() + TIMEOUT_S
    while not list_checkpoints(run / "checkpoints") and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.4)  # let it run into a later step
    for p in ctx.processes:
        p.kill()  # SIGKILL: no exit checkpoint
    for p in ctx.processes:
        p.join()
    ckpts = list_checkpoints(run / "checkpoints")
    assert ckpts, "the 2-process run wrote no checkpoint"
    step = int(ckpts[-1].name.split("_")[1])
    assert step >= 2 and step % 2 == 0

    # 1 process x 2 accumulation steps of 2 = the same effective batch of 4
    capsys.readouterr()
    trainer = Trainer(tiny_cfg(*overrides, "train.grad_accum=2"), run, resume=True, progress=False)
    assert trainer.step == step and trainer.per_replica_batch == 2 and trainer.effective_batch == 4
    saved = load_file(str(ckpts[-1] / "model.safetensors"))
    for k, v in trainer.G.state_dict().items():
        assert torch.equal(v, saved[f"generator.{k}"]), k
    trainer.train(max_steps=step + 2)
    trainer.close()
    err = capsys.readouterr().err
    assert f"resuming from {ckpts[-1]} (step {step})" in err
    assert "effective batch 4 = 2 per replica x 1 replicas x 2 accumulation" in err
    assert int(list_checkpoints(run / "checkpoints")[-1].name.split("_")[1]) == step + 2
    info = json.loads((run / "run_info.json").read_text())
    first = info["history"][0]
    assert (first["world_size"], first["grad_accum"], first["effective_batch"]) == (2, 1, 4)
    assert (info["world_size"], info["grad_accum"], info["effective_batch"], info["start_step"]) == (1, 2, 4, step)
    assert all(torch.isfinite(p).all() for p in trainer.G.parameters())


@pytest.mark.parametrize("context_frames", [0, 2])
def test_activation_checkpointing_keeps_outputs_gradients_and_bn_statistics(context_frames):
    from dvdgan.models.prediction import build_generator

    cfg = tiny_model(context_frames=context_frames, num_classes=1 if context_frames else 3)
    torch.manual_seed(0)
    nets = [(build_generator(cfg), DualDiscriminator(cfg))]
    nets.append(tuple(type(m)(cfg) for m in nets[0]))
    for src, dst in zip(nets[0], nets[1]):
        dst.load_state_dict(src.state_dict())
    # G: 2 ConvGRUs + 4 GBlocks (+ 3 DBlocks of the conditioning stack); D: 3 DBlocks in D_S and in D_T
    assert enable_activation_checkpointing(nets[1][0]) == (9 if context_frames else 6)
    assert enable_activation_checkpointing(nets[1][1]) == 6
    z, y = torch.randn(3, cfg.z_dim), torch.zeros(3, dtype=torch.long)
    ctx = torch.randn(3, context_frames, 3, cfg.resolution, cfg.resolution) if context_frames else None
    results = []
    for g, d in nets:
        fake = g(z, y, ctx) if context_frames else g(z, y)
        video = torch.cat([ctx, fake], 1) if context_frames else fake
        torch.manual_seed(1)  # same D_S frame draws
        s, t = d(video, y)
        (s.sum() + t.sum()).backward()
        results.append((fake.detach(), {k: p.grad for k, p in [*g.named_parameters(), *d.named_parameters()]},
                        dict(g.named_buffers())))
    (fa, ga, ba), (fb, gb, bb) = results
    torch.testing.assert_close(fb, fa)
    for k in ga:
        torch.testing.assert_close(gb[k], ga[k], msg=k)
    for k in ba:  # running statistics moved once, not twice (the recomputation restores them)
        torch.testing.assert_close(bb[k], ba[k], msg=k)
    assert not torch.equal(ba["out_bn.running_mean"], torch.zeros_like(ba["out_bn.running_mean"]))
