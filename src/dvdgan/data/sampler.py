"""A sampler of (index, sample_seed) keys: reproducible batches whatever the worker count.

Each epoch is a permutation of the dataset drawn from ``(seed, epoch)``; the item at position
``i`` of the epoch gets ``sample_seed`` derived from ``(seed, epoch, i)``. The dataset derives
every random choice for that item from ``numpy.random.default_rng(sample_seed)``, so a
DataLoader with 0 or 8 workers yields the same batches (B.1: each replica shuffles the training
set independently: give each replica its own ``seed``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


class ClipSampler(torch.utils.data.Sampler):
    """Yields ``(index, sample_seed)`` pairs, ``num_samples`` per pass (default: one epoch),
    epochs following one another; ``start`` skips that many keys (resuming mid-epoch)."""

    def __init__(
        self, n: int, seed: int = 0, shuffle: bool = True, num_samples: int | None = None, start: int = 0
    ) -> None:
        if n < 1:
            raise ValueError("ClipSampler needs a non-empty dataset")
        self.n = int(n)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.num_samples = int(num_samples) if num_samples is not None else self.n
        self.start = int(start)

    def __len__(self) -> int:
        return self.num_samples

    def key(self, position: int) -> tuple[int, int]:
        """The key at global ``position`` (epoch = position // n)."""
        epoch, i = divmod(position, self.n)
        return int(self._perm(epoch)[i]), self._sample_seed(epoch, i)

    def _perm(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(self.n)

    def _sample_seed(self, epoch: int, i: int) -> int:
        return int(np.random.SeedSequence([self.seed, epoch, i]).generate_state(1, np.uint64)[0] >> 1)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pos = self.start
        end = self.start + self.num_samples
        while pos < end:
            epoch, i = divmod(pos, self.n)
            perm = self._perm(epoch)
            stop = min(self.n, i + end - pos)
            for j in range(i, stop):
                yield int(perm[j]), self._sample_seed(epoch, j)
            pos += stop - i
