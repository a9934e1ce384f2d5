"""``dvdgan eval``: FVD / reference Frechet distance / FID / IS / C3D IS / accuracy of a checkpoint, optionally along a
truncation curve.

    dvdgan eval --checkpoint runs/shapes --detector reference              # built-in data, no files
    dvdgan eval --checkpoint runs/k600 --detector i3d_k600.pt --metrics fid,is --stats k600.npz \\
        --truncation 0.2,0.4,0.6,0.8,1.0 --out runs/k600/eval
    dvdgan eval --checkpoint runs/ucf --detector conv3d_deepnetA_ucf.npz --metrics isc3d --is-runs 10
    dvdgan eval --checkpoint runs/mine --metrics none --memorisation 64    # copies of training clips?

``--detector reference`` (the default) is the built-in dataset's reference classifier for a
checkpoint trained on it, and the training set's own reference classifier
(:mod:`dvdgan.metrics.dataset_reference`, trained once and cached) for any other labelled dataset.
"""

from __future__ import annotations

import argparse
import os

from dvdgan.commands.common import (
    add_common_arguments,
    check_device,
    check_output_dir,
    checked_checkpoint,
    output_errors,
)
from dvdgan.errors import DvdganError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint directory / model.safetensors / run dir")
    p.add_argument("--metrics", default=None,
                   help="comma-separated: fvd, ref_fd (reference Frechet distance; fvd asked of the reference "
                        "classifier is reported as ref_fd), fid, is, isc3d, accuracy (default: all the detectors "
                        "allow); "
                        "'none' for none (e.g. with --memorisation)")
    p.add_argument("--detector", action="append", default=None,
                   help="'reference' (default: the reference classifier of the checkpoint's dataset, trained "
                        "on it and cached when it is not the built-in one) or a local weight file (I3D / C3D; "
                        "prefix i3d: or c3d: to force); repeat for several, e.g. an I3D for fvd and a C3D for isc3d")
    p.add_argument("--stats", action="append", default=None,
                   help="real statistics from `dvdgan stats` (repeatable, matched to detectors)")
    p.add_argument("--data", default=None, help="compute real statistics on the fly from this dataset path")
    p.add_argument("--dataset", default=None, help="dataset kind for --data (default: the checkpoint's)")
    p.add_argument("--split", default="test", help="split for on-the-fly real statistics (default test)")
    p.add_argument("--n", type=int, default=2048, help="generated videos per truncation (default 2048)")
    p.add_argument("--n-real", type=int, default=None,
                   help="real videos for on-the-fly statistics (default --n)")
    p.add_argument("--truncation", default="1.0",
                   help="comma-separated std of z, e.g. 0.2,0.4,0.6,0.8,1.0 (several: CSV + PNG curve)")
    p.add_argument("--seed", type=int, default=0, help="seed of z and the classes (default 0)")
    p.add_argument("--out", default=None, help="output directory (default: <checkpoint dir>/eval)")
    p.add_argument("--batch-size", type=int, default=16, help="generator batch size")
    p.add_argument("--chunk-size", type=int, default=64, help="videos generated per call (memory)")
    p.add_argument("--is-splits", type=int, default=10, help="IS splits (StyleGAN-V protocol, default 10)")
    p.add_argument("--is-runs", type=int, default=1,
                   help="TGANv2 protocol: IS over this many independent runs of --n samples (e.g. 10)")
    p.add_argument("--frechet-method", choices=("svd", "sqrtm"), default="svd",
                   help="svd = TF FVD reference (default), sqrtm = pytorch-fid / clean-fid")
    p.add_argument("--c3d-mean", default=None, help="C3D mean clip mean2.npz (default: beside the C3D npz)")
    p.add_argument("--i3d-resize", choices=("tf", "torch"), default="tf",
                   help="frame resize to 224 for I3D: TF1 resize_bilinear as the FVD reference (default) or torch")
    p.add_argument("--raw", action="store_true", help="evaluate the raw generator instead of its EMA")
    p.add_argument("--cache-dir", default=None, help="where the reference classifier is cached")
    add_common_arguments(p)
    p.add_argument("--memorisation", type=int, default=0, metavar="N",
                   help="memorisation check (paper C.1): N samples' nearest training clips in the reference "
                        "classifier's feature space, against held-out real clips' (or, without a held-out split, "
                        "each training clip's nearest other one); writes neighbours_*.png, distances.png and "
                        "memorisation.json to <out>/memorisation (default 0 = off)")
    p.add_argument("--memorisation-k", type=int, default=3, help="neighbours shown per sample (default 3)")
    p.add_argument("--memorisation-train-max", type=int, default=2000,
                   help="training clips searched at most (a fixed random subset beyond; default 2000)")


def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise DvdganError(f"--truncation expects comma-separated numbers, got {s!r}") from None


def default_metrics(detectors) -> list[str]:
    out: list[str] = []
    for d in detectors:
        if d.kind == "i3d":
            out += ["fvd"] + (["fid"] if d.has_features else []) + ["is"]
        elif d.kind == "c3d":
            out += ["isc3d"]
        elif d.kind == "reference":
            out += ["ref_fd", "is", "accuracy"]
    return list(dict.fromkeys(out))


def _data_config(cfg, args: argparse.Namespace):
    """The checkpoint's data config with --data / --dataset applied."""
    data_cfg = cfg.data
    if args.data is not None:
        data_cfg.path = args.data
        if args.dataset is None and data_cfg.dataset == "shapes":
            data_cfg.dataset = "folder"
    if args.dataset is not None:
        data_cfg.dataset = args.dataset
    return data_cfg


def _train_set(cfg, data_cfg, frames: int, resolution: int):
    from dvdgan.data import build_dataset

    if data_cfg.dataset != "shapes" and not data_cfg.path:
        raise DvdganError("the checkpoint's dataset has no path: pass --data PATH")
    return build_dataset(data_cfg, split="train", frames=frames, resolution=resolution, seed=cfg.train.seed)


def _reference_of(cfg, data_cfg, args, frames: int, resolution: int, progress: bool):
    """The reference classifier of the checkpoint's dataset: an nn.Module (built-in dataset) or a
    DatasetReference (any other labelled dataset)."""
    if data_cfg.dataset == "shapes":
        from dvdgan.metrics.reference import load_reference_classifier

        return load_reference_classifier(resolution, frames, device=args.device, cache_dir=args.cache_dir,
                                         progress=progress)
    from dvdgan.metrics.dataset_reference import dataset_classifier

    ref = dataset_classifier(_train_set(cfg, data_cfg, frames, resolution), frames=frames, resolution=resolution,
                             device=args.device, cache_dir=args.cache_dir, progress=progress)
    print(f"reference classifier of {data_cfg.path}: held-out accuracy {ref.heldout_accuracy:.3f} "
          f"({ref.heldout_size} clips, {ref.num_classes} classes)")
    return ref


def run(args: argparse.Namespace) -> int:
    from dvdgan.metrics.detectors import ReferenceDetector, load_detector
    from dvdgan.metrics.evaluate import evaluate_generator, format_table, write_results
    from dvdgan.metrics.stats import load_real_stats
    from dvdgan.sampling import load_generator, sample

    check_device(args.device)
    checked_checkpoint(args.checkpoint, raw=args.raw)  # before the model is built
    check_output_dir(args.out or os.path.join(_checkpoint_dir(args.checkpoint), "eval"))
    progress = not args.no_progress
    generator, cfg = load_generator(args.checkpoint, ema=not args.raw, device=args.device)
    if cfg.model.context_frames:
        raise DvdganError("eval generates unconditional samples; prediction (FP) checkpoints need real "
                          "context frames, which this command does not supply")
    data_cfg = _data_config(cfg, args)
    out_dir = args.out or os.path.join(_checkpoint_dir(args.checkpoint), "eval")

    def generate_fn(n: int, truncation: float, seed: int):
        return sample(generator, cfg, None, n, truncation=truncation, seed=seed, batch_size=args.batch_size)

    probe, _ = generate_fn(1, 1.0, args.seed)
    _, frames, resolution, _, _ = probe.shape

    def detector(spec: str):
        if spec == "reference" and data_cfg.dataset != "shapes":
            ref = _reference_of(cfg, data_cfg, args, frames, resolution, progress)
            return ReferenceDetector(ref.model, resolution, frames, device=args.device)
        return load_detector(spec, resolution=resolution, frames=frames, device=args.device, c3d_mean=args.c3d_mean,
                             i3d_resize=args.i3d_resize, cache_dir=args.cache_dir, progress=progress)

    if (args.metrics or "").strip().lower() != "none":
        detectors = [detector(spec) for spec in (args.detector or ["reference"])]
        metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else default_metrics(detectors)
        real_stats = [load_real_stats(p) for p in args.stats] if args.stats else None
        real_dataset = None
        if any(m in ("fvd", "ref_fd", "fid") for m in metrics) and real_stats is None:
            if data_cfg.dataset != "shapes" and not data_cfg.path:
                raise DvdganError("fvd/fid need real statistics: pass --stats STATS.npz or --data PATH")
            from dvdgan.data import build_dataset

            real_dataset = build_dataset(data_cfg, split=args.split, frames=frames, resolution=resolution,
                                         seed=args.seed)
        result = evaluate_generator(
            generate_fn, metrics=metrics, detector=detectors, real_stats=real_stats, real_dataset=real_dataset,
            n=args.n, truncations=_floats(args.truncation), seed=args.seed, chunk_size=args.chunk_size,
            is_splits=args.is_splits, is_runs=args.is_runs, frechet_method=args.frechet_method,
            real_n=args.n_real, out_dir=None, progress=progress,
            real_description=f"{data_cfg.dataset}:{data_cfg.path or ''} split={args.split} frames={frames} "
                             f"resolution={resolution} seed={args.seed}",
        )
        result["checkpoint"] = os.path.abspath(args.checkpoint)
        result["ema"] = not args.raw
        with output_errors(out_dir):
            write_results(result, out_dir)
        print(format_table(result))
        print(f"results in {out_dir}")
    if args.memorisation > 0:
        _memorisation(generator, cfg, data_cfg, args, frames, resolution, out_dir, progress)
    return 0


def _distinct_splits(train, test) -> bool:
    """False when the test split is the training set itself (a class folder without split folders)."""
    if len(train) != len(test):
        return True
    if callable(getattr(train, "path", None)) and callable(getattr(test, "path", None)):
        return any(train.path(i) != test.path(i) for i in range(len(train)))
    if hasattr(train, "names") and hasattr(test, "names"):
        return list(train.names) != list(test.names)
    return True


def _decode(dataset, limit: int, seed: int, progress: bool, what: str):
    import numpy as np
    import torch
    from tqdm import tqdm

    n = len(dataset)
    idx = np.arange(n) if n <= limit else np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
    clips = [dataset[int(i)] for i in tqdm(idx, desc=f"decoding {what}", disable=not progress, leave=False)]
    return torch.stack([c[0] for c in clips]), torch.tensor([int(c[1]) for c in clips])


def _memorisation(generator, cfg, data_cfg, args, frames: int, resolution: int, out_dir: str, progress: bool):
    from dvdgan.data import build_dataset
    from dvdgan.metrics.memorisation import format_summary, memorisation_check, write_memorisation_report
    from dvdgan.sampling import sample

    if args.memorisation_k < 1 or args.memorisation_train_max < 2:
        raise DvdganError("--memorisation-k must be >= 1 and --memorisation-train-max >= 2")
    detector = _reference_of(cfg, data_cfg, args, frames, resolution, progress)
    train = _train_set(cfg, data_cfg, frames, resolution)
    train_videos, train_labels = _decode(train, args.memorisation_train_max, args.seed, progress, "training clips")
    heldout = None
    try:
        test = build_dataset(data_cfg, split="test", frames=frames, resolution=resolution, seed=cfg.train.seed)
        if _distinct_splits(train, test):
            heldout, _ = _decode(test, min(1000, args.memorisation_train_max), args.seed, progress, "held-out clips")
    except DvdganError:
        pass  # no test split: leave-one-out over the training clips
    m = cfg.model
    classes = list(range(m.num_classes)) if m.num_classes > 1 else None
    samples, labels = sample(generator, cfg, classes, args.memorisation, seed=args.seed, batch_size=args.batch_size)
    result = memorisation_check(samples, train_videos, detector, heldout_videos=heldout, k=args.memorisation_k)
    names = list(getattr(train, "class_names", []) or [])
    mem_dir = os.path.join(out_dir, "memorisation")
    write_memorisation_report(result, samples, train_videos, mem_dir, labels, train_labels, names)
    print(format_summary(result["summary"]))
    print(f"memorisation report in {mem_dir}")


def _checkpoint_dir(path: str) -> str:
    path = os.path.abspath(path)
    return path if os.path.isdir(path) else os.path.dirname(path)
