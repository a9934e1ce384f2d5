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
    tmp.write_bytes(data)
    os.replace(tmp, path)


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
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if stream.codec_context.name == "libx264":
            stream.options = {"crf": str(crf)}
        for frame in v:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
