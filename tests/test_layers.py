"""Tests for the heterogeneous message-passing layers over a `Topology`.

The rebuilt layers must compute what the layers before `propagate` computed
(`reference_layers.py`, kept verbatim), outputs and gradients, on random heterogeneous graphs
and with both backends. Padding invariance: the same graph laid out with padding in every
block (padding edges joining random nodes, padded rows holding garbage) gives identical outputs
and gradients for the real nodes, and exactly 0 on padded nodes.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import reference_layers as ref
from graphs import FEATURE_WIDTHS, padded_topology, random_hetero_graph
from perturbjax.graph.padding import PaddingBudget, flat_nodes, to_graphs_tuple
from perturbjax.graph.schema import GraphSchema
from perturbjax.graph.topology import Topology
from perturbjax.models.layers import HGT, RGCN, HeteroGAT, TypedInputProjection, attention_weights
from perturbjax.models.registry import LAYERS, layer_factory

GRAPH = random_hetero_graph()
NUM_TYPES, NUM_RELATIONS = 3, len(GRAPH.edge_types)
NUM_NODES = GRAPH.num_nodes
IN_DIM = OUT_DIM = 8
HEADS = 2

SCHEMA = GraphSchema.of(GRAPH)
assert len(SCHEMA.node_types) == NUM_TYPES
# Test cases: (registered layer, its options). Every layer of the registry is here with its
# defaults, so a new one gets the padding and batching tests below for free.
CASES = {name: (name, {}) for name in LAYERS} | {
    "hetero_gat": ("hetero_gat", {"heads": HEADS}),
    "rgcn_bases": ("rgcn", {"bases": 2}),
    "hgt": ("hgt", {"heads": HEADS}),
}
# The layers as they were before `propagate` (reference_layers.py), for the cases they cover.
REFERENCES = {
    "hetero_gat": lambda rngs: ref.HeteroGAT(IN_DIM, OUT_DIM, NUM_RELATIONS, num_heads=HEADS,
                                             rngs=rngs),
    "rgcn": lambda rngs: ref.RGCN(IN_DIM, OUT_DIM, NUM_RELATIONS, rngs=rngs),
    "rgcn_bases": lambda rngs: ref.RGCN(IN_DIM, OUT_DIM, NUM_RELATIONS, num_bases=2, rngs=rngs),
    "hgt": lambda rngs: ref.HGT(IN_DIM, OUT_DIM, NUM_TYPES, NUM_RELATIONS, num_heads=HEADS,
                                rngs=rngs),
}
ATTENTION_LAYERS = ["hetero_gat", "hgt"]


def make(case: str, rngs: nnx.Rngs) -> nnx.Module:
    """Test case `case`'s layer, built through the registry."""
    name, options = CASES[case]
    return layer_factory(name, options)(SCHEMA, IN_DIM, rngs)


def states(seed=0, n=NUM_NODES):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, IN_DIM)), jnp.float32)


def padded(sparse, h):
    """The padded topology, and `h` placed in its slots with garbage in the padded rows."""
    topo, slots = padded_topology(GRAPH, sparse=sparse)
    junk = 100 * np.random.default_rng(9).normal(size=(topo.num_nodes, IN_DIM))
    junk[slots] = np.asarray(h)
    return topo.to_device(), jnp.asarray(junk, jnp.float32), slots


def squared_loss(model, h, topo):
    return jnp.sum(jnp.sin(model(h, topo)) ** 2)


apply = nnx.jit(lambda model, h, topo: model(h, topo))
grad = nnx.jit(nnx.grad(squared_loss))


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_matches_reference_layer_outputs_and_gradients(name, sparse):
    """Same parameters, same graph: the old [R, N, d] layers on the padded GraphsTuple and the
    new ones on the topology agree, outputs and parameter gradients."""
    old = REFERENCES[name](nnx.Rngs(0))
    new = make(name, nnx.Rngs(1))
    nnx.update(new, nnx.state(old, nnx.Param))
    gt = jax.tree.map(jnp.asarray, to_graphs_tuple(GRAPH, PaddingBudget.fitting(GRAPH, 8)))
    h = states()
    h_old = jnp.concatenate([h, jnp.zeros((gt.nodes["mask"].shape[0] - NUM_NODES, IN_DIM))])
    topo = Topology.build(GRAPH, sparse=sparse).to_device()
    np.testing.assert_allclose(apply(new, h, topo), apply(old, h_old, gt)[:NUM_NODES],
                               atol=1e-5, rtol=1e-5)
    g_old = nnx.grad(lambda m, x: jnp.sum(jnp.sin(m(x, gt)[:NUM_NODES]) ** 2))(old, h_old)
    g_new = grad(new, h, topo)
    for a, b in zip(jax.tree.leaves(g_old), jax.tree.leaves(g_new), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_padding_invariance_and_gradients(name, sparse):
    model = make(name, nnx.Rngs(0))
    h = states()
    exact = Topology.build(GRAPH, sparse=sparse).to_device()
    topo, h_pad, slots = padded(sparse, h)
    out, out_pad = np.asarray(apply(model, h, exact)), np.asarray(apply(model, h_pad, topo))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out_pad[slots], out, atol=1e-5)
    pad_rows = np.setdiff1d(np.arange(topo.num_nodes), slots)
    assert np.all(out_pad[pad_rows] == 0.0)
    g, g_pad = grad(model, h, exact), grad(model, h_pad, topo)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_pad), strict=True):
        assert np.all(np.isfinite(b))
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-5)
    # Messages actually flow: without edges some real output changes.
    silent = padded_topology(GRAPH, sparse=sparse)[0]
    silent = Topology.from_arrays(silent.layout, silent.senders, silent.receivers,
                                  np.zeros_like(silent.edge_mask), silent.node_type,
                                  silent.node_mask, sparse=sparse).to_device()
    assert not np.allclose(np.asarray(apply(model, h_pad, silent))[slots], out)


@pytest.mark.parametrize("name", sorted(CASES))
def test_shared_topology_batch_equals_each_sample(name):
    """Values [N, B, d]: B samples on one graph give what each gives alone."""
    model = make(name, nnx.Rngs(2))
    topo = Topology.build(GRAPH).to_device()
    batch = jnp.stack([states(s) for s in range(3)], axis=1)
    out = apply(model, batch, topo)
    assert out.shape == (NUM_NODES, 3, OUT_DIM)
    for b in range(3):
        np.testing.assert_allclose(out[:, b], apply(model, batch[:, b], topo), atol=1e-5)


@pytest.mark.parametrize("name", ATTENTION_LAYERS)
def test_attention_retrievable_normalised_and_adds_no_state(name):
    model = make(name, nnx.Rngs(3))
    topo, h_pad, _ = padded(True, states())
    state_before = nnx.state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # sowing outside capture would warn
        att = attention_weights(model, h_pad, topo)
        out_jit, out_eager = apply(model, h_pad, topo), model(h_pad, topo)
    np.testing.assert_allclose(out_jit, out_eager, atol=1e-5)
    assert list(att) == [()]
    alpha = np.asarray(att[()])
    mask = np.asarray(topo.edge_mask)
    assert alpha.shape == (topo.num_edges, HEADS) and np.all(alpha[~mask] == 0.0)
    ids = np.asarray(topo.group if name == "hetero_gat" else topo.receivers)
    for g in np.unique(ids[mask]):
        np.testing.assert_allclose(alpha[(ids == g) & mask].sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(nnx.jit(attention_weights)(model, h_pad, topo)[()]),
                               alpha, atol=1e-6)
    assert jax.tree.structure(nnx.state(model)) == jax.tree.structure(state_before)
    assert not jax.tree.leaves(nnx.state(model, nnx.Intermediate))


def test_attention_paths_in_composite_model():
    class Stack(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([make(n, rngs) for n in ("hetero_gat", "hgt", "rgcn")])

        def __call__(self, h, topo):
            for layer in self.layers:
                h = jax.nn.relu(layer(h, topo))
            return h

    att = attention_weights(Stack(nnx.Rngs(6)), states(), Topology.build(GRAPH).to_device())
    assert sorted(att) == [("layers", 0), ("layers", 1)]


def test_rgcn_bases_share_parameters():
    def num_params(num_relations):
        model = nnx.eval_shape(
            lambda: RGCN(IN_DIM, OUT_DIM, num_relations, num_bases=3, rngs=nnx.Rngs(0)))
        return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))

    assert num_params(50) - num_params(2) == 48 * 3  # only the R x B coefficients grow


def test_hgt_has_no_residual_when_dims_differ():
    model = HGT(IN_DIM, 12, NUM_TYPES, NUM_RELATIONS, num_heads=HEADS, rngs=nnx.Rngs(0))
    assert model.skip is None
    out = apply(model, states(), Topology.build(GRAPH).to_device())
    assert out.shape == (NUM_NODES, 12) and out.dtype == jnp.float32


def test_gat_dropout_only_in_training():
    model = HeteroGAT(IN_DIM, OUT_DIM, NUM_RELATIONS, num_heads=HEADS, dropout=0.5,
                      rngs=nnx.Rngs(9))
    topo = Topology.build(GRAPH).to_device()
    h = states()
    assert not np.allclose(model(h, topo), model(h, topo))
    model.eval()
    np.testing.assert_array_equal(model(h, topo), model(h, topo))


def test_layer_and_topology_relation_counts_must_agree():
    model = RGCN(IN_DIM, OUT_DIM, NUM_RELATIONS + 1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="relations"):
        model(states(), Topology.build(GRAPH))


@pytest.mark.parametrize(
    "make",
    [
        lambda: HeteroGAT(IN_DIM, 10, NUM_RELATIONS, num_heads=4, rngs=nnx.Rngs(0)),
        lambda: HGT(IN_DIM, 10, NUM_TYPES, NUM_RELATIONS, num_heads=4, rngs=nnx.Rngs(0)),
        lambda: RGCN(IN_DIM, OUT_DIM, NUM_RELATIONS, num_bases=0, rngs=nnx.Rngs(0)),
        lambda: RGCN(IN_DIM, OUT_DIM, 0, rngs=nnx.Rngs(0)),
        lambda: TypedInputProjection((3, -1), OUT_DIM, rngs=nnx.Rngs(0)),
        lambda: TypedInputProjection((), OUT_DIM, rngs=nnx.Rngs(0)),
    ],
)
def test_bad_constructor_args_raise(make):
    with pytest.raises(ValueError):
        make()


def test_typed_input_projection_matches_reference_and_ignores_padding():
    widths = tuple(FEATURE_WIDTHS.values())
    old = ref.TypedInputProjection(widths, OUT_DIM, rngs=nnx.Rngs(10))
    new = TypedInputProjection(widths, OUT_DIM, rngs=nnx.Rngs(11))
    nnx.update(new, nnx.state(old, nnx.Param))
    gt = to_graphs_tuple(GRAPH, PaddingBudget.fitting(GRAPH, 8))
    features, node_type = flat_nodes(GRAPH, GraphSchema.of(GRAPH))
    out = np.asarray(new(jnp.asarray(features), Topology.build(GRAPH)))
    np.testing.assert_allclose(out, np.asarray(old(gt))[:NUM_NODES], atol=1e-6)
    # Padded rows full of garbage are zero and change nothing.
    topo, slots = padded_topology(GRAPH)
    junk = np.full((topo.num_nodes, features.shape[1]), 7.0, np.float32)
    junk[slots] = features
    out_pad = np.asarray(new(jnp.asarray(junk), topo))
    np.testing.assert_allclose(out_pad[slots], out, atol=1e-6)
    assert np.all(np.delete(out_pad, slots, axis=0) == 0.0)
    # Featureless types get their embedding alone; others depend on their features.
    embedding = np.asarray(new.type_embedding[...])
    featureless = node_type == 2
    np.testing.assert_array_equal(out[featureless], embedding[node_type[featureless]])
    assert not np.allclose(out[~featureless], embedding[node_type[~featureless]])
    with pytest.raises(ValueError, match="feature columns"):
        new(jnp.asarray(features[:, :4]), Topology.build(GRAPH))


def test_unknown_layer_fails_in_one_line_naming_the_registered_ones():
    with pytest.raises(ValueError) as e:
        layer_factory("gcn")
    assert "\n" not in str(e.value) and all(name in str(e.value) for name in LAYERS)
