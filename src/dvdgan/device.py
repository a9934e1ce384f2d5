"""Where a run computes and in what precision: the device named by ``--device`` / ``train.device``
(``auto`` = CUDA when there is one) and ``train.bf16``'s autocast context, shared by the trainer and
the memory planner."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def _onednn_off():
    # torch.backends.mkldnn.flags would also reset the TF32 setting (with a warning on every call)
    was = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(was)


class Precision:
    """train.bf16: ``torch.autocast(device, bfloat16)`` around the forward passes, losses and
    backward (weights, gradients and optimiser state stay fp32); a no-op when off. A reusable
    context manager. On CPU it also turns oneDNN off inside: torch 2.13's oneDNN bf16 conv3d
    weight gradient is intermittently NaN when the input has fewer frames than the kernel (D_T's
    3-D blocks reach T = 2; 15 of 300 random trials at [8, 8, 2, 4, 4], channels-last), and
    ATen's own kernels are not (tests/test_gpu_path.py; docs/design.md)."""

    def __init__(self, device_type: str, bf16: bool):
        self.device_type, self.enabled = device_type, bf16
        self._stack: list[contextlib.ExitStack] = []

    def __enter__(self):
        stack = contextlib.ExitStack()
        if self.enabled:
            stack.enter_context(torch.autocast(self.device_type, dtype=torch.bfloat16))
            if self.device_type == "cpu":
                stack.enter_context(_onednn_off())
        self._stack.append(stack.__enter__())
        return self

    def __exit__(self, *exc):
        return self._stack.pop().__exit__(*exc)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)
