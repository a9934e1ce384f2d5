"""``dvdgan bench``: training-step speed (optimised vs straightforward), achieved FLOP/s against
the machine's matmul FLOP/s, sampling latency, dual vs full-video discriminator cost, data
loading against what a training step consumes. See :mod:`dvdgan.bench`.

    dvdgan bench --json benchmarks/cpu.json                       # everything, default preset
    dvdgan bench --preset shapes --only step,flops --repeats 3    # a subset
"""

from __future__ import annotations

import argparse
import os

from dvdgan.bench import DUAL_SIZES, SECTIONS, BenchOptions, format_table, run_bench, write_json
from dvdgan.commands.common import (
    add_common_arguments,
    add_config_arguments,
    check_device,
    check_output_file,
    output_errors,
)
from dvdgan.errors import DvdganError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--json", metavar="OUT", default=None, help="write the full results as JSON")
    p.add_argument("--only", default=None, metavar="LIST",
                   help=f"comma-separated sections (default: all): {','.join(SECTIONS)}")
    p.add_argument("--skip", default=None, metavar="LIST", help="comma-separated sections to leave out")
    p.add_argument("--repeats", type=int, default=5, metavar="N", help="timed runs per variant (median)")
    p.add_argument("--repeats-large", type=int, default=3, metavar="N",
                   help="timed runs for step64 and the CPU sampling estimate")
    p.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed runs per variant first")
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="per-replica batch of the step (default: the preset's, at most 32 on CPU, 16 on CUDA)")
    p.add_argument("--large-batch", type=int, default=2, metavar="N", help="batch of the step64 section")
    p.add_argument("--matmul-size", type=int, default=2048, metavar="N", help="square fp32 matmul size")
    p.add_argument("--no-baseline", action="store_true",
                   help="leave out the straightforward step at the widths of equal FLOPs (step section)")
    p.add_argument("--sample-frames", type=int, default=None, metavar="T",
                   help="frames to sample for real (default 48 on CUDA; 2 on CPU, scaled to 48 by FLOPs)")
    p.add_argument("--dual-ch", type=int, default=None, metavar="CH",
                   help="D width for the dual-vs-full timing (default: paper widths on CUDA, 16 on CPU)")
    p.add_argument("--dual-sizes", default=",".join(DUAL_SIZES), metavar="LIST", help="TxHxW sizes for dual")
    p.add_argument("--data-seconds", type=float, default=5.0, metavar="S", help="timed seconds per loader")
    add_common_arguments(p, workers=True, workers_default=2)
    p.add_argument("--data-workers", type=int, dest="num_workers", help=argparse.SUPPRESS)  # old spelling
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.add_argument("--data-batch", type=int, default=4, metavar="N", help="DataLoader batch size")


def _list(s: str | None) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()] if s else []


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    sections = _list(args.only) or list(SECTIONS)
    skip = set(_list(args.skip))
    return BenchOptions(
        preset=args.preset, config_path=args.config, overrides=tuple(args.overrides),
        sections=tuple(s for s in sections if s not in skip), device=args.device, threads=args.threads,
        repeats=args.repeats, repeats_large=args.repeats_large, warmup=args.warmup, batch=args.batch,
        large_batch=args.large_batch, matmul_size=args.matmul_size, baseline=not args.no_baseline,
        sample_frames=args.sample_frames,
        dual_ch=args.dual_ch, dual_sizes=tuple(_list(args.dual_sizes)), data_seconds=args.data_seconds,
        data_workers=args.num_workers, data_batch=args.data_batch, progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    check_device(args.device)
    if args.json:
        check_output_file(args.json, "--json file")
        if os.path.exists(args.json) and not args.force:
            raise DvdganError(f"--json {args.json} exists (e.g. committed results): pass --force to overwrite it, "
                              "or name another file")
    result = run_bench(opts)
    print(format_table(result))
    if args.json:
        with output_errors(args.json):
            write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0
