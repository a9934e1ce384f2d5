"""The reference classifier of a class-folder dataset, in-loop evaluation on it, the memorisation
check and `dvdgan eval --memorisation` on a folder-trained checkpoint.

One tiny mp4 class folder (4 classes x 12 clips) and one classifier (16x16, 4 frames, trained in a
few seconds) are shared by the whole module."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch

from dvdgan.config import DataConfig, apply_overrides, get_preset
from dvdgan.data import build_dataset
from dvdgan.errors import DataError
from dvdgan.metrics import dataset_reference as dr
from dvdgan.metrics.dataset_reference import (
    DatasetClassifier,
    dataset_classifier,
    dataset_fingerprint,
    frame_motion,
    global_shift,
    is_weak,
    object_track,
    random_views,
)
from dvdgan.metrics.memorisation import memorisation_check, nearest_neighbours, write_memorisation_report
from videofolders import class_names, make_class_folder, render_clip

T, R, C = 4, 16, 4


@pytest.fixture(scope="module", autouse=True)
def one_thread_and_short_training():
    """One torch thread; 60 classifier steps (the default schedule's minimum is 150) for speed."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dr, "_steps_for", lambda n_train: 60)
        yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_class_folder(tmp_path_factory.mktemp("videos"), num_classes=C, per_class=12, frames=10, size=24)


@pytest.fixture(scope="module")
def dataset(folder):
    return build_dataset(DataConfig(dataset="folder", path=str(folder), frame_stride=1), split="train", frames=T,
                         resolution=R)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def ref(dataset, cache):
    return dataset_classifier(dataset, frames=T, resolution=R, cache_dir=cache, progress=False)


@pytest.fixture(scope="module")
def real(dataset):
    clips = [dataset[i] for i in range(len(dataset))]
    return torch.stack([c[0] for c in clips]), torch.tensor([c[1] for c in clips])


def test_trains_the_same_from_inside_no_grad(ref, dataset, tmp_path):
    """Evaluation code calls the judge under torch.no_grad(); its first-use training must still run."""
    dr._MEMORY.clear()
    with torch.no_grad():
        again = dataset_classifier(dataset, frames=T, resolution=R, cache_dir=str(tmp_path), progress=False)
    assert not again.loaded_from_cache
    for a, b in zip(ref.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_trains_judges_real_clips_and_caches(ref, dataset, cache, real):
    assert not ref.loaded_from_cache and ref.class_names == sorted(class_names(C))
    assert ref.heldout_size == 8 and ref.heldout_accuracy >= 0.75 and not ref.weak
    files = sorted(os.listdir(os.path.join(cache, "reference")))
    assert [f.rsplit(".", 1)[1] for f in files] == ["json", "safetensors"]  # no temporary files left
    dr._MEMORY.clear()
    again = dataset_classifier(dataset, frames=T, resolution=R, cache_dir=cache, progress=False)
    assert again.loaded_from_cache and again.heldout_accuracy == ref.heldout_accuracy
    for a, b in zip(ref.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    videos, labels = real
    assert np.allclose(again.features(videos[:5]), ref.features(videos[:5]))


def _square_on_gradient(dy: int, dx: int, frames: int = 6, size: int = 32) -> torch.Tensor:
    """float [1, 3, T, H, W]: a bright 6x6 square moving (dy, dx) px/frame over a static colour
    gradient (darker than the square everywhere)."""
    ramp = torch.linspace(-1.0, 0.2, size)
    x = torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size), -ramp[None, :].expand(
        size, size) * 0.5])[:, None].repeat(1, frames, 1, 1).clone()
    for t in range(frames):
        y0, x0 = 8 + dy * t, 8 + dx * t
        x[:, t, y0:y0 + 6, x0:x0 + 6] = torch.tensor([1.0, 0.9, 1.0])[:, None, None]
    return x[None]


def test_motion_inputs_see_direction_path_and_camera_motion():
    right, down = _square_on_gradient(0, 2), _square_on_gradient(2, 0)
    # the object track follows the moving square, not the graded background
    for clip, axis in ((right, 1), (down, 0)):
        track = object_track(clip)[0]
        steps = track[axis, 1:-1].diff()  # the last frame pair is repeated: skip it
        assert torch.allclose(steps, torch.full_like(steps, 2 * 2 / 32), atol=0.02), track[axis]
        assert track[1 - axis].abs().max() < 0.02
    # the motion energy's sign is the direction of motion (channels 3, 4: -I_t I_y, -I_t I_x)
    e_right, e_down = frame_motion(right)[0, 3:].sum((1, 2, 3)), frame_motion(down)[0, 3:].sum((1, 2, 3))
    assert e_right[1] > 0 and abs(e_right[0]) < 0.2 * e_right[1]
    assert e_down[0] > 0 and abs(e_down[1]) < 0.2 * e_down[0]
    # a camera pan: the whole textured frame moves one (half-resolution) pixel left per frame
    scene = torch.rand(3, 32, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scene = torch.nn.functional.avg_pool2d(scene[None], 3, 1, 1)[0]
    pan = torch.stack([scene[:, :, 2 * t:2 * t + 32] for t in range(6)], 1)[None]
    shift = global_shift(pan)[0]  # (dy, dx) per frame pair, in half-resolution px / radius 2
    assert torch.allclose(shift[1], torch.full((6,), -0.5), atol=0.1) and shift[0].abs().max() < 0.1, shift
    assert global_shift(pan[:, :, :1]).shape == (1, 2, 1)  # one frame: no motion, no error


def test_classifier_shapes_and_views():
    for t, r in ((8, 32), (1, 16), (4, 64)):
        model = DatasetClassifier(r, t, 5).eval()
        f, lg, fl = model.outputs(torch.rand(2, t, 3, r, r) * 2 - 1)
        assert f.shape == (2, 128) and lg.shape == (2, 5) and fl.shape == (2, t, 5)
    assert [random_views(n) for n in (48, 200, 480, 640, 1200)] == [3, 3, 2, 1, 1]


def test_fingerprint_follows_the_files(folder, dataset):
    idx = np.arange(len(dataset))
    before = dataset_fingerprint(dataset, idx)
    assert dataset_fingerprint(dataset, idx) == before
    path = dataset.path(3)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert dataset_fingerprint(dataset, idx) != before
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    other = build_dataset(DataConfig(dataset="folder", path=str(folder), frame_stride=2), split="train", frames=T,
                          resolution=R)
    assert dataset_fingerprint(other, idx) != before


def test_metrics_of_real_wrong_and_broken_videos(ref, real):
    videos, labels = real
    r = ref.evaluate(videos, labels)
    assert r["accuracy"] >= 0.85 and r["classifier_accuracy"] == ref.heldout_accuracy
    assert r["ref_fd"] < 1.5 * r["ref_fd_floor"] + 1e-6 and r["ref_fd_n"] == 24
    assert r["motion"] == pytest.approx(r["motion_real"]) and r["motion_real"] > 0.3
    assert r["consistency_real"] > 0.75
    assert ref.evaluate(videos, (labels + 1) % C)["accuracy"] < 0.3
    static = ref.evaluate(videos[:, :1].expand_as(videos).contiguous(), labels)
    assert static["motion"] < 0.05 and static["frame_diff"] == 0
    # the object changes identity half-way: the first frames from one class, the rest from another
    other = torch.stack([videos[labels == (int(y) + 2) % C][0] for y in labels])
    mixed = torch.cat([videos[:, :T // 2], other[:, T // 2:]], 1)
    m = ref.evaluate(mixed, labels)
    assert m["consistency"] < r["consistency"] - 0.15, (m["consistency"], r["consistency"])
    noise = torch.randint(0, 256, videos.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert ref.evaluate(noise, labels)["ref_fd"] > 3 * r["ref_fd_floor"]


def test_weak_classifier_warns(dataset, tmp_path):
    assert is_weak(0.5, 10) and is_weak(0.65, 2) and not is_weak(0.9, 10)
    with pytest.warns(UserWarning, match="too weak") as caught:
        dataset_classifier(dataset, frames=T, resolution=R, cache_dir=str(tmp_path), progress=False, steps=1)
    assert all(len(str(w.message).splitlines()) == 1 for w in caught)  # one line


def test_unlabelled_or_mismatched_dataset(dataset):
    class One(torch.utils.data.Dataset):
        class_names = ["only"]

    with pytest.raises(DataError):
        dataset_classifier(One(), frames=T, resolution=R)
    with pytest.raises(DataError, match="not"):
        dataset_classifier(dataset, frames=T, resolution=2 * R, cache_dir=None, progress=False, max_clips=8)


def _tiny_cfg(folder):
    return apply_overrides(get_preset("shapes"), [
        f"model.resolution={R}", f"model.frames={T}", "model.g_ch=4", "model.g_multipliers=4,4,2", "model.d_ch=4",
        "model.d_multipliers=2,4,4", "model.frames_per_spatial_d=2", "model.z_dim=8", "model.embed_dim=8",
        f"model.num_classes={C}", "data.dataset=folder", f"data.path={folder}", "data.frame_stride=1",
        "train.batch_size=4", "train.sample_every=0", "train.log_every=1", "train.checkpoint_every=100",
        "train.eval_every=0",
    ])


def test_evaluate_generator_on_a_folder_dataset(folder, dataset, ref, cache):
    from dvdgan.models.prediction import build_generator
    from dvdgan.training.evaluation import evaluate_generator

    cfg = _tiny_cfg(folder)
    g = build_generator(cfg.model)
    g.train()
    out = evaluate_generator(g, cfg, dataset, n=16, seed=0, cache_dir=cache)
    assert g.training
    assert {"accuracy", "ref_fd", "ref_fd_floor", "motion", "motion_real", "consistency", "consistency_real",
            "classifier_accuracy", "frame_accuracy"} <= out.keys()
    assert all(isinstance(v, float) for v in out.values()) and json.dumps(out)
    # (16 samples of a 16-clip set: too few to order ref_fd against its floor; both are distances)
    assert out["classifier_accuracy"] == ref.heldout_accuracy and out["ref_fd"] > 0 and out["ref_fd_floor"] > 0
    assert evaluate_generator(g, cfg, dataset, n=16, seed=0, cache_dir=cache) == out  # deterministic
    cfg.model.num_classes = 1  # an unconditional model: no class accuracy
    g1 = build_generator(cfg.model)
    assert "accuracy" not in evaluate_generator(g1, cfg, dataset, n=8, cache_dir=cache)


# ---- memorisation --------------------------------------------------------------------------


def test_nearest_neighbours_against_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    d, i = nearest_neighbours(a, b, k=3, chunk=3)
    full = np.linalg.norm(a[:, None] - b[None], axis=2)
    assert np.array_equal(i, np.argsort(full, 1)[:, :3]) and np.allclose(d, np.sort(full, 1)[:, :3])
    d, i = nearest_neighbours(b, b, k=1, exclude_self=True)
    assert (i[:, 0] != np.arange(11)).all() and (d > 0).all()


def _rendered(n: int, seed: int) -> torch.Tensor:
    """Fresh clips of the dataset's kind (never encoded, never trained on), 16x16x4."""
    rng = np.random.default_rng(seed)
    clips = [render_clip(i % C, rng, frames=T, size=R) for i in range(n)]
    return torch.from_numpy(np.stack(clips))


def test_memorisation_separates_copies_from_new_clips(ref, real, tmp_path):
    train, train_labels = real
    held = _rendered(24, seed=101)
    new = _rendered(24, seed=202)
    copies = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:24]]
    noisy = (copies.short() + torch.randint(-3, 4, copies.shape, generator=torch.Generator().manual_seed(1)))
    noisy = noisy.clamp(0, 255).to(torch.uint8)
    r_new = memorisation_check(new, train, ref, heldout_videos=held)
    r_copy = memorisation_check(copies, train, ref, heldout_videos=held)
    r_noisy = memorisation_check(noisy, train, ref, heldout_videos=held)
    assert not r_new["summary"]["memorised"], r_new["summary"]
    assert r_copy["summary"]["memorised"] and r_copy["summary"]["copy_fraction"] == 1.0
    assert r_noisy["summary"]["memorised"], r_noisy["summary"]
    assert r_copy["summary"]["sample_nn_median"] < 0.1 * r_new["summary"]["sample_nn_median"]
    assert r_new["summary"]["median_ratio"] > 0.5
    # without a held-out split: leave-one-out over the training clips
    loo = memorisation_check(copies, train, ref.model, k=2)
    assert loo["summary"]["memorised"] and "no held-out" in loo["summary"]["real_reference"]
    assert loo["neighbours"].shape == (24, 2)
    paths = write_memorisation_report(loo, copies, train, tmp_path, torch.arange(24) % C, train_labels,
                                      ref.class_names, rows_per_page=16)
    assert sorted(os.path.basename(p) for p in paths.values()) == [
        "distances.png", "memorisation.json", "neighbours_000.png", "neighbours_001.png"]
    assert all(os.path.getsize(p) > 1000 for p in paths.values() if p.endswith(".png"))
    assert json.loads(open(paths["summary"]).read())["memorised"] is True


def test_cli_eval_memorisation_on_a_folder_checkpoint(folder, cache, tmp_path, capsys, ref):
    from dvdgan.cli import main
    from dvdgan.training import train

    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(_tiny_cfg(folder), run, max_steps=1, progress=False)
    out = tmp_path / "eval"
    rc = main(["eval", "--checkpoint", str(run), "--metrics", "none", "--memorisation", "6", "--memorisation-k", "2",
               "--cache-dir", cache, "--no-progress", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "memorisation:" in text and "held-out accuracy" in text
    summary = json.loads((out / "memorisation" / "memorisation.json").read_text())
    assert summary["num_samples"] == 6 and summary["num_train"] == 48 and "no held-out" in summary["real_reference"]
    assert (out / "memorisation" / "distances.png").exists()
