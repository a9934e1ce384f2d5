"""Checkpoints: one directory per step, written atomically, loaded without unpickling code.

    RUN_DIR/checkpoints/step_00001000/
        model.safetensors    generator.*, generator_ema.*, discriminator.* tensors
        train_state.pt       optimiser states, RNG states, counters (torch.load weights_only=True)
        meta.json            step, config, format version

The directory is assembled under a temporary name, every file fsync'ed, then renamed into place:
a crash (even SIGKILL) leaves either the complete checkpoint or none.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dvdgan.errors import CheckpointError

FORMAT = 1
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def save_checkpoint(ckpt_root: str | Path, step: int, modules: dict[str, torch.nn.Module], train_state: dict,
                    config: dict, keep: int = 3) -> Path:
    root = Path(ckpt_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors = {}
    for prefix, module in modules.items():
        for k, v in module.state_dict().items():
            tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous().clone()
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": str(FORMAT), "step": str(step)})
    torch.save(train_state, tmp / "train_state.pt")
    (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, "step": step, "config": config}, indent=2))
    for f in tmp.iterdir():
        _fsync_file(f)
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. exit right after a periodic save)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    prune(root, keep)
    return final


def list_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / "meta.json").exists()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def prune(root: Path, keep: int) -> None:
    for p in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.iterdir():  # leftovers of processes killed mid-write
        if p.name.startswith(".tmp-step_") and not p.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(p, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, its model.safetensors, or a run directory (-> newest checkpoint)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if p.is_file():
        p = p.parent
    if (p / "meta.json").exists():
        return p
    for root in (p / "checkpoints", p):
        ckpts = list_checkpoints(root)
        if ckpts:
            return ckpts[-1]
    raise CheckpointError(f"no checkpoint found in {path}")


def load_meta(ckpt: Path) -> dict[str, Any]:
    try:
        meta = json.loads((ckpt / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {ckpt} has an unreadable meta.json: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {ckpt} has format {meta.get('format')}, expected {FORMAT}")
    return meta


def load_tensors(ckpt: Path, prefix: str | None = None) -> dict[str, torch.Tensor]:
    try:
        tensors = load_file(str(ckpt / "model.safetensors"))
    except (OSError, SafetensorError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {ckpt} is corrupt or unreadable: {e}") from None
    if prefix is None:
        return tensors
    cut = len(prefix) + 1
    out = {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    if not out:
        raise CheckpointError(f"checkpoint {ckpt} holds no '{prefix}' weights")
    return out


def load_module(module: torch.nn.Module, ckpt: Path, prefix: str) -> None:
    state = load_tensors(ckpt, prefix)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:2]
        raise CheckpointError(f"checkpoint {ckpt} does not match the model ({' '.join(first)})") from None


def load_train_state(ckpt: Path) -> dict:
    try:
        return torch.load(ckpt / "train_state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file is unusable
        raise CheckpointError(f"checkpoint {ckpt} has an unreadable train_state.pt: {e}") from None
