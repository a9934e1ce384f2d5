"""``dvdgan info``: parameter counts, pixel budget of the dual discriminator, FLOPs; with
``--memory``, the memory planner (:mod:`dvdgan.memory`): the estimated peak memory of one training
step per replica and the largest per-replica batch that fits ``--device-memory``."""

from __future__ import annotations

import argparse
import json

from dvdgan.commands.common import add_config_arguments, config_from_args
from dvdgan.errors import DvdganError
from dvdgan.info import model_info


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--memory", action="store_true",
                   help="estimate the peak memory of a training step per replica (nothing is allocated)")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="with --memory: per-replica batch to estimate (default: the largest that fits)")
    p.add_argument("--device-memory", default="80GB", metavar="SIZE",
                   help="with --memory: memory of one device, e.g. 24GB, 40GB, 80GB, 141GB (default 80GB)")
    p.add_argument("--replicas", type=int, default=1, metavar="N",
                   help="with --memory: replicas (DDP keeps gradients allocated when N > 1; default 1)")


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _memory(args: argparse.Namespace) -> int:
    from dvdgan.memory import memory_report, parse_size

    if args.batch is not None and args.batch < 1:
        raise DvdganError(f"--batch must be >= 1, got {args.batch}")
    if args.replicas < 1:
        raise DvdganError(f"--replicas must be >= 1, got {args.replicas}")
    device = parse_size(args.device_memory)
    cfg = config_from_args(args)
    r = memory_report(cfg, args.batch, device, replicas=args.replicas)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    e, s, c = r["estimate"], r["estimate"]["state"], r["configured"]
    mode = ", ".join(k for k in ("bf16", "activation_checkpointing") if c[k]) or "fp32, no checkpointing"
    print(f"preset {r['preset']} ({mode}), {args.replicas} replica(s): one training step per replica, estimated "
          "(fake tensors, nothing allocated)")
    print(f"  at batch {e['batch']}: peak {_gb(e['peak_bytes'])} = state {_gb(e['state_bytes'])} "
          f"(G {_gb(s['weights_g'])}, EMA G {_gb(s['ema_g'])}, D {_gb(s['weights_d'])}, gradients {_gb(s['grads'])}, "
          f"Adam {_gb(s['adam'])}) + activations and temporaries {_gb(e['activations_bytes'])}")
    per_video = max(r["per_video_bytes"].values())
    print(f"  per extra video: {_gb(per_video)}")
    fits = "fits" if r["fits"] else "does NOT fit"
    print(f"  on {_gb(device)} (leaving {_gb(r['overhead_bytes'])} + {100 * r['fragmentation']:.0f} % for the "
          f"CUDA context, workspaces and fragmentation): batch {e['batch']} {fits}; largest per-replica batch "
          f"{r['largest_batch']}")
    if "largest_batch_bf16_checkpointing" in r:
        print(f"  with train.bf16=true train.activation_checkpointing=true: largest per-replica batch "
              f"{r['largest_batch_bf16_checkpointing']}")
    print("  grad accumulation reaches a larger batch, but G's BatchNorm statistics stay per micro-batch "
          "(README, Training)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.memory:
        return _memory(args)
    info = model_info(config_from_args(args))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    v, prm, px, fl = info["video"], info["parameters"], info["pixels_per_video"], info["forward_flops_per_video"]
    print(f"preset {info['preset']}: {v['context_frames']}+{v['frames']} frames at {v['resolution']}x{v['resolution']}")
    print(f"  parameters   G {prm['generator']:,}   D_S {prm['spatial_discriminator']:,}   "
          f"D_T {prm['temporal_discriminator']:,}")
    print(f"  pixels/video D_S {px['spatial_discriminator']:,} + D_T {px['temporal_discriminator']:,} = "
          f"{px['dual_total']:,} of {px['full_video']:,} ({100 * px['reduction']:.0f} % fewer)")
    print(f"  fwd FLOPs    G {fl['generator'] / 1e9:.2f} G   D_S {fl['spatial_discriminator'] / 1e9:.2f} G   "
          f"D_T {fl['temporal_discriminator'] / 1e9:.2f} G   (per video)")
    return 0
