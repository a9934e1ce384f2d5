"""DVD-GAN-FP (B.4, 4.2): the conditioning stack, what D_S and D_T see during training, the
class id, the prediction metrics and ``dvdgan predict`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from dvdgan.cli import main
from dvdgan.config import apply_overrides, get_preset
from dvdgan.data.shapes import MovingShapes
from dvdgan.data.transforms import to_model_input
from dvdgan.metrics.detectors import Detector
from dvdgan.metrics.prediction import (
    copy_last_baseline,
    evaluate_prediction,
    flat_prediction_metrics,
    format_prediction_table,
)
from dvdgan.models.discriminators import sample_frame_indices
from dvdgan.models.prediction import ConditioningStack, PredictionGenerator, build_generator
from dvdgan.training import Trainer, train

C, T = 2, 4  # context and predicted frames of the tiny FP model

TINY_FP = [
    "model.resolution=16", f"model.frames={T}", f"model.context_frames={C}", "model.num_classes=1", "model.g_ch=4",
    "model.g_multipliers=4,4,2", "model.d_ch=4", "model.d_multipliers=2,4,4", "model.frames_per_spatial_d=2",
    "model.z_dim=8", "model.embed_dim=8", "train.batch_size=4", "train.sample_every=0", "train.log_every=1",
    "train.ema_start=1", "train.ema_decay=0.9", "train.checkpoint_every=100", "data.shapes_train_size=64",
    "data.shapes_test_size=32", "data.num_workers=0",
]


def tiny_fp_cfg(*extra: str):
    return apply_overrides(get_preset("shapes-fp"), TINY_FP + list(extra))


# ------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [
    dict(),  # 16x16: two G groups (4, 8), three D blocks
    dict(resolution=32, g_multipliers=(4, 4, 2, 2), d_multipliers=(2, 4, 4, 4)),  # three groups
    dict(resolution=64, g_multipliers=(8, 8, 8, 4, 2), d_multipliers=(2, 4, 8, 16, 16), g_ch=1, d_ch=1),  # B.2 64
])
def test_conditioning_stack_matches_every_generator_group(model, tiny_model_config):
    cfg = tiny_model_config(**{**model, "context_frames": 3, "num_classes": 1})
    g = PredictionGenerator(cfg).eval()
    seen: list[tuple[torch.Tensor, torch.Size]] = []
    for group in g.groups:
        group.gru.register_forward_hook(lambda mod, inp, out: seen.append((inp[1], out[:, 0].shape)))
    b, r = 2, cfg.resolution
    context = torch.rand(b, 3, 3, r, r) * 2 - 1
    states = g.conditioning(context)
    assert len(states) == len(g.groups) == cfg.num_groups
    with torch.no_grad():
        out = g(torch.randn(b, cfg.z_dim), torch.zeros(b, dtype=torch.long), context)
    assert out.shape == (b, cfg.frames, 3, r, r)
    for state, (h0, hidden_shape), group in zip(states, seen, g.groups):
        # the stack's output is the initial state of the ConvGRU of the group at the same resolution
        assert state.shape == h0.shape == hidden_shape == (b, group.gru.hidden_channels, group.resolution,
                                                          group.resolution)
        torch.testing.assert_close(state, h0)
        assert (state >= 0).all()  # 3x3 conv -> relu (B.4)


def test_conditioning_stack_is_d_s_shaped_and_rejects_a_missing_resolution(tiny_model_config):
    cfg = tiny_model_config(context_frames=2, num_classes=1)
    stack = ConditioningStack(cfg, [4, 8], [16, 16])
    assert len(stack.blocks) == len(cfg.d_multipliers)  # B.4: a stack identical to D_S
    assert stack.projections[0].weight.shape[1] == 2 * cfg.d_ch * cfg.d_multipliers[stack.taps[0]]  # C maps stacked
    with pytest.raises(ValueError, match="no conditioning block at resolution 2"):
        ConditioningStack(cfg, [2], [16])
    assert isinstance(build_generator(cfg), PredictionGenerator)
    assert not isinstance(build_generator(tiny_model_config()), PredictionGenerator)


def test_prediction_depends_on_the_context_and_on_z(tiny_model_config):
    cfg = tiny_model_config(context_frames=2, num_classes=1)
    torch.manual_seed(0)
    g = PredictionGenerator(cfg).eval()
    b, r = 3, cfg.resolution
    z, y = torch.randn(b, cfg.z_dim), torch.zeros(b, dtype=torch.long)
    ctx = torch.rand(b, 2, 3, r, r) * 2 - 1
    with torch.no_grad():
        base = g(z, y, ctx)
        torch.testing.assert_close(g(z, y, ctx), base)  # deterministic in eval mode
        other_ctx = ctx.clone()
        other_ctx[0] = -other_ctx[0]  # change the conditioning frames of sample 0 only
        changed = g(z, y, other_ctx)
        other_z = z.clone()
        other_z[1] = torch.randn(cfg.z_dim)  # change z of sample 1 only
        changed_z = g(other_z, y, ctx)
    assert (changed[0] - base[0]).abs().max() > 1e-3
    torch.testing.assert_close(changed[1:], base[1:])  # no leak across the batch (eval-mode BN)
    assert (changed_z[1] - base[1]).abs().max() > 1e-3
    torch.testing.assert_close(changed_z[[0, 2]], base[[0, 2]])
    with pytest.raises(ValueError, match="context"):
        g(z, y)
    # context straight from uint8 clips (a permuted, non-contiguous layout) works the same
    clips = torch.randint(0, 256, (b, 2, r, r, 3), dtype=torch.uint8)
    strided = to_model_input(clips)
    assert not strided.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(g(z, y, strided), g(z, y, strided.contiguous()))


# ------------------------------------------------------------------------------------------
# what the discriminators see during training
# ------------------------------------------------------------------------------------------


class NoiseClips(Dataset):
    """Clips of C + T frames of random noise: every frame of every clip is unique. Label 3."""

    num_classes = 5
    class_names = [str(i) for i in range(5)]

    def __init__(self, n: int = 16, frames: int = C + T, res: int = 16):
        self.n, self.frames, self.res = n, frames, res

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        rng = np.random.default_rng([7, int(i)])
        return torch.from_numpy(rng.integers(0, 256, (self.frames, self.res, self.res, 3), dtype=np.uint8)), 3


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, *x.shape[-3:]).flatten(1)


def _member(frames: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """For each frame of ``frames`` [N, 3, H, W]: is it (exactly) one of ``pool`` [M, 3, H, W]?"""
    return (_rows(frames)[:, None] == _rows(pool)[None]).all(-1).any(-1)


def test_discriminators_see_what_b4_says(tmp_path):
    cfg = tiny_fp_cfg()
    trainer = Trainer(cfg, tmp_path, progress=False, dataset=NoiseClips())
    it = trainer.data_loader()
    log: dict[str, list] = {"g_out": [], "g_y": [], "ds": [], "ds_y": [], "dt": [], "dt_y": [], "reals": []}
    g_forward, ds_score, dt_forward = trainer.G.forward, trainer.D.spatial.score_frames, trainer.D.temporal.forward
    next_real = trainer._next_real

    def g_hook(z, y, context=None, **kw):
        out = g_forward(z, y, context, **kw)
        log["g_out"].append(out.detach())
        log["g_y"].append(y)
        return out

    def ds_hook(frames, y):
        log["ds"].append(frames.detach())
        log["ds_y"].append(y)
        return ds_score(frames, y)

    def dt_hook(video, y, generator=None):
        log["dt"].append(video.detach())
        log["dt_y"].append(y)
        return dt_forward(video, y, generator)

    def real_hook(it_):
        video, label = next_real(it_)
        log["reals"].append(video)
        return video, label

    trainer.G.forward, trainer.D.spatial.score_frames, trainer.D.temporal.forward = g_hook, ds_hook, dt_hook
    trainer._next_real = real_hook
    for _ in range(2):
        trainer.d_update(it)
    trainer.g_update(it)
    trainer.close()

    b, k = trainer.per_replica_batch, cfg.model.frames_per_spatial_d
    assert len(log["ds"]) == len(log["dt"]) == len(log["g_out"]) == len(log["reals"]) == 3
    for call, (real, fake, frames, video) in enumerate(zip(log["reals"], log["g_out"], log["ds"], log["dt"])):
        contexts = real[:, :C]
        if call < 2:  # a D update: D sees [real; context + generated]
            assert frames.shape == (2 * b, k, 3, 16, 16) and video.shape == (2 * b, C + T, 3, 16, 16)
            real_seen, fake_seen = frames[:b], frames[b:]
            torch.testing.assert_close(video[:b], real)
            fake_video = video[b:]
        else:  # a G update: D sees context + generated only
            assert frames.shape == (b, k, 3, 16, 16) and video.shape == (b, C + T, 3, 16, 16)
            real_seen, fake_seen = None, frames
            fake_video = video
        # D_T: the concatenation of the conditioning frames and the generator's output, C + T frames
        torch.testing.assert_close(fake_video[:, :C], contexts)
        torch.testing.assert_close(fake_video[:, C:], fake)
        # D_S: never the first C frames, of real or generated videos
        assert not _member(fake_seen, contexts).any()
        assert _member(fake_seen, fake).all()
        if real_seen is not None:
            assert not _member(real_seen, contexts).any()
            assert _member(real_seen, real[:, C:]).all()
    # class id fixed to 0 everywhere, although the dataset's label is 3
    for y in log["g_y"] + log["ds_y"] + log["dt_y"]:
        assert (y == 0).all()


def test_d_s_frame_indices_cover_exactly_the_predicted_frames():
    idx = sample_frame_indices(4000, T, 2, first=C, generator=torch.Generator().manual_seed(0))
    assert idx.min() == C and idx.max() == C + T - 1
    assert set(idx.flatten().tolist()) == set(range(C, C + T))


def test_fp_presets():
    bair, k600, shapes = get_preset("bair-fp-64"), get_preset("kinetics600-fp-64"), get_preset("shapes-fp")
    assert (bair.model.context_frames, bair.model.frames, bair.model.resolution) == (1, 15, 64)
    assert (k600.model.context_frames, k600.model.frames, k600.model.resolution) == (5, 11, 64)
    assert k600.data.frame_stride == 1  # 4.2.1: no frame skipping
    for cfg in (bair, k600, shapes):
        assert cfg.model.num_classes == 1  # class id fixed to 0
    assert shapes.data.dataset == "shapes" and shapes.model.context_frames >= 1


# ------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------


class Oracle(torch.nn.Module):
    """A 'generator' that returns the real continuation of each context (looked up)."""

    def __init__(self, clips: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.model_clips = to_model_input(clips)

    def forward(self, z, y, context):
        ctx = context.flatten(1)
        keys = self.model_clips[:, :C].flatten(1)
        idx = [int(((keys - c).abs().sum(1)).argmin()) for c in ctx]
        return self.model_clips[idx, C:]


class TinyDetector(Detector):
    """A deterministic stand-in detector: 4 pooled features, 6-class logits."""

    kind = "reference"
    frechet_output = "features"
    classes_match_dataset = True
    name = identity = "tiny"

    def _forward(self, videos, want):
        x = to_model_input(videos).mean(dim=(3, 4))  # [b, T, 3]
        f = torch.cat([x.mean(1), 100 * (x[:, 1:] - x[:, :-1]).abs().mean((1, 2))[:, None]], 1)
        logits = torch.stack([f[:, 0] * i for i in range(6)], 1)
        return {"features": f, "logits": logits}


def test_evaluate_prediction_perfect_predictor_and_baseline():
    cfg = tiny_fp_cfg()
    ds = MovingShapes("test", C + T, 16, 64)
    clips, _ = ds.batch(range(32))
    result = evaluate_prediction(Oracle(clips), cfg, ds, n=32, detector=TinyDetector())
    model, base = result["model"], result["copy_last"]
    assert len(model["mse"]) == len(model["psnr"]) == len(model["position_error"]) == T
    assert max(model["mse"]) < 1e-4 and max(model["position_error"]) < 0.05 and model["psnr"][0] > 40
    assert abs(model["frechet"]) < 1e-5
    assert model["accuracy"] == result["ground_truth"]["accuracy"]
    # the copy-last baseline: real error that grows as the shape moves away
    assert min(base["mse"]) > 1e-4 and base["mse"][-1] > base["mse"][0]
    assert base["position_error"][-1] > base["position_error"][0] > 0.5
    assert base["frechet"] > 1e-4 and result["frechet_floor"] >= 0
    flat = flat_prediction_metrics(result)
    assert {"fp_model_mse_mean", "fp_copy_last_psnr_mean", "fp_model_frechet", "fp_copy_last_frechet",
            "fp_model_position_error_last", "fp_frechet_floor"} <= flat.keys()
    table = format_prediction_table(result)
    assert "copy-last" in table and f"{C + T} (t+{T})" in table
    json.dumps(result)  # the CLI writes it as JSON
    base_videos = copy_last_baseline(clips[:, :C], T)
    assert base_videos.shape == clips[:, C:].shape and torch.equal(base_videos[:, -1], clips[:, C - 1])


def test_evaluate_prediction_errors():
    cfg = tiny_fp_cfg()
    g = build_generator(cfg.model)
    with pytest.raises(Exception, match="needs 2 \\+ 4 frames"):
        evaluate_prediction(g, cfg, MovingShapes("test", 5, 16, 8), n=4)
    with pytest.raises(Exception, match="clips"):
        evaluate_prediction(g, cfg, MovingShapes("test", 6, 16, 3), n=4)


def test_training_time_evaluation_logs_fp_metrics(tmp_path, monkeypatch):
    import dvdgan.metrics.detectors as detectors

    monkeypatch.setattr(detectors, "load_detector", lambda *a, **k: TinyDetector())
    cfg = tiny_fp_cfg("train.eval_every=1", "train.eval_samples=8")
    train(cfg, tmp_path, max_steps=1, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 1 and rows[0]["elapsed_s"] >= 0
    for key in ("fp_model_mse_mean", "fp_copy_last_mse_mean", "fp_model_psnr_mean", "fp_model_frechet",
                "fp_copy_last_frechet", "fp_model_accuracy", "fp_model_position_error_mean"):
        assert np.isfinite(rows[0][key]), key


# ------------------------------------------------------------------------------------------
# dvdgan predict
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("fp") / "run"
    train(tiny_fp_cfg(), run, max_steps=1, progress=False)
    return run


def _write_inputs(folder: Path) -> None:
    from dvdgan.data.video import encode_video

    long_clip, _ = MovingShapes("test", 10, 32, 4).batch([1])
    wide = np.ascontiguousarray(np.concatenate([long_clip[0].numpy()] * 2, axis=2)[:, :, :48])  # 32x48: resize+crop
    encode_video(folder / "long.mp4", wide, fps=10)
    encode_video(folder / "sub" / "short.mp4", long_clip[0, :3].numpy(), fps=10)  # C..C+T-1 frames: no truth
    (folder / "broken.mp4").write_bytes(b"not a video at all")


def _decode(path: Path) -> np.ndarray:
    from dvdgan.data.video import iter_frames

    return np.stack(list(iter_frames(path)))


def test_predict_end_to_end(fp_run, tmp_path, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    _write_inputs(inputs)
    rc = main(["predict", "--checkpoint", str(fp_run), "--input", str(inputs), "--context", str(C), "--out", str(out),
               "--n", "3", "--format", "mp4,gif,png", "--scale", "1", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "wrote 2 predictions" in text and "1 with the ground truth" in text
    assert "skipped 1 unusable inputs (unreadable: 1)" in text
    expected = {f"{s}.{e}" for s in ("long", "sub__short") for e in ("mp4", "gif", "png")}
    assert {p.name for p in out.iterdir()} == expected
    long, short = _decode(out / "long.mp4"), _decode(out / "sub__short.mp4")
    assert long.shape[0] == short.shape[0] == C + T  # context, then the prediction
    # panels of 16 + 2 (border) px, 2 px apart, under a caption and above the legend of the border colours
    assert long.shape[1] > 18 + 4 and long.shape[2] >= 4 * 18 + 5 * 2 and short.shape[2] >= 3 * 18 + 4 * 2
    from PIL import Image

    strip = Image.open(out / "long.png")  # time left to right, one labelled row per panel, the legend below
    assert strip.size[0] > (C + T) * 20 + 2 and strip.size[1] > 4 * 20 + 2


def test_predict_single_file_and_evaluate(fp_run, tmp_path, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    _write_inputs(inputs)
    rc = main(["predict", "--checkpoint", str(fp_run), "--input", str(inputs / "long.mp4"), "--out", str(out),
               "--evaluate", "--detector", "none", "--n", "2", "--no-progress"])
    assert rc == 0
    assert (out / "long.mp4").exists() and (out / "long.gif").exists()
    text = capsys.readouterr().out
    assert "copy-last" in text
    result = json.loads((out / "prediction_metrics.json").read_text())
    assert len(result["model"]["mse"]) == T and "frechet" not in result["model"]
    assert (out / "eval_samples.gif").exists() and (out / "eval_samples.png").exists()


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("no_video", "no video files in"),
    ("unusable", "no usable video in"),
    ("context", "--context 3 does not match the model, which continues 2 context frames"),
    ("synthesis", "is a synthesis model"),
    ("no_input", "nothing to do"),
])
def test_predict_errors_are_one_line(fp_run, tmp_path, capsys, case, message):
    inputs = tmp_path / "in"
    inputs.mkdir()
    ckpt, context = fp_run, str(C)
    if case == "missing":
        inputs = inputs / "nope.mp4"
    elif case == "no_video":
        (inputs / "notes.txt").write_text("x")
    elif case == "unusable":
        (inputs / "a.mp4").write_bytes(b"garbage")
        from dvdgan.data.video import encode_video

        encode_video(inputs / "b.mp4", np.zeros((1, 16, 16, 3), np.uint8))  # 1 frame < C
    elif case == "context":
        context = "3"
    elif case == "synthesis":
        ckpt = tmp_path / "synth"
        train(tiny_fp_cfg("model.context_frames=0", "model.num_classes=6"), ckpt, max_steps=1, progress=False)
    argv = ["predict", "--checkpoint", str(ckpt), "--context", context, "--out", str(tmp_path / "out"),
            "--no-progress"]
    if case != "no_input":
        argv += ["--input", str(inputs)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
