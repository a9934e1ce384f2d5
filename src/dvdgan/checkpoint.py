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
import pickle
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
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


def _tensors_of(obj, path: str = ""):
    """(name, tensor) for every tensor nested in dicts / lists / tuples of ``obj``."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors_of(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors_of(v, f"{path}.{i}" if path else str(i))


def nonfinite_tensors(modules: dict[str, torch.nn.Module] | None = None, *states: dict) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity: module weights and
    buffers (``{prefix: module}``) and any tensor nested in ``states`` (e.g. optimiser state
    dicts, as ``{"opt_g": opt_g.state_dict()}``)."""
    named = [(f"{prefix}.{k}", v) for prefix, m in (modules or {}).items() for k, v in m.state_dict().items()]
    for st in states:
        named += list(_tensors_of(st))
    return [name for name, v in named if v.is_floating_point() and not bool(torch.isfinite(v).all())]


class NonFiniteCheckpoint(CheckpointError):
    """The weights (or optimiser state) to be saved hold a NaN or an infinity: nothing was written."""


def assert_finite(modules: dict[str, torch.nn.Module] | None = None, *states: dict, what: str = "checkpoint") -> None:
    """CheckpointError naming the first non-finite tensor (and how many there are)."""
    bad = nonfinite_tensors(modules, *states)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise NonFiniteCheckpoint(f"refusing to write {what}: non-finite values in {bad[0]}{more}")


def _short(e: BaseException) -> str:
    """An exception as one short line (I/O errors: their strerror)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]


def save_checkpoint(ckpt_root: str | Path, step: int, modules: dict[str, torch.nn.Module], train_state: dict,
                    config: dict, keep: int = 3, require_finite: bool = True) -> Path:
    """Write ``RUN_DIR/checkpoints/step_<step>``; returns its path. ``require_finite``: refuse
    (CheckpointError, nothing written) when a weight, buffer or optimiser tensor is not finite.
    Any I/O failure (disk full, ...) removes the temporary directory and raises one CheckpointError
    line naming the checkpoint."""
    root = Path(ckpt_root)
    final = root / f"step_{step:08d}"
    if require_finite:
        assert_finite(modules, train_state, what=f"checkpoint {final}")
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
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
        # safetensors creates its file 0600; give it the mode of every other file (0644 under umask 022)
        os.chmod(tmp / "model.safetensors", (tmp / "meta.json").stat().st_mode & 0o777)
        for f in tmp.iterdir():
            _fsync_file(f)
        _fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. exit right after a periodic save)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except (OSError, SafetensorError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot write checkpoint {final}: {_short(e)}") from None
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


CHECKPOINT_FILES = ("model.safetensors", "meta.json", "train_state.pt")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, one of its three files, a run directory (-> newest checkpoint), or
    ``pretrained:NAME`` (a generator shipped with the package, :mod:`dvdgan.pretrained`)."""
    from dvdgan import pretrained

    if pretrained.is_pretrained(path):
        return pretrained.pretrained_path(str(path))
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if p.is_file():
        if p.name not in CHECKPOINT_FILES or not (p.parent / "meta.json").is_file():
            raise CheckpointError(f"{path} is not a checkpoint: pass a checkpoint directory, its "
                                  "model.safetensors, or a run directory")
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
        meta = json.loads((ckpt / "meta.json").read_bytes().decode("utf-8"))
    except OSError as e:
        raise CheckpointError(f"checkpoint {ckpt} has an unreadable meta.json: {_short(e)}") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"checkpoint {ckpt} has a corrupt meta.json (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {ckpt} has a corrupt meta.json (not JSON: {e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {ckpt} has a corrupt meta.json (a {type(meta).__name__}, not an object)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {ckpt} has format {meta.get('format')!r}, expected {FORMAT}")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"checkpoint {ckpt} has a meta.json without a config")
    return meta


def tensor_shapes(ckpt: Path) -> dict[str, tuple[int, ...]]:
    """{name: shape} of ``model.safetensors`` from its header alone (no tensor is read)."""
    try:
        with safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (OSError, SafetensorError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {ckpt} has a corrupt or unreadable model.safetensors: {_short(e)}") from None


def expected_shapes(cfg, prefixes: tuple[str, ...] = ("generator_ema",)) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the tensors a checkpoint of ``cfg`` holds under ``prefixes``, computed by
    building the networks on the meta device (no memory, no initialisation)."""
    from dvdgan.models import DualDiscriminator
    from dvdgan.models.prediction import build_generator

    out = {}
    built: dict[str, torch.nn.Module] = {}
    with torch.device("meta"):
        for prefix in prefixes:
            kind = "discriminator" if prefix == "discriminator" else "generator"  # generator_ema: as G
            if kind not in built:
                built[kind] = DualDiscriminator(cfg.model) if kind == "discriminator" else build_generator(cfg.model)
            out.update({f"{prefix}.{k}": tuple(v.shape) for k, v in built[kind].state_dict().items()})
    return out


def check_config_matches(ckpt: Path, cfg, prefixes: tuple[str, ...] = ("generator_ema",)) -> None:
    """Before building a model from a checkpoint's config: the tensors that config implies under
    ``prefixes`` must be exactly those in the checkpoint's model.safetensors header, so a
    meta.json claiming another width fails at once instead of after building (and allocating)
    the model."""
    have = tensor_shapes(ckpt)
    want = expected_shapes(cfg, prefixes)
    have = {k: v for k, v in have.items() if k.split(".", 1)[0] in prefixes}
    for k, shape in want.items():
        if k not in have:
            raise CheckpointError(f"checkpoint {ckpt}: its meta.json config does not match its weights "
                                  f"({k} is missing from model.safetensors)")
        if have[k] != shape:
            raise CheckpointError(f"checkpoint {ckpt}: its meta.json config does not match its weights "
                                  f"({k} is {list(have[k])} in model.safetensors, the config implies {list(shape)})")
    extra = sorted(set(have) - set(want))
    if extra:
        raise CheckpointError(f"checkpoint {ckpt}: its meta.json config does not match its weights "
                              f"(model.safetensors has {extra[0]}, which the config does not build)")


def load_checkpoint_config(ckpt: Path, prefixes: tuple[str, ...] = ("generator_ema",)):
    """The validated Config of a checkpoint, checked against its weights' shapes
    (:func:`check_config_matches`) before anything is built."""
    from dvdgan.config import Config
    from dvdgan.errors import DvdganError

    meta = load_meta(ckpt)
    try:
        cfg = Config.from_dict(meta["config"]).validate()
    except (KeyError, TypeError, AttributeError, DvdganError) as e:
        raise CheckpointError(f"checkpoint {ckpt} has an invalid config: {e}") from None
    check_config_matches(ckpt, cfg, prefixes)
    return cfg


def newest_finite_checkpoint(ckpt_root: str | Path) -> Path | None:
    """The newest complete checkpoint whose weights are all finite (None if there is none);
    for the "last good checkpoint" of a diverged run."""
    for ck in reversed(list_checkpoints(ckpt_root)):
        try:
            tensors = load_file(str(ck / "model.safetensors"))
        except (OSError, SafetensorError, RuntimeError):
            continue
        if all(bool(torch.isfinite(v).all()) for v in tensors.values() if v.is_floating_point()):
            return ck
    return None


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


_TORCH_BOILERPLATE = ("Weights only load failed", "Check the documentation", "In PyTorch 2.6",
                      "Re-running `torch.load`")


def _condense_torch_error(e: BaseException) -> str:
    """torch.load's multi-paragraph refusal as its one informative sentence."""
    lines = []
    for ln in str(e).splitlines():
        ln = ln.strip()
        if "WeightsUnpickler error:" in ln:
            ln = ln.split("WeightsUnpickler error:", 1)[1].strip()
        if ln and not any(b in ln for b in _TORCH_BOILERPLATE):
            lines.append(ln)
    return (" ".join(lines) or type(e).__name__)[:200]


def load_train_state(ckpt: Path) -> dict:
    """Optimiser states, RNG states and counters; refuses anything but tensors and plain values
    (``weights_only``: no code runs), as one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(ckpt / "train_state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file is unusable
        why = ("refused: it holds more than tensors and plain values (nothing in it was run)"
               if isinstance(e, pickle.UnpicklingError) else "unreadable")
        raise CheckpointError(f"checkpoint {ckpt}: train_state.pt {why}: {_condense_torch_error(e)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {ckpt} has a corrupt train_state.pt (not a dict)")
    return state
