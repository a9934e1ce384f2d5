"""The one sampler of dataset keys ``(index, sample_seed)``: reproducible whatever the worker count.

Epoch ``e`` of replica ``rank`` is a permutation of the dataset drawn from ``(seed, rank, e)``
(B.1: every replica shuffles the whole training set independently, rather than taking a shard
of it). The key at global position ``p`` gets ``sample_seed`` derived from ``(seed, rank, p)``;
the dataset derives every random choice for that item (start frame, crop) from
``numpy.random.default_rng(sample_seed)``. So the key at a position is a pure function of
``(seed, rank, p)``: a DataLoader with 0 or 8 workers yields the same clips, and a resumed run
reads exactly the clips it would have read.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


class ClipSampler(torch.utils.data.Sampler):
    """Keys from position ``start`` on: ``num_samples`` of them (None: an endless stream)."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, start: int = 0, num_samples: int | None = None) -> None:
        if n < 1:
            raise ValueError("ClipSampler needs a non-empty dataset")
        self.n, self.seed, self.rank, self.start = int(n), int(seed), int(rank), int(start)
        self.num_samples = num_samples
        self._epoch, self._perm = -1, np.arange(0)

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("an endless ClipSampler has no length")
        return self.num_samples

    def key(self, position: int) -> tuple[int, int]:
        """The key at global ``position`` (epoch = position // n)."""
        epoch, offset = divmod(position, self.n)
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, self.rank, epoch]).permutation(self.n)
            self._epoch = epoch
        sample_seed = int(np.random.SeedSequence([self.seed, self.rank, position]).generate_state(1)[0])
        return int(self._perm[offset]), sample_seed

    def __iter__(self) -> Iterator[tuple[int, int]]:
        p = self.start
        while self.num_samples is None or p < self.start + self.num_samples:
            yield self.key(p)
            p += 1


class BatchKeys:
    """An endless stream of batches of keys, for a DataLoader's ``batch_sampler``: batch ``i`` holds
    positions ``[i * batch, (i + 1) * batch)`` of ``sampler``, from batch ``start_batch`` on.

    ``shard=(i, n)`` (train.data_sharding="split"): ``batch`` is the global batch of one stream
    shared by n replicas, and this replica gets the i-th of n equal slices of every batch."""

    def __init__(self, sampler: ClipSampler, batch: int, start_batch: int = 0, shard: tuple[int, int] = (0, 1)):
        if batch % shard[1]:
            raise ValueError(f"a batch of {batch} cannot be split {shard[1]} ways")
        self.sampler, self.batch, self.start_batch, self.shard = sampler, batch, start_batch, shard

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        index, count = self.shard
        local = self.batch // count
        b = self.start_batch
        while True:
            first = b * self.batch + index * local
            yield [self.sampler.key(p) for p in range(first, first + local)]
            b += 1
