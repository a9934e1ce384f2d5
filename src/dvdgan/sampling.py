"""Sampling from a trained DVD-GAN: load a generator, draw videos with truncation (4.1.1),
interpolate in z and in the class embedding (E.2), and write grids people look at (E.1).

    from dvdgan.sampling import generate, interpolate_class, write_samples
    videos = generate("runs/shapes", classes=["square-rightward"], n=4, truncation=0.6)  # dvdgan.generate
    # videos: uint8 [4, T, H, W, 3]

    from dvdgan.sampling import load_generator, sample
    G, cfg = load_generator("runs/shapes")            # EMA weights by default (B.3)
    videos, labels = sample(G, cfg, classes=[0, 1], n=8, truncation=0.5, seed=0)
    strip = interpolate_class("runs/shapes", "square-rightward", "cross-rightward", steps=8)  # [8, T, H, W, 3]
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dvdgan import checkpoint as ckpt_io
from dvdgan.config import Config, ModelConfig
from dvdgan.data.transforms import to_uint8
from dvdgan.errors import DvdganError
from dvdgan.models.prediction import build_generator, full_video


def load_generator(path: str | Path, ema: bool = True, device: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, Config]:
    """A checkpoint directory, its model.safetensors, or a run directory (newest checkpoint).
    ``ema=False`` loads the trained (raw) generator instead of its moving average."""
    ckpt = ckpt_io.resolve_checkpoint(path)
    prefix = "generator_ema" if ema else "generator"
    cfg = ckpt_io.load_checkpoint_config(ckpt, (prefix,))  # checked against the weights' shapes first
    g = build_generator(cfg.model)
    ckpt_io.load_module(g, ckpt, prefix)
    return g.to(device).eval(), cfg


def sample_z(n: int, dim: int, truncation: float, generator: torch.Generator, mode: str = "scale") -> torch.Tensor:
    """z ~ N(0, truncation^2 I) (4.1.1: "varying the standard deviation of z between 0 and 1"),
    or BigGAN-style ``mode="resample"``: N(0, I) with entries beyond +-truncation redrawn."""
    if not 0.0 <= truncation <= 1.0 and mode == "scale":
        raise DvdganError(f"truncation must be in [0, 1], got {truncation}")
    if mode == "scale":
        return torch.randn(n, dim, generator=generator) * truncation
    if mode == "resample":
        if truncation <= 0:
            raise DvdganError("resampling truncation needs a threshold > 0")
        z = torch.randn(n, dim, generator=generator)
        bad = z.abs() > truncation
        while bad.any():
            z[bad] = torch.randn(int(bad.sum()), generator=generator)
            bad = z.abs() > truncation
        return z
    raise DvdganError(f"unknown truncation mode {mode!r} (scale or resample)")


@torch.no_grad()
def sample(generator: nn.Module, config: Config, classes: list[int] | None = None, n: int = 16,
             truncation: float = 1.0, seed: int = 0, batch_size: int = 16, context: torch.Tensor | None = None,
             truncation_mode: str = "scale", z: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n`` videos -> (uint8 [n, T, H, W, 3], labels [n]).

    ``classes``: the class of each sample, cycled (None = uniformly drawn). Deterministic for a
    seed, and batched so any n fits in memory. For prediction models pass ``context`` (float
    [n, C, 3, H, W] in [-1, 1]); the output then holds context + predicted frames.
    """
    m = config.model
    labels, z = _draw_inputs(m, classes, n, truncation, seed, truncation_mode, z)
    if m.context_frames and context is None:
        raise DvdganError("this is a prediction (FP) model: it needs context frames")
    device = next(generator.parameters()).device
    generator.eval()
    out = []
    for i in range(0, n, batch_size):
        zb, yb = z[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
        cb = context[i:i + batch_size].to(device) if m.context_frames else None
        video = full_video(generator, zb, yb, cb)
        out.append(to_uint8(video.float().cpu()))
    return torch.cat(out), labels


def _draw_inputs(m: ModelConfig, classes: Sequence[int] | None, n: int, truncation: float, seed: int,
                 truncation_mode: str = "scale", z: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels [n], z [n, z_dim]) exactly as :func:`sample` draws them for a seed."""
    gen = torch.Generator().manual_seed(seed)
    if classes is None:
        labels = torch.randint(m.num_classes, (n,), generator=gen)
    else:
        bad = [c for c in classes if not 0 <= int(c) < m.num_classes]
        if bad:
            raise DvdganError(f"class {bad[0]} is out of range: the model has {m.num_classes} classes")
        labels = torch.tensor([int(classes[i % len(classes)]) for i in range(n)], dtype=torch.long)
    if z is None:
        z = sample_z(n, m.z_dim, truncation, gen, truncation_mode)
    return labels, z


# --------------------------------------------------------------------------------------------
# Class names and ids
# --------------------------------------------------------------------------------------------


def class_names_for(config: Config) -> list[str]:
    """Names of the model's classes: the built-in dataset's, else the dataset's own when its path
    exists on this machine, else ``class0``, ``class1``, ..."""
    n = config.model.num_classes
    names: list[str] | None = None
    data = config.data
    if data.dataset == "shapes":
        from dvdgan.data.shapes import shapes_class_names

        names = shapes_class_names()
    elif data.path and Path(data.path).expanduser().exists():
        try:
            from dvdgan.data import build_dataset

            ds = build_dataset(data, split="train", frames=config.model.frames, resolution=config.model.resolution)
            names = [str(x) for x in ds.class_names]
        except Exception:  # noqa: BLE001 - names are a nicety; any failure falls back to ids
            names = None
    if names is None or len(names) != n:
        return [f"class{i}" for i in range(n)]
    return names


def _norm_name(s: str) -> str:
    return re.sub(r"[\s_\-]+", " ", s.strip().lower())


def resolve_classes(specs: Sequence[int | str], class_names: Sequence[str] | None, num_classes: int) -> list[int]:
    """Class ids from ids or names (``"3"``, ``"square-rightward"``, comma-separated lists too).
    Names match exactly, then ignoring case and ``-``/``_``/space differences."""
    names = list(class_names) if class_names is not None else [f"class{i}" for i in range(num_classes)]
    exact = {name: i for i, name in enumerate(names)}
    loose = {_norm_name(name): i for i, name in enumerate(names)}
    tokens: list[int | str] = []
    for spec in specs:
        if isinstance(spec, str):
            tokens += [t.strip() for t in spec.split(",") if t.strip()]
        else:
            tokens.append(spec)
    if not tokens:
        raise DvdganError("no classes given")
    out = []
    for t in tokens:
        if isinstance(t, str) and re.fullmatch(r"[+-]?\d+", t):
            t = int(t)
        if isinstance(t, str):
            i = exact.get(t, loose.get(_norm_name(t)))
            if i is None:
                shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                raise DvdganError(f"unknown class {t!r} (classes: {shown})")
            out.append(i)
        else:
            if not 0 <= int(t) < num_classes:
                raise DvdganError(f"class {int(t)} is out of range: the model has {num_classes} classes "
                                  f"(ids 0 to {num_classes - 1})")
            out.append(int(t))
    return out


def _safe(name: str) -> str:
    """A class name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_.") or "x"


# --------------------------------------------------------------------------------------------
# Generating from a checkpoint, with a progress bar
# --------------------------------------------------------------------------------------------

Source = str | Path | nn.Module | tuple


def _as_generator(source, ema: bool = True, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """A checkpoint path, a ``(generator, config)`` pair, or a generator (its ``cfg``)."""
    if isinstance(source, (str, Path)):
        g, cfg = load_generator(source, ema=ema, device=device)
    elif isinstance(source, tuple) and len(source) == 2:
        g, cfg = source
        if isinstance(cfg, ModelConfig):
            cfg = Config(model=cfg)
    elif isinstance(source, nn.Module) and isinstance(getattr(source, "cfg", None), ModelConfig):
        g, cfg = source, Config(model=source.cfg)
    else:
        raise DvdganError("pass a checkpoint path, a generator, or a (generator, config) pair")
    if cfg.model.context_frames:
        raise DvdganError("this is a prediction (DVD-GAN-FP) checkpoint: it continues real videos, "
                          "use `dvdgan predict` (or dvdgan.prediction) instead")
    return g, cfg


def _class_ids(source, cfg: Config, specs: Sequence[int | str]) -> list[int]:
    """resolve_classes, looking names up (the dataset's, when the config knows it) only if needed."""
    by_name = any(isinstance(s, str) and not re.fullmatch(r"[\s,+\-\d]*", s) for s in specs)
    names = class_names_for(cfg) if by_name and isinstance(source, (str, Path, tuple)) else None
    return resolve_classes(specs, names, cfg.model.num_classes)


def _check_n(n: int, what: str = "n") -> None:
    if int(n) < 1:
        raise DvdganError(f"{what} must be >= 1, got {n}")


@torch.no_grad()
def _run(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor, batch_size: int,
         embedding: torch.Tensor | None = None, progress: bool = False, desc: str = "sample"
         ) -> Iterator[torch.Tensor]:
    """Yield uint8 [b, T, H, W, 3] batch by batch; ``embedding`` [n, embed_dim] replaces e(y)."""
    device = next(generator.parameters()).device
    generator.eval()
    n = len(z)
    bar = None
    if progress and n > batch_size:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="video", leave=False)
    try:
        for i in range(0, n, batch_size):
            zb, yb = z[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
            if embedding is None:
                video = generator(zb, yb)
            else:
                video = generator(zb, class_embedding=embedding[i:i + batch_size].to(device, zb.dtype))
            if bar is not None:
                bar.update(len(zb))
            yield to_uint8(video.float().cpu())
    finally:
        if bar is not None:
            bar.close()


def generate_from_embedding(generator: nn.Module, z: torch.Tensor, embedding: torch.Tensor,
                            batch_size: int = 16, progress: bool = False) -> torch.Tensor:
    """Run a synthesis generator with a given conditioning embedding instead of e(y):
    z [n, z_dim], embedding [n, embed_dim] -> uint8 [n, T, H, W, 3]."""
    if embedding.shape != (len(z), generator.embed.embedding_dim):
        raise DvdganError(f"embedding must be [{len(z)}, {generator.embed.embedding_dim}], "
                          f"got {list(embedding.shape)}")
    labels = torch.zeros(len(z), dtype=torch.long)
    return torch.cat(list(_run(generator, z, labels, batch_size, embedding, progress)))


def iter_samples(generator: nn.Module, config: Config, classes: Sequence[int] | None = None, n: int = 16,
                 truncation: float = 1.0, seed: int = 0, batch_size: int = 16, truncation_mode: str = "scale",
                 progress: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`sample` batch by batch: yields (uint8 [b, T, H, W, 3], labels [b]) with the same
    z and labels as ``sample`` for the seed, so any n can be written out without holding it."""
    _check_n(n)
    if batch_size < 1:
        raise DvdganError(f"batch size must be >= 1, got {batch_size}")
    labels, z = _draw_inputs(config.model, classes, n, truncation, seed, truncation_mode)
    for i, videos in enumerate(_run(generator, z, labels, batch_size, progress=progress)):
        yield videos, labels[i * batch_size:i * batch_size + len(videos)]


def generate(checkpoint, classes: Sequence[int | str] | None = None, n: int = 16,
                             truncation: float = 1.0, seed: int = 0, ema: bool = True,
                             device: str | torch.device = "cpu", batch_size: int = 16,
                             truncation_mode: str = "scale", progress: bool = False) -> torch.Tensor:
    """``dvdgan.generate``: n videos, uint8 [n, T, H, W, 3].

    ``checkpoint``: a checkpoint / run directory or model.safetensors (EMA weights unless
    ``ema=False``), a generator, or a ``(generator, config)`` pair. ``classes``: ids or names,
    cycled over the n samples (None = drawn at random). ``truncation``: the standard deviation
    of z in [0, 1] (4.1.1), or with ``truncation_mode="resample"`` BigGAN's threshold.
    Deterministic for a seed; the same pixels as ``sample(G, cfg, ...)``.
    """
    g, cfg = _as_generator(checkpoint, ema, device)
    ids = None if classes is None else _class_ids(checkpoint, cfg, classes)
    return torch.cat([v for v, _ in iter_samples(g, cfg, ids, n, truncation, seed, batch_size, truncation_mode,
                                                  progress)])


def _lerp_weights(steps: int) -> torch.Tensor:
    if int(steps) < 2:
        raise DvdganError(f"an interpolation needs at least 2 steps, got {steps}")
    return torch.linspace(0, 1, int(steps))


def interpolate_latent(checkpoint, class_id: int | str = 0, steps: int = 8, truncation: float = 1.0, seed: int = 0,
                       ema: bool = True, device: str | torch.device = "cpu", batch_size: int = 16,
                       truncation_mode: str = "scale") -> torch.Tensor:
    """Intra-class interpolation (Figure 15): two z drawn for the seed, linearly interpolated in
    ``steps`` steps (both ends included), one class -> uint8 [steps, T, H, W, 3]."""
    g, cfg = _as_generator(checkpoint, ema, device)
    (cls,) = _class_ids(checkpoint, cfg, [class_id])
    w = _lerp_weights(steps)
    z = sample_z(2, cfg.model.z_dim, truncation, torch.Generator().manual_seed(seed), truncation_mode)
    zs = torch.lerp(z[:1].expand(len(w), -1), z[1:].expand(len(w), -1), w[:, None])
    labels = torch.full((len(w),), cls, dtype=torch.long)
    return torch.cat(list(_run(g, zs, labels, batch_size)))


@torch.no_grad()
def interpolate_class(checkpoint, class_a: int | str, class_b: int | str, steps: int = 8, truncation: float = 1.0,
                      seed: int = 0, ema: bool = True, device: str | torch.device = "cpu", batch_size: int = 16,
                      truncation_mode: str = "scale") -> torch.Tensor:
    """Class interpolation (Figure 16): one z drawn for the seed, the class embedding moved
    linearly from e(a) to e(b) in ``steps`` steps -> uint8 [steps, T, H, W, 3]. The ends equal
    ordinary samples of classes a and b with that z."""
    g, cfg = _as_generator(checkpoint, ema, device)
    a, b = _class_ids(checkpoint, cfg, [class_a, class_b])
    w = _lerp_weights(steps)
    z = sample_z(1, cfg.model.z_dim, truncation, torch.Generator().manual_seed(seed), truncation_mode)
    e = g.embed.weight.detach().float().cpu()
    emb = torch.lerp(e[a].expand(len(w), -1), e[b].expand(len(w), -1), w[:, None])
    return generate_from_embedding(g, z.expand(len(w), -1).contiguous(), emb, batch_size)


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def grid_rows(labels: Sequence[int] | torch.Tensor | None, n: int, by_class: bool = True,
              ncol: int | None = None) -> list[list[int]]:
    """Sample indices per grid row: one row per class (order of first appearance) when
    ``by_class``, else rows of ``ncol`` samples in order (default: a near-square grid)."""
    if by_class and labels is not None:
        rows: dict[int, list[int]] = {}
        for i, y in enumerate([int(y) for y in labels][:n]):
            rows.setdefault(y, []).append(i)
        return list(rows.values())
    ncol = ncol or math.ceil(math.sqrt(n))
    return [list(range(i, min(i + ncol, n))) for i in range(0, n, ncol)]


def write_each(videos, labels, out_dir: str | Path, class_names: Sequence[str] | None = None, fps: float = 8.0,
               scale: int | None = None, start: int = 0) -> list[Path]:
    """Every video as its own MP4: ``sample_<index>[_<class name>].mp4`` (index from ``start``);
    ``scale`` None = :func:`dvdgan.video_io.legible_scale`."""
    from dvdgan import video_io as vio

    out = Path(out_dir)
    paths = []
    for j, video in enumerate(videos):
        name = f"sample_{start + j:05d}"
        if labels is not None and class_names is not None:
            name += f"_{_safe(class_names[int(labels[j])])}"
        path = out / f"{name}.mp4"
        vio.save_mp4(path, video, fps=fps, scale=scale or vio.legible_scale(video.shape[1]))
        paths.append(path)
    return paths


def write_samples(videos, labels, out_dir: str | Path, class_names: Sequence[str] | None = None, fps: float = 8.0,
                  scale: int | None = None, each: bool = False, by_class: bool = True, ncol: int | None = None,
                  pad: int = 1, caption: str | None = None) -> dict[str, Path]:
    """Write uint8 videos [N, T, H, W, 3] (labels [N] or None) to ``out_dir``:

    - ``grid[_<class>].mp4`` / ``.gif``: the sample grid, one row per class when ``by_class``
      (else rows of samples in seed order), labelled with ``class_names`` on the left, with
      ``caption`` above (:func:`dvdgan.video_io.labelled_grid`);
    - ``first_frames[_<class>].png``: the grid's first frame (Figures 4, 10-14);
    - ``frames_00000[_<class>].png``: every frame of the first sample in raster order (Figure 5);
    - with ``each``, ``sample_<i>[_<class>].mp4`` per video.

    ``scale``: nearest-neighbour upscaling (None = :func:`dvdgan.video_io.legible_scale`, at
    least 128 px per video). Returns {kind: path}.
    """
    from dvdgan import video_io as vio

    v = videos.numpy() if isinstance(videos, torch.Tensor) else np.asarray(videos)
    if v.ndim != 5 or v.shape[-1] != 3 or len(v) == 0:
        raise DvdganError(f"expected uint8 videos [N, T, H, W, 3], got shape {list(v.shape)}")
    scale = scale or vio.legible_scale(v.shape[2])
    n = len(v)
    ys = None if labels is None else [int(y) for y in labels]
    named = ys is not None and class_names is not None
    single = named and len(set(ys)) == 1
    suffix = f"_{_safe(class_names[ys[0]])}" if single else ""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    rows = grid_rows(ys, n, by_class and ys is not None, ncol)
    row_labels = [class_names[ys[r[0]]] for r in rows] if named and by_class else None
    grid = vio.labelled_grid(v, row_labels, rows, scale=scale, pad=pad, caption=caption)
    paths = {"grid_mp4": out / f"grid{suffix}.mp4", "grid_gif": out / f"grid{suffix}.gif",
             "first_frames": out / f"first_frames{suffix}.png"}
    vio.save_mp4(paths["grid_mp4"], grid, fps=fps)
    vio.save_gif(paths["grid_gif"], grid, fps=fps)
    vio.save_png(paths["first_frames"], grid[0])

    first = f"_{_safe(class_names[ys[0]])}" if named else ""
    image = vio.upscale(vio.frames_image(v[0], pad=pad), scale)
    if named:
        image = vio.add_caption(image, class_names[ys[0]])
    paths["frames"] = out / f"frames_00000{first}.png"
    vio.save_png(paths["frames"], image)
    if each:
        for i, p in enumerate(write_each(v, ys, out, class_names, fps, scale)):
            paths[f"sample_{i}"] = p
    return paths


def write_interpolation(videos, out_dir: str | Path, name: str, caption: str | None = None, fps: float = 8.0,
                        scale: int | None = None, pad: int = 1) -> dict[str, Path]:
    """Write an interpolation uint8 [K, T, H, W, 3]: ``<name>.mp4`` / ``.gif`` (the K videos side
    by side) and ``<name>.png`` (time on the vertical axis: rows = frames, columns = steps, with
    axis labels: the interpolation weight above each column, the frame number left of each row)."""
    from dvdgan import video_io as vio

    v = videos.numpy() if isinstance(videos, torch.Tensor) else np.asarray(videos)
    scale = scale or vio.legible_scale(v.shape[2])
    k, t, h, w = v.shape[:4]
    out = Path(out_dir)
    strip = vio.labelled_grid(v, rows=[list(range(k))], scale=scale, pad=pad, caption=caption)
    image = vio.upscale(vio.time_image(v, pad=pad), scale)
    weights = [f"{x:.2g}" for x in np.linspace(0, 1, k)]
    image = vio.add_axes(image, "interpolation step (weight of the second end) ->", "time (frame) ->",
                         weights, [str(i) for i in range(t)], ((h + pad) * scale, (w + pad) * scale), pad * scale)
    if caption:
        image = vio.add_caption(image, caption)
    paths = {"mp4": out / f"{name}.mp4", "gif": out / f"{name}.gif", "png": out / f"{name}.png"}
    vio.save_mp4(paths["mp4"], strip, fps=fps)
    vio.save_gif(paths["gif"], strip, fps=fps)
    vio.save_png(paths["png"], image)
    return paths
