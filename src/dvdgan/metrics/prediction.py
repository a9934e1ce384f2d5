"""Metrics of future video prediction (DVD-GAN-FP, section 4.2).

For ``n`` clips of C + T real frames (a test split: 4.2.2 takes the conditioning frames and the
ground-truth statistics from it), the generator continues the first C frames and is compared
with the real continuation and with the *copy-last-frame* baseline (the last context frame
repeated T times, i.e. "nothing moves"):

* ``mse`` / ``psnr`` per predicted frame index t = 1..T (frame C + t of the clip): pixel values
  scaled to [0, 1]; the MSE is averaged over videos, the PSNR (10 log10(1 / MSE), MSE floored at
  1e-10) is computed per video and frame, then averaged over videos;
* ``beats_copy_last`` per predicted frame: the fraction of clips whose predicted frame has a
  lower MSE than the baseline's (a paired comparison);
* ``position_error`` per predicted frame (built-in MovingShapes only): distance in pixels between
  the foreground centroid of the prediction and of the ground truth. The foreground is measured
  against the ground-truth clip's background (its per-channel median, as in
  :func:`dvdgan.data.shapes.motion_statistic`); a frame with no foreground counts with its
  centroid at the frame centre;
* with a detector (:func:`dvdgan.metrics.detectors.load_detector`): ``frechet``, the Frechet
  distance of the detector embedding of the videos [context + prediction] to that of the real
  videos [context + ground truth] (FVD as in 4.2 with an I3D; with the built-in reference
  classifier, its features), covariances with N-1, the "svd" (TF FVD) square root;
  ``frechet_floor``, the distance between the real videos and a disjoint set of n real test
  clips (what a perfect predictor scores at this sample size); and ``accuracy`` when the
  detector's classes are the dataset's (reference classifier: does the whole video still show
  the right shape and direction of motion?).

A single continuation (one z per clip) is drawn; z ~ N(0, I) from ``seed``.

    from dvdgan.metrics.prediction import evaluate_prediction, format_prediction_table
    result = evaluate_prediction(G, cfg, test_dataset, n=256, detector=load_detector("reference", ...))
    print(format_prediction_table(result))
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dvdgan.config import Config
from dvdgan.data.transforms import to_model_input, to_uint8
from dvdgan.errors import DvdganError
from dvdgan.metrics.detectors import Detector
from dvdgan.metrics.frechet import feature_statistics, frechet_distance

__all__ = [
    "evaluate_prediction",
    "predict_continuations",
    "copy_last_baseline",
    "per_frame_errors",
    "per_video_mse",
    "position_errors",
    "flat_prediction_metrics",
    "format_prediction_table",
    "load_clips",
]

MSE_FLOOR = 1e-10
# as dvdgan.data.shapes.motion_statistic, but a soft weight (difference / threshold, clipped to 1):
# a blurred prediction's centroid stays where its mass is
FOREGROUND_THRESHOLD = 0.2


def load_clips(dataset, n: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips ``start .. start + n - 1`` of a dataset in evaluation mode (first run, centre crop):
    (uint8 [n, T, H, W, 3], labels [n]). Uses the dataset's vectorised ``batch`` when it has one."""
    if len(dataset) < start + n:
        raise DvdganError(f"the dataset has {len(dataset)} clips, {start + n} are needed")
    if hasattr(dataset, "batch"):
        videos, labels = [], []
        for i in range(start, start + n, 256):
            v, y = dataset.batch(range(i, min(start + n, i + 256)))
            videos.append(v)
            labels.append(torch.as_tensor(y))
        return torch.cat(videos), torch.cat(labels).long()
    items = [dataset[i] for i in range(start, start + n)]
    return torch.stack([torch.as_tensor(v) for v, _ in items]), torch.tensor([int(y) for _, y in items])


@torch.no_grad()
def predict_continuations(generator: nn.Module, context: torch.Tensor, z: torch.Tensor,
                          batch_size: int = 16) -> torch.Tensor:
    """uint8 context [N, C, H, W, 3] and z [N, z_dim] -> uint8 predicted frames [N, T, H, W, 3]
    (class id 0, B.4). The generator is run in eval mode and left in the mode it was in."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    out = []
    try:
        for i in range(0, context.shape[0], batch_size):
            ctx = to_model_input(context[i:i + batch_size].to(device))
            zb = z[i:i + batch_size].to(device)
            y = torch.zeros(zb.shape[0], dtype=torch.long, device=device)
            out.append(to_uint8(generator(zb, y, ctx).float().cpu()))
    finally:
        generator.train(was_training)
    return torch.cat(out)


def copy_last_baseline(context: torch.Tensor, frames: int) -> torch.Tensor:
    """The last context frame repeated ``frames`` times: uint8 [N, frames, H, W, 3]."""
    return context[:, -1:].expand(-1, frames, -1, -1, -1).contiguous()


def per_video_mse(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """float64 [N, T]: MSE of each frame of each video (uint8 [N, T, H, W, 3]), pixels in [0, 1]."""
    return ((pred.double() / 255.0 - truth.double() / 255.0) ** 2).mean(dim=(2, 3, 4))


def per_frame_errors(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, list[float]]:
    """MSE (videos averaged) and PSNR (per video, then averaged) for each frame of uint8
    [N, T, H, W, 3] predictions against the ground truth, pixel values in [0, 1]."""
    mse = per_video_mse(pred, truth)
    psnr = 10.0 * torch.log10(1.0 / mse.clamp_min(MSE_FLOOR))
    return {"mse": mse.mean(0).tolist(), "psnr": psnr.mean(0).tolist()}


def _centroids(videos: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Foreground centroids (x, y) in pixels of float [N, T, H, W, 3] frames -> [N, T, 2]."""
    n, t, h, w, _ = videos.shape
    weight = np.clip(np.abs(videos - background[:, None, None, None, :]).max(-1) / FOREGROUND_THRESHOLD, 0, 1)
    mass = weight.sum(axis=(2, 3))
    xs = np.arange(w) + 0.5
    ys = np.arange(h) + 0.5
    safe = np.maximum(mass, 1e-8)
    cx = (weight.sum(axis=2) * xs).sum(-1) / safe
    cy = (weight.sum(axis=3) * ys).sum(-1) / safe
    empty = mass < 1.0  # less than about one pixel of foreground: no shape drawn
    cx = np.where(empty, w / 2, cx)
    cy = np.where(empty, h / 2, cy)
    return np.stack([cx, cy], -1)


def position_errors(pred: torch.Tensor, truth: torch.Tensor, clips: torch.Tensor) -> list[float]:
    """Mean distance (px) per frame between the foreground centroids of ``pred`` and ``truth``
    (uint8 [N, T, H, W, 3]); the background is the per-channel median of each real clip."""
    full = clips.numpy().astype(np.float32) / 255.0
    background = np.median(full.reshape(full.shape[0], -1, 3), axis=1)
    a = _centroids(pred.numpy().astype(np.float32) / 255.0, background)
    b = _centroids(truth.numpy().astype(np.float32) / 255.0, background)
    return np.linalg.norm(a - b, axis=-1).mean(0).tolist()


def _summary(errors: dict[str, list[float]]) -> dict:
    out: dict = dict(errors)
    for k, v in errors.items():
        out[f"{k}_mean"] = float(np.mean(v))
    return out


def evaluate_prediction(generator: nn.Module, config: Config, dataset, *, n: int = 256,
                        detector: Detector | None = None, batch_size: int = 16, seed: int = 0,
                        frechet_floor: bool = True, return_videos: bool = False) -> dict:
    """Per-frame error of predictions and of the copy-last-frame baseline against the real
    continuation of the first ``n`` clips of ``dataset`` (each C + T frames at the model's
    resolution); with a ``detector``, Frechet distances (and class accuracy). See the module
    docstring for every number. ``return_videos`` adds uint8 ``videos`` (real clips) and
    ``predictions`` (context + prediction) to the result."""
    m = config.model
    c, t, r = m.context_frames, m.frames, m.resolution
    if c < 1:
        raise DvdganError("evaluate_prediction needs a prediction (FP) model: model.context_frames is 0")
    if n < 2:
        raise DvdganError("evaluate_prediction needs n >= 2 clips")
    clips, labels = load_clips(dataset, n)
    if tuple(clips.shape[1:4]) != (c + t, r, r):
        raise DvdganError(f"the dataset's clips are {clips.shape[1]} frames of {clips.shape[2]}x{clips.shape[3]}; "
                          f"the model needs {c} + {t} frames of {r}x{r}")
    context, truth = clips[:, :c], clips[:, c:]
    z = torch.randn(n, m.z_dim, generator=torch.Generator().manual_seed(seed))
    pred = predict_continuations(generator, context, z, batch_size)
    baseline = copy_last_baseline(context, t)
    shapes = type(dataset).__name__ == "MovingShapes"

    result: dict = {"n": n, "seed": seed, "context_frames": c, "frames": t, "resolution": r,
                    "dataset": repr(dataset) if shapes else type(dataset).__name__}
    for name, video in (("model", pred), ("copy_last", baseline)):
        errors = per_frame_errors(video, truth)
        if shapes:
            errors["position_error"] = position_errors(video, truth, clips)
        result[name] = _summary(errors)
    # paired: the fraction of clips whose predicted frame t is closer (MSE) to the truth than the baseline's
    wins = (per_video_mse(pred, truth) < per_video_mse(baseline, truth)).double().mean(0)
    result["model"]["beats_copy_last"] = wins.tolist()
    result["model"]["beats_copy_last_mean"] = float(wins.mean())
    result["ground_truth"] = {}

    if detector is not None:
        model_videos = torch.cat([context, pred], 1)
        base_videos = torch.cat([context, baseline], 1)
        want = [detector.frechet_output] + (["logits"] if detector.classes_match_dataset else [])
        want = list(dict.fromkeys(want))
        outs = {k: detector.outputs(v, want) for k, v in
                (("ground_truth", clips), ("model", model_videos), ("copy_last", base_videos))}
        mu_r, s_r = feature_statistics(outs["ground_truth"][detector.frechet_output], ddof=1)
        for k in ("model", "copy_last"):
            mu, s = feature_statistics(outs[k][detector.frechet_output], ddof=1)
            result[k]["frechet"] = frechet_distance(mu_r, s_r, mu, s, method="svd")
        if detector.classes_match_dataset:
            for k in ("ground_truth", "model", "copy_last"):
                result[k]["accuracy"] = float((outs[k]["logits"].argmax(1) == labels.numpy()).mean())
        if frechet_floor and len(dataset) >= 2 * n:
            other, _ = load_clips(dataset, n, start=n)
            mu, s = feature_statistics(detector.embedding(other), ddof=1)
            result["frechet_floor"] = frechet_distance(mu_r, s_r, mu, s, method="svd")
        result["detector"] = {"name": detector.name, "identity": detector.identity,
                              "embedding": detector.frechet_output}
    if return_videos:
        result["videos"] = clips
        result["predictions"] = torch.cat([context, pred], 1)
    return result


def flat_prediction_metrics(result: dict, prefix: str = "fp_") -> dict[str, float]:
    """Scalars for logs (training-time evaluation): means, the last frame and the Frechet /
    accuracy numbers of the model and the baseline."""
    out: dict[str, float] = {}
    for who in ("model", "copy_last", "ground_truth"):
        for k, v in result.get(who, {}).items():
            if isinstance(v, list):
                out[f"{prefix}{who}_{k}_last"] = float(v[-1])
            else:
                out[f"{prefix}{who}_{k}"] = float(v)
    if "frechet_floor" in result:
        out[f"{prefix}frechet_floor"] = float(result["frechet_floor"])
    return out


def format_prediction_table(result: dict) -> str:
    """A plain-text table: one row per predicted frame, the model beside the baseline."""
    c = result["context_frames"]
    keys = [k for k in ("mse", "psnr", "position_error") if k in result["model"]]
    head = {"mse": "MSE", "psnr": "PSNR", "position_error": "pos(px)"}
    cols = ["frame"] + [f"{head[k]} {w}" for k in keys for w in ("model", "copy")]
    width = max(len(s) for s in cols) + 1
    lines = ["".join(f"{s:>{width}}" for s in cols)]

    def fmt(v: float) -> str:
        return f"{v:>{width}.5f}" if abs(v) < 1 else f"{v:>{width}.3f}"

    wins = result["model"].get("beats_copy_last")
    if wins is not None:
        lines[0] += f"{'model wins':>{width}}"
    for i in range(result["frames"]):
        row = f"{f'{c + i + 1} (t+{i + 1})':>{width}}"
        for k in keys:
            row += fmt(result["model"][k][i]) + fmt(result["copy_last"][k][i])
        if wins is not None:
            row += f"{wins[i]:>{width}.1%}"
        lines.append(row)
    row = f"{'mean':>{width}}"
    for k in keys:
        row += fmt(result["model"][f"{k}_mean"]) + fmt(result["copy_last"][f"{k}_mean"])
    if wins is not None:
        row += f"{result['model']['beats_copy_last_mean']:>{width}.1%}"
    lines.append(row)
    if wins is not None:
        lines.append("copy = the copy-last-context-frame baseline; PSNR in dB; pos(px) = foreground centroid error; "
                     "model wins = clips whose predicted frame has a lower MSE than the baseline's")
    if "detector" in result:
        d = result["detector"]
        floor = f" (real-vs-real floor {result['frechet_floor']:.3f})" if "frechet_floor" in result else ""
        lines.append(f"Frechet distance [context + frames] vs [context + ground truth]: model "
                     f"{result['model']['frechet']:.3f}, copy-last {result['copy_last']['frechet']:.3f}{floor}")
        if "accuracy" in result["model"]:
            acc = {k: result[k]["accuracy"] for k in ("model", "copy_last", "ground_truth")}
            lines.append(f"class accuracy of the whole clip: model {acc['model']:.3f}, copy-last "
                         f"{acc['copy_last']:.3f}, ground truth {acc['ground_truth']:.3f}")
        lines.append(f"detector: {d['name']} [{d['embedding']}] ({d['identity']})")
    lines.append(f"n={result['n']} clips, {c} context -> {result['frames']} predicted frames at "
                 f"{result['resolution']}x{result['resolution']}, seed={result['seed']}; {result['dataset']}")
    return "\n".join(lines)
