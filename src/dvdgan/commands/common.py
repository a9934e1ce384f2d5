"""Arguments and checks shared by several subcommands."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from dvdgan.config import PRESETS, Config, load_config
from dvdgan.errors import DataError, DvdganError


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESETS)} (default: shapes)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a JSON config (e.g. a run's config.json) layered on the preset: preset first, then "
                        "this file (a partial file changes only the keys it holds), then KEY=VALUE overrides")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides with dotted keys, e.g. model.g_ch=32 train.lr_d=2e-4")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.preset, args.overrides, args.config, notice=print_notice)


def print_notice(text: str) -> None:
    """One ``notice:`` line on stderr (what the command line says about a choice it made)."""
    print(f"notice: {text}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Flags every computing command shares, with the same names and meanings
# --------------------------------------------------------------------------------------------


def add_common_arguments(p: argparse.ArgumentParser, *, device: bool = True, threads: bool = True,
                         progress: bool = True, workers: bool = False, device_default: str | None = "auto",
                         workers_default: int | None = None) -> None:
    """``--device`` (auto: cuda when available, else cpu), ``--threads N``, ``--no-progress`` and
    ``--num-workers N``: one spelling and one meaning on every subcommand (applied by
    :func:`apply_common_arguments`, which dvdgan.cli calls before the command runs)."""
    if device:
        shown = "the config's train.device (default auto)" if device_default is None else device_default
        p.add_argument("--device", default=device_default,
                       help=f"auto (cuda when available, else cpu), cpu, cuda, cuda:N or mps (default: {shown})")
    if threads:
        p.add_argument("--threads", type=int, default=None, metavar="N",
                       help="torch CPU threads (default: torch's choice; 1 is steadier on a shared machine)")
    if progress:
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    if workers:
        shown = "the config's data.num_workers" if workers_default is None else str(workers_default)
        p.add_argument("--num-workers", type=int, default=workers_default, metavar="N",
                       help=f"data loading / decoding processes (default: {shown}; 0 = in this process)")


def resolve_device_name(name: str | None) -> str | None:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else unchanged."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def apply_common_arguments(args: argparse.Namespace) -> None:
    """Check and apply the shared flags (one error line on bad values): threads are set, an
    ``auto`` device becomes the concrete one (bench resolves its own)."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise DvdganError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    workers = getattr(args, "num_workers", None)
    if workers is not None and workers < 0:
        raise DvdganError(f"--num-workers must be >= 0, got {workers}")
    if getattr(args, "device", None) is not None and getattr(args, "command", None) not in ("bench", "train"):
        check_device(args.device)
        args.device = resolve_device_name(args.device)


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


# --------------------------------------------------------------------------------------------
# Checks made before any model is built or any file written (one line, exit 2 on failure)
# --------------------------------------------------------------------------------------------


def check_device(name: str, what: str = "--device") -> None:
    """``name`` names a device this torch can use: cpu, auto, cuda, cuda:N (N < GPUs), mps."""
    import re

    import torch

    m = re.fullmatch(r"(auto|cpu|mps|cuda)(?::(\d+))?", str(name))
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise DvdganError(f"{what} {name!r} is not a device (cpu, cuda, cuda:N, mps or auto)")
    kind = m.group(1)
    if kind == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no GPU visible"
            raise DvdganError(f"{what} {name}: this torch cannot use CUDA ({build}, torch {torch.__version__}); "
                              "use cpu")
        n = torch.cuda.device_count()
        if m.group(2) is not None and int(m.group(2)) >= n:
            raise DvdganError(f"{what} {name}: only {n} GPU{'s' if n != 1 else ''} visible")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DvdganError(f"{what} mps: this torch cannot use Apple MPS; use cpu")


def check_output_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """--out names a folder that exists or can be created, and can be written (nothing is created)."""
    from dvdgan.rundir import check_writable

    check_writable(path, what)
    return Path(path).expanduser()


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """--out names a file (not a folder) whose folder exists or can be created, and can be written."""
    from dvdgan.rundir import check_writable

    p = Path(path).expanduser()
    if p.is_dir():
        raise DvdganError(f"{what} {p} is a folder, not a file")
    check_writable(p.parent if str(p.parent) else Path("."), f"folder of the {what}")
    return p


def checked_checkpoint(path: str | os.PathLike, raw: bool = False) -> tuple[Path, Config]:
    """(checkpoint dir, its validated Config) with the config checked against the weights'
    shapes before any model is built (dvdgan.checkpoint.load_checkpoint_config)."""
    from dvdgan.checkpoint import load_checkpoint_config, resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    return ckpt, load_checkpoint_config(ckpt, ("generator" if raw else "generator_ema",))


@contextlib.contextmanager
def output_errors(out: str | os.PathLike):
    """Turn an I/O failure while writing results (disk full, a folder removed meanwhile; raised by
    PyAV, PIL or Python) into one line naming the path."""
    try:
        yield
    except OSError as e:  # av.error.OSError is an OSError too
        where = e.filename if getattr(e, "filename", None) else out
        text = str(e).strip()
        reason = e.strerror or (text.splitlines()[0] if text else type(e).__name__)
        raise DvdganError(f"cannot write {where}: {reason}") from None


def check_data(cfg: Config, split: str | None = None, classes_from_data: bool = False) -> None:
    """The dataset of ``cfg`` exists and holds at least one usable video, checked cheaply before a
    model is built or anything written: the dataset is listed (build_dataset) and items are
    decoded until one works (at most a few; every failure is reported, nothing is logged).
    ``classes_from_data``: the trainer will take the class count from the data, so a mismatch is fine."""
    from dvdgan.data import build_dataset

    d = cfg.data
    if d.dataset != "shapes" and not d.path:
        raise DvdganError(f"{cfg.name}: dataset {d.dataset} needs a path: pass --data PATH")
    if d.dataset == "shapes":
        return
    ds = build_dataset(d, split=split or d.split, frames=cfg.model.total_frames, resolution=cfg.model.resolution,
                       seed=cfg.train.seed, bad_log=None)
    n = len(ds)
    if n == 0:
        raise DataError(f"dataset {d.path} holds no videos for split {split or d.split}")
    if cfg.model.context_frames == 0 and not classes_from_data and ds.num_classes > cfg.model.num_classes:
        raise DataError(f"the dataset {d.path} has {ds.num_classes} classes but model.num_classes is "
                        f"{cfg.model.num_classes}: set model.num_classes={ds.num_classes}")
    try:
        ds[0]  # decodes item 0, or the next ones until one works (bounded by the dataset)
    except DataError as e:
        raise DataError(f"dataset {d.path}: {e}") from None
