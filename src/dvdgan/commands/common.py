"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse

from dvdgan.config import PRESETS, Config, load_config


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESETS)} (default: shapes)")
    p.add_argument("--config", default=None, help="a saved config.json instead of a preset")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides with dotted keys, e.g. model.g_ch=32 train.lr_d=2e-4")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.preset, args.overrides, args.config)


def data_overrides(cfg: Config, data: str | None, dataset: str | None) -> list[str]:
    """Overrides for ``--data PATH`` / ``--dataset NAME``: a path given to the built-in preset
    without a dataset kind means a folder of class sub-folders."""
    out = []
    if data is not None:
        out.append(f"data.path={data}")
        if dataset is None and cfg.data.dataset == "shapes":
            out.append("data.dataset=folder")
    if dataset is not None:
        out.append(f"data.dataset={dataset}")
    return out
