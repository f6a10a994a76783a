import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from perturbjax.graph.padding import GraphSchema, PaddingBudget, to_graphs_tuple
from perturbjax.models.perturbation import ENCODERS, PerturbationModel


def test_layout_types_features_and_masks(graph):
    schema = GraphSchema.of(graph)
    assert schema.feature_widths == (5, 4, 0)
    gt = to_graphs_tuple(graph, PaddingBudget(n_node=16, n_edge=32, n_graph=2))
    assert gt.nodes["features"].shape == (16, 5) and gt.senders.shape == (32,)
    np.testing.assert_array_equal(gt.nodes["node_type"][:11], [0] * 3 + [1] * 6 + [2] * 2)
    assert gt.nodes["mask"].sum() == 11 and gt.edges["mask"].sum() == 14
    # Gene features are left-aligned and the rest of the row is zero.
    np.testing.assert_allclose(gt.nodes["features"][3:9, :4], graph.nodes["gene"].stacked_features())
    assert not gt.nodes["features"][3:9, 4:].any() and not gt.nodes["features"][9:].any()
    # Edges use the flat numbering: drug 2 (node 2) targets gene 3 (node 6).
    targets = schema.edge_types.index(("drug", "targets", "gene"))
    sel = np.asarray(gt.edges["edge_type"][:14]) == targets
    assert (2, 6) in set(zip(gt.senders[:14][sel].tolist(), gt.receivers[:14][sel].tolist()))


def test_budget_fits_and_overflow_is_an_error(graph):
    budget = PaddingBudget.fitting(graph, multiple=8)
    assert budget == PaddingBudget(n_node=16, n_edge=16, n_graph=2)
    with pytest.raises(ValueError, match="does not fit the padding budget"):
        to_graphs_tuple(graph, PaddingBudget(n_node=11, n_edge=64))
    with pytest.raises(ValueError, match="not in the schema"):
        to_graphs_tuple(graph, schema=GraphSchema.of(graph.drop_edge_types(["interacts"])))


@pytest.mark.parametrize("layer", ENCODERS)
def test_padding_never_changes_real_outputs(graph, layer):
    """The whole model gives the same predictions unpadded and padded to two budgets."""
    graph = graph.with_reverse_edges(skip=("interacts",))
    schema = GraphSchema.of(graph)
    model = PerturbationModel(schema, num_readout=3, layer=layer, hidden=8, heads=2,
                              rngs=nnx.Rngs(0))
    off = graph.node_offsets()
    drug = jnp.array([0, 2]) + off["drug"]
    cell = jnp.array([1, 1]) + off["pathway"]  # any node type can play the cell here
    readout = jnp.array([0, 3, 5]) + off["gene"]
    cov = jnp.array([[0.0, 1.0], [1.0, 0.25]])
    outputs = []
    for budget in (None, PaddingBudget(64, 96, 2), PaddingBudget(128, 256, 3)):
        gt = jax.tree.map(jnp.asarray, to_graphs_tuple(graph, budget, schema))
        outputs.append(np.asarray(model(gt, drug, cell, cov, readout)))
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)
    np.testing.assert_allclose(outputs[2], outputs[0], atol=1e-5)
