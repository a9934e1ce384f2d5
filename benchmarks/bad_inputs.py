"""Feed bad inputs to the ``dvdgan`` command line and count what goes wrong (issue 20).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bad_inputs.py [--jobs 2] [--keep DIR] [-k NAME]

Every case runs ``python -m dvdgan ...`` in a subprocess (tiny configs, evaluation and sampling
off, each bounded by a timeout) and is scored on four counts:

- traceback: stderr contains "Traceback";
- exit: the exit code is not 2 (the CLI's "bad input" code);
- lines: the error is more than one line (informational "training ..."/"warning:" lines aside);
- leftover: a path the case must not create exists afterwards, a run directory it must not
  touch changed, or a temporary file / directory was left behind.

Disk-full cases mount a small tmpfs (needs root); where mounting fails they are skipped and
listed as such. Prints one table row per case and the totals; exits 1 if any count is not 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.resolution=16", "model.frames=4", "model.g_ch=4", "model.g_multipliers=4,4,2", "model.d_ch=4",
    "model.d_multipliers=2,4,4", "model.frames_per_spatial_d=2", "model.z_dim=8", "model.embed_dim=8",
    "train.batch_size=4", "data.shapes_train_size=64", "data.shapes_test_size=32",
    "train.eval_every=0", "train.sample_every=0",
]
INFO_PREFIXES = ("training ", "warning:", "notice:", "resuming from ")


@dataclass
class Case:
    name: str
    argv: list[str]
    absent: list[Path] = field(default_factory=list)  # must not exist afterwards
    unchanged: list[Path] = field(default_factory=list)  # directories whose files must not change
    no_tmp: list[Path] = field(default_factory=list)  # directories that must hold no temporary leftovers
    needs: str | None = None  # "tmpfs": skipped where a tmpfs cannot be mounted


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    return env


def dvdgan(*argv, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvdgan", *map(str, argv)], env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def snapshot(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


def temporaries(d: Path) -> list[str]:
    if not d.exists():
        return []
    return [str(p) for p in d.rglob("*") if p.name.startswith((".tmp-step_", ".dvdgan-write-check-"))
            or ".tmp" in p.name and p.name.startswith(".")]


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


# ------------------------------------------------------------------------------------------------
# fixtures: a tiny run, broken copies of it, bad data, odd files
# ------------------------------------------------------------------------------------------------


def build_fixtures(w: Path) -> dict[str, Path]:
    import json

    import numpy as np

    sys.path.insert(0, str(ROOT / "src"))
    from dvdgan.data.video import encode_video

    f: dict[str, Path] = {}
    run = w / "run"
    r = dvdgan("train", "--preset", "shapes", *TINY, "train.checkpoint_every=3", "--out", run, "--max-steps", 3,
               "--no-progress")
    if r.returncode:
        raise SystemExit(f"could not build the fixture run:\n{r.stderr}")
    f["run"] = run
    f["ckpt"] = sorted((run / "checkpoints").iterdir())[-1]
    (f["ckpt"] / "evil.pt").write_bytes(b"x")

    def broken(name: str, edit) -> Path:
        d = w / name
        shutil.copytree(f["ckpt"], d)
        edit(d)
        return d

    rng = np.random.default_rng(0)
    f["bin_meta"] = broken("bin_meta", lambda d: (d / "meta.json").write_bytes(rng.bytes(300)))
    f["list_meta"] = broken("list_meta", lambda d: (d / "meta.json").write_text("[1, 2]"))

    def huge(d: Path) -> None:
        meta = json.loads((d / "meta.json").read_text())
        meta["config"]["model"]["g_ch"] = 4096
        (d / "meta.json").write_text(json.dumps(meta))

    f["huge_meta"] = broken("huge_meta", huge)
    f["trunc"] = broken("trunc", lambda d: (d / "model.safetensors").write_bytes(
        (d / "model.safetensors").read_bytes()[:1000]))

    def run_copy(name: str, edit) -> Path:
        d = w / name
        shutil.copytree(run, d)
        edit(sorted((d / "checkpoints").iterdir())[-1], d)
        return d

    evil = ("import os, torch\nclass E:\n    def __reduce__(self):\n        return (os.system, ('touch PWNED',))\n"
            "torch.save({'opt_g': E()}, __import__('sys').argv[1])\n")
    f["pickled_run"] = run_copy("pickled_run", lambda ck, d: subprocess.run(
        [sys.executable, "-c", evil, str(ck / "train_state.pt")], env=_env(), check=True, cwd=w))
    f["trunc_run"] = run_copy("trunc_run", lambda ck, d: (ck / "model.safetensors").write_bytes(b"\0" * 64))
    f["bin_config_run"] = run_copy("bin_config_run", lambda ck, d: (d / "config.json").write_bytes(rng.bytes(200)))
    f["empty_state_run"] = run_copy("empty_state_run", lambda ck, d: (ck / "train_state.pt").write_bytes(b""))

    f["afile"] = w / "afile"
    f["afile"].write_text("a file\n")
    f["bin_cfg"] = w / "binary.json"
    f["bin_cfg"].write_bytes(rng.bytes(500))
    f["list_cfg"] = w / "list.json"
    f["list_cfg"].write_text("[1, 2, 3]")
    f["section_cfg"] = w / "section.json"
    f["section_cfg"].write_text('{"model": 5}')
    f["nan_cfg"] = w / "nan.json"
    f["nan_cfg"].write_text('{"train": {"lr_g": NaN}}')
    f["empty_data"] = w / "empty_data"
    (f["empty_data"] / "cls").mkdir(parents=True)
    f["bad_data"] = w / "bad_data"
    for rel in ("a/x.mp4", "a/y.mp4", "b/z.avi"):
        (f["bad_data"] / rel).parent.mkdir(parents=True, exist_ok=True)
        (f["bad_data"] / rel).write_bytes(b"not a video" * 20)
    f["loop_data"] = w / "loop_data"
    for rel in ("a/x.mp4", "b/y.mp4"):
        encode_video(f["loop_data"] / rel, rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8), "h264")
    os.symlink(".", f["loop_data"] / "a" / "loop")
    return f


def cases(w: Path, f: dict[str, Path]) -> list[Case]:
    out: list[Case] = []

    def new(tag: str) -> Path:
        return w / "out" / tag

    def train(name: str, *extra, absent: bool = True, data=None, steps=2, **kw) -> None:
        o = new(name)
        overrides = [e for e in extra if "=" in str(e) and not str(e).startswith("-")]
        options = [e for e in extra if e not in overrides]
        argv = ["train", "--preset", "shapes", *TINY, *overrides, "--out", kw.pop("out", o), "--no-progress",
                *options]
        if steps is not None:
            argv += ["--max-steps", steps]
        if data is not None:
            argv += ["--data", data]
        out.append(Case(f"train {name}", argv, absent=[o] if absent else [], **kw))

    # rows 8 / 9: config values
    for ov in ("train.lr_d=-1", "train.lr_g=nan", "train.log_every=0", "model.num_classes=0", "model.g_ch=0",
               "train.adam_betas=0.1,0.2,0.3", "train.adam_betas=1,0.5", "model.context_frames=-1",
               "train.device=tpu", "train.device=gpu", "train.device=cuda", "train.ema_decay=2",
               "train.checkpoint_every=-5", "train.keep_checkpoints=-1", "model.z_dim=0", "data.frame_stride=0",
               "model.frames=0", "train.seed=-1", "model.g_ch=abc", "model.nonsense=1", "model.gru_kernel=2",
               "train.num_sample_videos=0", "train.lr_g=1e30", "data.dataset=imagenet"):
        if ov == "train.lr_g=1e30":  # diverges: must stop with one line and write no bad checkpoint
            train(ov, ov, "train.checkpoint_every=1", absent=False, steps=4)
            continue
        train(ov, ov)
    train("--max-steps -1", steps=-1)
    train("--max-steps 0", steps=0)
    train("--preset nope", "--preset", "nope")
    for key in ("bin_cfg", "list_cfg", "section_cfg", "nan_cfg"):
        train(f"--config {f[key].name}", "--config", f[key])
    # output locations
    train("--out /proc/x", out="/proc/dvdgan-x", absent=False)
    train("--out a file", out=f["afile"], absent=False)
    train("--out below a file", out=f["afile"] / "run", absent=False)
    # row 10: data
    train("--data missing", "data.dataset=folder", data=w / "nonexistent")
    train("--data empty folder", data=f["empty_data"])
    train("--data all bad videos", data=f["bad_data"])
    o = new("k600")
    out.append(Case("train big preset --data missing", ["train", "--preset", "kinetics600-12x64", "--data",
                                                          w / "nonexistent", "--out", o], absent=[o]))
    # rows 1, 2, 5, 12: run directories
    train("--resume nothing (typo)", "--resume")
    train("into a run without --resume", out=f["run"], absent=False, unchanged=[f["run"]])
    train("--resume --overwrite", "--resume", "--overwrite", out=f["run"], absent=False, unchanged=[f["run"]])
    train("--resume pickled train_state", "--resume", out=f["pickled_run"], absent=False, steps=5,
          unchanged=[f["pickled_run"]])
    train("--resume zeroed safetensors", "--resume", out=f["trunc_run"], absent=False, steps=5,
          unchanged=[f["trunc_run"]])
    out.append(Case("train --resume binary config.json", ["train", "--out", f["bin_config_run"], "--resume",
                                                            "--max-steps", 5, "--no-progress"],
                    unchanged=[f["bin_config_run"]]))  # no --preset: the run's own config.json is read
    train("--resume empty train_state", "--resume", out=f["empty_state_run"], absent=False, steps=5,
          unchanged=[f["empty_state_run"]])
    train("into a locked run dir", out=w / "locked", absent=False)  # see run(): a process holds the lock
    # row 6: disk full (tmpfs)
    train("disk full (safetensors)", out=w / "full400k" / "r", absent=False, steps=3, needs="tmpfs",
          no_tmp=[w / "full400k"])
    train("disk full (torch.save)", out=w / "full900k" / "r", absent=False, steps=3, needs="tmpfs",
          no_tmp=[w / "full900k"])

    # sample / eval / predict: checkpoints and outputs
    def cmd(name: str, *argv, absent=None, **kw) -> None:
        progress = [] if argv[0] == "prepare" else ["--no-progress"]  # prepare has --quiet
        out.append(Case(name, [*argv, *progress], absent=absent or [], **kw))

    so = new("s")
    for key in ("bin_meta", "list_meta", "huge_meta", "trunc"):
        cmd(f"sample {key}", "sample", "--checkpoint", f[key], "--out", so, absent=[so])
    cmd("sample missing checkpoint", "sample", "--checkpoint", w / "nope", "--out", so, absent=[so])
    cmd("sample DIR/evil.pt", "sample", "--checkpoint", f["ckpt"] / "evil.pt", "--out", so, absent=[so])
    cmd("sample --out a file", "sample", "--checkpoint", f["run"], "--out", f["afile"])
    cmd("sample --out /proc/x", "sample", "--checkpoint", f["run"], "--out", "/proc/dvdgan-x")
    cmd("sample --device cuda", "sample", "--checkpoint", f["run"], "--out", so, "--device", "cuda", absent=[so])
    cmd("sample --n 0", "sample", "--checkpoint", f["run"], "--out", so, "--n", "0", absent=[so])
    cmd("sample --truncation 2", "sample", "--checkpoint", f["run"], "--out", so, "--truncation", "2", absent=[so])
    cmd("sample --classes 99", "sample", "--checkpoint", f["run"], "--out", so, "--classes", "99", absent=[so])
    cmd("sample to a full disk", "sample", "--checkpoint", f["run"], "--out", w / "full4k" / "s", "--n", "4",
        needs="tmpfs", no_tmp=[w / "full4k"])
    eo = new("e")
    for key in ("bin_meta", "huge_meta"):
        cmd(f"eval {key}", "eval", "--checkpoint", f[key], "--detector", "reference", "--out", eo, absent=[eo])
    cmd("eval --out a file", "eval", "--checkpoint", f["run"], "--detector", "reference", "--out", f["afile"])
    cmd("eval DIR/evil.pt", "eval", "--checkpoint", f["ckpt"] / "evil.pt", "--detector", "reference", "--out", eo,
        absent=[eo])
    po = new("p")
    cmd("predict bin_meta", "predict", "--checkpoint", f["bin_meta"], "--evaluate", "--out", po, absent=[po])
    cmd("predict --out a file", "predict", "--checkpoint", f["run"], "--evaluate", "--out", f["afile"])
    cmd("predict --input missing", "predict", "--checkpoint", f["run"], "--input", w / "nope.mp4", "--out", po,
        absent=[po])
    cmd("predict synthesis checkpoint", "predict", "--checkpoint", f["run"], "--evaluate", "--out", po,
        absent=[po])
    # prepare / stats / bench
    pr = new("prep")
    cmd("prepare all bad videos", "prepare", "--dataset", "folder", "--src", f["bad_data"], "--out", pr / "bad",
        "--resolution", "16", "--quiet")
    cmd("prepare --src missing", "prepare", "--dataset", "folder", "--src", w / "nope", "--out", pr / "src",
        "--resolution", "16", "--quiet", absent=[pr / "src"])
    cmd("prepare --out a file", "prepare", "--dataset", "folder", "--src", f["loop_data"], "--out", f["afile"],
        "--resolution", "16", "--quiet")
    cmd("prepare --resolution 0", "prepare", "--dataset", "folder", "--src", f["loop_data"], "--out", pr / "res",
        "--resolution", "0", "--quiet", absent=[pr / "res"])
    cmd("stats --out /proc/x", "stats", "--detector", "reference", "--out", "/proc/dvdgan-x/s.npz")
    cmd("bench --json /proc/x", "bench", "--json", "/proc/dvdgan-x/b.json", "--only", "step")
    return out


# ------------------------------------------------------------------------------------------------


@dataclass
class Result:
    case: Case
    rc: int | None
    seconds: float
    traceback: bool
    lines: int
    leftovers: list[str]
    first: str
    skipped: str = ""


def run_case(c: Case, timeout: float) -> Result:
    before = {d: snapshot(d) for d in c.unchanged}
    t0 = time.perf_counter()
    try:
        r = dvdgan(*c.argv, timeout=timeout)
        rc, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = None, (e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr or "") + "\n(timed out)"
    dt = time.perf_counter() - t0
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(INFO_PREFIXES)
             and "it/s]" not in ln and "s/it]" not in ln]
    left = [f"{p} exists" for p in c.absent if os.path.lexists(p)]
    left += [f"{d} changed" for d in c.unchanged if snapshot(d) != before[d]]
    for d in c.no_tmp:
        left += temporaries(d)
    return Result(c, rc, dt, "Traceback" in err, len(lines), left, lines[-1][:150] if lines else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    ap.add_argument("--timeout", type=float, default=180, help="seconds per case (default 180)")
    ap.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temp folder)")
    ap.add_argument("-k", default=None, help="only cases whose name contains this")
    args = ap.parse_args()
    w = Path(args.keep or tempfile.mkdtemp(prefix="dvdgan-bad-inputs-")).resolve()
    w.mkdir(parents=True, exist_ok=True)
    mounts = []
    holder = None
    try:
        t0 = time.perf_counter()
        f = build_fixtures(w)
        print(f"fixtures in {time.perf_counter() - t0:.1f} s ({w})", file=sys.stderr)
        tmpfs_ok = True
        for name, size in (("full400k", "400k"), ("full900k", "900k"), ("full4k", "4k")):
            if mount_tmpfs(w / name, size):
                mounts.append(w / name)
            else:
                tmpfs_ok = False
        hold = ("import sys, time\nfrom dvdgan.rundir import RunDirLock\nwith RunDirLock(sys.argv[1]):\n"
                "    print('locked', flush=True)\n    time.sleep(3600)\n")
        holder = subprocess.Popen([sys.executable, "-c", hold, str(w / "locked")], env=_env(), stdout=subprocess.PIPE,
                                  text=True)
        holder.stdout.readline()
        todo = [c for c in cases(w, f) if args.k is None or args.k in c.name]

        def one(c: Case) -> Result:
            if c.needs == "tmpfs" and not tmpfs_ok:
                return Result(c, None, 0.0, False, 0, [], "", skipped="no tmpfs (needs root)")
            return run_case(c, args.timeout)

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(pool.map(one, todo))
    finally:
        if holder is not None:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        for m in mounts:
            subprocess.run(["umount", str(m)], capture_output=True)
        if not args.keep:
            shutil.rmtree(w, ignore_errors=True)

    ran = [r for r in results if not r.skipped]
    tb = [r for r in ran if r.traceback]
    bad_rc = [r for r in ran if r.rc != 2]
    multi = [r for r in ran if r.lines > 1]
    left = [r for r in ran if r.leftovers]
    print("| # | case | exit | s | traceback | lines | leftovers | message |")
    print("|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(results, 1):
        if r.skipped:
            print(f"| {i} | {r.case.name} | skipped | | | | | {r.skipped} |")
            continue
        msg = r.first.replace("|", "/")
        print(f"| {i} | {r.case.name} | {r.rc} | {r.seconds:.1f} | {'YES' if r.traceback else ''} | {r.lines} | "
              f"{'; '.join(r.leftovers)} | {msg} |")
    print(f"\n{len(ran)} bad inputs run ({len(results) - len(ran)} skipped): tracebacks {len(tb)}, exit codes != 2 "
          f"{len(bad_rc)}, errors over one line {len(multi)}, leftovers {len(left)}; "
          f"total {sum(r.seconds for r in ran):.0f} s")
    return 1 if (tb or bad_rc or multi or left) else 0


if __name__ == "__main__":
    sys.exit(main())
