"""A run directory owned by one process, and the checks made before a run starts writing to it.

    with RunDirLock(out):                                     # RUN_DIR/.lock, fcntl.flock
        resume_from = prepare_run_dir(out, resume=..., overwrite=...)
        train(...)

The lock is an advisory ``flock`` on ``RUN_DIR/.lock``: the kernel drops it when the holder's
last file descriptor closes, so a process killed by SIGKILL never leaves a stale lock. The file
holds ``pid host`` of the holder, for the error another process gets.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from dvdgan.errors import DvdganError

LOCK_NAME = ".lock"
# Everything a run writes into its directory; --overwrite removes these and nothing else.
RUN_FILES = ("checkpoints", "config.json", "run_info.json", "tensorboard", "samples", "metrics.jsonl",
             "best.json", "bad_videos.log", "eval")


def check_writable(path: str | Path, what: str = "run directory") -> None:
    """Fail (one line) before anything is created if ``path`` (a folder, existing or not) cannot
    be created and written: its nearest existing ancestor must be a writable folder. The check
    creates and removes one temporary file there (``os.access`` says yes to root everywhere)."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise DvdganError(f"cannot use {what} {target}: it is a file, not a folder")
    p = target
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir():
        raise DvdganError(f"cannot create {what} {target}: {p} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".dvdgan-write-check-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DvdganError(f"cannot write {what} {target}: {e.strerror or e} in {p}") from None


def holds_run(out_dir: str | Path) -> bool:
    """True when ``out_dir`` holds (part of) a training run: a config.json or a checkpoints folder."""
    out = Path(out_dir)
    return (out / "config.json").exists() or (out / "checkpoints").is_dir()


def clear_run(out_dir: str | Path) -> list[Path]:
    """Remove the files a run writes (:data:`RUN_FILES`), never anything else; returns them."""
    out = Path(out_dir)
    removed = []
    for name in RUN_FILES:
        p = out / name
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
            else:
                continue
        except OSError as e:
            raise DvdganError(f"--overwrite: cannot remove {p}: {e.strerror or e}") from None
        removed.append(p)
    return removed


def prepare_run_dir(out_dir: str | Path, *, resume: bool, overwrite: bool, dry_run: bool = False) -> Path | None:
    """Check (and with ``overwrite`` clear) RUN_DIR before training writes to it; call it holding
    the :class:`RunDirLock`. Returns the checkpoint a ``resume`` continues from, else None.

    - ``resume``: the newest complete checkpoint must exist;
    - a new run (no ``resume``) into a directory that holds a run refuses unless ``overwrite``,
      which removes the old run's files first (:func:`clear_run`);
    - ``dry_run``: every check, nothing removed (to fail early, before the lock is taken).
    """
    from dvdgan.checkpoint import list_checkpoints

    out = Path(out_dir).expanduser()
    if resume and overwrite:
        raise DvdganError("--resume continues the run in --out and --overwrite deletes it: pass one of them")
    check_writable(out)
    if resume:
        ckpts = list_checkpoints(out / "checkpoints")
        if not ckpts:
            raise DvdganError(f"nothing to resume in {out} (no checkpoint); drop --resume to start a new run")
        return ckpts[-1]
    if holds_run(out):
        if not overwrite:
            raise DvdganError(f"{out} already holds a run: pass --resume to continue it, or --overwrite to "
                              "delete it and start a new one")
        if not dry_run:
            clear_run(out)
    return None


def _holder(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").split()
    except OSError:
        text = []
    return f"pid {text[0]} on {text[1]}" if len(text) >= 2 else "another process"


class RunDirLock:
    """Exclusive ownership of a run directory for the life of the ``with`` block.

    Creates the directory if needed. On exit the lock is released; a directory this lock created
    and that holds nothing else (a start that failed before writing) is removed again."""

    def __init__(self, path: str | Path):
        self.dir = Path(path).expanduser()
        self.path = self.dir / LOCK_NAME
        self._fd: int | None = None
        self._created: Path | None = None  # the topmost folder this lock created

    def acquire(self) -> RunDirLock:
        check_writable(self.dir)
        missing = [p for p in (self.dir, *self.dir.parents) if not p.exists()]
        self._created = missing[-1] if missing else None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DvdganError(f"cannot create run directory {self.dir}: {e.strerror or e}") from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                self._remove_if_empty()
                raise DvdganError(f"cannot create the lock file {self.path}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                    raise DvdganError(f"cannot lock {self.path}: {e.strerror or e}") from None
                raise DvdganError(f"run directory {self.dir} is in use by {_holder(self.path)} (lock "
                                  f"{self.path}); wait for it to finish or use another --out") from None
            try:  # the file we locked may have been unlinked by its previous holder meanwhile
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if self._created is not None and self._only_lock_left():
                self.path.unlink(missing_ok=True)  # still holding the lock: no one else can own it
                self._remove_if_empty()
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def _only_lock_left(self) -> bool:
        return [p.name for p in self.dir.iterdir()] == [LOCK_NAME]

    def _remove_if_empty(self) -> None:
        """Remove the empty folders this lock created, innermost first."""
        if self._created is None:
            return
        p = self.dir
        try:
            while True:
                p.rmdir()
                if p == self._created:
                    break
                p = p.parent
        except OSError:
            pass

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def discard_failed_start(out_dir: str | Path) -> bool:
    """After a new run failed before writing any checkpoint: remove what it wrote (config.json,
    run_info.json, tensorboard/, ...), so a failed start leaves nothing behind. A directory with
    a checkpoint is left alone. Returns whether anything was removed."""
    out = Path(out_dir)
    if (out / "checkpoints").exists():
        return False
    try:
        return bool(clear_run(out))
    except DvdganError:
        return False


def write_run_info(out_dir: str | Path, info: dict) -> None:
    """RUN_DIR/run_info.json: how this launch resolved the batch; earlier launches under "history"."""
    path = Path(out_dir) / "run_info.json"
    history = []
    if path.exists():
        try:
            prev = json.loads(path.read_text())
            history = prev.pop("history", []) + [prev]
        except (OSError, json.JSONDecodeError, AttributeError):
            history = []
    path.write_text(json.dumps({**info, "history": history}, indent=2))


def record_best(out_dir: str | Path, step: int, metrics: dict[str, float]) -> dict:
    """RUN_DIR/best.json: the evaluated step with the highest class accuracy (else the lowest
    reference Frechet distance); kept across resumes. Returns the best so far."""
    path = Path(out_dir) / "best.json"
    key, sign = ("accuracy", 1.0) if "accuracy" in metrics else ("ref_fd", -1.0)
    try:
        best = json.loads(path.read_text())
    except (OSError, ValueError):
        best = None
    if key not in metrics:
        return best if isinstance(best, dict) else {"step": step}
    if (not isinstance(best, dict) or best.get("key") != key or not isinstance(best.get("value"), (int, float))
            or sign * metrics[key] > sign * best["value"]):
        best = {"step": step, "key": key, "value": metrics[key], "metrics": metrics}
        path.write_text(json.dumps(best, indent=2))
    return best
