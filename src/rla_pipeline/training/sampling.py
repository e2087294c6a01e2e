"""The trainer's data order: an infinite, resumable sampler whose position is a pure function of the step.

Epoch ``e``'s global order is ``randperm(N)`` seeded from ``(seed, e)``; batch ``b`` of the epoch is
``order[b*B : (b+1)*B]`` (the tail that does not fill a batch is dropped) and rank ``r`` of ``W`` takes its
contiguous ``B/W`` slice, so a resumed run, or a run on another number of devices, sees the same global batches.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


def epoch_order(seed: int, epoch: int, num_samples: int) -> torch.Tensor:
    """The global sample order of ``epoch``: a permutation of ``range(num_samples)``, a pure function of its inputs."""
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]) & ((1 << 63) - 1)
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(mixed))


class GlobalBatchSampler:
    """Infinite batch sampler for one rank: step ``s`` gives rank ``r`` its slice of the global batch ``s``.

    Yields lists of ``(epoch, index)`` keys (see :class:`EpochKeyedDataset`). Every rank walks the same global
    order; rank ``r`` takes ``order[b*B + r*B/W : b*B + (r+1)*B/W]`` for batch ``b`` of the epoch.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_step: int = 0) -> None:
        if batch_size % world_size:
            raise ValueError(f"global batch_size {batch_size} is not divisible by {world_size} processes")
        if num_samples < batch_size:
            raise ValueError(f"{num_samples} samples < batch_size {batch_size}")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.per_rank = batch_size // world_size
        self.batches_per_epoch = num_samples // batch_size

    def position(self, step: int) -> tuple[int, int]:
        """``(epoch, batch_in_epoch)`` of the batch that update ``step`` (0-based) trains on."""
        return divmod(step, self.batches_per_epoch)

    def __iter__(self):
        step, cached_epoch, order = self.start_step, None, None
        while True:
            epoch, b = self.position(step)
            if epoch != cached_epoch:
                order, cached_epoch = epoch_order(self.seed, epoch, self.num_samples), epoch
            start = b * self.batch_size + self.rank * self.per_rank
            yield [(epoch, int(i)) for i in order[start : start + self.per_rank]]
            step += 1


class EpochKeyedDataset(Dataset):
    """Reads ``dataset[index]`` for keys ``(epoch, index)``, calling ``dataset.set_epoch(epoch)`` on a new epoch.

    Living inside the DataLoader (also in its worker processes), it keeps ``set_epoch`` in step with the data.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._epoch: int | None = None
        self._has_set_epoch = callable(getattr(dataset, "set_epoch", None))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if self._has_set_epoch and epoch != self._epoch:
            self.dataset.set_epoch(epoch)
            self._epoch = epoch
        return self.dataset[index]
