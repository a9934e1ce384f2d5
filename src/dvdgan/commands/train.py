"""``dvdgan train``: train a DVD-GAN. Launch with torchrun for several GPUs or nodes:

    torchrun --nproc_per_node=8 -m dvdgan train --preset kinetics600-12x64 --out runs/k600 --data ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dvdgan.commands.common import add_config_arguments, data_overrides
from dvdgan.config import Config, apply_overrides, load_config
from dvdgan.errors import DvdganError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="run directory (config, checkpoints, TensorBoard, samples)")
    p.add_argument("--data", default=None, help="dataset path (default: the preset's dataset; 'shapes' needs none)")
    p.add_argument("--dataset", default=None, help="dataset kind: shapes, ucf101, kinetics600, bair, folder, prepared")
    p.add_argument("--max-steps", type=int, default=None, help="generator updates to train for (total)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_train_config(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.resume and args.config is None and args.preset is None:
        saved = Path(args.out) / "config.json"
        if saved.exists():  # resume with the run's own config
            cfg = load_config(path=str(saved), overrides=[])
            return _with_cli(cfg, args, overrides)
    cfg = load_config(args.preset, [], args.config)
    return _with_cli(cfg, args, overrides)


def _with_cli(cfg: Config, args: argparse.Namespace, overrides: list[str]) -> Config:
    overrides = overrides + data_overrides(cfg, args.data, args.dataset)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    return apply_overrides(cfg, overrides)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_train_config(args)
    if cfg.data.dataset != "shapes" and not cfg.data.path:
        raise DvdganError(f"preset {cfg.name} trains on {cfg.data.dataset}: pass --data PATH")
    from dvdgan.training import train

    train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    return 0
