"""PyAV video decoding and the paper's clip preprocessing (DVD-GAN 2.3 and B.1).

A clip is made in three steps, the same for every reader and for the prepared format:

1. **Temporal run.** ``frames`` frames taken with stride ``stride`` from a run of
   ``span = (frames - 1) * stride + 1`` consecutive frames; the run starts at a random frame
   (training) or at frame 0 (evaluation).
2. **Resize.** Every frame is resized so that its *shortest* side equals ``R`` (the long side
   becomes ``round(long * R / short)``, :func:`resized_size`), bilinearly. Frames decoded with
   PyAV are scaled by FFmpeg's libswscale *while* they are converted to RGB
   (``frame.to_ndarray(width=, height=, format="rgb24", interpolation=SWS_INTERPOLATION,
   threads=1)``, see :func:`decode_rgb`): the full-size RGB frame is never made (1.3-2.7x
   faster than converting it and resizing with torch, measured on 8 frames of 64x64 and
   256x256 H.264). swscale's bilinear filter widens with the shrinking factor (antialiased,
   like PIL's), and it scales the Y, U and V planes before the colour conversion. Both
   :func:`read_clip` and :func:`iter_frames` (which ``dvdgan prepare`` reads) call
   :func:`decode_rgb`, so raw decoding and prepared folders hold the same pixels.
   Frames that do not come from PyAV (BAIR's PNG frames, arrays given to :func:`finish_clip`)
   are resized by :func:`resize_short_side`:
   ``torch.nn.functional.interpolate(mode="bilinear", antialias=True, align_corners=False)`` on
   uint8 channels-last tensors (the fixed-point uint8 kernel torchvision uses; +-1 of the float
   kernel). On decoded video the two kernels differ by about 2 grey levels on average (up to
   ~60 at sharp colour edges: swscale filters chroma at 4:2:0 resolution), so a dataset must
   not mix them: :data:`RESIZE_METHOD` names the rule and is stored in prepared folders.
3. **Crop.** An ``R x R`` window along the longer side: at a random offset (training) or centred
   (evaluation).

Random choices come from two uniforms ``(u_time, u_crop)`` in [0, 1) that the caller draws
from ``numpy.random.default_rng(sample_seed)`` (see :func:`draw_uniforms`); the start frame and
the crop offset are then ``floor(u * (number of choices))``. Drawing uniforms rather than
bounded integers keeps the choice a pure function of (seed, video length), so the raw reader
and the prepared format agree.

Decoding stops as soon as the run is complete. When the run starts later than
:data:`SEEK_MIN_FRAMES`, the demuxer seeks to the key frame before it (frame index from the key
frame's timestamp, then counted); if a seek lands after the target or timestamps are missing,
the file is decoded from the start instead. Frame counts come from the container header
(``stream.frames``), else from the duration, else from counting packets; a header that
over-counts is corrected by the decode itself (the start is re-drawn from the true length with
the same uniform).

Unusable videos raise :class:`BadVideo` with a short ``reason`` (``missing``, ``empty``,
``unreadable``, ``no_video_stream``, ``decode_error``, ``too_short``, ``too_small``: a frame
side under :data:`MIN_VIDEO_SIDE` pixels, which would only be upscaled noise); the datasets
turn that into a skip plus a line in the bad-video log.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import Interpolation

# Seek only when the run starts at least this many frames in: below that, decoding from the
# start costs about as much as the seek's decoder flush and key-frame search.
SEEK_MIN_FRAMES = 24

_EXTS = ".mp4 .m4v .avi .mkv .webm .mov .gif .mpg .mpeg .flv .wmv .ogv .ogg .3gp .ts .mts .m2ts .vob .asf"
VIDEO_EXTENSIONS = frozenset(_EXTS.split())

# FFmpeg threading for clip decoding. Loader workers already decode in parallel, and frame
# threading delays the first frames of a short run, so clips use FFmpeg's default (slice
# threads, where the stream has slices); whole-video decoding (prepare) uses "AUTO".
CLIP_THREAD_TYPE = "SLICE"

# How frames reach R (module docs, step 2); stored in prepared folders' metadata. BITEXACT and
# ACCURATE_RND select swscale's exact C paths: the same pixels on every CPU (no cost measured).
SWS_INTERPOLATION = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.BITEXACT
RESIZE_METHOD = (
    "PyAV-decoded frames: libswscale bilinear|accurate_rnd|bitexact during the YUV->RGB conversion "
    "(shortest side -> R); other frames: torch interpolate bilinear antialias=True (uint8)"
)
# One swscale thread per conversion: PyAV's default (0, automatic) starts a thread pool for every
# frame, which cost ~1 ms per 64x64 frame, more than decoding it (most of a clip's time).
SWS_THREADS = 1

# Videos with a side below this many pixels are refused (BadVideo "too_small"), not upscaled.
MIN_VIDEO_SIDE = 8


class BadVideo(Exception):
    """A video that cannot give the requested clip. ``reason`` is one short word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# ----------------------------------------------------------------------------------------------
# Geometry of a clip (pure functions, shared with the prepared format)
# ----------------------------------------------------------------------------------------------


def clip_span(frames: int, stride: int) -> int:
    """Consecutive source frames a clip of ``frames`` frames at ``stride`` covers."""
    return (frames - 1) * stride + 1


def draw_uniforms(rng: np.random.Generator) -> tuple[float, float]:
    """The two random numbers behind a training clip: (u_time, u_crop). Always two draws."""
    return float(rng.random()), float(rng.random())


def choose(n_choices: int, u: float | None) -> int:
    """``floor(u * n_choices)`` clamped to range; ``None`` (evaluation) gives the centre/first.

    Used for the start frame with ``u=None`` meaning "first run" (see :func:`start_frame`) and
    for the crop with ``u=None`` meaning "centre" (see :func:`crop_offset`).
    """
    if n_choices <= 1:
        return 0
    return min(int(u * n_choices), n_choices - 1)  # type: ignore[operator]


def start_frame(n_frames: int, span: int, u_time: float | None) -> int:
    """First frame of the run (B.1: a random run of consecutive frames; evaluation: frame 0)."""
    if u_time is None:
        return 0
    return choose(n_frames - span + 1, u_time)


def crop_offset(long_side: int, resolution: int, u_crop: float | None) -> int:
    """Offset of the R-wide window along the longer side (B.1: random crop; evaluation: centre)."""
    extra = long_side - resolution
    if extra <= 0:
        return 0
    if u_crop is None:
        return extra // 2
    return choose(extra + 1, u_crop)


def resized_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """(H, W) after resizing the shortest side to ``resolution`` (long side rounded half up)."""
    if height <= width:
        return resolution, max(resolution, int(math.floor(width * resolution / height + 0.5)))
    return max(resolution, int(math.floor(height * resolution / width + 0.5))), resolution


def resize_short_side(frames: np.ndarray | torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> uint8 [T, H', W', 3] with min(H', W') = resolution.

    2.3 / B.1: the shortest side is bilinearly resized to R (antialiased when shrinking).
    """
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise TypeError(f"expected uint8 [T, H, W, 3] frames, got {x.dtype} {tuple(x.shape)}")
    h, w = int(x.shape[1]), int(x.shape[2])
    size = resized_size(h, w, resolution)
    if size == (h, w) or x.shape[0] == 0:
        return x
    nchw = x.permute(0, 3, 1, 2)  # a channels-last view: the fast uint8 kernel needs this layout
    out = F.interpolate(nchw, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.permute(0, 2, 3, 1)  # channels-last output: this view is contiguous NHWC


def crop_long_side(frames: torch.Tensor, resolution: int, offset: int) -> torch.Tensor:
    """Take the R-wide window at ``offset`` along the longer side of [T, H, W, 3] frames."""
    h, w = int(frames.shape[1]), int(frames.shape[2])
    if h > resolution:
        frames = frames[:, offset : offset + resolution]
    elif w > resolution:
        frames = frames[:, :, offset : offset + resolution]
    return frames


def finish_clip(frames: np.ndarray | torch.Tensor, resolution: int, u_crop: float | None) -> torch.Tensor:
    """Resize (shortest side -> R) and crop the long side: the spatial half of B.1."""
    x = resize_short_side(frames, resolution)
    long_side = max(int(x.shape[1]), int(x.shape[2]))
    x = crop_long_side(x, resolution, crop_offset(long_side, resolution, u_crop))
    # numpy copies the strided crop (always a fresh, writable array): torch's multi-threaded copy
    # of a [T, R, R, 3] uint8 view is ~100x slower on few cores.
    return torch.from_numpy(np.array(x.numpy(), order="C"))


# ----------------------------------------------------------------------------------------------
# PyAV decoding
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says about the first video stream."""

    frames: int | None  # frame count (header, else estimated from the duration), None if unknown
    exact: bool  # True when ``frames`` comes from the header's frame count
    width: int
    height: int
    rate: Fraction | None


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise BadVideo("missing", "file not found") from None
    except OSError as e:
        raise BadVideo("unreadable", e.strerror or str(e)) from None
    if size == 0:
        raise BadVideo("empty", "zero-length file")
    try:
        return av.open(str(p), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise BadVideo("unreadable", _short(e)) from None


def _short(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e)  # FFmpeg errors: the message without the path
    msg = " ".join(str(msg).split())
    return msg[:160] if msg else type(e).__name__


def _video_stream(container: av.container.InputContainer):
    if not container.streams.video:
        raise BadVideo("no_video_stream", "no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.codec_context.name:
        raise BadVideo("unreadable", "unknown video codec")
    return stream


def _rate(stream) -> Fraction | None:
    for r in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if r:
            return Fraction(r)
    return None


def _header_count(container, stream) -> tuple[int | None, bool]:
    if stream.frames and stream.frames > 0:
        return int(stream.frames), True
    rate = _rate(stream)
    if rate:
        if stream.duration and stream.time_base:
            return int(round(float(stream.duration * stream.time_base * rate))), False
        if container.duration:
            return int(round(container.duration / av.time_base * float(rate))), False
    return None, False


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read the header of ``path`` (no decoding). Raises :class:`BadVideo`."""
    with _open(path) as container:
        stream = _video_stream(container)
        n, exact = _header_count(container, stream)
        return VideoInfo(n, exact, stream.codec_context.width, stream.codec_context.height, _rate(stream))


def _count_packets(container, stream) -> int:
    try:
        return sum(1 for p in container.demux(stream) if p.size)
    except (av.FFmpegError, OSError, ValueError):
        return 0


def _check_size(width: int, height: int) -> None:
    if min(width, height) < MIN_VIDEO_SIDE:
        raise BadVideo("too_small", f"{width}x{height} frames, under {MIN_VIDEO_SIDE} px on a side")


def decode_rgb(frame, resolution: int | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a decoded PyAV frame; with ``resolution``, scaled so that its
    shortest side is ``resolution`` by libswscale during the colour conversion (module docs,
    step 2). Raises :class:`BadVideo` ``too_small`` for frames under :data:`MIN_VIDEO_SIDE`."""
    _check_size(frame.width, frame.height)
    h, w = frame.height, frame.width
    if resolution is not None:
        h, w = resized_size(h, w, resolution)
    return frame.to_ndarray(width=w, height=h, format="rgb24", interpolation=SWS_INTERPOLATION, threads=SWS_THREADS)


class _Run:
    """The frames of one decode attempt and how far the stream was seen to go."""

    __slots__ = ("frames", "seen", "error")

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.seen = 0  # frames known to exist: index of the last decoded frame + 1
        self.error: str | None = None


def _collect(frames_iter, idx: int, start: int, end: int, stride: int, resolution: int | None) -> _Run:
    res = _Run()
    try:
        for frame in frames_iter:
            if idx >= start and (idx - start) % stride == 0:
                res.frames.append(decode_rgb(frame, resolution))
            idx += 1
            res.seen = idx
            if idx >= end:  # the run is complete: stop decoding
                break
    except (av.FFmpegError, OSError, ValueError) as e:
        res.error = _short(e)
    return res


def _chain(first, rest) -> Iterator:
    yield first
    yield from rest


def _decode_run(
    container, stream, start: int, span: int, stride: int, seek: bool, resolution: int | None
) -> _Run | None:
    """Decode frames start, start+stride, ..., start+span-1 of a freshly opened container.

    Returns None when a seek was tried and failed (the container is then spent; reopen and
    call again with ``seek=False``). Fewer frames than asked means the stream ended first.
    """
    stream.thread_type = CLIP_THREAD_TYPE
    end = start + span
    rate = _rate(stream)
    if not (seek and start >= SEEK_MIN_FRAMES and rate and stream.time_base):
        return _collect(container.decode(stream), 0, start, end, stride, resolution)
    t0 = stream.start_time or 0
    target = t0 + int(math.floor(start / (rate * stream.time_base)))
    try:
        container.seek(target, stream=stream, backward=True, any_frame=False)
        it = container.decode(stream)
        first = next(it, None)
    except (av.FFmpegError, OSError, ValueError):
        return None
    if first is None or first.pts is None:
        return None
    idx = int(round(float((first.pts - t0) * stream.time_base * rate)))
    if not 0 <= idx <= start:  # overshot the target: not trustworthy
        return None
    return _collect(_chain(first, it), idx, start, end, stride, resolution)


def _attempt(path, start: int, span: int, stride: int, seek: bool, resolution: int) -> _Run:
    with _open(path) as container:
        res = _decode_run(container, _video_stream(container), start, span, stride, seek, resolution)
    if res is None:
        with _open(path) as container:
            res = _decode_run(container, _video_stream(container), start, span, stride, False, resolution)
    assert res is not None
    return res


def read_clip(
    path: str | os.PathLike,
    frames: int,
    stride: int,
    resolution: int,
    u_time: float | None = None,
    u_crop: float | None = None,
    *,
    seek: bool = True,
) -> torch.Tensor:
    """Decode a clip of ``path``: uint8 [frames, R, R, 3] (B.1 preprocessing).

    ``u_time`` / ``u_crop`` are uniforms in [0, 1) (see :func:`draw_uniforms`); ``None`` means
    the first run / the centre crop. Raises :class:`BadVideo` if the clip cannot be made.
    """
    span = clip_span(frames, stride)
    with _open(path) as container:
        stream = _video_stream(container)
        w, h = stream.codec_context.width, stream.codec_context.height
        if w and h:  # a header without a size is checked frame by frame (decode_rgb)
            _check_size(w, h)
        n, exact = _header_count(container, stream)
        if n is None:
            n = _count_packets(container, stream)
            res = None
        else:
            if n < span and exact:
                raise BadVideo("too_short", f"{n} frames < {span} needed")
            n = max(n, span)  # an estimate below span: try anyway, the decode tells the truth
            res = _decode_run(container, stream, start_frame(n, span, u_time), span, stride, seek, resolution)
    if res is None:
        n = max(n, span)
        res = _attempt(path, start_frame(n, span, u_time), span, stride, seek, resolution)
    if len(res.frames) < frames:
        # The header over-counted (or the file is truncated): res.seen frames really exist.
        n_true = res.seen
        if n_true < span:
            if res.error is not None:
                raise BadVideo("decode_error", f"after {n_true} frames: {res.error}")
            raise BadVideo("too_short", f"{n_true} frames < {span} needed")
        res = _attempt(path, start_frame(n_true, span, u_time), span, stride, seek, resolution)
        if len(res.frames) < frames:
            raise BadVideo("decode_error", res.error or "frames vanished between two decodes")
    return finish_clip(np.stack(res.frames), resolution, u_crop)


def iter_frames(path: str | os.PathLike, resolution: int | None = None) -> Iterator[np.ndarray]:
    """Every decodable frame of ``path`` as RGB uint8 [H, W, 3], in order; with ``resolution``,
    scaled to shortest side ``resolution`` exactly as :func:`read_clip` scales (``dvdgan
    prepare`` passes it).

    A decoding error ends the video (the frames before it are kept), as in :func:`read_clip`.
    Raises :class:`BadVideo` when the file cannot be opened or its frames are ``too_small``.
    """
    with _open(path) as container:
        stream = _video_stream(container)
        w, h = stream.codec_context.width, stream.codec_context.height
        if w and h:
            _check_size(w, h)
        stream.thread_type = "AUTO"
        it = container.decode(stream)
        while True:
            try:
                frame = next(it)
            except StopIteration:
                return
            except (av.FFmpegError, OSError, ValueError):
                return
            yield decode_rgb(frame, resolution)


# ----------------------------------------------------------------------------------------------
# Writing (test fixtures and the synthetic benchmark folder)
# ----------------------------------------------------------------------------------------------

_PIX_FMT = {"mjpeg": "yuvj420p", "gif": "rgb8", "ffv1": "yuv444p"}
_CODEC_ALIASES = {"h264": ("libx264", "h264"), "vp9": ("libvpx-vp9",), "vp8": ("libvpx",)}


def encode_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    codec: str = "h264",
    fps: int = 25,
    options: dict[str, str] | None = None,
) -> Path:
    """Write uint8 [T, H, W, 3] RGB frames to ``path`` with PyAV (container from the suffix).

    Even sizes are safest for yuv420p codecs. Returns the path.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise TypeError(f"expected uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = _CODEC_ALIASES.get(codec, (codec,))
    name = next((c for c in names if c in av.codecs_available), names[0])
    with av.open(str(path), "w") as out:
        stream = out.add_stream(name, rate=fps)
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = _PIX_FMT.get(codec, "yuv420p")
        if options:
            stream.options = dict(options)
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
