"""Sampling: determinism, truncation, interpolation, the files people look at, and `dvdgan sample`."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, tiny_run
from dvdgan.checkpoint import list_checkpoints, save_checkpoint
from dvdgan.cli import main
from dvdgan.config import apply_overrides, get_preset
from dvdgan.errors import DvdganError
from dvdgan.models.prediction import build_generator
from dvdgan.sampling import (
    generate,
    interpolate_class,
    interpolate_latent,
    load_generator,
    resolve_classes,
    sample,
    sample_z,
    write_interpolation,
    write_samples,
)
from dvdgan.video_io import frames_image, make_grid, time_image, upscale

T, R = 4, 16  # frames and resolution of the TINY model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory with one tiny checkpoint trained on the built-in shapes dataset (6 classes)."""
    return tiny_run(tmp_path_factory.mktemp("run"), steps=1)


def mp4_info(path: Path) -> tuple[int, int, int, float]:
    """(decoded frames, width, height, fps)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = list(c.decode(video=0))
        return len(frames), frames[0].width, frames[0].height, float(stream.average_rate)


def gif_info(path: Path) -> tuple[int, tuple[int, int], list[int]]:
    """(n_frames, size, per-frame durations in ms)."""
    with Image.open(path) as im:
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
        return im.n_frames, im.size, durations


def find(image: np.ndarray, sub: np.ndarray) -> list[tuple[int, int]]:
    """Every (y, x) where ``sub`` lies in ``image`` pixel for pixel."""
    h, w = sub.shape[:2]
    return [(y, x) for y in range(image.shape[0] - h + 1) for x in range(image.shape[1] - w + 1)
            if np.array_equal(image[y:y + h, x:x + w], sub)]


def even(n: int) -> int:
    return n + n % 2


def noise_videos(n: int, t: int, h: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, t, h, h, 3), dtype=np.uint8))


# --------------------------------------------------------------------------------------------
# the Python API
# --------------------------------------------------------------------------------------------


def test_same_seed_same_pixels_and_legacy_generate_agrees(run_dir):
    a = generate(run_dir, classes=[0, "triangle-rightward"], n=4, truncation=0.8, seed=3)
    b = generate(run_dir, classes=[0, 2], n=4, truncation=0.8, seed=3, batch_size=4)
    assert a.dtype == torch.uint8 and a.shape == (4, T, R, R, 3)
    assert torch.equal(a, b)
    assert not torch.equal(a, generate(run_dir, classes=[0, 2], n=4, truncation=0.8, seed=4))
    g, cfg = load_generator(run_dir)
    videos, labels = sample(g, cfg, classes=[0, 2], n=4, truncation=0.8, seed=3)  # unchanged API
    assert torch.equal(videos, a) and labels.tolist() == [0, 2, 0, 2]
    assert torch.equal(generate(g, classes=[0, 2], n=4, truncation=0.8, seed=3), a)
    raw = generate(run_dir, classes=[0, 2], n=4, truncation=0.8, seed=3, ema=False)
    assert raw.shape == a.shape


def test_truncation_zero_collapses_a_class_and_variance_grows_with_truncation(run_dir):
    g, cfg = load_generator(run_dir)
    zero = generate((g, cfg), classes=[1, 4], n=6, truncation=0.0, seed=0)

    def levels_apart(a: torch.Tensor, b: torch.Tensor) -> int:
        return (a.int() - b.int()).abs().max().item()

    # one z per class; equal up to rounding: with 2 threads the batch rows are not computed
    # bit-identically (one pixel of 3072 one uint8 level apart)
    assert all(levels_apart(zero[i], zero[i % 2]) <= 1 for i in range(6))
    assert levels_apart(zero[0], zero[1]) > 1

    def spread(s: float) -> float:
        v = generate((g, cfg), classes=[1], n=8, truncation=s, seed=1).float()
        return v.var(0).mean().item()

    assert spread(0.0) < 0.01 * spread(0.25)
    assert 0.0 < spread(0.25) < spread(1.0)


def test_resampling_truncation_and_range_checks():
    z = sample_z(64, 8, 0.5, torch.Generator().manual_seed(0), mode="resample")
    assert z.abs().max() <= 0.5 and z.std() > 0.2
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(DvdganError):
            sample_z(2, 8, bad, torch.Generator())


def test_resolve_classes_by_id_and_name():
    names = ["square-rightward", "cooking scallops", "dribbling_basketball"]
    assert resolve_classes(["0", "Cooking_Scallops", 2], names, 3) == [0, 1, 2]
    assert resolve_classes(["2,square-rightward"], names, 3) == [2, 0]
    assert resolve_classes(["dribbling basketball"], names, 3) == [2]
    for bad in (["3"], ["-1"], ["juggling"], [7]):
        with pytest.raises(DvdganError):
            resolve_classes(bad, names, 3)


def test_interpolations(run_dir):
    g, cfg = load_generator(run_dir)
    lat = interpolate_latent(run_dir, "cross-rightward", steps=5, truncation=0.9, seed=2)
    assert lat.shape == (5, T, R, R, 3) and lat.dtype == torch.uint8
    z = sample_z(2, cfg.model.z_dim, 0.9, torch.Generator().manual_seed(2))
    ends, _ = sample(g, cfg, classes=[4], n=2, z=z)
    assert (lat[[0, -1]].int() - ends.int()).abs().max() <= 1
    assert not torch.equal(lat[0], lat[2])

    cls = interpolate_class(run_dir, 0, "cross-leftward", steps=4, truncation=0.7, seed=5)
    assert cls.shape == (4, T, R, R, 3)
    z1 = sample_z(1, cfg.model.z_dim, 0.7, torch.Generator().manual_seed(5))
    ends, _ = sample(g, cfg, classes=[0, 5], n=2, z=z1.expand(2, -1))
    assert (cls[[0, -1]].int() - ends.int()).abs().max() <= 1  # e(y) ends = ordinary samples
    assert not torch.equal(cls[1], cls[0]) and not torch.equal(cls[1], cls[-1])


# --------------------------------------------------------------------------------------------
# layouts and files
# --------------------------------------------------------------------------------------------


def test_layouts():
    v = noise_videos(3, 5, 4)
    img = time_image(v, pad=1)  # rows = frames, columns = videos
    assert img.shape == (5 * 5 + 1, 3 * 5 + 1, 3)
    assert np.array_equal(img[1 + 2 * 5:1 + 2 * 5 + 4, 1 + 1 * 5:1 + 1 * 5 + 4], v[1, 2].numpy())
    raster = frames_image(v[0], pad=0)  # 5 frames -> 3 columns, raster order
    assert raster.shape == (8, 12, 3) and np.array_equal(raster[4:8, 0:4], v[0, 3].numpy())
    assert frames_image(noise_videos(1, 48, 2)[0], pad=0).shape == (6 * 2, 8 * 2, 3)  # Figure 5: 8 x 6
    assert upscale(v, 3).shape == (3, 5, 12, 12, 3)


def test_write_samples_files(tmp_path):
    v, labels = noise_videos(6, 5, 8), torch.tensor([0, 1, 0, 1, 0, 1])
    names = ["square-rightward", "juggling balls"]
    p = write_samples(v, labels, tmp_path / "a", names, fps=10, scale=2, each=True)
    n, size, durations = gif_info(p["grid_gif"])
    grid_w, grid_h = 2 * (3 * 9 + 1), 2 * (2 * 9 + 1)  # 2 rows (classes) x 3 columns, pad 1, x2
    assert n == 5 and durations == [100] * 5 and size[1] == grid_h and size[0] > grid_w  # + label strip
    assert mp4_info(p["grid_mp4"]) == (5, even(size[0]), even(size[1]), 10.0)
    first = np.asarray(Image.open(p["first_frames"]))
    assert first.shape == (grid_h, size[0], 3)
    rows = torch.stack([v[[0, 2, 4]], v[[1, 3, 5]]]).flatten(0, 1)[:, :1]
    assert np.array_equal(first[:, -grid_w:], upscale(make_grid(rows, nrow=3), 2)[0])  # classes in rows
    assert "square-rightward" in p["frames"].name
    assert Image.open(p["frames"]).size[1] > 2 * (2 * 9 + 1)  # 5 frames as 3 x 2, plus a caption
    each = sorted((tmp_path / "a").glob("sample_*.mp4"))
    assert [e.name for e in each][:2] == ["sample_00000_square-rightward.mp4", "sample_00001_juggling_balls.mp4"]
    assert len(each) == 6 and mp4_info(each[0]) == (5, 16, 16, 10.0)

    p = write_samples(v, None, tmp_path / "b", fps=5, by_class=False, scale=1)  # no labels: a near-square grid
    assert gif_info(p["grid_gif"])[:2] == (5, (3 * 9 + 1, 2 * 9 + 1))
    assert mp4_info(p["grid_mp4"]) == (5, 28, 20, 5.0)
    assert Image.open(p["frames"]).size == (3 * 9 + 1, 2 * 9 + 1)


def test_write_interpolation_files(tmp_path):
    v = noise_videos(4, 3, 8)
    p = write_interpolation(v, tmp_path, "lerp", fps=6, scale=1)
    png = np.asarray(Image.open(p["png"]))  # columns = steps, rows = frames, axis labels on the top and left
    assert png.shape[0] > 3 * 9 + 1 and png.shape[1] > 4 * 9 + 1
    (y, x), = find(png, time_image(v, pad=1))  # the frames, with tick labels and a sideways "time" label left
    assert y > 0 and x > 0 and png[:y].any() and png[y:, :x].any()  # text above and left
    assert gif_info(p["gif"])[:2] == (3, (4 * 9 + 1, 9 + 1))
    assert mp4_info(p["mp4"]) == (3, 38, 10, 6.0)
    p = write_interpolation(v, tmp_path, "captioned", caption="a -> b", scale=2)
    w, h = Image.open(p["png"]).size
    assert w >= 2 * (4 * 9 + 1) and h > 2 * (3 * 9 + 1)


# --------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------


def test_cli_sample_end_to_end(run_dir, tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["sample", "--checkpoint", str(run_dir), "--out", str(out), "--classes", "0", "triangle-rightward",
               "--n", "4", "--each", "--scale", "2", "--fps", "10", "--seed", "7", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "grid.mp4" in printed
    frames, w, h, fps = mp4_info(out / "grid.mp4")
    grid_h = 2 * (2 * (R + 1) + 1)
    assert (frames, fps) == (T, 10.0) and h > grid_h  # + a caption (config, truncation, seed)
    n, size, durations = gif_info(out / "grid.gif")
    assert sum(durations) == T * 100 and size[1] == h  # identical frames may merge
    assert Image.open(out / "first_frames.png").size == size
    assert (out / "frames_00000_square-rightward.png").exists()
    assert len(list(out.glob("sample_*_triangle-rightward.mp4"))) == 2
    # the CLI's pixels are the API's
    api = generate(run_dir, classes=[0, 2], n=4, seed=7)
    first = np.asarray(Image.open(out / "first_frames.png"))
    assert len(find(first, upscale(make_grid(api[[0, 2, 1, 3]][:, :1], nrow=2), 2)[0])) == 1

    rc = main(["sample", "--checkpoint", str(run_dir), "--out", str(out), "--interpolate", "latent", "--classes",
               "5", "--steps", "3", "--truncation", "0.5", "--truncation-mode", "resample"])
    assert rc == 0
    png = out / "interpolate_latent_cross-leftward.png"
    assert Image.open(png).size[1] > T * (R + 1)  # rows = frames (+ caption)
    assert mp4_info(png.with_suffix(".mp4"))[0] == T

    rc = main(["sample", "--checkpoint", str(run_dir), "--out", str(out), "--interpolate", "class", "--classes",
               "square-rightward,cross-rightward", "--steps", "3", "--raw"])
    assert rc == 0
    assert (out / "interpolate_class_square-rightward_to_cross-rightward.gif").exists()


@pytest.fixture(scope="module")
def broken_checkpoints(run_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken")
    ckpt = list_checkpoints(run_dir / "checkpoints")[-1]
    trunc = root / "truncated"
    shutil.copytree(ckpt, trunc)
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    garbage = root / "garbage"
    shutil.copytree(ckpt, garbage)
    (garbage / "model.safetensors").write_bytes(b"\x00" * 7)
    # a DVD-GAN-FP (prediction) checkpoint: context frames > 0
    fp_cfg = apply_overrides(get_preset("shapes"), TINY + ["model.context_frames=2", "model.num_classes=1"])
    g = build_generator(fp_cfg.model)
    fp = save_checkpoint(root / "fp", 1, {"generator": g, "generator_ema": g}, {}, fp_cfg.to_dict())
    return {"truncated": trunc, "garbage": garbage, "fp": fp, "missing": root / "nope"}


@pytest.mark.parametrize("case, extra, expect", [
    ("missing", [], "does not exist"),
    ("truncated", [], "corrupt"),
    ("garbage", [], "corrupt"),
    ("fp", [], "dvdgan predict"),
    ("ok", ["--classes", "6"], "out of range"),
    ("ok", ["--classes", "hexagon-rightward"], "unknown class"),
    ("ok", ["--truncation", "1.5"], "[0, 1]"),
    ("ok", ["--truncation", "-0.1"], "[0, 1]"),
    ("ok", ["--interpolate", "class", "--classes", "0"], "two classes"),
    ("ok", ["--n", "0"], "--n"),
    ("ok", ["--interpolate", "latent", "--n", "4"], "--n does not apply to --interpolate latent"),
])
def test_cli_errors_are_one_line(case, extra, expect, run_dir, broken_checkpoints, tmp_path, capsys):
    ckpt = run_dir if case == "ok" else broken_checkpoints[case]
    rc = main(["sample", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--no-progress"] + extra)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("dvdgan sample: error: ") and err.count("\n") == 1, err
    assert expect in err
    assert not (tmp_path / "o").exists()


def test_sampling_does_not_import_the_trainer():
    """Checkpoint I/O lives in dvdgan.checkpoint: sampling never loads the training package."""
    import subprocess
    import sys

    code = ("import sys, dvdgan.sampling, dvdgan.commands.sample; "
            "print(sorted(m for m in sys.modules if m.startswith('dvdgan.training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
    import dvdgan

    assert dvdgan.generate is generate and callable(dvdgan.train)
