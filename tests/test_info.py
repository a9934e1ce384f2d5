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


def test_parameter_counts_are_in_the_expected_range(cli_infos):
    for preset in ("kinetics600-12x64", "kinetics600-48x64"):  # ch = 128, [8, 8, 8, 4, 2]
        assert 1e8 < cli_infos[preset]["parameters"]["generator"] < 1e9
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
