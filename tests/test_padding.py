import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from graphs import padded_topology
from perturbjax.graph.padding import PaddingBudget, flat_nodes, to_graphs_tuple
from perturbjax.graph.schema import GraphSchema
from perturbjax.graph.topology import Topology
from perturbjax.models.perturbation import PerturbationModel
from perturbjax.models.registry import LAYERS, layer_factory


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


@pytest.mark.parametrize("layer", LAYERS)
def test_padding_never_changes_real_outputs(graph, layer):
    """The whole model gives the same predictions on the exact topology (sparse backend) and on
    the graph padded in every block (segment backend, as sampled subgraphs are)."""
    graph = graph.with_reverse_edges(skip=("interacts",))
    schema = GraphSchema.of(graph)
    model = PerturbationModel(schema, num_readout=3, layer=layer_factory(layer, {"heads": 2}),
                              hidden=8,
                              embedded_types=("gene",), num_nodes=graph.num_nodes,
                              rngs=nnx.Rngs(0))
    off = graph.node_offsets()
    drug = np.array([0, 2]) + off["drug"]
    cell = np.array([1, 1]) + off["pathway"]  # any node type can play the cell here
    readout = np.array([0, 3, 5]) + off["gene"]
    cov = jnp.array([[0.0, 1.0], [1.0, 0.25]])
    features, _ = flat_nodes(graph, schema)
    ids = np.arange(graph.num_nodes)
    exact = Topology.build(graph, schema).to_device()
    want = model(exact, {"features": jnp.asarray(features), "id": jnp.asarray(ids)}, drug, cell,
                 cov, readout)
    topo, slots = padded_topology(graph, extra_nodes=5, extra_edges=7)
    junk = np.full((topo.num_nodes, features.shape[1]), 3.0, np.float32)
    junk[slots] = features
    pad_ids = np.zeros(topo.num_nodes, np.int32)
    pad_ids[slots] = ids
    got = model(topo.to_device(), {"features": jnp.asarray(junk), "id": jnp.asarray(pad_ids)},
                slots[drug], slots[cell], cov, slots[readout])
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
