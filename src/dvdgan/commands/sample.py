"""``dvdgan sample``: videos, grids and interpolations from a checkpoint (4.1.1, appendix E).

    dvdgan sample --checkpoint runs/shapes --out samples                       # 3 videos of each of 6 classes
    dvdgan sample --checkpoint runs/shapes --out s --classes square-rightward 3 --n 16 --truncation 0.6
    dvdgan sample --checkpoint runs/k600 --out s --n 1000 --each --batch-size 32  # every sample as MP4
    dvdgan sample --checkpoint runs/shapes --out s --interpolate latent --classes cross-rightward --steps 8
    dvdgan sample --checkpoint runs/shapes --out s --interpolate class --classes 0 5 --steps 8

Writes grid.mp4 / grid.gif (one row per class, labelled with its name; a caption with the
truncation and seed; scaled to at least 128 px per video),
first_frames.png (Figures 4, 10-14), frames_00000_<class>.png (all frames of the first sample,
Figure 5); with --interpolate, <kind>.mp4 / .gif (the steps side by side) and <kind>.png (time
on the vertical axis, Figures 15-16).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from dvdgan.commands.common import (
    add_common_arguments,
    check_device,
    check_output_dir,
    checked_checkpoint,
    output_errors,
)
from dvdgan.errors import DvdganError
from dvdgan.video_io import DEFAULT_FPS, LEGIBLE_PX

MAX_ROWS = 16  # without --classes, a model with at most this many classes gets one grid row per class


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint directory / model.safetensors / run dir")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--classes", nargs="+", default=None, metavar="CLASS",
                   help="class ids or names (comma- or space-separated), cycled over the samples; "
                        f"default: every class in turn (one grid row each) when the model has at most "
                        f"{MAX_ROWS}, else drawn at random")
    p.add_argument("--n", type=int, default=None,
                   help="number of videos (default 16, rounded up to fill every class's row)")
    p.add_argument("--truncation", type=float, default=1.0,
                   help="standard deviation of z in [0, 1] (default 1 = no truncation); with "
                        "--truncation-mode resample the threshold beyond which z is redrawn")
    p.add_argument("--truncation-mode", choices=("scale", "resample"), default="scale",
                   help="scale: z ~ N(0, S^2) (the paper's truncation curve); resample: BigGAN's trick")
    p.add_argument("--seed", type=int, default=0, help="seed of z and of random classes (default 0)")
    p.add_argument("--raw", action="store_true", help="the trained generator instead of its EMA")
    p.add_argument("--batch-size", type=int, default=16, help="videos per generator call (memory)")
    p.add_argument("--grid-max", type=int, default=256,
                   help="at most this many samples in the grid files (default 256); --each writes all")
    p.add_argument("--each", action="store_true", help="also write every sample as its own MP4")
    p.add_argument("--interpolate", choices=("latent", "class"), default=None,
                   help="latent: two z, one class (Figure 15); class: one z, two classes (Figure 16)")
    p.add_argument("--steps", type=int, default=8, help="interpolation steps, both ends included (default 8)")
    p.add_argument("--scale", type=int, default=None,
                   help=f"nearest-neighbour upscaling (default: enough for {LEGIBLE_PX} px per video, e.g. 4 at 32x32)")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help=f"frames per second of the videos (default "
                   f"{DEFAULT_FPS:g})")
    add_common_arguments(p)


def _check_args(args: argparse.Namespace) -> None:
    s = args.truncation
    if args.truncation_mode == "scale" and not 0.0 <= s <= 1.0:
        raise DvdganError(f"--truncation is the standard deviation of z and must be in [0, 1], got {s}")
    if args.truncation_mode == "resample" and not (s > 0 and math.isfinite(s)):
        raise DvdganError(f"--truncation-mode resample needs a threshold > 0, got {s}")
    if args.interpolate and args.n is not None:
        raise DvdganError(f"--n does not apply to --interpolate {args.interpolate} (one video per step): "
                          "use --steps")
    for name, value, low in (("--n", args.n, 1), ("--batch-size", args.batch_size, 1), ("--steps", args.steps, 2),
                             ("--scale", args.scale, 1), ("--grid-max", args.grid_max, 1)):
        if value is not None and value < low:
            raise DvdganError(f"{name} must be >= {low}, got {value}")
    if not (args.fps > 0 and math.isfinite(args.fps)):
        raise DvdganError(f"--fps must be > 0, got {args.fps}")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    check_device(args.device)
    out = check_output_dir(args.out)
    checked_checkpoint(args.checkpoint, raw=args.raw)  # before the model is built
    with output_errors(out):
        return _sample(args)


def _sample(args: argparse.Namespace) -> int:
    import torch

    from dvdgan import sampling

    generator, cfg = sampling.load_generator(args.checkpoint, ema=not args.raw, device=args.device)
    if cfg.model.context_frames:
        raise DvdganError(f"{args.checkpoint} is a prediction (DVD-GAN-FP) checkpoint: it continues real "
                          f"videos, use `dvdgan predict --checkpoint {args.checkpoint}` instead")
    names = sampling.class_names_for(cfg)
    num_classes = cfg.model.num_classes
    classes = None if args.classes is None else sampling.resolve_classes(args.classes, names, num_classes)
    out = Path(args.out)
    common = dict(truncation=args.truncation, seed=args.seed, batch_size=args.batch_size,
                  truncation_mode=args.truncation_mode)
    src = (generator, cfg)

    if args.interpolate == "latent":
        if classes is not None and len(classes) != 1:
            raise DvdganError("--interpolate latent interpolates within one class: give one --classes value")
        cls = classes[0] if classes else 0
        videos = sampling.interpolate_latent(src, cls, steps=args.steps, **common)
        paths = sampling.write_interpolation(
            videos, out, f"interpolate_latent_{sampling._safe(names[cls])}",
            f"latent interpolation, {names[cls]}", fps=args.fps, scale=args.scale)
    elif args.interpolate == "class":
        if classes is None or len(classes) != 2:
            raise DvdganError("--interpolate class needs two classes: --classes A B")
        a, b = classes
        videos = sampling.interpolate_class(src, a, b, steps=args.steps, **common)
        paths = sampling.write_interpolation(
            videos, out, f"interpolate_class_{sampling._safe(names[a])}_to_{sampling._safe(names[b])}",
            f"class interpolation, {names[a]} -> {names[b]}", fps=args.fps, scale=args.scale)
    else:
        n = args.n or 16
        if classes is None and 1 < num_classes <= MAX_ROWS:  # one labelled row per class
            classes = list(range(num_classes))
            if args.n is None:
                n = num_classes * math.ceil(16 / num_classes)
        kept, kept_labels, each_paths = [], [], []
        done = 0
        for videos, labels in sampling.iter_samples(generator, cfg, classes, n, progress=not args.no_progress,
                                                    **common):
            if args.each:
                each_paths += sampling.write_each(videos, labels, out, names, args.fps, args.scale, start=done)
            room = args.grid_max - sum(len(v) for v in kept)
            if room > 0:
                kept.append(videos[:room])
                kept_labels.append(labels[:room])
            done += len(videos)
        caption = (f"{cfg.name}, {'raw' if args.raw else 'EMA'} G, truncation {args.truncation:g}, "
                   f"seed {args.seed}")
        paths = sampling.write_samples(torch.cat(kept), torch.cat(kept_labels), out, names, fps=args.fps,
                                       scale=args.scale, by_class=num_classes > 1, caption=caption)
        if each_paths:
            print(f"{len(each_paths)} sample videos in {out}")
    for path in paths.values():
        print(path)
    return 0
