"""Batch order, resume skipping, evaluation filling and device shares, for every task.

A task says which examples a part holds (`Task.examples`) and how to make a batch of some of
them (`Task.make_batch`); the order and shape of the stream are decided here, once.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from perturbjax.training.parallel import Shares, stack_shares

PART_CODES = {"train": 1, "validation": 2, "test": 3}


def _batches(task, idx: np.ndarray, shares: Shares | None, sample_seed: tuple[int, ...]) -> dict:
    """One batch of the examples `idx`; with `shares`, this process's shares of it, stacked on a
    leading device axis (see `perturbjax.training.parallel`). Share i's randomness is seeded by
    `sample_seed + (i,)`, whichever process builds it."""
    if shares is None:
        return task.make_batch(idx, sample_seed + (0,))
    return stack_shares([task.make_batch(part, sample_seed + (i,))
                         for i, part in zip(shares.local, shares.split(idx))])


def train_batches(task, seed: int, start_step: int = 0, shares: Shares | None = None
                  ) -> Iterator[dict]:
    """Endless shuffled batches of training examples, all of `task.batch_size`.

    Batch `i` is a function of (seed, i) alone: with `start_step=s` the stream begins with the
    batch an unbroken stream yields at position s, so a resumed run sees the same data. Epochs
    are permutations drawn one after another from `default_rng(seed)`; skipping epochs draws
    (and discards) theirs, at the cost of one permutation per skipped epoch. Every process draws
    the same global batch and builds only its `shares` of it.
    """
    rng = np.random.default_rng(seed)
    train, size = task.examples("train"), task.batch_size
    per_epoch = len(train) // size
    if per_epoch == 0:
        raise ValueError(f"batch size {size} is larger than the {len(train)} training examples")
    epoch, skip = divmod(start_step, per_epoch)
    for _ in range(epoch):
        rng.permutation(train)
    while True:
        order = rng.permutation(train)
        for b in range(skip, per_epoch):
            yield _batches(task, order[b * size:(b + 1) * size], shares, (seed, epoch, b))
        epoch, skip = epoch + 1, 0


def eval_batches(task, part: str, seed: int, shares: Shares | None = None
                 ) -> Iterator[tuple[dict, int]]:
    """Batches of a split part of `task.batch_size`; the last is filled up by repeating the
    part's examples, and each comes with its real size. Any randomness is drawn from fixed
    seeds, so a part's predictions are reproducible."""
    idx = task.examples(part)
    for start in range(0, len(idx), task.batch_size):
        chunk = idx[start:start + task.batch_size]
        filled = np.resize(chunk, task.batch_size)
        yield _batches(task, filled, shares, (seed, PART_CODES[part], start)), len(chunk)
