"""Train/validation/test splits of conditions, seeded, with leakage checks.

A cold split holds out whole groups (all conditions of a drug, or of a cell line), so a model is
scored on drugs or cells it never saw measured. A scaffold split holds out whole chemical series
(drugs sharing a Bemis-Murcko scaffold), so it also scores generalisation to new chemistry. Any
kind can be cross-validated with `num_folds`. The leakage check runs on every split that is made.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from perturbjax.data.chem import murcko_scaffolds
from perturbjax.data.perturbation import PerturbationData

SPLIT_KINDS = ("random", "cold_drug", "cold_cell", "scaffold")
# Groupings (by `split_groups` kind, with a name for messages) that parts of a kind must not share;
# random's groups are the conditions themselves, checked for every kind.
_KEPT_WHOLE = {"cold_drug": (("cold_drug", "drugs"),), "cold_cell": (("cold_cell", "cells"),),
               "scaffold": (("scaffold", "scaffolds"), ("cold_drug", "drugs"))}


@dataclasses.dataclass(frozen=True)
class Split:
    """Condition indices of each part; `kind` says what was held out.

    `fold`/`num_folds` name the cross-validation fold whose groups form `test`; None for a
    single split.
    """

    kind: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    fold: int | None = None
    num_folds: int | None = None

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def to_json(self) -> dict:
        return {"kind": self.kind, "fold": self.fold, "num_folds": self.num_folds,
                **{k: v.tolist() for k, v in self.parts().items()}}


def split_groups(data: PerturbationData, kind: str) -> np.ndarray:
    """[C] group of each condition: the unit a split of `kind` never divides between parts.

    The one place that says what a kind holds out, so splitting and leakage checks agree.

    Raises:
      ValueError: unknown kind.
    """
    if kind == "random":
        return np.arange(data.num_conditions)
    if kind == "cold_drug":
        return np.asarray(data.drug)
    if kind == "cold_cell":
        return np.asarray(data.cell)
    if kind == "scaffold":
        return murcko_scaffolds(list(data.drug_smiles))[data.drug]
    raise ValueError(f"unknown split kind {kind!r}; expected one of {SPLIT_KINDS}")


def make_split(data: PerturbationData, kind: str, seed: int, validation_fraction: float = 0.15,
               test_fraction: float = 0.15, *, num_folds: int | None = None,
               fold: int | None = None) -> Split:
    """Splits `data`'s conditions into train, validation and test, reproducibly from `seed`.

    Fractions count groups for cold splits (drugs or cells) but conditions for random and scaffold
    splits: scaffold sizes are very uneven, so counting scaffolds would give wildly sized parts.
    A scaffold split is chemprop's balanced scaffold split, seeded: scaffolds are shuffled, those
    larger than half the test target go to train (one big series must not swallow the test set),
    and the rest fill test, then validation, up to their targets, the remainder going to train.

    With `num_folds`, the groups of `kind` are dealt into `num_folds` folds fixed by `seed` alone
    (scaffolds largest first into the currently smallest fold, balancing condition counts; other
    kinds in equal numbers of groups), fold `fold` is the test part, `test_fraction` is ignored, and
    `validation_fraction` of the remaining groups (of their conditions, for scaffolds), drawn from
    `seed` and `fold`, is validation (scaffolds filled as above, against the validation target).
    The test parts of folds 0..num_folds-1 partition all conditions.

    Raises:
      ValueError: unknown kind, bad fractions or folds, or a part that would be empty.
    """
    if kind not in SPLIT_KINDS:
        raise ValueError(f"unknown split kind {kind!r}; expected one of {SPLIT_KINDS}")
    if num_folds is not None or fold is not None:
        split = _fold_split(data, kind, seed, validation_fraction, num_folds, fold)
        assert_no_leakage(data, split)
        return split
    if not (0 < validation_fraction and 0 < test_fraction and validation_fraction + test_fraction < 1):
        raise ValueError(f"fractions must be positive and sum below 1, got validation="
                         f"{validation_fraction}, test={test_fraction}")
    groups = split_groups(data, kind)
    if kind == "scaffold":
        unique, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
        n = data.num_conditions
        targets = [max(1, int(round(test_fraction * n))), max(1, int(round(validation_fraction * n)))]
        part = _balanced_fill(sizes, targets, np.random.default_rng(seed))[inverse]
        split = Split(kind, np.flatnonzero(part == 2), np.flatnonzero(part == 1),
                      np.flatnonzero(part == 0))
        _require_nonempty(split, f"scaffold split: {len(unique)} scaffolds")
    else:
        unique = np.unique(groups)
        order = np.random.default_rng(seed).permutation(unique)
        n_test = max(1, int(round(test_fraction * len(unique))))
        n_val = max(1, int(round(validation_fraction * len(unique))))
        if n_test + n_val >= len(unique):
            raise ValueError(f"{kind} split: only {len(unique)} groups, too few for three parts")
        test_groups, val_groups = order[:n_test], order[n_test:n_test + n_val]
        in_test, in_val = np.isin(groups, test_groups), np.isin(groups, val_groups)
        split = Split(kind, np.flatnonzero(~in_test & ~in_val), np.flatnonzero(in_val),
                      np.flatnonzero(in_test))
    assert_no_leakage(data, split)
    return split


def _fold_split(data: PerturbationData, kind: str, seed: int, validation_fraction: float,
                num_folds: int | None, fold: int | None) -> Split:
    """Fold `fold` of `num_folds` as the test part; see `make_split`."""
    if num_folds is None or fold is None:
        raise ValueError("cross-validation needs both num_folds and fold")
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold {fold} is out of range for {num_folds} folds")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    groups = split_groups(data, kind)
    unique, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if num_folds > len(unique):
        raise ValueError(f"{kind} split: {num_folds} folds but only {len(unique)} groups")
    # The fold of each group depends on the seed only, so the folds partition the groups.
    order = np.random.default_rng(seed).permutation(len(unique))
    group_fold = np.empty(len(unique), int)
    if kind == "scaffold":
        fold_sizes = np.zeros(num_folds, int)
        for g in order[np.argsort(-sizes[order], kind="stable")]:
            smallest = int(np.argmin(fold_sizes))
            group_fold[g] = smallest
            fold_sizes[smallest] += sizes[g]
    else:
        for f, members in enumerate(np.array_split(order, num_folds)):
            group_fold[members] = f
    rest = np.flatnonzero(group_fold != fold)
    rng = np.random.default_rng([seed, fold])
    in_val = np.zeros(len(unique), bool)
    if kind == "scaffold":
        target = max(1, int(round(validation_fraction * sizes[rest].sum())))
        in_val[rest] = _balanced_fill(sizes[rest], [target], rng) == 0
    else:
        n_val = max(1, int(round(validation_fraction * len(rest))))
        if n_val >= len(rest):
            raise ValueError(f"{kind} split: {len(rest)} groups outside the test fold, too few "
                             f"for train and validation")
        in_val[rng.permutation(rest)[:n_val]] = True
    in_test = group_fold == fold
    part = np.where(in_test, 0, np.where(in_val, 1, 2))[inverse]
    split = Split(kind, np.flatnonzero(part == 2), np.flatnonzero(part == 1),
                  np.flatnonzero(part == 0), fold=fold, num_folds=num_folds)
    _require_nonempty(split, f"{kind} fold {fold} of {num_folds}: {len(unique)} groups")
    return split


def _balanced_fill(sizes: np.ndarray, targets: list[int], rng: np.random.Generator) -> np.ndarray:
    """Part of each group: index into `targets`, or len(targets) for the remainder (train).

    Groups are visited in a seeded random order; a group larger than half the first target goes
    to the remainder, any other to the first part it fits in without passing that part's target.
    """
    part = np.full(len(sizes), len(targets))
    filled = [0] * len(targets)
    for g in rng.permutation(len(sizes)):
        if sizes[g] > targets[0] / 2:
            continue
        for j, target in enumerate(targets):
            if filled[j] + sizes[g] <= target:
                part[g], filled[j] = j, filled[j] + sizes[g]
                break
    return part


def _require_nonempty(split: Split, what: str) -> None:
    """Raises ValueError naming empty parts: greedy filling can leave one empty on tiny data."""
    empty = [name for name, idx in split.parts().items() if not len(idx)]
    if empty:
        raise ValueError(f"{what}, too few or too uneven for three parts: {empty} would be empty")


def assert_no_leakage(data: PerturbationData, split: Split) -> None:
    """Raises AssertionError if parts share conditions or groups, or miss conditions.

    Groups come from `split_groups`: drugs for cold_drug, cells for cold_cell, and both scaffolds
    and drugs for scaffold (every drug has one scaffold, but the check should not rely on it).
    """
    parts = split.parts()
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = np.intersect1d(parts[a], parts[b])
            if shared.size:
                raise AssertionError(f"{split.kind} split: {a} and {b} share {shared.size} conditions")
    covered = np.sort(np.concatenate([np.asarray(p, int) for p in parts.values()]))
    if not np.array_equal(covered, np.arange(data.num_conditions)):
        raise AssertionError(f"{split.kind} split covers {len(np.unique(covered))} distinct of "
                             f"{data.num_conditions} conditions in {len(covered)} entries")
    for group_kind, what in _KEPT_WHOLE.get(split.kind, ()):
        groups = split_groups(data, group_kind)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                shared = np.intersect1d(groups[parts[a]], groups[parts[b]])
                if shared.size:
                    raise AssertionError(f"{split.kind} split leaks: {a} and {b} share "
                                         f"{shared.size} {what}, e.g. {shared[:5]}")


# ---- samples of cell graphs: donor splits ------------------------------------------------
def donor_split(donors: np.ndarray, seed: int, validation_fraction: float = 0.15,
                test_fraction: float = 0.15) -> Split:
    """Splits samples so that no donor has samples in two parts (kind "donor").

    Donors are shuffled (seeded); each goes to test while test holds fewer samples than its
    target, then to validation likewise, then to train (donors are few and large, so the parts'
    sizes are approximate). All samples whose donor is unknown ('') form one group, so they
    too stay in one part.

    Raises:
      ValueError: too few donors (or too uneven) for three non-empty parts.
    """
    unique, inverse, sizes = np.unique(np.asarray(donors, object).astype(str),
                                       return_inverse=True, return_counts=True)
    n = len(donors)
    targets = [max(1, int(round(test_fraction * n))), max(1, int(round(validation_fraction * n)))]
    group_part, filled = np.full(len(unique), 2), [0, 0]
    for g in np.random.default_rng(seed).permutation(len(unique)):
        for j in (0, 1):
            if filled[j] < targets[j]:
                group_part[g], filled[j] = j, filled[j] + sizes[g]
                break
    part = group_part[inverse]
    split = Split("donor", np.flatnonzero(part == 2), np.flatnonzero(part == 1),
                  np.flatnonzero(part == 0))
    _require_nonempty(split, f"donor split: {len(unique)} donors")
    assert_groups_disjoint(split, donors, "donors")
    return split


def stratified_split(labels: np.ndarray, seed: int, validation_fraction: float = 0.15,
                     test_fraction: float = 0.15) -> Split:
    """A random split of samples, stratified by class (kind "stratified_random"): each class
    is divided in the given proportions (rounded, train keeping at least one sample), for data
    whose donors are unknown."""
    rng = np.random.default_rng(seed)
    part = np.zeros(len(labels), int)  # 0 train, 1 validation, 2 test
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(members)))
        n_val = int(round(validation_fraction * len(members)))
        while n_test + n_val >= len(members) and n_test + n_val > 0:
            n_test, n_val = (n_test - 1, n_val) if n_test >= n_val else (n_test, n_val - 1)
        part[members[:n_test]] = 2
        part[members[n_test:n_test + n_val]] = 1
    split = Split("stratified_random", np.flatnonzero(part == 0), np.flatnonzero(part == 1),
                  np.flatnonzero(part == 2))
    _require_nonempty(split, f"stratified split of {len(labels)} samples")
    return split


def assert_groups_disjoint(split: Split, groups: np.ndarray, what: str) -> None:
    """Raises AssertionError if two parts share a sample or a group (e.g. a donor)."""
    groups = np.asarray(groups, object).astype(str)
    parts = split.parts()
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if np.intersect1d(parts[a], parts[b]).size:
                raise AssertionError(f"{split.kind} split: {a} and {b} share samples")
            shared = np.intersect1d(groups[parts[a]], groups[parts[b]])
            if shared.size:
                raise AssertionError(f"{split.kind} split leaks: {a} and {b} share "
                                     f"{shared.size} {what}, e.g. {shared[:5].tolist()}")
