import numpy as np
import pytest

from perturbjax.data.chem import morgan_fingerprints
from perturbjax.data.demo import MECHANISM_RELATIONS, make_demo
from perturbjax.data.splits import Split, assert_no_leakage, make_split
from conftest import TINY_DEMO


def test_demo_is_deterministic_and_valid(tiny_demo):
    again = make_demo(TINY_DEMO)
    np.testing.assert_array_equal(again.signatures, tiny_demo.signatures)
    assert again.graph.summary() == tiny_demo.graph.summary()
    assert morgan_fingerprints(list(tiny_demo.drug_smiles)).valid.all()
    relations = {k.relation for k in tiny_demo.graph.edges}
    assert set(MECHANISM_RELATIONS) <= relations and {"inhibits", "activates"} <= relations
    assert tiny_demo.signatures.shape == (tiny_demo.num_conditions, TINY_DEMO.n_readout)
    # Every drug hits at least one target, so signatures come from the graph.
    assert (tiny_demo.target_indicators().sum(1) >= 1).all()


@pytest.mark.parametrize("kind", ["random", "cold_drug", "cold_cell"])
def test_splits_cover_everything_without_leaks(tiny_demo, kind):
    split = make_split(tiny_demo, kind, seed=3)
    assert sum(len(p) for p in split.parts().values()) == tiny_demo.num_conditions
    if kind == "cold_drug":
        assert not set(tiny_demo.drug[split.test]) & set(tiny_demo.drug[split.train])
    assert make_split(tiny_demo, kind, seed=3).test.tolist() == split.test.tolist()
    others = [make_split(tiny_demo, kind, seed=s).test.tolist() for s in range(4, 8)]
    assert any(o != split.test.tolist() for o in others)  # the seed matters


def test_leak_check_catches_shared_drugs(tiny_demo):
    split = make_split(tiny_demo, "cold_drug", seed=0)
    drug = tiny_demo.drug[split.test[0]]
    leaked = np.flatnonzero(tiny_demo.drug == drug)
    # Move one of the held-out drug's conditions into train: a leak.
    bad = Split("cold_drug", np.r_[split.train, leaked[:1]], split.validation,
                np.setdiff1d(split.test, leaked[:1]))
    if len(leaked) > 1:
        with pytest.raises(AssertionError, match="leaks"):
            assert_no_leakage(tiny_demo, bad)
    with pytest.raises(AssertionError, match="share"):
        assert_no_leakage(tiny_demo, Split("random", split.train, split.train[:1], split.test))
    with pytest.raises(ValueError, match="unknown split kind"):
        make_split(tiny_demo, "scaffolded", seed=0)
