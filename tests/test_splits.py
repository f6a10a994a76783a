"""Splits: seeded, covering, leak-free for every kind; scaffold groups and k-fold partitions."""

import dataclasses

import numpy as np
import pytest

from perturbjax.data.chem import murcko_scaffolds
from perturbjax.data.splits import SPLIT_KINDS, Split, assert_no_leakage, make_split, split_groups

# 40 drugs (TINY_DEMO.n_drugs) in chemical series of uneven size, so the scaffold split has big and
# small groups, an acyclic "" group, singletons and two unparsable SMILES.
SERIES = {
    "c1ccccc1": ["Cc1ccccc1", "CCc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "Clc1ccccc1",
                 "CC(=O)Oc1ccccc1C(=O)O", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "COc1ccccc1"],
    "c1ccncc1": ["Cc1ccncc1", "Oc1ccncc1", "Nc1ccncc1", "CCc1ccncc1", "Cc1ccccn1"],
    "c1ccc2ccccc2c1": ["Cc1ccc2ccccc2c1", "Oc1ccc2ccccc2c1", "Nc1ccc2ccccc2c1", "CCc1ccc2ccccc2c1"],
    "C1CCCCC1": ["CC1CCCCC1", "OC1CCCCC1", "NC1CCCCC1"],
    "": ["CCO", "CCCC", "CC(=O)O", "CCN(CC)CC"],
}
OTHERS = ["Cc1c[nH]c2ccccc12", "Oc1ccc2[nH]ccc2c1", "Cc1ccc(-c2ccccc2)cc1", "Oc1ccc(-c2ccccc2)cc1",
          "Cc1ccsc1", "Oc1ccsc1", "Cc1ccoc1", "CCc1ccoc1", "CC1CCNCC1", "OC1CCNCC1",
          "c1ccc2c(c1)oc1ccccc12", "Cc1ccc2ncccc2c1", "O=C1CCCN1", "CC1CC1c1ccccc1"]
INVALID = {7: "not a smiles", 30: "C1CC"}  # position -> SMILES


def scaffold_smiles() -> np.ndarray:
    smiles = [s for series in SERIES.values() for s in series] + OTHERS
    for pos, s in sorted(INVALID.items()):
        smiles.insert(pos, s)
    return np.array(smiles)


@pytest.fixture(scope="module")
def chem_demo(tiny_demo):
    smiles = scaffold_smiles()
    assert len(smiles) == len(tiny_demo.drug_smiles)
    return dataclasses.replace(tiny_demo, drug_smiles=smiles)


def test_scaffold_groups_follow_drugs_and_isolate_invalid_smiles(chem_demo):
    groups = split_groups(chem_demo, "scaffold")
    scaffolds = murcko_scaffolds(chem_demo.drug_smiles)
    np.testing.assert_array_equal(groups, scaffolds[chem_demo.drug])
    for scaffold, series in SERIES.items():
        assert {scaffolds[list(chem_demo.drug_smiles).index(s)] for s in series} == {scaffold}
    for pos in INVALID:
        # An unparsable drug is a group of its own: exactly that drug's conditions.
        members = np.flatnonzero(groups == f"invalid:{pos}")
        np.testing.assert_array_equal(members, np.flatnonzero(chem_demo.drug == pos))
    np.testing.assert_array_equal(split_groups(chem_demo, "cold_drug"), chem_demo.drug)
    np.testing.assert_array_equal(split_groups(chem_demo, "random"), np.arange(chem_demo.num_conditions))
    with pytest.raises(ValueError, match="unknown split kind"):
        split_groups(chem_demo, "scaffolded")


@pytest.mark.parametrize("kind", SPLIT_KINDS)
def test_splits_are_seeded_covering_and_sized(chem_demo, kind):
    split = make_split(chem_demo, kind, seed=3, validation_fraction=0.2, test_fraction=0.15)
    assert split.fold is None and split.num_folds is None
    np.testing.assert_array_equal(np.sort(np.concatenate(list(split.parts().values()))),
                                  np.arange(chem_demo.num_conditions))
    again = make_split(chem_demo, kind, seed=3, validation_fraction=0.2, test_fraction=0.15)
    assert again.to_json() == split.to_json()
    others = [make_split(chem_demo, kind, seed=s, validation_fraction=0.2, test_fraction=0.15)
              for s in range(4, 8)]
    assert any(o.test.tolist() != split.test.tolist() for o in others)
    # Fractions count conditions for random and scaffold splits, groups for cold splits.
    groups = split_groups(chem_demo, kind)
    counted = (lambda idx: len(idx)) if kind in ("random", "scaffold") else (
        lambda idx: len(np.unique(groups[idx])))
    total = counted(np.arange(chem_demo.num_conditions))
    for s in [split, *others]:
        for part, fraction in (("test", 0.15), ("validation", 0.2)):
            share = counted(s.parts()[part]) / total
            assert abs(share - fraction) < (0.06 if kind != "cold_cell" else 0.3), (part, share)


def test_scaffold_split_keeps_series_and_drugs_whole(chem_demo):
    groups = split_groups(chem_demo, "scaffold")
    n_test = round(0.15 * chem_demo.num_conditions)
    for seed in range(6):
        split = make_split(chem_demo, "scaffold", seed=seed)
        part_of = {}
        for name, idx in split.parts().items():
            for g in np.unique(groups[idx]):
                assert part_of.setdefault(g, name) == name, f"scaffold {g!r} crosses parts"
            assert not set(chem_demo.drug[idx]) & set().union(
                *(set(chem_demo.drug[other]) for n, other in split.parts().items() if n != name))
        # Series bigger than half the test target always train, however the seed shuffles.
        for g, size in zip(*np.unique(groups, return_counts=True)):
            if size > n_test / 2:
                assert part_of[g] == "train", (g, size)
    with pytest.raises(ValueError, match="too few"):  # one scaffold cannot fill three parts
        make_split(dataclasses.replace(chem_demo, drug_smiles=np.array(
            ["Cc1ccccc1"] * len(chem_demo.drug_smiles))), "scaffold", seed=0)


def _leaky(data, kind: str) -> Split:
    """A split of `kind` with one condition of a test group moved into train."""
    split = make_split(data, kind, seed=0)
    groups = split_groups(data, kind)
    for i in split.test:
        members = np.flatnonzero(groups == groups[i])
        if len(members) > 1:
            return dataclasses.replace(split, train=np.r_[split.train, i],
                                       test=np.setdiff1d(split.test, [i]))
    raise AssertionError("no test group with two conditions")


@pytest.mark.parametrize("kind", ["cold_drug", "cold_cell", "scaffold"])
def test_leak_check_fires_on_split_groups(chem_demo, kind):
    with pytest.raises(AssertionError, match="leaks"):
        assert_no_leakage(chem_demo, _leaky(chem_demo, kind))


@pytest.mark.parametrize("kind", SPLIT_KINDS)
def test_leak_check_fires_on_shared_or_missing_conditions(chem_demo, kind):
    split = make_split(chem_demo, kind, seed=0)
    with pytest.raises(AssertionError, match="share"):
        assert_no_leakage(chem_demo, dataclasses.replace(split, validation=np.r_[split.validation,
                                                                                 split.train[0]]))
    with pytest.raises(AssertionError, match="covers"):
        assert_no_leakage(chem_demo, dataclasses.replace(split, train=split.train[1:]))
    with pytest.raises(AssertionError, match="covers"):  # a duplicate within one part
        assert_no_leakage(chem_demo, dataclasses.replace(
            split, train=np.r_[split.train[1:], split.train[2]]))


def test_scaffold_leak_check_catches_a_series_split_by_drug(chem_demo):
    """A split that keeps drugs whole can still put one chemical series on both sides."""
    groups = split_groups(chem_demo, "scaffold")
    benzene = np.flatnonzero(groups == "c1ccccc1")
    drugs = np.unique(chem_demo.drug[benzene])
    test = np.flatnonzero(chem_demo.drug == drugs[0])
    validation = np.flatnonzero(groups == "c1ccncc1")
    train = np.setdiff1d(np.arange(chem_demo.num_conditions), np.r_[test, validation])
    split = Split("scaffold", train, validation, test)
    assert_no_leakage(chem_demo, dataclasses.replace(split, kind="cold_drug"))  # fine by drugs
    with pytest.raises(AssertionError, match="leaks: train and test share 1 scaffolds"):
        assert_no_leakage(chem_demo, split)


@pytest.mark.parametrize("kind, num_folds", [("random", 5), ("cold_drug", 5), ("cold_cell", 4),
                                             ("scaffold", 5), ("scaffold", 3)])
def test_folds_partition_conditions(chem_demo, kind, num_folds):
    groups = split_groups(chem_demo, kind)
    folds = [make_split(chem_demo, kind, seed=1, validation_fraction=0.2, num_folds=num_folds, fold=f)
             for f in range(num_folds)]
    tests = np.concatenate([s.test for s in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(chem_demo.num_conditions))
    for f, split in enumerate(folds):
        assert (split.kind, split.fold, split.num_folds) == (kind, f, num_folds)
        assert split.to_json()["fold"] == f and split.to_json()["num_folds"] == num_folds
        # Validation is ~20% of the groups (conditions, for scaffolds) outside the test fold.
        rest = np.r_[split.train, split.validation]
        if kind in ("random", "scaffold"):
            share = len(split.validation) / len(rest)
        else:
            share = len(np.unique(groups[split.validation])) / len(np.unique(groups[rest]))
        assert abs(share - 0.2) < (0.06 if kind != "cold_cell" else 0.15), share
    sizes = [len(s.test) for s in folds]
    if kind == "scaffold":  # greedy largest-first keeps folds' condition counts close
        assert max(sizes) - min(sizes) <= np.unique(groups, return_counts=True)[1].max()
    same = make_split(chem_demo, kind, seed=1, validation_fraction=0.2, num_folds=num_folds, fold=2)
    assert same.to_json() == folds[2].to_json()
    other = [make_split(chem_demo, kind, seed=s, validation_fraction=0.2, num_folds=num_folds,
                        fold=2).test.tolist() for s in range(2, 6)]
    assert any(o != folds[2].test.tolist() for o in other)


def test_fold_arguments_are_checked(chem_demo):
    for kwargs, message in [(dict(num_folds=5, fold=5), "out of range"),
                            (dict(num_folds=5, fold=-1), "out of range"),
                            (dict(num_folds=1, fold=0), "at least 2"),
                            (dict(num_folds=5), "both"), (dict(fold=0), "both")]:
        with pytest.raises(ValueError, match=message):
            make_split(chem_demo, "cold_drug", seed=0, **kwargs)
    with pytest.raises(ValueError, match="only 4 groups"):  # TINY_DEMO has 4 cell lines
        make_split(chem_demo, "cold_cell", seed=0, num_folds=5, fold=0)
    with pytest.raises(ValueError, match="validation_fraction"):
        make_split(chem_demo, "random", seed=0, validation_fraction=1.0, num_folds=5, fold=0)


def test_split_stays_backward_compatible(chem_demo):
    split = make_split(chem_demo, "cold_drug", seed=0)
    legacy = Split("cold_drug", split.train, split.validation, split.test)
    assert legacy.to_json() == split.to_json()
    assert set(legacy.to_json()) == {"kind", "fold", "num_folds", "train", "validation", "test"}
