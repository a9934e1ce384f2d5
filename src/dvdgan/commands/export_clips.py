"""``dvdgan export-clips``: real clips of a dataset written as MP4 at a model's size, e.g. the
input of ``dvdgan predict --input``.

    dvdgan export-clips --checkpoint runs/shapes-fp --out clips --n 8            # the run's data, test split
    dvdgan export-clips --preset bair-fp-64 --data /data/bair --out clips --n 16
    dvdgan predict --checkpoint runs/shapes-fp --input clips --out pred --frame-stride 1

Every clip is what training sees (``data.frame_stride`` applied, shortest side resized to the
model's resolution, centre or random crop as the dataset does), ``context + frames`` frames long,
named ``clip_<index>_<class>.mp4``. The frames are already strided, so ``predict`` reads them with
``--frame-stride 1``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dvdgan.commands.common import (
    add_common_arguments,
    add_config_arguments,
    check_data,
    check_output_dir,
    data_overrides,
    output_errors,
    print_notice,
)
from dvdgan.config import Config, apply_overrides, load_config
from dvdgan.errors import DvdganError
from dvdgan.video_io import DEFAULT_FPS


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--checkpoint", default=None,
                   help="take the clip size and the dataset from this checkpoint / run directory (else the preset's)")
    p.add_argument("--data", default=None,
                   help="dataset path (default: the checkpoint's or preset's; 'shapes' needs none)")
    p.add_argument("--dataset", default=None, help="dataset kind: shapes, ucf101, kinetics600, bair, folder, prepared")
    p.add_argument("--out", required=True, help="output folder for the MP4 files")
    p.add_argument("--n", type=int, default=8, help="number of clips (default 8)")
    p.add_argument("--split", default="test", help="dataset split (default test: clips the model did not train on)")
    p.add_argument("--seed", type=int, default=0, help="which clips: a seeded random choice (default 0)")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help=f"frames per second (default {DEFAULT_FPS:g})")
    add_common_arguments(p, device=False)


def resolve_config(args: argparse.Namespace) -> Config:
    if args.checkpoint is not None:
        from dvdgan.commands.common import checked_checkpoint

        if args.preset is not None or args.config is not None:
            raise DvdganError("--checkpoint gives the config: pass it or --preset/--config, not both")
        _, cfg = checked_checkpoint(args.checkpoint)
    else:
        cfg = load_config(args.preset, [], args.config, notice=print_notice)
    return apply_overrides(cfg, list(args.overrides) + data_overrides(cfg, args.data, args.dataset))


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise DvdganError(f"--n must be >= 1, got {args.n}")
    if not args.fps > 0:
        raise DvdganError(f"--fps must be > 0, got {args.fps}")
    cfg = resolve_config(args)
    out = check_output_dir(args.out, "--out folder")
    check_data(cfg, split=args.split, classes_from_data=True)
    with output_errors(out):
        return _export(args, cfg, out)


def _export(args: argparse.Namespace, cfg: Config, out: Path) -> int:
    import numpy as np
    from tqdm import tqdm

    from dvdgan.data import build_dataset
    from dvdgan.sampling import _safe
    from dvdgan.video_io import save_mp4

    m = cfg.model
    ds = build_dataset(cfg.data, split=args.split, frames=m.total_frames, resolution=m.resolution, seed=args.seed)
    n = min(args.n, len(ds))
    idx = np.sort(np.random.default_rng(args.seed).choice(len(ds), n, replace=False))
    names = [str(x) for x in getattr(ds, "class_names", [])]
    for i in tqdm(idx, desc="export", unit="clip", disable=args.no_progress):
        video, label = ds[int(i)]
        name = f"clip_{int(i):05d}" + (f"_{_safe(names[int(label)])}" if 0 <= int(label) < len(names) else "")
        save_mp4(out / f"{name}.mp4", video.numpy() if hasattr(video, "numpy") else video, fps=args.fps)
    print(f"wrote {n} clips of {m.total_frames} frames at {m.resolution}x{m.resolution} from the {args.split} split "
          f"of {cfg.data.dataset}{' ' + cfg.data.path if cfg.data.path else ''} to {out}")
    if m.context_frames and args.checkpoint:
        print(f"next: dvdgan predict --checkpoint {args.checkpoint} --input {out} --out {out}-predicted "
              "--frame-stride 1")
    return 0
