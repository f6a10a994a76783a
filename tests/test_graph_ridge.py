"""The closed-form KG model (SGC kernel ridge) on the tiny generated demo."""

import numpy as np

from perturbjax.data.splits import make_split
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
    pred = model.predict(tiny_demo, split.test)
    assert pred.shape == (len(split.test), tiny_demo.signatures.shape[1]) and np.isfinite(pred).all()
    # Without the mechanism edges the drugs' neighbourhoods, hence predictions, change.
    ablated = tiny_demo.with_graph(tiny_demo.graph.drop_edge_types(["interacts"]))
    other = GraphRidge()
    other.fit(ablated, split.train, split.validation)
    assert not np.allclose(other.predict(ablated, split.test), pred)
