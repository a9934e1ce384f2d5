"""Writing videos people look at: grids, MP4 (PyAV), animated GIF and PNG (Pillow)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image


def _np(video) -> np.ndarray:
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    video = np.asarray(video)
    if video.dtype != np.uint8:
        raise TypeError(f"expected uint8 frames, got {video.dtype}")
    return video


def make_grid(videos, nrow: int | None = None, pad: int = 1, pad_value: int = 0) -> np.ndarray:
    """uint8 [N, T, H, W, 3] -> one uint8 video [T, H', W', 3] with ``nrow`` videos per row."""
    v = _np(videos)
    n, t, h, w, c = v.shape
    ncol = nrow or int(np.ceil(np.sqrt(n)))
    nr = int(np.ceil(n / ncol))
    out = np.full((t, nr * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[:, y:y + h, x:x + w] = v[i]
    return out


def _atomic_write(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written file left behind (disk full, ...)
        raise


def gif_bytes(video, fps: float = 8.0, scale: int = 1) -> bytes:
    """uint8 [T, H, W, 3] -> an animated GIF that loops forever."""
    v = _np(video)
    frames = [Image.fromarray(f) for f in v]
    if scale > 1:
        frames = [f.resize((f.width * scale, f.height * scale), Image.NEAREST) for f in frames]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=int(round(1000 / fps)),
                   loop=0, optimize=False)
    return buf.getvalue()


def save_gif(path: str | Path, video, fps: float = 8.0, scale: int = 1) -> None:
    _atomic_write(path, gif_bytes(video, fps, scale))


def save_png(path: str | Path, image, scale: int = 1) -> None:
    """uint8 [H, W, 3] -> PNG."""
    img = Image.fromarray(_np(image))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    _atomic_write(path, buf.getvalue())


def save_mp4(path: str | Path, video, fps: float = 8.0, scale: int = 1, crf: int = 18) -> None:
    """uint8 [T, H, W, 3] -> H.264 MP4 (yuv420p; sizes padded to even numbers)."""
    v = _np(video)
    if scale > 1:
        v = v.repeat(scale, axis=1).repeat(scale, axis=2)
    t, h, w, _ = v.shape
    if h % 2 or w % 2:
        v = np.pad(v, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        h, w = v.shape[1:3]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        with av.open(str(tmp), mode="w") as container:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream = container.add_stream(codec, rate=int(round(fps)))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            if stream.codec_context.name == "libx264":
                stream.options = {"crf": str(crf)}
            for frame in v:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written file left behind (disk full, ...)
        raise


# --------------------------------------------------------------------------------------------
# Layouts of the paper's figures and captions
# --------------------------------------------------------------------------------------------


def upscale(video, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of uint8 [..., H, W, 3] by an integer factor."""
    v = _np(video)
    if scale <= 1:
        return v
    return v.repeat(scale, axis=-3).repeat(scale, axis=-2)


def make_row_grid(videos, rows: list[list[int]], pad: int = 1, pad_value: int = 0) -> np.ndarray:
    """uint8 [N, T, H, W, 3] -> one video [T, H', W', 3] whose row r holds the videos ``rows[r]``
    (indices into ``videos``) left to right; short rows are filled with ``pad_value``."""
    v = _np(videos)
    ncol = max(len(r) for r in rows)
    cells = np.full((len(rows) * ncol,) + v.shape[1:], pad_value, np.uint8)
    for r, idx in enumerate(rows):
        for q, i in enumerate(idx):
            cells[r * ncol + q] = v[i]
    return make_grid(cells, nrow=ncol, pad=pad, pad_value=pad_value)


def frames_image(video, ncol: int | None = None, pad: int = 1, pad_value: int = 0) -> np.ndarray:
    """All frames of one video uint8 [T, H, W, 3] in raster-scan order -> one image (Figure 5).
    Default columns: the divisor of T nearest above sqrt(T) (48 frames -> 8 x 6)."""
    v = _np(video)
    t = v.shape[0]
    if ncol is None:
        divisors = [d for d in range(int(np.ceil(np.sqrt(t))), t) if t % d == 0]
        ncol = divisors[0] if divisors else int(np.ceil(np.sqrt(t)))
    return make_grid(v[:, None], nrow=ncol, pad=pad, pad_value=pad_value)[0]


def time_image(videos, pad: int = 1, pad_value: int = 0) -> np.ndarray:
    """uint8 [K, T, H, W, 3] -> one image with time on the vertical axis: row t holds frame t of
    the K videos, left to right (Figures 15 and 16)."""
    v = _np(videos)
    k, t = v.shape[:2]
    cells = np.ascontiguousarray(v.swapaxes(0, 1)).reshape((t * k, 1) + v.shape[2:])
    return make_grid(cells, nrow=k, pad=pad, pad_value=pad_value)[0]


DEFAULT_FPS = 8.0  # sample, predict, training samples and the explorer
LEGIBLE_PX = 128  # default tile size: a 32x32 video is shown 4x, a 16x16 one 8x
FONT_PX = 14


def legible_scale(resolution: int, target: int = LEGIBLE_PX) -> int:
    """The integer nearest-neighbour factor that makes a ``resolution`` video at least ``target``
    pixels wide (1 for videos already that large): the default ``--scale`` of sample and predict."""
    return max(1, -(-int(target) // max(1, int(resolution))))


def _font(size: int = FONT_PX):
    """DejaVu Sans (shipped with matplotlib) at ``size`` px; Pillow's bitmap font if it is absent."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), size)
    except Exception:  # noqa: BLE001 - any font problem: the built-in bitmap font still reads
        return ImageFont.load_default()


def _text_size(draw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _render_strip(texts: list[str], spans: list[tuple[int, int]], height: int, width: int | None,
                  vertical: bool, margin: int = 3) -> np.ndarray:
    """A black strip with white ``texts``, each centred across its span (pixels along the strip)."""
    from PIL import ImageDraw

    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sizes = [_text_size(probe, t, font) for t in texts]
    if vertical:  # labels for rows: a strip on the left, its length = image height
        w = max((s[0] for s in sizes), default=0) + 2 * margin
        img = Image.new("RGB", (w, height))
    else:  # a caption across the top
        h = max((s[1] for s in sizes), default=0) + 2 * margin + 2
        img = Image.new("RGB", (width, h))
    draw = ImageDraw.Draw(img)
    for text, (a, b), (tw, th) in zip(texts, spans, sizes):
        if vertical:
            xy = (margin, a + max(0, (b - a - th) // 2))
        else:
            xy = (a + max(margin, (b - a - tw) // 2), margin)
        left, top, _, _ = draw.textbbox((0, 0), text, font=font)
        draw.text((xy[0] - left, xy[1] - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def add_row_labels(video, labels: list[str], row_height: int, pad: int = 0) -> np.ndarray:
    """Prepend a label strip (Pillow's default font) to the left of a grid video [T, H, W, 3] or
    image [H, W, 3] whose rows are ``row_height`` pixels high after ``pad`` pixels of border."""
    v = _np(video)
    h = v.shape[-3]
    spans = [(pad + i * row_height, pad + (i + 1) * row_height) for i in range(len(labels))]
    strip = _render_strip(labels, spans, h, None, vertical=True)
    strip = np.broadcast_to(strip, v.shape[:-3] + strip.shape)
    return np.concatenate([strip, v], axis=-2)


def add_caption(video, text: str) -> np.ndarray:
    """Prepend a one-line caption strip above a video [T, H, W, 3] or image [H, W, 3]."""
    from PIL import ImageDraw

    v = _np(video)
    need = _text_size(ImageDraw.Draw(Image.new("RGB", (1, 1))), text, _font())[0] + 6
    if need > v.shape[-2]:  # widen (black on the right) so the caption is not cut off
        widths = [(0, 0)] * (v.ndim - 2) + [(0, need - v.shape[-2]), (0, 0)]
        v = np.pad(v, widths)
    w = v.shape[-2]
    strip = _render_strip([text], [(0, w)], 0, w, vertical=False)
    strip = np.broadcast_to(strip, v.shape[:-3] + strip.shape)
    return np.concatenate([strip, v], axis=-3)


def add_legend(video, items: list[tuple[str, tuple[int, int, int]]], margin: int = 4) -> np.ndarray:
    """Append a legend strip below a video [T, H, W, 3] or image [H, W, 3]: a coloured square and
    its meaning per item, e.g. [("context", green), ("prediction", red)]."""
    from PIL import ImageDraw

    v = _np(video)
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sizes = [_text_size(probe, text, font) for text, _ in items]
    box = max((h for _, h in sizes), default=10)
    need = sum(box + 4 + w + 3 * margin for w, _ in sizes) + margin
    if need > v.shape[-2]:
        v = np.pad(v, [(0, 0)] * (v.ndim - 2) + [(0, need - v.shape[-2]), (0, 0)])
    img = Image.new("RGB", (v.shape[-2], box + 2 * margin))
    draw = ImageDraw.Draw(img)
    x = margin
    for (text, colour), (w, _) in zip(items, sizes):
        draw.rectangle([x, margin, x + box - 1, margin + box - 1], fill=tuple(int(c) for c in colour))
        left, top, _, _ = draw.textbbox((0, 0), text, font=font)
        draw.text((x + box + 4 - left, margin - top), text, fill=(255, 255, 255), font=font)
        x += box + 4 + w + 3 * margin
    strip = np.broadcast_to(np.asarray(img), v.shape[:-3] + np.asarray(img).shape)
    return np.concatenate([v, strip], axis=-3)


def labelled_grid(videos, row_labels: list[str] | None = None, rows: list[list[int]] | None = None,
                  scale: int = 1, pad: int = 1, caption: str | None = None,
                  legend: list[tuple[str, tuple[int, int, int]]] | None = None, pad_value: int = 0) -> np.ndarray:
    """The one layout of every grid people look at (sample, predict, training samples): uint8
    [N, T, H, W, 3] -> [T, H', W', 3] with row r holding ``rows[r]`` (default: a near-square grid
    in order), upscaled by ``scale``, a label left of each row, a caption above, a legend below."""
    v = _np(videos)
    n = len(v)
    if rows is None:
        ncol = int(np.ceil(np.sqrt(n)))
        rows = [list(range(i, min(i + ncol, n))) for i in range(0, n, ncol)]
    grid = upscale(make_row_grid(v, rows, pad=pad, pad_value=pad_value), scale)
    if row_labels is not None:
        if len(row_labels) != len(rows):
            raise ValueError(f"{len(row_labels)} row labels for {len(rows)} rows")
        grid = add_row_labels(grid, list(row_labels), (v.shape[2] + pad) * scale, pad * scale)
    if caption:
        grid = add_caption(grid, caption)
    if legend:
        grid = add_legend(grid, legend)
    return np.ascontiguousarray(grid)


def add_axes(image, x_label: str, y_label: str, x_ticks: list[str], y_ticks: list[str], cell: tuple[int, int],
             pad: int = 0) -> np.ndarray:
    """Axis labels around an image [H, W, 3] made of equal cells (``cell`` = (height, width) in
    pixels, each after ``pad`` pixels of border): tick labels centred on every column / row, the
    x label above, the y label written sideways on the left."""
    from PIL import ImageDraw

    v = _np(image)
    h, w = v.shape[:2]
    ch, cw = cell
    top = _render_strip(x_ticks, [(pad + i * cw, pad + (i + 1) * cw) for i in range(len(x_ticks))], 0, w,
                        vertical=False)
    left = _render_strip(y_ticks, [(pad + i * ch, pad + (i + 1) * ch) for i in range(len(y_ticks))], h, None,
                         vertical=True)
    body = np.concatenate([np.zeros((top.shape[0], left.shape[1], 3), np.uint8), top], axis=1)
    body = np.concatenate([body, np.concatenate([left, v], axis=1)], axis=0)
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    tw, th = _text_size(probe, y_label, font)
    side = Image.new("RGB", (tw + 6, th + 6))
    ImageDraw.Draw(side).text((3, 3 - probe.textbbox((0, 0), y_label, font=font)[1]), y_label, fill=(255, 255, 255),
                              font=font)
    side = np.asarray(side.rotate(270, expand=True))  # reads top to bottom, as time runs
    strip = np.zeros((body.shape[0], side.shape[1], 3), np.uint8)
    y0 = top.shape[0] + max(0, (h - side.shape[0]) // 2)
    hh = min(side.shape[0], strip.shape[0] - y0)
    strip[y0:y0 + hh] = side[:hh]
    body = np.concatenate([strip, body], axis=1)
    return add_caption(body, x_label)
