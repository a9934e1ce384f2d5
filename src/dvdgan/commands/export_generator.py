"""``dvdgan export-generator``: the EMA generator of a checkpoint as a small stand-alone checkpoint
(no discriminator, no optimiser state) for sharing, sampling and evaluation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dvdgan import checkpoint as ckpt_io
from dvdgan.errors import DvdganError
from dvdgan.pretrained import export_generator


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a run directory (newest checkpoint) or a checkpoint directory")
    p.add_argument("--out", required=True, help="directory to write model.safetensors and meta.json into")


def _metrics_at(run: Path, step: int) -> dict:
    """The run's metrics.jsonl row for ``step`` (empty if the run evaluated nothing there)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step") == step and len(row) > 2:
            return row
    return {}


def run(args: argparse.Namespace) -> int:
    ckpt = ckpt_io.resolve_checkpoint(args.checkpoint)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise DvdganError(f"--out {out} exists and is not empty")
    step = ckpt_io.load_meta(ckpt)["step"]
    metrics = _metrics_at(ckpt.parent.parent, step)
    export_generator(ckpt, out, info={"source": str(ckpt), **({"metrics": metrics} if metrics else {})})
    size = (out / "model.safetensors").stat().st_size
    print(f"wrote the EMA generator of {ckpt} (step {step}, {size / 1e6:.1f} MB) to {out}")
    print(f"try it: dvdgan sample --checkpoint {out} --out samples")
    return 0
