"""Train/validation/test splits of conditions, seeded, with leakage checks.

A cold split holds out whole groups (all conditions of a drug, or of a cell line), so a model is
scored on drugs or cells it never saw measured. The check runs on every split that is made.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from perturbjax.data.perturbation import PerturbationData

SPLIT_KINDS = ("random", "cold_drug", "cold_cell")


@dataclasses.dataclass(frozen=True)
class Split:
    """Condition indices of each part; `kind` says what was held out."""

    kind: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def to_json(self) -> dict:
        return {"kind": self.kind, **{k: v.tolist() for k, v in self.parts().items()}}


def make_split(data: PerturbationData, kind: str, seed: int, validation_fraction: float = 0.15,
               test_fraction: float = 0.15) -> Split:
    """Splits `data`'s conditions; for cold splits the fractions count groups, not conditions.

    Raises:
      ValueError: unknown kind, bad fractions, or a part that would be empty.
    """
    if kind not in SPLIT_KINDS:
        raise ValueError(f"unknown split kind {kind!r}; expected one of {SPLIT_KINDS}")
    if not (0 < validation_fraction and 0 < test_fraction and validation_fraction + test_fraction < 1):
        raise ValueError(f"fractions must be positive and sum below 1, got validation="
                         f"{validation_fraction}, test={test_fraction}")
    groups = {"random": np.arange(data.num_conditions), "cold_drug": data.drug,
              "cold_cell": data.cell}[kind]
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


def assert_no_leakage(data: PerturbationData, split: Split) -> None:
    """Raises AssertionError if parts share conditions or, for cold splits, held-out groups."""
    parts = split.parts()
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = np.intersect1d(parts[a], parts[b])
            if shared.size:
                raise AssertionError(f"{split.kind} split: {a} and {b} share {shared.size} conditions")
            groups = {"cold_drug": data.drug, "cold_cell": data.cell}.get(split.kind)
            if groups is not None:
                shared = np.intersect1d(groups[parts[a]], groups[parts[b]])
                if shared.size:
                    raise AssertionError(f"{split.kind} split leaks: {a} and {b} share "
                                         f"{shared.size} groups, e.g. {shared[:5]}")
    total = sum(len(p) for p in parts.values())
    if total != data.num_conditions:
        raise AssertionError(f"{split.kind} split covers {total} of {data.num_conditions} conditions")
