"""Labelled class-folder video datasets for trying ``dvdgan train --data DIR`` on data other than
the built-in MovingShapes (its renderer is not used here: objects, textures, backgrounds and
motions are all different).

Each dataset is ``DIR/<class>/<class>_<clip:03d>.mp4`` (H.264, yuv420p, 25 fps). A class is a
pair (shape or texture) x (kind of motion); colours, textures, sizes, positions and speeds are
drawn per clip independently of the class, so neither one frame (the shape) nor the motion alone
gives the class away, and colour says nothing.

- ``bounce`` (6 classes): a textured disc / triangle / star that either bounces off the walls in
  straight lines or moves along a circle, on a noisy two-colour gradient.
- ``spin`` (8 classes): a two-tone textured triangle / cross, centred, that rotates clockwise or
  counter-clockwise, or grows or shrinks, on a smooth colour-noise background.
- ``pan`` (8 classes): a periodic textured scene (blocks and discs on colour noise) seen by a
  camera panning left / right / up / down, with a ring or a "T" held near the centre of the
  frame (the camera follows it) with a small wobble.
- ``heldout-like`` (6 classes, a different family, for use as unseen data: tune nothing on it):
  a striped or dotted square patch moving along a sinusoid, a straight line, or static while the
  whole view zooms in or out, on a flickering colour-noise background.

The rendered frames are a pure function of (seed, dataset, class, clip): the same command
renders the same frames. (The H.264 bytes are not always identical: libx264 here encoded the
same YUV input differently in about 1 clip in 10 between runs, up to ~25 grey levels apart
after decoding, even with one thread.) ``--quarter`` writes the first quarter of the clips of
each class (the same rendered clips as the first ones of the full set). Existing files are
kept, so an interrupted run can be rerun.

    PYTHONPATH=src python benchmarks/make_datasets.py --out /work/data            # all, full size
    PYTHONPATH=src python benchmarks/make_datasets.py --out /work/data --quarter  # DIR/<name>-quarter
"""

from __future__ import annotations

import argparse
import colorsys
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SS = 4  # supersampling factor of the compositor (anti-aliased edges, sub-pixel motion)

# ----------------------------------------------------------------------------------------------
# Colours, backgrounds, textures
# ----------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255


def _palette(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two background colours and two object colours; the object's hue is far from the
    background's and its brightness differs, so the object always stands out."""
    hb = rng.random()
    vb = rng.uniform(0.25, 0.55) if rng.random() < 0.5 else rng.uniform(0.7, 0.95)
    bg1 = _hsv(hb, rng.uniform(0.2, 0.7), vb)
    bg2 = _hsv(hb + rng.uniform(-0.12, 0.12), rng.uniform(0.2, 0.7), np.clip(vb + rng.uniform(-0.15, 0.15), 0, 1))
    ho = hb + rng.uniform(0.3, 0.7)
    vo = rng.uniform(0.8, 1.0) if vb < 0.6 else rng.uniform(0.15, 0.4)
    ob1 = _hsv(ho, rng.uniform(0.6, 1.0), vo)
    ob2 = _hsv(ho + rng.uniform(0.15, 0.5), rng.uniform(0.5, 1.0), np.clip(vo + rng.uniform(-0.3, 0.3), 0.1, 1))
    return bg1, bg2, ob1, ob2


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 1) -> np.ndarray:
    """float [h, w, channels] in [0, 1]: a cells x cells random grid, bicubically upsampled."""
    out = np.empty((h, w, channels), np.float32)
    for c in range(channels):
        g = Image.fromarray(rng.random((cells, cells)).astype(np.float32), mode="F")
        out[..., c] = np.asarray(g.resize((w, h), Image.BICUBIC))
    return np.clip(out, 0, 1)


def _gradient_background(rng: np.random.Generator, size: int, bg1, bg2) -> np.ndarray:
    """A linear two-colour gradient at a random angle plus static pixel noise (bounce)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a = rng.uniform(0, 2 * math.pi)
    t = np.clip(0.5 + (xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a), 0, 1)[..., None]
    img = bg1 * (1 - t) + bg2 * t
    img += rng.normal(0, rng.uniform(6, 14), (size, size, 3))
    return np.clip(img, 0, 255)


def _noise_background(rng: np.random.Generator, size: int, bg1, bg2, cells: int) -> np.ndarray:
    """Smooth colour noise between two colours, with a third random tint (spin, heldout-like)."""
    n = _smooth_noise(rng, size, size, cells, 2)
    tint = _hsv(rng.random(), 0.5, 0.8)
    img = bg1 * (1 - n[..., :1]) + bg2 * n[..., :1]
    return np.clip(img * (1 - 0.3 * n[..., 1:]) + tint * 0.3 * n[..., 1:], 0, 255)


def _texture(rng: np.random.Generator, n: int, c1, c2, kind: str | None = None) -> np.ndarray:
    """float [n, n, 3]: stripes, checks, dots or a two-tone split in colours c1 / c2."""
    kind = kind or str(rng.choice(["stripes", "checks", "dots", "split"]))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n  # the sprite spans [0, 1)
    if kind == "stripes":
        a = rng.uniform(0, math.pi)
        period = rng.uniform(0.2, 0.35)
        m = np.sin(2 * math.pi * (xx * math.cos(a) + yy * math.sin(a)) / period) > 0
    elif kind == "checks":
        k = int(rng.integers(2, 4))
        m = ((xx * k).astype(int) + (yy * k).astype(int)) % 2 == 0
    elif kind == "dots":
        k = int(rng.integers(3, 5))
        fx, fy = (xx * k) % 1 - 0.5, (yy * k) % 1 - 0.5
        m = fx * fx + fy * fy > 0.09
    else:  # split: one half of each colour, at a random angle (shows rotation)
        a = rng.uniform(0, 2 * math.pi)
        m = (xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a) > 0
    return np.where(m[..., None], np.asarray(c1, np.float32), np.asarray(c2, np.float32))


# ----------------------------------------------------------------------------------------------
# Shapes, sprites and the compositor
# ----------------------------------------------------------------------------------------------


def _star(k: int, r_in: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(2 * k):
        r = 1.0 if i % 2 == 0 else r_in
        a = -math.pi / 2 + i * math.pi / k
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _shape_mask(shape: str, n: int) -> Image.Image:
    """An ``L`` image n x n with ``shape`` centred, spanning about 95 % of it."""
    img = Image.new("L", (n, n), 0)
    d = ImageDraw.Draw(img)
    c, r = n / 2, 0.47 * n

    def poly(pts):
        d.polygon([(c + r * x, c + r * y) for x, y in pts], fill=255)

    if shape == "disc":
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)
    elif shape == "ring":
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)
        ri = 0.5 * r
        d.ellipse([c - ri, c - ri, c + ri, c + ri], fill=0)
    elif shape == "triangle":
        poly([(0.0, -1.0), (0.866, 0.5), (-0.866, 0.5)])
    elif shape == "star":
        poly(_star(5, 0.42))
    elif shape == "cross":
        w = 0.3
        arm = [(-w, -1), (w, -1), (w, -w)]  # one arm, turned four times by 90 degrees
        poly([(ax, ay) for k in range(4) for x, y in arm for ax, ay in [[(x, y), (-y, x), (-x, -y), (y, -x)][k]]])
    elif shape == "tee":
        w, top = 0.28, -0.85
        bar = top + 2 * w  # the bar's lower edge
        poly([(-1, top), (1, top), (1, bar), (w, bar), (w, 0.95), (-w, 0.95), (-w, bar), (-1, bar)])
    elif shape == "square":
        poly([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)])
    else:  # pragma: no cover - programming error
        raise ValueError(shape)
    return img


def _sprite(shape: str, texture: np.ndarray) -> Image.Image:
    """An RGBA sprite: ``texture`` (float [n, n, 3]) inside ``shape``."""
    n = texture.shape[0]
    rgba = Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8), "RGB").convert("RGBA")
    rgba.putalpha(_shape_mask(shape, n))
    return rgba


def _composite(bg: np.ndarray, sprites: list[tuple[Image.Image, float, float, float, float]]) -> np.ndarray:
    """uint8 [S, S, 3]: ``bg`` (float [S, S, 3]) with each (sprite, cx, cy, angle_deg, size_px)
    pasted at centre (cx, cy) in pixels, rotated counter-clockwise by angle (as seen on screen),
    scaled to ``size_px`` wide; rendered at SS x and box-filtered down (anti-aliased, sub-pixel)."""
    s = bg.shape[0]
    base = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB").resize((s * SS, s * SS), Image.NEAREST)
    for spr, cx, cy, angle, size_px in sprites:
        n = max(2, int(round(size_px * SS)))
        im = spr.resize((n, n), Image.BILINEAR)
        if angle:
            im = im.rotate(angle, resample=Image.BILINEAR, expand=True)
        x0, y0 = int(round(cx * SS - im.width / 2)), int(round(cy * SS - im.height / 2))
        base.paste(im, (x0, y0), im)
    return np.asarray(base.resize((s, s), Image.BOX))


# ----------------------------------------------------------------------------------------------
# The datasets
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    classes: tuple[str, ...]
    render: Callable[[np.random.Generator, str, int, int], np.ndarray]  # (rng, class, size, frames)
    clips_per_class: int
    description: str


def _bounce(rng: np.random.Generator, cls: str, size: int, frames: int) -> np.ndarray:
    shape, motion = cls.split("_")
    bg1, bg2, ob1, ob2 = _palette(rng)
    bg = _gradient_background(rng, size, bg1, bg2)
    d = rng.uniform(0.28, 0.36) * size  # object diameter
    spr = _sprite(shape, _texture(rng, 64, ob1, ob2))
    angle = rng.uniform(0, 360)  # fixed orientation: the object moves rigidly, without turning
    r = d / 2
    if motion == "bounce":  # straight lines, reflected at the walls
        speed = rng.uniform(0.04, 0.065) * size
        a = rng.uniform(0, 2 * math.pi)
        v = np.array([math.cos(a), math.sin(a)]) * speed
        p = rng.uniform(r, size - r, 2)
        path = []
        for _ in range(frames):
            path.append(p.copy())
            p = p + v
            for k in range(2):
                if p[k] < r:
                    p[k], v[k] = 2 * r - p[k], -v[k]
                elif p[k] > size - r:
                    p[k], v[k] = 2 * (size - r) - p[k], -v[k]
    else:  # circle: constant angular speed around a centre, either direction
        rad = rng.uniform(0.16, 0.24) * size
        c = size / 2 + rng.uniform(-1, 1, 2) * max(0.0, size / 2 - r - rad)
        w = rng.uniform(0.25, 0.4) * rng.choice([-1, 1])
        ph = rng.uniform(0, 2 * math.pi)
        path = [c + rad * np.array([math.cos(ph + w * t), math.sin(ph + w * t)]) for t in range(frames)]
    return np.stack([_composite(bg, [(spr, x, y, angle, d)]) for x, y in path])


def _spin(rng: np.random.Generator, cls: str, size: int, frames: int) -> np.ndarray:
    shape, motion = cls.split("_")
    bg1, bg2, ob1, ob2 = _palette(rng)
    bg = _noise_background(rng, size, bg1, bg2, int(rng.integers(3, 6)))
    kind = "split" if rng.random() < 0.5 else str(rng.choice(["stripes", "checks"]))
    spr = _sprite(shape, _texture(rng, 64, ob1, ob2, kind))
    c = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
    a0 = rng.uniform(0, 360)
    if motion in ("cw", "ccw"):
        d = rng.uniform(0.4, 0.5) * size
        w = math.degrees(rng.uniform(0.14, 0.26)) * (1 if motion == "ccw" else -1)  # PIL: + is ccw
        poses = [(a0 + w * t, d) for t in range(frames)]
    else:  # grow / shrink: exponential scaling about the centre
        rate = rng.uniform(1.045, 1.065)
        d_mid = rng.uniform(0.3, 0.38) * size
        k = 1 if motion == "grow" else -1
        poses = [(a0, d_mid * rate ** (k * (t - (frames - 1) / 2))) for t in range(frames)]
    return np.stack([_composite(bg, [(spr, c[0], c[1], a, d)]) for a, d in poses])


def _periodic_scene(rng: np.random.Generator, n: int, bg1, bg2, ob1) -> np.ndarray:
    """float [n, n, 3], periodic in both axes: blocks and discs on colour noise."""
    cells = 6  # periodic noise: a 3 x 3 tiling of one random grid, upsampled, middle tile kept
    grid = Image.fromarray(np.tile(rng.random((cells, cells)), (3, 3)).astype(np.float32), mode="F")
    g = np.clip(np.asarray(grid.resize((3 * n, 3 * n), Image.BICUBIC))[n : 2 * n, n : 2 * n, None], 0, 1)
    img = Image.fromarray(np.clip(bg1 * (1 - g) + bg2 * g, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(14, 22))):
        col = tuple(int(v) for v in _hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.95)))
        w, h = rng.uniform(0.04, 0.16, 2) * n
        x, y = rng.uniform(0, n, 2)
        disc = rng.random() < 0.4
        for ox in (-n, 0, n):  # draw each item at the 9 periodic copies
            for oy in (-n, 0, n):
                box = [x + ox, y + oy, x + ox + w, y + oy + (w if disc else h)]
                (d.ellipse if disc else d.rectangle)(box, fill=col)
    return np.asarray(img, np.float32)


def _pan(rng: np.random.Generator, cls: str, size: int, frames: int) -> np.ndarray:
    shape, motion = cls.split("_")
    bg1, bg2, ob1, ob2 = _palette(rng)
    n = 2 * size
    scene = _periodic_scene(rng, n, bg1, bg2, ob1)
    scene_ss = np.repeat(np.repeat(scene, SS, 0), SS, 1)  # sub-pixel camera positions
    direction = {"panleft": (-1, 0), "panright": (1, 0), "panup": (0, -1), "pandown": (0, 1)}[motion]
    speed = rng.uniform(0.03, 0.05) * size  # px per frame
    spr = _sprite(shape, _texture(rng, 64, ob1, ob2, str(rng.choice(["stripes", "checks", "split"]))))
    d = rng.uniform(0.32, 0.4) * size
    angle = rng.uniform(-20, 20) + (rng.uniform(0, 360) if shape == "ring" else 0)
    c = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
    amp, wob, ph = rng.uniform(0.5, 1.5), rng.uniform(0.3, 0.6), rng.uniform(0, 2 * math.pi, 2)
    x0, y0 = rng.uniform(0, n, 2)
    out = []
    idx = np.arange(size * SS)
    for t in range(frames):
        # the camera moves by +speed: the scene moves the other way on screen
        ox = int(round((x0 + direction[0] * speed * t) * SS)) % (n * SS)
        oy = int(round((y0 + direction[1] * speed * t) * SS)) % (n * SS)
        view = scene_ss[np.ix_((oy + idx) % (n * SS), (ox + idx) % (n * SS))]
        bg = view.reshape(size, SS, size, SS, 3).mean(axis=(1, 3))
        cx = c[0] + amp * math.sin(wob * t + ph[0])
        cy = c[1] + amp * math.sin(wob * t + ph[1])
        out.append(_composite(bg, [(spr, cx, cy, angle, d)]))
    return np.stack(out)


def _heldout(rng: np.random.Generator, cls: str, size: int, frames: int) -> np.ndarray:
    tex, motion = cls.split("_")
    bg1, bg2, ob1, ob2 = _palette(rng)
    bg = _noise_background(rng, size, bg1, bg2, int(rng.integers(4, 8)))
    p = rng.uniform(0.28, 0.34) * size  # patch side
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32) / 64
    if tex == "stripes":
        a = rng.uniform(0, math.pi)
        m = np.sin(2 * math.pi * (xx * math.cos(a) + yy * math.sin(a)) * rng.uniform(2.0, 2.6)) > 0
    else:
        k = rng.uniform(2.2, 2.8)
        fx, fy = (xx * k) % 1 - 0.5, (yy * k) % 1 - 0.5
        m = fx * fx + fy * fy < 0.09
    patch = np.where(m[..., None], ob1, ob2)
    patch[:3], patch[-3:], patch[:, :3], patch[:, -3:] = ob1, ob1, ob1, ob1  # a thin frame
    spr = _sprite("square", patch)
    q = 0.8 * p  # the square mask spans 80 % of the sprite
    lo, hi = q / 2 + 1, size - q / 2 - 1
    t = np.arange(frames, dtype=np.float64)
    span = frames - 1
    if motion == "sine":  # along a sinusoid, left-right or right-left
        vx = rng.uniform(0.6, 1.0) * (hi - lo) / span * rng.choice([-1, 1])
        x = (lo + hi) / 2 + vx * (t - span / 2)
        amp = rng.uniform(0.12, 0.18) * size
        y = rng.uniform(lo + amp, hi - amp) + amp * np.sin(rng.uniform(0.45, 0.7) * t + rng.uniform(0, 2 * math.pi))
        zoom = np.ones(frames)
    elif motion == "line":  # a straight line in any direction
        a = rng.uniform(0, 2 * math.pi)
        L = rng.uniform(0.6, 1.0) * (hi - lo)
        dx, dy = L * math.cos(a), L * math.sin(a)
        sx = rng.uniform(lo + max(0, -dx), hi - max(0, dx))
        sy = rng.uniform(lo + max(0, -dy), hi - max(0, dy))
        x, y = sx + dx * t / span, sy + dy * t / span
        zoom = np.ones(frames)
    else:  # zoom: the patch stays, the whole view zooms in or out about the patch
        x = np.full(frames, rng.uniform(size * 0.4, size * 0.6))
        y = np.full(frames, rng.uniform(size * 0.4, size * 0.6))
        steps = t if rng.random() < 0.5 else span - t  # zoom in or zoom out
        zoom = rng.uniform(1.025, 1.035) ** steps
    gain = 1 + 0.04 * np.sin(rng.uniform(0.5, 1.5) * t + rng.uniform(0, 6))  # light flicker
    out = []
    for i in range(frames):
        f = _composite(bg, [(spr, x[i], y[i], 0.0, p)])
        if zoom[i] != 1:
            im = Image.fromarray(f)
            z = zoom[i]  # >= 1: the view never shows a border
            cx, cy = x[i], y[i]
            box = (cx - cx / z, cy - cy / z, cx + (size - cx) / z, cy + (size - cy) / z)
            f = np.asarray(im.resize((size, size), Image.BILINEAR, box=box))
        out.append(np.clip(f * gain[i], 0, 255).astype(np.uint8))
    return np.stack(out)


FAMILIES: dict[str, Family] = {
    "bounce": Family(
        tuple(f"{s}_{m}" for s in ("disc", "triangle", "star") for m in ("bounce", "circle")),
        _bounce,
        80,
        "textured disc/triangle/star bouncing off the walls or circling, on a noisy gradient",
    ),
    "spin": Family(
        tuple(f"{s}_{m}" for s in ("triangle", "cross") for m in ("cw", "ccw", "grow", "shrink")),
        _spin,
        80,
        "two-tone triangle/cross rotating cw/ccw or growing/shrinking, on smooth colour noise",
    ),
    "pan": Family(
        tuple(f"{s}_{m}" for s in ("ring", "tee") for m in ("panleft", "panright", "panup", "pandown")),
        _pan,
        80,
        "camera panning over a periodic block scene, a ring or T held near the centre",
    ),
    "heldout-like": Family(
        tuple(f"{s}_{m}" for s in ("stripes", "dots") for m in ("sine", "line", "zoom")),
        _heldout,
        60,
        "striped/dotted square patch on a sinusoid, a straight line, or in a zooming view",
    ),
}


def clip_seed(seed: int, family: str, cls_index: int, clip: int) -> np.random.Generator:
    """The generator of one clip: a pure function of (seed, family, class, clip)."""
    fam = sum((i + 1) * ord(ch) for i, ch in enumerate(family))
    return np.random.default_rng(np.random.SeedSequence([seed, fam, cls_index, clip]))


def render(family: str, cls_index: int, clip: int, *, size: int = 64, frames: int = 24, seed: int = 0) -> np.ndarray:
    """uint8 [frames, size, size, 3] of clip ``clip`` of class ``cls_index`` of ``family``."""
    fam = FAMILIES[family]
    return fam.render(clip_seed(seed, family, cls_index, clip), fam.classes[cls_index], size, frames)


def write_dataset(
    family: str,
    out: str | os.PathLike,
    *,
    clips_per_class: int | None = None,
    size: int = 64,
    frames: int = 24,
    seed: int = 0,
    crf: int = 18,
) -> dict:
    """Write ``out/<class>/<class>_<clip:03d>.mp4`` for every class; returns a summary."""
    from dvdgan.data.video import encode_video

    fam = FAMILIES[family]
    n = fam.clips_per_class if clips_per_class is None else clips_per_class
    out = Path(out)
    written = 0
    for ci, cls in enumerate(fam.classes):
        for j in range(n):
            p = out / cls / f"{cls}_{j:03d}.mp4"
            if p.exists() and p.stat().st_size > 0:
                continue
            video = render(family, ci, j, size=size, frames=frames, seed=seed)
            tmp = p.with_name(f".{p.stem}.tmp{os.getpid()}.mp4")  # hidden: never listed
            encode_video(tmp, video, "h264", fps=25, options={"crf": str(crf)})
            os.replace(tmp, p)
            written += 1
    nbytes = sum(f.stat().st_size for f in out.rglob("*.mp4"))
    return {"dataset": family, "path": str(out), "classes": list(fam.classes), "clips_per_class": n,
            "clips": n * len(fam.classes), "written": written, "bytes": nbytes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="parent folder: each dataset goes to OUT/<name>[-quarter]")
    p.add_argument("--which", default="all", help=f"comma-separated names or 'all' ({', '.join(FAMILIES)})")
    p.add_argument("--clips-per-class", type=int, default=None, help="default: 80 (heldout-like: 60)")
    p.add_argument("--size", type=int, default=64, help="frame side in pixels (default 64)")
    p.add_argument("--frames", type=int, default=24, help="frames per clip (default 24)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quarter", action="store_true", help="a quarter of the clips per class, into OUT/<name>-quarter")
    args = p.parse_args(argv)
    names = list(FAMILIES) if args.which == "all" else [s.strip() for s in args.which.split(",") if s.strip()]
    unknown = [s for s in names if s not in FAMILIES]
    if unknown:
        p.error(f"unknown dataset {unknown[0]!r} (one of {', '.join(FAMILIES)})")
    if args.size < 16 or args.size % 2 or args.frames < 2:
        p.error("--size must be even and >= 16, --frames >= 2")
    for name in names:
        n = args.clips_per_class or FAMILIES[name].clips_per_class
        if args.quarter:
            n = max(1, n // 4)
        dest = Path(args.out) / (name + ("-quarter" if args.quarter else ""))
        t0 = time.perf_counter()
        s = write_dataset(name, dest, clips_per_class=n, size=args.size, frames=args.frames, seed=args.seed)
        print(f"{name}: {s['clips']} clips ({len(s['classes'])} classes x {n}) {args.frames}x{args.size}x{args.size} "
              f"-> {dest} ({s['bytes'] / 1e6:.1f} MB, {s['written']} written, {time.perf_counter() - t0:.0f} s); "
              f"classes: {', '.join(s['classes'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
