#!/usr/bin/env bash
# What a session with a lent GPU runs in one go (about 5 minutes): CUDA DDP on every visible GPU
# through torchrun, a bf16 + torch.compile training step, sampling latency of two 48x64x64 videos at
# the paper's width with CUDA graphs, and the memory planner's estimate against
# torch.cuda.max_memory_allocated, all to one JSON file (src/dvdgan/gpu_check.py).
#
#   benchmarks/gpu_check.sh [OUT.json]          # default benchmarks/gpu_check.json
#
# Without a CUDA device it stops at once: one error line, exit code 2.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m dvdgan.gpu_check --out "${1:-benchmarks/gpu_check.json}"
