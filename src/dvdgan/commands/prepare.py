"""``dvdgan prepare``: decode a video dataset once into fast memory-mapped shards.

Example::

    dvdgan prepare --dataset ucf101 --src data/UCF-101 --out data/ucf101-128 --resolution 128 --num-workers 8

Then train with ``data.path=data/ucf101-128`` (dataset ucf101 or prepared). Resumable: run the
same command again after an interruption. See :mod:`dvdgan.data.prepared` for the format.
"""

from __future__ import annotations

import argparse

from dvdgan.commands.common import add_common_arguments, check_output_dir, output_errors
from dvdgan.data.prepare import DEFAULT_SHARD_SIZE, SOURCE_DATASETS, prepare


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=SOURCE_DATASETS, help="kind of source dataset")
    p.add_argument("--src", required=True, metavar="PATH", help="the dataset as downloaded")
    p.add_argument("--out", required=True, metavar="PATH", help="output folder (created; resumed if present)")
    p.add_argument("--resolution", required=True, type=int, metavar="R", help="shortest side after resizing")
    p.add_argument("--split", default="all", help="train, test, val (Kinetics) or all (default)")
    p.add_argument(
        "--csv",
        default=None,
        metavar="PATH",
        help="Kinetics annotations: a CSV, a folder of CSVs, or a pattern with {split}",
    )
    p.add_argument(
        "--ucf-split", type=int, default=1, choices=(1, 2, 3), metavar="N", help="UCF-101 split 1-3"
    )
    p.add_argument("--camera", default="image_aux1", help="BAIR camera stream (default image_aux1)")
    p.add_argument(
        "--crop",
        default="full",
        choices=("full", "center"),
        help="store whole resized frames (full, default: random crops at training time) "
        "or only the centre RxR square",
    )
    p.add_argument(
        "--frame-stride",
        type=int,
        default=1,
        metavar="K",
        help="keep every K-th frame (saves disk; data.frame_stride must be a multiple of K)",
    )
    p.add_argument(
        "--max-frames", type=int, default=None, metavar="N", help="keep at most N frames per video"
    )
    p.add_argument(
        "--min-frames", type=int, default=1, metavar="N", help="skip videos with fewer stored frames than N"
    )
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="N", help="videos per shard")
    add_common_arguments(p, device=False, workers=True, workers_default=0)
    # the old spellings, kept working but not shown
    p.add_argument("--workers", type=int, dest="num_workers", help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", dest="no_progress", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out folder")
    with output_errors(args.out):
        return _prepare(args)


def _prepare(args: argparse.Namespace) -> int:
    prepare(
        args.dataset,
        args.src,
        args.out,
        args.resolution,
        split=args.split,
        ucf_split=args.ucf_split,
        kinetics_csv=args.csv,
        bair_camera=args.camera,
        crop=args.crop,
        frame_stride=args.frame_stride,
        max_frames=args.max_frames,
        min_frames=args.min_frames,
        shard_size=args.shard_size,
        workers=args.num_workers,
        progress=not args.no_progress,
    )
    return 0
