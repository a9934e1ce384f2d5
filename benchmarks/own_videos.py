"""The default preset on labelled folders of your own videos: train and judge, one table.

    # datasets of our own making (benchmarks/make_datasets.py), then:
    python benchmarks/own_videos.py train --data /work/data/bounce --out runs/bounce [OVERRIDE ...]
    python benchmarks/own_videos.py judge runs/bounce runs/spin ... --json own_videos.json

``train`` is ``dvdgan train --data DIR --out RUN`` with nothing else but the overrides given (the
table's runs pass only ``train.keep_checkpoints=10 train.eval_every=0``: every 250-step checkpoint
kept, evaluation done afterwards so that it does not count against the training time). ``judge``
evaluates the EMA generator of every checkpoint of each run with the dataset's reference classifier
(:func:`dvdgan.training.evaluation.evaluate_generator`, 240 class-balanced samples): class accuracy,
the reference Frechet distance beside its real-vs-real floor, motion (centroid px/frame) beside the
real clips', per-frame class consistency beside the real clips', and the training wall time of each
checkpoint (from the run's TensorBoard step times). ``--steps`` picks checkpoints; ``--data DIR`` judges
with another dataset's classifier and real clips (a run on a quarter set by the full set's).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def train(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "dvdgan", "train", "--data", args.data, "--out", args.out, "--no-progress",
           *args.overrides]
    return subprocess.call(cmd)


def _step_seconds(run: Path) -> dict[int, float]:
    """Cumulative training seconds at each logged step (step_time is logged every log_every steps)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    if "train/step_time" not in events.Tags()["scalars"]:
        return {}
    points = sorted((e.step, e.value) for e in events.Scalars("train/step_time"))
    out, total, last = {}, 0.0, 0
    for step, seconds in points:  # each logged value stands for the steps since the previous one
        total += seconds * (step - last)
        out[step], last = total, step
    return out


def judge_run(run: Path, n: int, device: str, steps: list[int] | None = None, data: str | None = None
              ) -> list[dict]:
    import torch

    from dvdgan.checkpoint import list_checkpoints
    from dvdgan.data import build_dataset
    from dvdgan.sampling import load_generator
    from dvdgan.training.evaluation import evaluate_generator

    seconds = _step_seconds(run)
    rows = []
    for ckpt in list_checkpoints(run / "checkpoints"):
        step = int(ckpt.name.split("_")[1])
        if steps and step not in steps:
            continue
        g, cfg = load_generator(ckpt, ema=True, device=device)
        if data:  # judged by another dataset's classifier and real clips (a quarter set's run by the full set's)
            cfg.data.path = data
        dataset = build_dataset(cfg.data, split=cfg.data.split, frames=cfg.model.total_frames,
                                resolution=cfg.model.resolution, seed=cfg.train.seed)
        with torch.no_grad():
            metrics = evaluate_generator(g, cfg, dataset, n=n, device=device)
        near = max((s for s in seconds if s <= step), default=None)
        rows.append({"run": run.name, "data": cfg.data.path, "step": step,
                     "train_minutes": round(seconds[near] / 60, 1) if near else None,
                     "augment": cfg.train.augment or "off", **metrics})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def judge(args: argparse.Namespace) -> int:
    rows = [r for run in args.runs for r in judge_run(Path(run), args.n, args.device, args.steps, args.data)]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    keys = ("accuracy", "ref_fd", "ref_fd_floor", "motion", "motion_real", "consistency", "consistency_real",
            "classifier_accuracy")
    print("| run | step | min | " + " | ".join(keys) + " |")
    print("|" + "---|" * (3 + len(keys)))
    for r in rows:
        vals = " | ".join(f"{r[k]:.3g}" if isinstance(r.get(k), float) else "-" for k in keys)
        print(f"| {r['run']} | {r['step']} | {r['train_minutes']} | {vals} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="dvdgan train --data DIR --out RUN [overrides]")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("overrides", nargs="*")
    j = sub.add_parser("judge", help="evaluate every checkpoint of the runs")
    j.add_argument("runs", nargs="+")
    j.add_argument("--n", type=int, default=240, help="samples per checkpoint")
    j.add_argument("--device", default="cpu")
    j.add_argument("--json", default=None)
    j.add_argument("--steps", type=int, nargs="+", default=None, help="only these checkpoints")
    j.add_argument("--data", default=None, help="judge with this dataset's reference classifier and real clips")
    args = p.parse_args(argv)
    return train(args) if args.cmd == "train" else judge(args)


if __name__ == "__main__":
    raise SystemExit(main())
