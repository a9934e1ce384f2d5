"""The ``dvdgan`` command: one subcommand per job, each defined in ``dvdgan.commands.<name>``
by ``add_arguments(parser)`` and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import sys

from dvdgan.errors import DvdganError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("dvdgan.commands.train", "train a DVD-GAN (torchrun-ready)"),
    "sample": ("dvdgan.commands.sample", "sample videos, grids and interpolations from a checkpoint"),
    "predict": ("dvdgan.commands.predict", "continue real videos with a DVD-GAN-FP checkpoint"),
    "eval": ("dvdgan.commands.eval", "FVD / reference Frechet distance / FID / IS / accuracy of a checkpoint"),
    "stats": ("dvdgan.commands.stats", "real-data statistics for a detector"),
    "prepare": ("dvdgan.commands.prepare", "decode a video dataset once into fast shards"),
    "export-clips": ("dvdgan.commands.export_clips", "write real clips at a model's size as MP4 (input of predict)"),
    "demo": ("dvdgan.commands.demo", "a local web page to explore a checkpoint: classes, truncation, interpolation"),
    "bench": ("dvdgan.commands.bench", "benchmark training, sampling, discriminators and data loading"),
    "info": ("dvdgan.commands.info", "parameter counts, pixel budget and FLOPs of a preset"),
    "presets": ("dvdgan.commands.presets", "list the presets"),
    "export-generator": ("dvdgan.commands.export_generator", "save a checkpoint's EMA generator on its own"),
}


def build_parser() -> argparse.ArgumentParser:
    from dvdgan import __version__

    parser = argparse.ArgumentParser(prog="dvdgan", description="DVD-GAN video synthesis and prediction.")
    parser.add_argument("--version", action="version", version=f"dvdgan {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue  # subcommand not available in this build
        p = sub.add_parser(name, help=help_, description=help_)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from dvdgan.commands.common import apply_common_arguments

        apply_common_arguments(args)
        return int(args._run(args) or 0)
    except DvdganError as e:
        print(f"dvdgan {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dvdgan {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, like other tools
        sys.stderr.close()
        return 141


if __name__ == "__main__":
    sys.exit(main())
