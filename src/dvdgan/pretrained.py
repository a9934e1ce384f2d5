"""Pretrained generators shipped inside the package, so that sampling, evaluation and the explorer
can be tried before any training: ``--checkpoint pretrained:shapes``.

A pretrained model is an ordinary checkpoint directory (``meta.json`` with the config, step and
the metrics measured at export) whose ``model.safetensors`` holds only the EMA generator
(``generator_ema.*``): no discriminator, no optimiser state, so it samples and evaluates but does
not resume training. :func:`export_generator` writes one from any training checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from dvdgan.errors import CheckpointError

PREFIX = "pretrained:"
WEIGHTS_DIR = Path(__file__).parent / "weights"


def available() -> list[str]:
    """Names of the pretrained models in this installation."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "meta.json").is_file())


def is_pretrained(spec: str | Path) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def pretrained_path(spec: str) -> Path:
    """``pretrained:NAME`` -> the checkpoint directory shipped in the package."""
    name = spec[len(PREFIX):]
    if name not in available():
        raise CheckpointError(f"no pretrained model '{name}'; available: {', '.join(available()) or 'none'}")
    return WEIGHTS_DIR / name


def export_generator(checkpoint: str | Path, out_dir: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write the EMA generator of a training checkpoint (or run directory) as a stand-alone
    checkpoint directory: ``model.safetensors`` with ``generator_ema.*`` only, and ``meta.json``
    with the config, the step and ``info`` (e.g. the metrics measured on it)."""
    from dvdgan import checkpoint as ckpt_io

    ckpt = ckpt_io.resolve_checkpoint(checkpoint)
    meta = ckpt_io.load_meta(ckpt)
    ckpt_io.load_checkpoint_config(ckpt)  # validated, shapes checked
    tensors = {f"generator_ema.{k}": v.contiguous() for k, v in ckpt_io.load_tensors(ckpt, "generator_ema").items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"),
              metadata={"format": str(ckpt_io.FORMAT), "step": str(meta["step"])})
    exported = {"format": ckpt_io.FORMAT, "step": meta["step"], "config": meta["config"],
                "generator_only": True, "info": info or {}}
    (out / "meta.json").write_text(json.dumps(exported, indent=2) + "\n")
    # safetensors creates its file 0600; give it the mode of every other file (as checkpoint.py)
    os.chmod(out / "model.safetensors", (out / "meta.json").stat().st_mode & 0o777)
    return out
