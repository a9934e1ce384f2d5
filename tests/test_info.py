"""``dvdgan info`` / model_info: the dual discriminator's pixel budget (3.1), parameter counts and
forward FLOPs of every Table 1 preset, computed on the meta device (no memory, no compute)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from dvdgan.cli import main
from dvdgan.config import get_preset
from dvdgan.info import model_info

TABLE1 = ["kinetics600-12x64", "kinetics600-12x128", "kinetics600-12x256", "kinetics600-48x64",
          "kinetics600-48x128"]


@pytest.fixture(scope="module")
def cli_infos() -> dict[str, dict]:
    """``dvdgan info --preset P --json`` for every Table 1 preset, run once per module."""
    out = {}
    for preset in TABLE1:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["info", "--preset", preset, "--json"])
        assert rc == 0
        out[preset] = json.loads(buf.getvalue())
    return out


def test_pixel_budget_of_the_papers_example():
    """3.1: 48x128x128: 786,432 pixels per video -> 327,680 for D_S + D_T (58 % fewer)."""
    px = model_info(get_preset("kinetics600-48x128"), flops=False)["pixels_per_video"]
    assert px["spatial_discriminator"] == 8 * 128 * 128 == 131072
    assert px["temporal_discriminator"] == 48 * 64 * 64 == 196608
    assert px["dual_total"] == 327680
    assert px["full_video"] == 786432
    assert px["reduction"] == pytest.approx(0.58, abs=0.005)


@pytest.mark.parametrize("preset", TABLE1)
def test_info_json_for_every_table1_preset(cli_infos, preset):
    info = cli_infos[preset]
    assert set(info) >= {"preset", "video", "parameters", "pixels_per_video", "forward_flops_per_video"}
    assert info["preset"] == preset
    cfg = get_preset(preset).model
    t, r, k = cfg.frames, cfg.resolution, cfg.frames_per_spatial_d
    assert info["video"] == {"frames": t, "context_frames": 0, "resolution": r}
    assert info["pixels_per_video"]["spatial_discriminator"] == k * r * r
    assert info["pixels_per_video"]["temporal_discriminator"] == t * (r // 2) ** 2
    assert info["pixels_per_video"]["full_video"] == t * r * r
    for name in ("generator", "spatial_discriminator", "temporal_discriminator"):
        assert info["parameters"][name] > 1e6
        assert info["forward_flops_per_video"][name] > 1e9


def _g_params(m) -> int:
    """G's parameter count written out from B.2's architecture and the widths ch x multipliers."""
    w, c = [m.g_ch * k for k in m.g_multipliers], m.z_dim + m.embed_dim

    def cbn(ch):  # class-conditional BN: gain and bias, each a linear map cond -> ch with bias
        return 2 * (c * ch + ch)

    n = m.num_classes * m.embed_dim + c * 16 * w[0] + 16 * w[0]  # e(y); affine [z; e(y)] -> 4x4 x w0
    for a, b in zip(w, w[1:]):
        n += 3 * (2 * a * a * 9 + a)  # ConvGRU: reset, update, candidate: 3x3 convs [h; x] (2a) -> a
        n += cbn(a) + 9 * a * a + cbn(a) + 9 * a * a + a  # GBlock 1 (a -> a; conv1 has no bias)
        n += cbn(a) + 9 * a * b + cbn(b) + 9 * b * b + b + a * b + b  # GBlock 2 (a -> b, x2; 1x1 shortcut)
    return n + cbn(w[-1]) + 9 * w[-1] * 3 + 3  # output BN; 3x3 conv to RGB


def _d_params(m, blocks_3d: int) -> int:
    """D_S (blocks_3d = 0) or D_T: DBlocks of 3x3 (3x3x3) convs with biases, a 1x1 shortcut where
    the width changes or the block downsamples (all but the last), then linear + class embedding."""
    w, n = [m.d_ch * k for k in m.d_multipliers], 0
    for i, b in enumerate(w):
        a, k = (3 if i == 0 else w[i - 1]), (27 if i < blocks_3d else 9)
        n += a * b * k + b + b * b * k + b + ((a * b + b) if (a != b or i < len(w) - 1) else 0)
    return n + w[-1] + 1 + m.num_classes * w[-1]


@pytest.mark.parametrize("preset", TABLE1)
def test_parameter_counts_match_the_architecture(cli_infos, preset):
    m = get_preset(preset).model
    prm = cli_infos[preset]["parameters"]
    assert prm["generator"] == _g_params(m)
    assert prm["spatial_discriminator"] == _d_params(m, 0)
    assert prm["temporal_discriminator"] == _d_params(m, m.temporal_d_3d_blocks)


def test_parameter_counts_by_hand_and_across_frames(cli_infos):
    # kinetics600-12x64 (ch 128, G [8, 8, 8, 4, 2], D [2, 4, 8, 16, 16], 600 classes)
    assert cli_infos["kinetics600-12x64"]["parameters"] == {
        "generator": 305_425_987, "spatial_discriminator": 154_411_777, "temporal_discriminator": 162_683_137}
    # the number of frames does not change the weights
    assert cli_infos["kinetics600-12x64"]["parameters"] == cli_infos["kinetics600-48x64"]["parameters"]
    assert cli_infos["kinetics600-12x128"]["parameters"] == cli_infos["kinetics600-48x128"]["parameters"]
    # ... but the generator's compute grows linearly with it (every layer runs per frame)
    f12 = cli_infos["kinetics600-12x64"]["forward_flops_per_video"]
    f48 = cli_infos["kinetics600-48x64"]["forward_flops_per_video"]
    assert 3.5 < f48["generator"] / f12["generator"] < 4.5
    assert f48["spatial_discriminator"] == f12["spatial_discriminator"]  # always k frames


def test_info_of_a_prediction_preset():
    info = model_info(get_preset("bair-fp-64"), flops=False)
    assert info["video"] == {"frames": 15, "context_frames": 1, "resolution": 64}
    px = info["pixels_per_video"]
    assert px["temporal_discriminator"] == 16 * 32 * 32  # D_T sees context + generated frames
    assert px["spatial_discriminator"] == 8 * 64 * 64


def test_info_text_output(capsys):
    assert main(["info", "--preset", "shapes"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "pixels/video" in out and "FLOPs" in out
