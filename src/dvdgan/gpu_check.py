"""``benchmarks/gpu_check.sh`` / ``python -m dvdgan.gpu_check --out GPU.json``: what a machine with
a CUDA device runs in one go (a few minutes), every part to one JSON file:

``ddp``
    ``torchrun --standalone --nproc_per_node=<all visible GPUs> -m dvdgan train`` for a few steps of a
    small config (NCCL, DDP, cross-replica BN), with its exit code, time and ``run_info.json``.
``bf16_compile``
    training steps of the ``shapes`` preset with ``train.bf16`` and ``train.compile``: the first
    (compiling) step's time, then the median step, the losses, and the eager fp32 step's time.
``sample``
    :func:`dvdgan.bench.bench_sample`: two 48-frame 64x64 videos at the paper's width
    (``kinetics600-48x64``), eager and replayed as CUDA graphs, fp32 and bf16.
``memory``
    :func:`dvdgan.memory.compare` on the device for a few configs: the planner's estimate against
    ``torch.cuda.max_memory_allocated`` over a real training step.

Without a CUDA device it stops at once with one line and exit code 2. A part that fails is
recorded with its error and the others still run (exit code 1 then).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from dvdgan.errors import DvdganError

# small, fast configs; overrides of the shapes preset
DDP_OVERRIDES = ["model.cross_replica_bn=true", "train.sample_every=0", "train.eval_every=0", "train.log_every=1",
                 "train.checkpoint_every=1000", "data.num_workers=0", "train.device=cuda"]
MEMORY_CONFIGS = [  # (name, preset, overrides, per-replica batch)
    ("shapes", "shapes", [], 16),
    ("shapes-bf16-checkpointing", "shapes", ["train.bf16=true", "train.activation_checkpointing=true"], 16),
    ("kinetics600-12x64-ch32", "kinetics600-12x64", ["model.g_ch=32", "model.d_ch=32"], 2),
    ("kinetics600-48x64-ch16-checkpointing", "kinetics600-48x64", ["model.g_ch=16", "model.d_ch=16"], 2),
]


def require_cuda() -> None:
    if not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no GPU visible"
        raise DvdganError(f"no CUDA device ({build}, torch {torch.__version__}): gpu_check needs one")


def _run_part(fn, *args) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        out = fn(*args)
        out["ok"] = True
    except Exception as e:  # noqa: BLE001 - recorded, the other parts still run
        out = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def check_ddp(steps: int, tmp: Path) -> dict[str, Any]:
    n = torch.cuda.device_count()
    out_dir = tmp / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "dvdgan",
           "train", "--out", str(out_dir), "--max-steps", str(steps), *DDP_OVERRIDES,
           f"train.batch_size={8 * n}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    res: dict[str, Any] = {"gpus": n, "command": " ".join(cmd[1:]), "returncode": p.returncode,
                           "stderr_tail": p.stderr[-2000:]}
    info = out_dir / "run_info.json"
    if info.exists():
        res["run_info"] = json.loads(info.read_text())
    if p.returncode != 0:
        raise RuntimeError(f"torchrun exited with {p.returncode}: {p.stderr[-500:]}")
    return res


def check_bf16_compile(steps: int, tmp: Path) -> dict[str, Any]:
    from dvdgan.bench import FixedBatches
    from dvdgan.config import apply_overrides, get_preset
    from dvdgan.training import Trainer

    res: dict[str, Any] = {}
    for name, extra in (("eager_fp32", []), ("bf16_compile", ["train.bf16=true", "train.compile=true"])):
        cfg = apply_overrides(get_preset("shapes"), ["train.device=cuda", "train.sample_every=0",
                                                     "train.eval_every=0", *extra])
        data = FixedBatches(cfg.model, cfg.train.batch_size)
        trainer = Trainer(cfg, tmp / name, progress=False, dataset=data)
        times, logs = [], {}
        for _ in range(steps + 1):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            logs = trainer.train_step(data)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        trainer.close()
        finite = all(torch.isfinite(torch.tensor(v)) for v in logs.values())
        res[name] = {"first_step_s": times[0], "median_step_s": statistics.median(times[1:]),
                     "d_loss": logs.get("d_loss"), "g_loss": logs.get("g_loss"), "finite": finite}
        if not finite:
            raise RuntimeError(f"{name}: non-finite losses {logs}")
    return res


def check_sample() -> dict[str, Any]:
    from dvdgan.bench import BenchOptions, bench_sample

    return bench_sample(torch.device("cuda", torch.cuda.current_device()), BenchOptions(progress=False))


def check_memory() -> dict[str, Any]:
    from dvdgan.config import apply_overrides, get_preset
    from dvdgan.memory import compare

    rows = {}
    for name, preset, extra, batch in MEMORY_CONFIGS:
        cfg = apply_overrides(get_preset(preset), extra)
        r = compare(cfg, batch, "cuda")
        rows[name] = {"batch": batch, "estimated_bytes": r["estimated_bytes"], "measured_bytes": r["measured_bytes"],
                      "ratio": r["ratio"], "live_peak_bytes": r["measured"]["live_peak_bytes"]}
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_check.json", help="JSON file to write")
    ap.add_argument("--steps", type=int, default=3, help="training steps per part")
    ap.add_argument("--only", default="ddp,bf16_compile,sample,memory", help="comma-separated parts")
    args = ap.parse_args(argv)
    try:
        require_cuda()
    except DvdganError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return 2
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    result: dict[str, Any] = {
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "hostname": platform.node(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with tempfile.TemporaryDirectory(prefix="dvdgan-gpu-check-") as tmp:
        runners = {"ddp": lambda: check_ddp(args.steps, Path(tmp)),
                   "bf16_compile": lambda: check_bf16_compile(args.steps, Path(tmp)),
                   "sample": check_sample, "memory": check_memory}
        for part in parts:
            if part not in runners:
                print(f"gpu_check: error: unknown part {part!r} (one of {', '.join(runners)})", file=sys.stderr)
                return 2
            print(f"gpu_check: {part} ...", file=sys.stderr, flush=True)
            result[part] = _run_part(runners[part])
            print(f"gpu_check: {part}: {'ok' if result[part]['ok'] else result[part]['error']} "
                  f"({result[part]['seconds']} s)", file=sys.stderr, flush=True)
            Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")  # after every part
    print(f"wrote {args.out}")
    return 0 if all(result[p]["ok"] for p in parts) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
