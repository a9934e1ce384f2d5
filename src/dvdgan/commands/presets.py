"""``dvdgan presets``: list the presets (or print one as JSON)."""

from __future__ import annotations

import argparse

from dvdgan.config import PRESETS, get_preset


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="print this preset's full config as JSON")


def run(args: argparse.Namespace) -> int:
    if args.name:
        print(get_preset(args.name).to_json())
        return 0
    for name in PRESETS:
        m = get_preset(name).model
        ctx = f"{m.context_frames}->" if m.context_frames else ""
        print(f"{name:22s} {ctx}{m.frames} frames {m.resolution}x{m.resolution}  ch={m.g_ch}  classes={m.num_classes}")
    return 0
