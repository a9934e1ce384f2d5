"""``dvdgan train``: train a DVD-GAN. Launch with torchrun for several GPUs or nodes:

    torchrun --nproc_per_node=8 -m dvdgan train --preset kinetics600-12x64 --out runs/k600 --data ...
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from dvdgan.commands.common import (
    add_common_arguments,
    add_config_arguments,
    check_data,
    check_device,
    check_output_dir,
    data_overrides,
    print_notice,
)
from dvdgan.config import Config, apply_overrides, load_config
from dvdgan.errors import DvdganError
from dvdgan.rundir import RunDirLock, discard_failed_start, prepare_run_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="run directory (config, checkpoints, TensorBoard, samples)")
    p.add_argument("--data", default=None, help="dataset path (default: the preset's dataset; 'shapes' needs none)")
    p.add_argument("--dataset", default=None, help="dataset kind: shapes, ucf101, kinetics600, bair, folder, prepared")
    p.add_argument("--max-steps", type=int, default=None, help="generator updates to train for (total)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="--out holds a run: delete its files (checkpoints, config, logs, samples) and start anew")
    add_common_arguments(p, workers=True, device_default=None)


def resolve_train_config(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.resume and args.config is None and args.preset is None:
        saved = Path(args.out) / "config.json"
        if saved.exists():  # resume with the run's own config
            cfg = load_config(path=str(saved), overrides=[])
            return _with_cli(cfg, args, overrides)
    cfg = load_config(args.preset, [], args.config, notice=print_notice)
    return _with_cli(cfg, args, overrides)


def _with_cli(cfg: Config, args: argparse.Namespace, overrides: list[str]) -> Config:
    overrides = overrides + data_overrides(cfg, args.data, args.dataset)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    if args.num_workers is not None:
        overrides.append(f"data.num_workers={args.num_workers}")
    return apply_overrides(cfg, overrides)


def run(args: argparse.Namespace) -> int:
    """Everything is checked before a model is built or a file written: the config, the device,
    the run directory (writable, not holding another run, not in use), the data (at least one
    usable video). A start that fails later, before any checkpoint, removes what it wrote."""
    if args.resume and args.overwrite:
        raise DvdganError("--resume continues the run in --out and --overwrite deletes it: pass one of them")
    cfg = resolve_train_config(args)
    check_device(cfg.train.device, "train.device")
    out = check_output_dir(args.out, "run directory")
    prepare_run_dir(out, resume=args.resume, overwrite=args.overwrite, dry_run=True)
    # a labelled dataset's class count is taken unless the user fixed it (override or config file)
    explicit = args.config is not None or any(o.split("=")[0].strip() == "model.num_classes" for o in args.overrides)
    check_data(cfg, classes_from_data=not explicit)
    from dvdgan.training import Trainer
    from dvdgan.training.trainer import TrainingDiverged

    main_process = int(os.environ.get("RANK", "0")) == 0  # torchrun: rank 0 owns the run directory
    with RunDirLock(out) if main_process else contextlib.nullcontext():
        if main_process:
            prepare_run_dir(out, resume=args.resume, overwrite=args.overwrite)
        try:
            trainer = Trainer(cfg, out, resume=args.resume, progress=not args.no_progress,
                              classes_from_data=not explicit)
            try:
                trainer.train()
                if trainer.is_main:
                    print(trainer.summary(), file=sys.stderr)
            finally:
                trainer.close()
        except DvdganError as e:
            if main_process and not args.resume and not isinstance(e, TrainingDiverged):
                discard_failed_start(out)
            raise
    return 130 if trainer.interrupted else 0
