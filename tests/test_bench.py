"""``dvdgan bench`` on a tiny subset, and the optimised ("fast") modules against the literal
("reference") formulation they must compute exactly."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_NETWORK as TINY
from dvdgan.baselines import FullVideoDiscriminator, make_straightforward
from dvdgan.bench import (
    TARGETS,
    BenchOptions,
    format_table,
    run_bench,
    straightforward_step_flops,
    width_matched_baseline,
)
from dvdgan.cli import main
from dvdgan.config import load_config
from dvdgan.models import DualDiscriminator
from dvdgan.models.generator import Generator
from dvdgan.models.layers import (
    ConditionalBatchNorm,
    ConvGRU,
    DBlock,
    GBlock,
    conv3x3_avg_pool,
    power_iteration,
    upsample_conv3x3,
)

REQUIRED = ("step_speedup", "dual_vs_full_d_time_ratio", "flops_fraction_of_matmul")


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def test_bench_command_runs_a_subset_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--preset", "shapes", *TINY, "--only", "step,flops,dual", "--repeats", "1",
               "--dual-sizes", "4x16x16", "--dual-ch", "4", "--matmul-size", "256", "--json", str(out),
               "--no-progress"])
    assert rc == 0
    r = json.loads(out.read_text())
    for key in REQUIRED:
        assert isinstance(r[key], float) and r[key] > 0, key
    st = r["step"]
    assert st["per_replica_batch"] == 4 and st["video"] == [4, 16, 16]
    for v in ("optimised", "reference"):
        assert st[v]["seconds"] > 0 and st[v]["videos_per_s"] > 0 and st[v]["peak_memory_mb"] > 0
    assert st["speedup"] == pytest.approx(st["reference"]["seconds"] / st["optimised"]["seconds"])
    f = next(iter(r["flops"].values()))
    assert 0 < f["flops_per_step"] < f["reference_flops_per_step"]  # the fused convolutions do less work
    assert f["matmul_fp32_flops_per_s"] > 0
    # the straightforward step at the widths of equal FLOPs, timed in the same run (issue 18)
    bl = st["baseline"]
    assert bl["formulation"] == "straightforward" and 1 <= bl["g_ch"] <= 4 and bl["d_ch"] == bl["g_ch"]
    assert bl["seconds"] > 0 and bl["cpu_seconds"] > 0 and len(bl["all_seconds"]) == 1
    assert bl["flops_per_s"] == pytest.approx(bl["flops_per_step"] / bl["seconds"])
    assert st["flops_per_s"] == pytest.approx(f["flops_per_step"] / st["optimised"]["seconds"])
    assert r["baseline_flop_rate_ratio"] == pytest.approx(st["flops_per_s"] / bl["flops_per_s"])
    assert r["baseline_flop_rate_ratio_cpu_time"] > 0 and r["step_speedup_cpu_time"] > 0
    assert 0 < f["fraction_of_matmul_cpu_time"] and f["matmul_fp32_flops_per_cpu_s"] > 0
    assert r["targets"] == TARGETS and set(r["targets_met"]) == set(TARGETS)
    assert r["targets_met"]["step_speedup"] == (r["step_speedup"] >= 2.0)
    d = r["dual"]["4x16x16"]
    assert d["timed_d_ch"] == 4 and d["flops"]["dual"]["forward_backward"] > d["flops"]["dual"]["forward"] > 0
    assert r["dual_vs_full_d_size"] == "4x16x16"
    text = capsys.readouterr().out
    assert "step_speedup=" in text and "| train step shapes" in text and "baseline_flop_rate_ratio=" in text
    assert "straightforward step at equal FLOPs" in text


def test_width_matched_baseline_is_the_nearest_width_in_flops():
    cfg = load_config("shapes", [*TINY, "model.g_ch=6", "model.d_ch=3"])
    target = 1.3 * straightforward_step_flops(load_config("shapes", [*TINY, "model.g_ch=4", "model.d_ch=2"]), 4)
    matched, predicted = width_matched_baseline(cfg, 4, target)
    assert (matched.model.g_ch, matched.model.d_ch) in {(4, 2), (6, 3)}  # widths keep their 2:1 ratio
    assert predicted == straightforward_step_flops(matched, 4)  # the fitted quadratic is exact
    c = matched.model.d_ch
    others = [load_config("shapes", [*TINY, f"model.g_ch={2 * k}", f"model.d_ch={k}"]) for k in (c - 1, c + 1)]
    assert all(abs(straightforward_step_flops(o, 4) - target) >= abs(predicted - target) for o in others)


def test_bench_sample_and_data_sections_tiny():
    opts = BenchOptions(sections=("sample", "data"), repeats=1, repeats_large=1, sample_frames=2, sample_ch=2,
                        data_sizes=((4, 16),), data_video_size=(48, 32), data_seconds=0.2, data_workers=0,
                        data_batch=2, progress=False)
    r = run_bench(opts)
    s = r["sample"]
    assert s["estimated"] and s["frames_measured"] == 2 and s["frames_target"] == 48
    assert s["flops_target"] > s["flops_measured"] > 0 and r["sample_latency_ms"] > 0
    e = r["data"]["16x16x4"]
    assert e["raw_clips_per_s"] > 0 and e["prepared_clips_per_s"] > 0
    assert e["in_memory_clips_per_s"] > e["raw_clips_per_s"] and e["in_memory_preload_seconds"] > 0
    for key in REQUIRED:  # present even when their sections did not run
        assert key in r and r[key] is None
    assert "EMA G sampling" in format_table(r)


def test_bench_rejects_unknown_sections(capsys):
    assert main(["bench", "--only", "step,nope", "--no-progress"]) == 2
    assert "unknown bench section 'nope'" in capsys.readouterr().err


def test_full_video_discriminator_is_3d_on_every_frame(tiny_model_config):
    m = tiny_model_config(frames=4)
    d = FullVideoDiscriminator(m)
    assert len(d.net.blocks2d) == 0 and all(blk.dims == 3 for blk in d.net.blocks3d)
    assert d.net.input_resolution == m.resolution  # no phi
    assert d(torch.randn(2, 4, 3, 16, 16), torch.tensor([0, 1])).shape == (2,)


# --------------------------------------------------------------------------------------------
# optimised == straightforward (dvdgan/baselines.py), module by module
# --------------------------------------------------------------------------------------------


def _pair(module: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the module, the same weights in the straightforward formulation)."""
    module = module.double()
    power_iteration(module, 2)
    return copy.deepcopy(module), make_straightforward(module)


def _grads(module: torch.nn.Module, *inputs: torch.Tensor) -> list[torch.Tensor]:
    return [p.grad for p in module.parameters()] + [x.grad for x in inputs]


def _run(module, inputs, call):
    xs = [x.detach().double().requires_grad_() if x.is_floating_point() else x for x in inputs]
    out = call(module, *xs)
    out = out if isinstance(out, torch.Tensor) else sum(o.sum() for o in out)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), _grads(module, *[x for x in xs if x.is_floating_point()])


def assert_same_function(module, inputs, call=lambda m, *x: m(*x)):
    fast, ref = _pair(module)
    for train in (True, False):
        fast.train(train)
        ref.train(train)
        of, gf = _run(fast, inputs, call)
        orf, gr = _run(ref, inputs, call)
        torch.testing.assert_close(of, orf, rtol=1e-9, atol=1e-10)
        assert len(gf) == len(gr)
        for a, b in zip(gf, gr):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
        for a, b in zip(fast.buffers(), ref.buffers()):  # BN running statistics, SN vectors
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
        fast.zero_grad(set_to_none=True)
        ref.zero_grad(set_to_none=True)


@pytest.mark.parametrize("dims,pool", [(2, (2, 2)), (3, (2, 2, 2)), (3, (1, 2, 2))])
def test_conv3x3_avg_pool_is_the_literal_composition(dims, pool):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *((6,) if dims == 3 else ()), 8, 10, dtype=torch.double)
    w = torch.randn(5, 3, *(3,) * dims, dtype=torch.double)
    b = torch.randn(5, dtype=torch.double)
    conv, avg = (F.conv2d, F.avg_pool2d) if dims == 2 else (F.conv3d, F.avg_pool3d)
    torch.testing.assert_close(conv3x3_avg_pool(x, w, b, pool), avg(conv(x, w, b, padding=1), pool))


def test_conv3x3_avg_pool_odd_size_2d_floor_mode():
    x = torch.randn(1, 2, 7, 9, dtype=torch.double)
    w = torch.randn(3, 2, 3, 3, dtype=torch.double)
    torch.testing.assert_close(conv3x3_avg_pool(x, w, None, (2, 2)), F.avg_pool2d(F.conv2d(x, w, padding=1), 2))


def test_upsample_conv3x3_is_the_literal_composition():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 7, dtype=torch.double)
    w = torch.randn(6, 4, 3, 3, dtype=torch.double)
    b = torch.randn(6, dtype=torch.double)
    ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, b, padding=1)
    torch.testing.assert_close(upsample_conv3x3(x, w, b), ref)


def test_conditional_bn_fast_equals_reference():
    torch.manual_seed(0)
    bn = ConditionalBatchNorm(5, cond_dim=6, frames=3)
    assert_same_function(bn, [torch.randn(2 * 3, 5, 4, 4), torch.randn(2, 6)])


@pytest.mark.parametrize("upsample,in_ch,out_ch", [(True, 6, 4), (False, 4, 4), (False, 4, 6)])
def test_gblock_fast_equals_reference(upsample, in_ch, out_ch):
    torch.manual_seed(0)
    blk = GBlock(in_ch, out_ch, cond_dim=5, frames=3, upsample=upsample)
    assert_same_function(blk, [torch.randn(2 * 3, in_ch, 4, 4), torch.randn(2, 5)])


@pytest.mark.parametrize("dims,preact,down,time_down,t", [
    (2, False, True, False, 1), (2, True, True, False, 1), (2, True, False, False, 1),
    (3, False, True, True, 4), (3, True, True, True, 3), (3, True, True, False, 4), (3, True, True, True, 1),
])
def test_dblock_fast_equals_reference(dims, preact, down, time_down, t):
    torch.manual_seed(0)
    blk = DBlock(3, 5, downsample=down, preactivation=preact, dims=dims, downsample_time=time_down)
    shape = (2, 3, t, 8, 8) if dims == 3 else (4, 3, 8, 8)
    assert_same_function(blk, [torch.randn(shape)])


@pytest.mark.parametrize("shared", [True, False])
def test_convgru_zero_state_shortcut_equals_reference(shared):
    torch.manual_seed(0)
    gru = ConvGRU(3, 4)
    x = torch.randn(2, 3, 5, 5) if shared else torch.randn(2, 4, 3, 5, 5)
    assert_same_function(gru, [x], lambda m, x: m(x, None, 4))
    fast, ref = _pair(ConvGRU(3, 4))
    torch.testing.assert_close(fast(x.double(), None, 4), ref(x.double(), torch.zeros(2, 4, 5, 5).double(), 4),
                               rtol=1e-9, atol=1e-10)


def test_generator_and_dual_discriminator_fast_equal_reference(tiny_model_config):
    torch.manual_seed(0)
    m = tiny_model_config(frames=4)
    g = Generator(m)
    assert_same_function(g, [torch.randn(3, m.z_dim), torch.tensor([0, 1, 2])])
    d = DualDiscriminator(m)
    video = torch.rand(3, 4, 3, 16, 16) * 2 - 1
    y = torch.tensor([0, 1, 2])

    def call(module, v, y):
        torch.manual_seed(5)  # the same frames for D_S
        return module(v, y)

    assert_same_function(d, [video, y], call)
