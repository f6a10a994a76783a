"""The closed-form KG model (SGC kernel ridge mixed with chemistry) on the tiny generated demo."""

import numpy as np

from perturbjax.data.splits import make_split
from perturbjax.models.baselines import tanimoto_kernels
from perturbjax.models.graph_ridge import GraphRidge, normalised_adjacency


def test_adjacency_is_symmetric_normalised_with_self_loops(tiny_demo):
    s = normalised_adjacency(tiny_demo)
    n = tiny_demo.graph.num_nodes
    assert s.shape == (n, n)
    assert abs(s - s.T).max() < 1e-6
    assert (s.diagonal() > 0).all()
    # D^-1/2 (A+I) D^-1/2 has spectral radius 1 (largest eigenvalue of a normalised adjacency).
    top = np.linalg.eigvalsh(s.toarray()).max()
    assert abs(top - 1.0) < 1e-4


def test_fits_chooses_on_validation_and_reads_the_graph(tiny_demo):
    split = make_split(tiny_demo, "cold_drug", seed=0)
    model = GraphRidge()
    model.fit(tiny_demo, split.train, split.validation)
    assert model.chosen["hops"] in (1, 2, 3) and model.chosen["alpha"] in GraphRidge.alphas
    assert model.chosen["chemistry_weight"] in GraphRidge.chemistry_weights  # never 1: the graph counts
    pred = model.predict(tiny_demo, split.test)
    assert pred.shape == (len(split.test), tiny_demo.signatures.shape[1]) and np.isfinite(pred).all()
    # Without the mechanism edges the drugs' neighbourhoods, hence predictions, change.
    ablated = tiny_demo.with_graph(tiny_demo.graph.drop_edge_types(["interacts"]))
    other = GraphRidge()
    other.fit(ablated, split.train, split.validation)
    assert not np.allclose(other.predict(ablated, split.test), pred)


def test_candidates_mix_graph_and_chemistry_as_documented(tiny_demo):
    split = make_split(tiny_demo, "cold_drug", seed=0)
    model = GraphRidge()
    drugs = np.unique(tiny_demo.drug)
    hops = model.hop_kernels(tiny_demo, drugs, tiny_demo.drug[split.train])
    chem = tanimoto_kernels(tiny_demo, drugs, GraphRidge.tanimoto_powers)
    candidates = list(model.candidate_kernels(tiny_demo, drugs, split.train))
    # 3 hop counts x (graph alone + 3 mixtures x 4 Tanimoto powers)
    assert len(candidates) == 3 * (1 + 3 * len(GraphRidge.tanimoto_powers))
    for chosen, kernel in candidates:
        graph = sum(hops[:chosen["hops"]]) / chosen["hops"]
        w = chosen["chemistry_weight"]
        expected = graph if w == 0 else (1 - w) * graph + w * chem[chosen["tanimoto_power"]]
        np.testing.assert_allclose(kernel, expected, rtol=1e-6, atol=1e-9)
    for k in hops:  # every hop kernel is scaled to unit mean diagonal, like the Tanimoto kernel
        assert abs(np.mean(np.diag(k)) - 1.0) < 1e-6
