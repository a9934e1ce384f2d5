"""``dvdgan info``: parameter counts, pixel budget of the dual discriminator, FLOPs."""

from __future__ import annotations

import argparse
import json

from dvdgan.commands.common import add_config_arguments, config_from_args
from dvdgan.info import model_info


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    info = model_info(config_from_args(args))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    v, prm, px, fl = info["video"], info["parameters"], info["pixels_per_video"], info["forward_flops_per_video"]
    print(f"preset {info['preset']}: {v['context_frames']}+{v['frames']} frames at {v['resolution']}x{v['resolution']}")
    print(f"  parameters   G {prm['generator']:,}   D_S {prm['spatial_discriminator']:,}   "
          f"D_T {prm['temporal_discriminator']:,}")
    print(f"  pixels/video D_S {px['spatial_discriminator']:,} + D_T {px['temporal_discriminator']:,} = "
          f"{px['dual_total']:,} of {px['full_video']:,} ({100 * px['reduction']:.0f} % fewer)")
    print(f"  fwd FLOPs    G {fl['generator'] / 1e9:.2f} G   D_S {fl['spatial_discriminator'] / 1e9:.2f} G   "
          f"D_T {fl['temporal_discriminator'] / 1e9:.2f} G   (per video)")
    return 0
