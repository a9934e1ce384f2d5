"""benchmarks/gpu_check.sh (dvdgan.gpu_check): without a CUDA device it stops with one line and
exit code 2; its planner-vs-measured part runs on CPU through dvdgan.memory.compare
(tests/test_memory.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dvdgan import gpu_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure without a CUDA device")
def test_gpu_check_fails_in_one_line_without_cuda(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "src")}
    out = tmp_path / "gpu.json"
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpu_check: error: no CUDA device"), p.stderr
    assert not out.exists()


def test_a_failing_part_is_recorded_and_the_rest_run():
    def boom():
        raise ValueError("no luck")

    r = gpu_check._run_part(boom)
    assert r["ok"] is False and r["error"] == "ValueError: no luck" and "seconds" in r
    assert gpu_check._run_part(lambda: {"x": 1})["ok"] is True


def test_memory_configs_build():
    """Every config the GPU check measures is valid (a typo would surface only on a GPU)."""
    from dvdgan.config import apply_overrides, get_preset

    for _, preset, extra, batch in gpu_check.MEMORY_CONFIGS:
        assert apply_overrides(get_preset(preset), extra).validate() and batch >= 1
    apply_overrides(get_preset("shapes"), gpu_check.DDP_OVERRIDES)
