"""``dvdgan predict``: continue real videos with a DVD-GAN-FP checkpoint (section 4.2, B.4).

    dvdgan predict --checkpoint runs/shapes-fp --input clip.mp4 --context 2 --out pred --n 4
    dvdgan predict --checkpoint runs/bair-fp --input videos/ --context 1 --out pred --n 8 --format mp4,gif,png
    dvdgan predict --checkpoint runs/shapes-fp --evaluate --n 256 --out runs/shapes-fp/predict-eval

Prediction: every video file (a file, or all video files under a folder, sorted) is read with
the training pipeline (``dvdgan.data.video.read_clip``: first run of frames at the checkpoint's
``data.frame_stride``, shortest side resized to the model resolution, centre crop). Its first C
frames (C = the model's ``context_frames``; ``--context`` must match) are continued N times with
different z. Where the video is long enough (C + T frames) its real continuation is shown too.
Per input, ``<name>.mp4`` / ``.gif`` (and ``.png`` with ``--format``) show the panels side by
side: the ground truth first (when available), then the N continuations; every panel replays the
same context. Border colours: green = real context frame, red = predicted frame, blue = real
continuation. The PNG is a film strip (time left to right, one row per panel). Unreadable or
too short inputs are skipped and counted.

``--evaluate``: per-frame MSE / PSNR of predictions against the ground-truth continuation,
beside the copy-last-context-frame baseline, plus (with a detector; the built-in dataset's
reference classifier by default) the Frechet distance of [context + prediction] to
[context + ground truth] videos of the test split (``dvdgan.metrics.prediction``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from dvdgan.commands.common import (
    add_common_arguments,
    check_device,
    check_output_dir,
    checked_checkpoint,
    output_errors,
)
from dvdgan.errors import DvdganError
from dvdgan.video_io import DEFAULT_FPS, LEGIBLE_PX

FORMATS = ("mp4", "gif", "png")
CONTEXT_COLOUR = (40, 200, 40)  # green: real conditioning frame
PREDICTED_COLOUR = (230, 40, 40)  # red: generated frame
TRUTH_COLOUR = (40, 90, 230)  # blue: real continuation
LEGEND = [("real context", CONTEXT_COLOUR), ("prediction", PREDICTED_COLOUR), ("ground truth", TRUTH_COLOUR)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint directory / model.safetensors / run dir")
    p.add_argument("--input", default=None,
                   help="a video file, or a folder searched recursively for videos (real test clips at the "
                        "model's size: dvdgan export-clips --data PATH --out clips/)")
    p.add_argument("--context", type=int, default=None,
                   help="number of conditioning frames C; must equal the model's (default: the model's)")
    p.add_argument("--out", default=None, help="output directory (required with --input)")
    p.add_argument("--n", type=int, default=None,
                   help="continuations per input (default 4); with --evaluate: test clips (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of z (default 0)")
    p.add_argument("--truncation", type=float, default=1.0, help="standard deviation of z in [0, 1] (default 1)")
    p.add_argument("--frame-stride", type=int, default=None,
                   help="frame stride of the input clips (default: the checkpoint's data.frame_stride)")
    p.add_argument("--format", default="mp4,gif", help="comma-separated: mp4, gif, png (default mp4,gif)")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS,
                   help=f"frames per second of the videos (default {DEFAULT_FPS:g}, as sample)")
    p.add_argument("--scale", type=int, default=None,
                   help=f"nearest-neighbour upscaling (default: enough for {LEGIBLE_PX} px per video, as sample)")
    p.add_argument("--raw", action="store_true", help="the trained generator instead of its EMA")
    p.add_argument("--batch-size", type=int, default=16, help="videos per generator call (memory)")
    p.add_argument("--evaluate", action="store_true",
                   help="measure predictions against the ground truth on the test split of the checkpoint's "
                        "dataset (the built-in dataset needs no files), beside the copy-last-frame baseline")
    p.add_argument("--detector", default=None,
                   help="with --evaluate: 'reference' (default for the built-in dataset), an I3D weight file "
                        "(FVD), or 'none'")
    p.add_argument("--data", default=None, help="with --evaluate: dataset path (default: the checkpoint's)")
    p.add_argument("--dataset", default=None, help="with --evaluate: dataset kind (default: the checkpoint's)")
    p.add_argument("--split", default="test", help="with --evaluate: split (default test)")
    p.add_argument("--cache-dir", default=None, help="where the reference classifier is cached")
    add_common_arguments(p)


def _formats(spec: str) -> list[str]:
    out = [f.strip().lower() for f in spec.split(",") if f.strip()]
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise DvdganError(f"--format: {bad[0] if bad else spec!r} is not one of {', '.join(FORMATS)}")
    return out


def _check_args(args: argparse.Namespace) -> list[str]:
    if args.input is None and not args.evaluate:
        raise DvdganError("nothing to do: pass --input VIDEO_OR_DIR (and --out DIR; real clips come from "
                          "`dvdgan export-clips`) or --evaluate")
    if args.input is not None and args.out is None:
        raise DvdganError("--input needs --out DIR")
    if args.n is not None and args.n < 1:
        raise DvdganError(f"--n must be >= 1, got {args.n}")
    for name, value in (("--scale", args.scale), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise DvdganError(f"{name} must be >= 1, got {value}")
    if args.frame_stride is not None and args.frame_stride < 1:
        raise DvdganError(f"--frame-stride must be >= 1, got {args.frame_stride}")
    if not 0.0 <= args.truncation <= 1.0:
        raise DvdganError(f"--truncation is the standard deviation of z and must be in [0, 1], got {args.truncation}")
    if not args.fps > 0:
        raise DvdganError(f"--fps must be > 0, got {args.fps}")
    return _formats(args.format)


def list_inputs(path: str) -> list[Path]:
    """The video files named by ``path``: itself, or every video file under it (sorted)."""
    from dvdgan.data.video import VIDEO_EXTENSIONS

    p = Path(path).expanduser()
    if not p.exists():
        raise DvdganError(f"input {path} does not exist")
    if p.is_file():
        return [p]
    found = []
    for dirpath, dirnames, filenames in os.walk(p, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_EXTENSIONS]
    if not found:
        raise DvdganError(f"no video files in {path}")
    return found


def read_input(path: Path, context: int, frames: int, stride: int, resolution: int
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(uint8 context [C, R, R, 3], ground-truth continuation [T, R, R, 3] or None when the video
    has fewer than C + T frames at this stride). Raises BadVideo when not even C frames exist."""
    from dvdgan.data.video import BadVideo, read_clip

    try:
        clip = read_clip(path, context + frames, stride, resolution)
        return clip[:context], clip[context:]
    except BadVideo as e:
        if e.reason != "too_short":
            raise
    return read_clip(path, context, stride, resolution), None


def border(video: np.ndarray, colours: list[tuple[int, int, int]], width: int = 1) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [T, H + 2w, W + 2w, 3] with a coloured frame per time step."""
    t, h, w, _ = video.shape
    out = np.empty((t, h + 2 * width, w + 2 * width, 3), np.uint8)
    out[:] = np.asarray(colours, np.uint8)[:, None, None, :]
    out[:, width:width + h, width:width + w] = video
    return out


def panels(context: np.ndarray, predictions: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
    """uint8 panels [P, C + T, H + 2, W + 2, 3]: the ground truth (if any), then each prediction,
    every one starting with the same context; borders mark context / predicted / real frames."""
    c, t = context.shape[0], predictions.shape[1]
    out = []
    if truth is not None:
        out.append(border(np.concatenate([context, truth]), [CONTEXT_COLOUR] * c + [TRUTH_COLOUR] * t))
    for p in predictions:
        out.append(border(np.concatenate([context, p]), [CONTEXT_COLOUR] * c + [PREDICTED_COLOUR] * t))
    return np.stack(out)


def film_strip(video_panels: np.ndarray, pad: int = 2, row_labels: list[str] | None = None, scale: int = 1,
               legend: bool = False) -> np.ndarray:
    """[P, T, H, W, 3] -> one image: time left to right, one row per panel (labelled with
    ``row_labels``), upscaled by ``scale``, with the border-colour legend below when ``legend``."""
    from dvdgan.video_io import labelled_grid

    p, t = video_panels.shape[:2]
    frames = np.ascontiguousarray(video_panels.reshape(p * t, 1, *video_panels.shape[2:]))
    rows = [list(range(i * t, (i + 1) * t)) for i in range(p)]
    return labelled_grid(frames, row_labels, rows, scale=scale, pad=pad, pad_value=255,
                         legend=LEGEND if legend else None)[0]


def panel_labels(n_predictions: int, truth: bool) -> list[str]:
    return (["ground truth"] if truth else []) + [f"prediction {i + 1}" for i in range(n_predictions)]


def write_panels(stem: Path, video_panels: np.ndarray, formats: list[str], fps: float, scale: int | None,
                 truth: bool = False) -> None:
    """``<stem>.mp4`` / ``.gif``: the panels side by side (ground truth first, when there is one)
    under a caption saying so, with the legend of the border colours below; ``<stem>.png``: a
    film strip, one labelled row per panel."""
    from dvdgan.video_io import labelled_grid, legible_scale, save_gif, save_mp4, save_png

    scale = scale or legible_scale(video_panels.shape[2])
    n = len(video_panels) - truth
    caption = ("ground truth, then " if truth else "") + f"{n} prediction{'s' if n != 1 else ''}"
    grid = labelled_grid(video_panels, rows=[list(range(len(video_panels)))], scale=scale, pad=2, pad_value=255,
                         caption=caption, legend=LEGEND)
    if "mp4" in formats:
        save_mp4(stem.with_suffix(".mp4"), grid, fps=fps)
    if "gif" in formats:
        save_gif(stem.with_suffix(".gif"), grid, fps=fps)
    if "png" in formats:
        save_png(stem.with_suffix(".png"), film_strip(video_panels, row_labels=panel_labels(n, truth), scale=scale,
                                                       legend=True))


def _output_stems(inputs: list[Path], root: Path | None) -> list[str]:
    """Unique output names: the path relative to the input folder, separators replaced."""
    stems, seen = [], Counter()
    for f in inputs:
        rel = f.relative_to(root) if root is not None else Path(f.name)
        s = str(rel.with_suffix("")).replace(os.sep, "__") or "video"
        seen[s] += 1
        stems.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return stems


def predict_inputs(args: argparse.Namespace, generator, cfg, formats: list[str]) -> int:
    from tqdm import tqdm

    from dvdgan.data.video import BadVideo
    from dvdgan.metrics.prediction import predict_continuations
    from dvdgan.sampling import sample_z

    m = cfg.model
    c, t, r = m.context_frames, m.frames, m.resolution
    stride = args.frame_stride or cfg.data.frame_stride
    n = args.n or 4
    inputs = list_inputs(args.input)
    root = Path(args.input).expanduser() if Path(args.input).expanduser().is_dir() else None
    stems = _output_stems(inputs, root)
    out = Path(args.out)
    gen = torch.Generator().manual_seed(args.seed)
    skipped: Counter[str] = Counter()
    written, with_truth = 0, 0
    bar = tqdm(list(zip(inputs, stems)), desc="predict", unit="video", disable=args.no_progress)
    for path, stem in bar:
        try:
            context, truth = read_input(path, c, t, stride, r)
        except BadVideo as e:
            skipped[e.reason] += 1
            continue
        z = sample_z(n, m.z_dim, args.truncation, gen)
        preds = predict_continuations(generator, context.unsqueeze(0).expand(n, -1, -1, -1, -1), z,
                                      args.batch_size)
        video_panels = panels(context.numpy(), preds.numpy(), None if truth is None else truth.numpy())
        write_panels(out / stem, video_panels, formats, args.fps, args.scale, truth=truth is not None)
        written += 1
        with_truth += truth is not None
    bar.close()
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items()))
    if not written:
        raise DvdganError(f"no usable video in {args.input}: {sum(skipped.values())} skipped ({detail}); each needs "
                          f"at least {c} frames at stride {stride}")
    print(f"wrote {written} predictions ({n} continuations of {c} context frames -> {t} frames each; "
          f"{with_truth} with the ground truth) to {out}")
    if skipped:
        print(f"skipped {sum(skipped.values())} unusable inputs ({detail})")
    return 0


def evaluate(args: argparse.Namespace, generator, cfg) -> int:
    from dvdgan.data import build_dataset
    from dvdgan.metrics.prediction import evaluate_prediction, format_prediction_table

    m = cfg.model
    data_cfg = cfg.data
    if args.data is not None:
        data_cfg.path = args.data
    if args.dataset is not None:
        data_cfg.dataset = args.dataset
    if data_cfg.dataset != "shapes" and not data_cfg.path:
        raise DvdganError(f"--evaluate needs the {data_cfg.dataset} test split: pass --data PATH")
    dataset = build_dataset(data_cfg, split=args.split, frames=m.total_frames, resolution=m.resolution,
                            seed=cfg.train.seed)
    spec = args.detector or ("reference" if data_cfg.dataset == "shapes" else "none")
    detector = None
    if spec.lower() != "none":
        from dvdgan.metrics.detectors import load_detector

        detector = load_detector(spec, resolution=m.resolution, frames=m.total_frames, device=args.device,
                                 cache_dir=args.cache_dir, progress=not args.no_progress)
    n = args.n or 256
    result = evaluate_prediction(generator, cfg, dataset, n=n, detector=detector, batch_size=args.batch_size,
                                 seed=args.seed, return_videos=args.out is not None)
    result["checkpoint"] = os.path.abspath(args.checkpoint)
    result["ema"] = not args.raw
    result["split"] = args.split
    table = format_prediction_table(result)
    print(table)
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        videos, preds = result.pop("videos"), result.pop("predictions")
        (out / "prediction_metrics.json").write_text(json.dumps(result, indent=2))
        (out / "prediction_metrics.txt").write_text(table + "\n")
        k = min(8, n)  # a few test clips: real on top, prediction below
        c = m.context_frames
        rows = [panels(v[:c].numpy(), p[None, c:].numpy(), v[c:].numpy()) for v, p in zip(videos[:k], preds[:k])]
        pairs = np.concatenate(rows)  # [2k, ...]: truth, prediction, truth, prediction, ...
        grid_panels = np.concatenate([pairs[0::2], pairs[1::2]])  # real row, then predicted row
        from dvdgan.video_io import labelled_grid, legible_scale, save_gif, save_png

        scale = args.scale or legible_scale(m.resolution)
        grid = labelled_grid(grid_panels, ["ground truth", "prediction"], [list(range(k)), list(range(k, 2 * k))],
                             scale=scale, pad=2, pad_value=255, legend=LEGEND)
        save_gif(out / "eval_samples.gif", grid, fps=args.fps)
        save_png(out / "eval_samples.png", film_strip(pairs, row_labels=["ground truth", "prediction"] * k,
                                                      scale=scale, legend=True))
        print(f"results in {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    formats = _check_args(args)
    check_device(args.device)
    if args.out is not None:
        check_output_dir(args.out)
    _, cfg = checked_checkpoint(args.checkpoint, raw=args.raw)  # before the model is built
    c = cfg.model.context_frames
    if c == 0:
        raise DvdganError(f"{args.checkpoint} is a synthesis model (no context frames); predict needs a "
                          "prediction (FP) checkpoint, e.g. one trained with --preset shapes-fp")
    if args.context is not None and args.context != c:
        raise DvdganError(f"--context {args.context} does not match the model, which continues {c} context "
                          f"frame{'s' if c != 1 else ''}")
    if args.input is not None:
        list_inputs(args.input)  # a missing input fails before the model is built
    with output_errors(args.out or "."):
        return _predict(args, formats)


def _predict(args: argparse.Namespace, formats: list[str]) -> int:
    from dvdgan.sampling import load_generator

    generator, cfg = load_generator(args.checkpoint, ema=not args.raw, device=args.device)
    if args.input is not None:
        predict_inputs(args, generator, cfg, formats)
    if args.evaluate:
        evaluate(args, generator, cfg)
    return 0
