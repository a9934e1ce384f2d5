"""``dvdgan stats``: real-data statistics of a detector (mu, sigma, logits for IS), resumable.

    dvdgan stats --detector reference --out shapes_stats.npz                   # built-in data
    dvdgan stats --preset ucf101-16x128 --data UCF-101/ --detector i3d_pretrained_400.pt --out ucf.npz
"""

from __future__ import annotations

import argparse

from dvdgan.commands.common import (
    add_common_arguments,
    add_config_arguments,
    check_device,
    check_output_file,
    data_overrides,
    print_notice,
)
from dvdgan.config import Config, apply_overrides, load_config
from dvdgan.errors import DvdganError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--data", default=None, help="dataset path ('shapes' needs none)")
    p.add_argument("--dataset", default=None,
                   help="dataset kind: shapes, ucf101, kinetics600, bair, folder, prepared "
                        "(default: the preset's; 'folder' when --data is given with the shapes preset)")
    p.add_argument("--split", default="train",
                   help="dataset split (default train, as the paper's Kinetics-600 statistics)")
    p.add_argument("--detector", required=True,
                   help="'reference' (built-in dataset classifier) or a local weight file: I3D state dict "
                        "/ TorchScript, C3D npz / TorchScript (prefix i3d: or c3d: to force the kind)")
    p.add_argument("--c3d-mean", default=None, help="C3D mean clip mean2.npz (default: beside the C3D npz)")
    p.add_argument("--i3d-resize", choices=("tf", "torch"), default="tf",
                   help="frame resize to 224 for I3D: TF1 resize_bilinear as the FVD reference (default) "
                        "or torch bilinear as the VideoGPT/TATS ports; neither antialiases")
    p.add_argument("--out", required=True, help="output STATS.npz (resumes from STATS.npz.partial.npz)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: the preset's)")
    p.add_argument("--resolution", type=int, default=None, help="frame size (default: the preset's)")
    p.add_argument("--n", type=int, default=None, help="number of real videos (default: the whole split)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per detector call (default 16)")
    p.add_argument("--checkpoint-every", type=int, default=20, help="batches between resumable saves")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (random crops / clip offsets)")
    p.add_argument("--cache-dir", default=None, help="where the reference classifier is cached")
    add_common_arguments(p, workers=True)


def resolve_data_config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.preset, [], args.config, notice=print_notice)
    return apply_overrides(cfg, list(args.overrides) + data_overrides(cfg, args.data, args.dataset))


def run(args: argparse.Namespace) -> int:
    cfg = resolve_data_config(args)
    if cfg.data.dataset != "shapes" and not cfg.data.path:
        raise DvdganError(f"dataset {cfg.data.dataset} needs --data PATH")
    check_device(args.device)
    check_output_file(args.out, "--out statistics file")
    frames = args.frames or cfg.model.total_frames
    resolution = args.resolution or cfg.model.resolution
    if args.num_workers is not None:
        cfg.data.num_workers = args.num_workers

    from dvdgan.data import build_dataset
    from dvdgan.metrics.detectors import load_detector
    from dvdgan.metrics.stats import compute_real_stats

    detector = load_detector(
        args.detector, resolution=resolution, frames=frames, device=args.device, c3d_mean=args.c3d_mean,
        i3d_resize=args.i3d_resize, cache_dir=args.cache_dir, progress=not args.no_progress,
    )
    dataset = build_dataset(cfg.data, split=args.split, frames=frames, resolution=resolution, seed=args.seed)
    desc = (f"{cfg.data.dataset}:{cfg.data.path or ''} split={args.split} frames={frames} "
            f"resolution={resolution} stride={cfg.data.frame_stride} seed={args.seed}")
    stats = compute_real_stats(
        dataset, detector, n=args.n, batch_size=args.batch_size, out_path=args.out,
        progress=not args.no_progress, checkpoint_every=args.checkpoint_every,
        num_workers=cfg.data.num_workers, description=desc,
    )
    extra = f", IS {stats.is_mean:.3f} +- {stats.is_std:.3f}"
    if stats.accuracy == stats.accuracy:  # not NaN
        extra += f", accuracy {stats.accuracy:.3f}"
    print(f"wrote {args.out}: {stats.n} videos, {detector.name}{extra}")
    return 0
