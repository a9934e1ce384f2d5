"""Multi-process training on CPU (gloo): 2 processes started with torch.multiprocessing (spawn) and
the environment variables torchrun sets (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK).

* cross-replica BN == BN over the concatenated batch, values and gradients (all_reduce autograd);
  without it, each replica's G output is G on its half alone;
* 2 processes x batch 2 (train.data_sharding="split", cross-replica BN) train G, EMA G and D to the
  weights one process reaches with batch 4 (float64, the shapes preset's settings), and rank 0 logs
  the global mean losses;
* a non-finite loss on one rank makes both ranks skip the update (no DDP hang);
* a killed 2-process run resumes on 1 process with 2 accumulation steps (same effective batch);
* activation checkpointing: same outputs, gradients and BN running statistics (CPU, called directly).
"""

from __future__ import annotations

import contextlib
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

from conftest import make_tiny_model_config, tiny_cfg
from dvdgan.checkpoint import list_checkpoints
from dvdgan.config import ModelConfig
from dvdgan.data.sampler import BatchKeys, ClipSampler
from dvdgan.models.generator import Generator
from dvdgan.models.layers import _per_timestep_batch_norm
from dvdgan.training import Trainer, train

WORLD = 2
TIMEOUT_S = 120


def tiny_model(**kw) -> ModelConfig:
    return make_tiny_model_config(**kw)


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


@contextlib.contextmanager
def _float64_training():
    """Build and train in float64: the default dtype, and real clips converted to it (the trainer
    converts them to float32); restored afterwards."""
    import dvdgan.training.trainer as tr

    old_dtype, old_convert = torch.get_default_dtype(), tr.to_model_input
    torch.set_default_dtype(torch.float64)
    tr.to_model_input = lambda video: old_convert(video).double()
    try:
        yield
    finally:
        torch.set_default_dtype(old_dtype)
        tr.to_model_input = old_convert


def _train_task(rank: int, world: int, out: str, overrides: list[str], max_steps: int, float64: bool = False) -> None:
    with _float64_training() if float64 else contextlib.nullcontext():
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
    glob = iter(BatchKeys(ClipSampler(50, seed=3), 6, start_batch=7))
    shards = [iter(BatchKeys(ClipSampler(50, seed=3), 6, start_batch=7, shard=(i, 3))) for i in range(3)]
    for _ in range(12):  # across epoch boundaries too
        assert next(glob) == [k for s in shards for k in next(s)]
    # independent (B.1): the replicas' streams differ
    a, b = iter(BatchKeys(ClipSampler(50, seed=3, rank=0), 4)), iter(BatchKeys(ClipSampler(50, seed=3, rank=1), 4))
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
    # The shapes preset's own settings (g_embed_init "normal"; Adam lr 1e-3, betas (0, 0.99),
    # eps 1e-8), in float64. In float32 the two runs cannot agree to rounding, and not because of
    # a bug: they sum in different orders (cross-replica BN statistics, DDP's gradient all_reduce),
    # so activations differ by ~1e-7 relative, and
    #  * a ReLU input that lies within that of 0 takes the other side of the kink. With seed 0 one
    #    entry of groups.1.block2.bn1's output is -1.8e-7 (float64) and +1.5e-7 (float32): its
    #    gradient is 0 in one run and -5.8e-4 in the other, 3e-3 of that layer's gradient norm,
    #    and G's first-update gradients then differ by up to 3.6e-4 of their largest entry (0.4 %
    #    of the gain/bias projections of that BN). The 2-vs-1 float32 difference is the same as
    #    one process's float32-vs-float64 difference at the same inputs; other seeds (with either
    #    embedding init) give ~1e-6: the "normal"-only failure was this one unlucky ReLU;
    #  * Adam with eps 1e-8 steps ~lr * sign(g) for gradient entries that are 0 up to rounding
    #    (~1e-7 of the largest entry in float32, >> eps): such entries step +lr in one run and -lr
    #    in the other.
    # In float64 both effects are ~1e-16 away (rounding far below eps, no activation that close to
    # a kink): 2 processes agree with 1 to ~1e-15 in gradients after the first update. Weights differ
    # by up to ~7e-11 after 3 steps: Adam turns the ~1e-15 rounding of gradients that are exactly 0
    # (e.g. the last group's shortcut bias, absorbed by the output BN) into steps of lr * g / eps.
    # Needs cross-replica BN to keep float64 (models/layers.py; in fp32 this fails at ~1e-6).
    overrides = ["train.data_sharding=split", "model.cross_replica_bn=true", "train.checkpoint_every=100"]
    steps = 3
    two, one = tmp_path / "two", tmp_path / "one"
    ctx = _launch("_train_task", str(two), overrides, steps, True)
    with _float64_training():  # meanwhile, in this process
        logs_one = train(tiny_cfg(*overrides), one, max_steps=steps, progress=False)
    _join(ctx)

    info = json.loads((two / "run_info.json").read_text())
    assert (info["world_size"], info["per_replica_batch"], info["grad_accum"], info["effective_batch"]) == (2, 2, 1, 4)
    assert json.loads((one / "run_info.json").read_text())["effective_batch"] == 4

    a, b = _weights(two), _weights(one)
    assert a.keys() == b.keys()
    assert any(k.startswith("generator_ema.") for k in a) and any(k.startswith("discriminator.") for k in a)
    for k in a:  # parameters of G, EMA G and D, and buffers (BN running statistics, SN vectors)
        assert a[k].dtype == torch.float64, k
        torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-8, msg=k)
    # the weights did move: this is not a comparison of two initialisations
    with _float64_training():
        init = Trainer(tiny_cfg(*overrides), tmp_path / "init", progress=False)
    moved = init.G.state_dict()["groups.0.block1.conv1.weight"]
    assert not torch.allclose(moved, a["generator.groups.0.block1.conv1.weight"], atol=1e-4)
    init.close()

    # rank 0 logged the means over both replicas: the one-process values
    logs_two = [json.loads((two / f"logs_rank{r}.json").read_text()) for r in range(WORLD)]
    assert logs_two[0] == logs_two[1]
    for k in ("d_loss", "d_loss_spatial", "d_loss_temporal", "g_loss", "d_spatial_real", "d_temporal_fake"):
        assert logs_two[0][k] == pytest.approx(logs_one[k], rel=1e-9, abs=1e-10), k


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
