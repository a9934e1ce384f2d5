"""torch.distributed set-up for runs launched by ``torchrun`` (or SLURM's ``srun``, whose variables
are mapped to torchrun's). A plain ``python -m dvdgan train`` is a world of one process.

Backends: NCCL when training on CUDA, gloo on CPU. Every helper here is a no-op in a world of
one process, and every helper that communicates is collective: all ranks must call it in the
same order (see docs/scaling.md).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dvdgan.errors import DvdganError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # on CUDA: the index of this process's GPU
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _slurm_env() -> None:
    """Map SLURM's variables to torchrun's when launched by ``srun python -m dvdgan train`` (one
    task per GPU). MASTER_ADDR defaults to the job's first host (``scontrol show hostnames``),
    MASTER_PORT to 29500; a batch script may export either."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ or "SLURM_NTASKS" not in os.environ:
        return
    if int(os.environ["SLURM_NTASKS"]) > 1 and "MASTER_ADDR" not in os.environ:
        host = _first_slurm_host()
        if host is None:
            raise DvdganError("launched by SLURM with several tasks but MASTER_ADDR is not set: export MASTER_ADDR "
                              "(the first host of $SLURM_JOB_NODELIST) and MASTER_PORT in the batch script "
                              "(see docs/scaling.md)")
        os.environ["MASTER_ADDR"] = host
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")


def _first_slurm_host() -> str | None:
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodelist:
        return None
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group described by the environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); NCCL for ``device_type == "cuda"``, gloo otherwise."""
    _slurm_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        # e.g. srun --gpus-per-task=1: every task sees one GPU, whatever its local rank
        local_rank %= max(torch.cuda.device_count(), 1)
        torch.cuda.set_device(local_rank)  # before the process group, so NCCL binds the right GPU
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t)
        t /= info.world_size
    return t


def mean_across_ranks(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Every value averaged over the ranks (one all_reduce). All ranks must pass the same keys."""
    if not info.enabled or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64 if device.type == "cpu" else torch.float32,
                     device=device)
    t = all_reduce_mean(t, info)
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_ranks(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank iff ``flag`` is true on every rank (a collective AND)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank iff ``flag`` is true on some rank (a collective OR)."""
    return not all_ranks(not flag, info, device)


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's parameters and buffers (e.g. spectral-norm vectors) on every rank."""
    if info.enabled:
        with torch.no_grad():
            for t in (*module.parameters(), *module.buffers()):
                dist.broadcast(t.data, src=0)


def ddp_buffer_kwargs() -> dict:
    """DDP arguments for "do not broadcast buffers before every forward": rank 0's buffers are
    broadcast once (:func:`broadcast_module`); afterwards the buffers evolve identically on every
    rank (spectral-norm vectors; cross-replica BN statistics) or are per-replica (BN statistics
    without cross-replica BN; rank 0's are checkpointed). ``broadcast_buffers`` is deprecated
    in newer torch in favour of ``forward_sync_buffers``."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
