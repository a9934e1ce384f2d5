"""``dvdgan eval``: FVD / FID / IS / C3D IS / accuracy of a checkpoint, optionally along a
truncation curve.

    dvdgan eval --checkpoint runs/shapes --detector reference              # built-in data, no files
    dvdgan eval --checkpoint runs/k600 --detector i3d_k600.pt --metrics fid,is --stats k600.npz \\
        --truncation 0.2,0.4,0.6,0.8,1.0 --out runs/k600/eval
    dvdgan eval --checkpoint runs/ucf --detector conv3d_deepnetA_ucf.npz --metrics isc3d --is-runs 10
"""

from __future__ import annotations

import argparse
import os

from dvdgan.errors import DvdganError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint directory / model.safetensors / run dir")
    p.add_argument("--metrics", default=None,
                   help="comma-separated: fvd, fid, is, isc3d, accuracy (default: all the detectors allow)")
    p.add_argument("--detector", action="append", required=True,
                   help="'reference' or a local weight file (I3D / C3D; prefix i3d: or c3d: to force); "
                        "repeat for several, e.g. an I3D for fvd and a C3D for isc3d")
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output directory (default: <checkpoint dir>/eval)")
    p.add_argument("--batch-size", type=int, default=16, help="generator batch size")
    p.add_argument("--chunk-size", type=int, default=64, help="videos generated per call (memory)")
    p.add_argument("--is-splits", type=int, default=10, help="IS splits (StyleGAN-V protocol, default 10)")
    p.add_argument("--is-runs", type=int, default=1,
                   help="TGANv2 protocol: IS over this many independent runs of --n samples (e.g. 10)")
    p.add_argument("--frechet-method", choices=("svd", "sqrtm"), default="svd",
                   help="svd = TF FVD reference (default), sqrtm = pytorch-fid / clean-fid")
    p.add_argument("--c3d-mean", default=None, help="C3D mean clip mean2.npz (default: beside the C3D npz)")
    p.add_argument("--i3d-resize", choices=("tf", "torch"), default="tf")
    p.add_argument("--raw", action="store_true", help="evaluate the raw generator instead of its EMA")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", default=None, help="where the reference classifier is cached")
    p.add_argument("--no-progress", action="store_true")


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
            out += ["fvd", "is", "accuracy"]
    return list(dict.fromkeys(out))


def run(args: argparse.Namespace) -> int:
    from dvdgan.metrics.detectors import load_detector
    from dvdgan.metrics.evaluate import evaluate_generator, format_table, write_results
    from dvdgan.metrics.stats import load_real_stats
    from dvdgan.sampling import generate, load_generator

    progress = not args.no_progress
    generator, cfg = load_generator(args.checkpoint, ema=not args.raw, device=args.device)
    if cfg.model.context_frames:
        raise DvdganError("eval generates unconditional samples; prediction (FP) checkpoints need real "
                          "context frames, which this command does not supply")

    def generate_fn(n: int, truncation: float, seed: int):
        return generate(generator, cfg, None, n, truncation=truncation, seed=seed, batch_size=args.batch_size)

    probe, _ = generate_fn(1, 1.0, args.seed)
    _, frames, resolution, _, _ = probe.shape
    detectors = [
        load_detector(spec, resolution=resolution, frames=frames, device=args.device, c3d_mean=args.c3d_mean,
                      i3d_resize=args.i3d_resize, cache_dir=args.cache_dir, progress=progress)
        for spec in args.detector
    ]
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else default_metrics(detectors)

    real_stats = [load_real_stats(p) for p in args.stats] if args.stats else None
    real_dataset = None
    needs_real = any(m in ("fvd", "fid") for m in metrics)
    if needs_real and real_stats is None:
        data_cfg = cfg.data
        if args.data is not None:
            data_cfg.path = args.data
            if args.dataset is None and data_cfg.dataset == "shapes":
                data_cfg.dataset = "folder"
        if args.dataset is not None:
            data_cfg.dataset = args.dataset
        if data_cfg.dataset != "shapes" and not data_cfg.path:
            raise DvdganError("fvd/fid need real statistics: pass --stats STATS.npz or --data PATH")
        from dvdgan.data import build_dataset

        real_dataset = build_dataset(data_cfg, split=args.split, frames=frames, resolution=resolution,
                                     seed=args.seed)

    out_dir = args.out or os.path.join(_checkpoint_dir(args.checkpoint), "eval")
    result = evaluate_generator(
        generate_fn, metrics=metrics, detector=detectors, real_stats=real_stats, real_dataset=real_dataset,
        n=args.n, truncations=_floats(args.truncation), seed=args.seed, chunk_size=args.chunk_size,
        is_splits=args.is_splits, is_runs=args.is_runs, frechet_method=args.frechet_method,
        real_n=args.n_real, out_dir=None, progress=progress,
    )
    result["checkpoint"] = os.path.abspath(args.checkpoint)
    result["ema"] = not args.raw
    write_results(result, out_dir)
    print(format_table(result))
    print(f"results in {out_dir}")
    return 0


def _checkpoint_dir(path: str) -> str:
    path = os.path.abspath(path)
    return path if os.path.isdir(path) else os.path.dirname(path)
