"""Tests for the heterogeneous message-passing layers.

The central property is padding invariance: the same graph padded to two
budgets (the larger one with padding edges rewired to random real nodes and
relations, so only the masks can keep them out) must give identical outputs and
gradients for the real nodes, and exactly 0 on padded nodes.
"""

import warnings

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest
from flax import nnx

from perturbjax.models.layers import (
    HGT,
    RGCN,
    HeteroGAT,
    TypedInputProjection,
    attention_weights,
)

NUM_TYPES = 3
NUM_RELATIONS = 4
FEATURE_WIDTHS = (5, 3, 0)
NUM_NODES = 30
NUM_EDGES = 80
IN_DIM = 8
OUT_DIM = 8
HEADS = 2
BUDGET_A = dict(n_node=40, n_edge=100, n_graph=2)
BUDGET_B = dict(n_node=64, n_edge=160, n_graph=3)


def random_graph(seed=0):
    """A small single heterogeneous graph in the padded-graph contract format."""
    rng = np.random.default_rng(seed)
    node_type = rng.integers(0, NUM_TYPES, NUM_NODES).astype(np.int32)
    features = np.zeros((NUM_NODES, max(FEATURE_WIDTHS)), np.float32)
    for i, t in enumerate(node_type):
        features[i, : FEATURE_WIDTHS[t]] = rng.normal(size=FEATURE_WIDTHS[t])
    return jraph.GraphsTuple(
        nodes={
            "features": features,
            "node_type": node_type,
            "mask": np.ones(NUM_NODES, bool),
        },
        edges={
            "edge_type": rng.integers(0, NUM_RELATIONS, NUM_EDGES).astype(np.int32),
            "mask": np.ones(NUM_EDGES, bool),
        },
        senders=rng.integers(0, NUM_NODES, NUM_EDGES).astype(np.int32),
        receivers=rng.integers(0, NUM_NODES, NUM_EDGES).astype(np.int32),
        n_node=np.array([NUM_NODES], np.int32),
        n_edge=np.array([NUM_EDGES], np.int32),
        globals=None,
    )


def pad(graph, budget, scramble=False, seed=0):
    """Pads with jraph; with ``scramble`` padding edges/nodes get random contents."""
    padded = jraph.pad_with_graphs(graph, **budget)
    if not scramble:
        return padded
    rng = np.random.default_rng(seed)
    n_node, n_edge = budget["n_node"], budget["n_edge"]
    pad_edges = slice(NUM_EDGES, n_edge)
    senders, receivers = padded.senders.copy(), padded.receivers.copy()
    edge_type = padded.edges["edge_type"].copy()
    senders[pad_edges] = rng.integers(0, n_node, n_edge - NUM_EDGES)
    receivers[pad_edges] = rng.integers(0, NUM_NODES, n_edge - NUM_EDGES)
    edge_type[pad_edges] = rng.integers(0, NUM_RELATIONS, n_edge - NUM_EDGES)
    node_type = padded.nodes["node_type"].copy()
    node_type[NUM_NODES:] = rng.integers(0, NUM_TYPES, n_node - NUM_NODES)
    return padded._replace(
        senders=senders,
        receivers=receivers,
        edges={**padded.edges, "edge_type": edge_type},
        nodes={**padded.nodes, "node_type": node_type},
    )


def node_states(n_node, seed=0):
    """Real-node states fixed by ``seed``; padded rows are random garbage."""
    real = np.random.default_rng(seed).normal(size=(NUM_NODES, IN_DIM))
    junk = np.random.default_rng(n_node).normal(size=(n_node - NUM_NODES, IN_DIM)) * 100
    return jnp.asarray(np.concatenate([real, junk]), jnp.float32)


LAYERS = {
    "gat": lambda rngs: HeteroGAT(IN_DIM, OUT_DIM, NUM_RELATIONS, num_heads=HEADS, rngs=rngs),
    "rgcn": lambda rngs: RGCN(IN_DIM, OUT_DIM, NUM_RELATIONS, rngs=rngs),
    "rgcn_bases": lambda rngs: RGCN(IN_DIM, OUT_DIM, NUM_RELATIONS, num_bases=2, rngs=rngs),
    "hgt": lambda rngs: HGT(IN_DIM, OUT_DIM, NUM_TYPES, NUM_RELATIONS, num_heads=HEADS, rngs=rngs),
}
ATTENTION_LAYERS = ["gat", "hgt"]


def padded_pair():
    graph = random_graph()
    graph_a = pad(graph, BUDGET_A)
    graph_b = pad(graph, BUDGET_B, scramble=True)
    return (graph_a, node_states(BUDGET_A["n_node"])), (graph_b, node_states(BUDGET_B["n_node"]))


def squared_loss(model, h, graph):
    return jnp.sum(model(h, graph) ** 2)


# Compiled once per shape: op-by-op eager dispatch is several times slower here.
apply = nnx.jit(lambda model, h, graph: model(h, graph))
grad = nnx.jit(nnx.grad(squared_loss))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_padding_invariance_and_shape(name):
    model = LAYERS[name](nnx.Rngs(0))
    (graph_a, h_a), (graph_b, h_b) = padded_pair()
    out_a, out_b = apply(model, h_a, graph_a), apply(model, h_b, graph_b)
    assert out_a.shape[0] == BUDGET_A["n_node"] and out_a.dtype == jnp.float32
    assert out_b.shape[0] == BUDGET_B["n_node"]
    np.testing.assert_allclose(out_a[:NUM_NODES], out_b[:NUM_NODES], atol=1e-5)
    assert np.all(np.asarray(out_a[NUM_NODES:]) == 0.0)
    assert np.all(np.asarray(out_b[NUM_NODES:]) == 0.0)
    # Messages actually flow: edges change the output of some real node.
    no_edges = graph_a._replace(
        edges={**graph_a.edges, "mask": np.zeros_like(graph_a.edges["mask"])}
    )
    assert not np.allclose(apply(model, h_a, no_edges)[:NUM_NODES], out_a[:NUM_NODES])


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gradients_finite_and_padding_invariant(name):
    model = LAYERS[name](nnx.Rngs(1))
    (graph_a, h_a), (graph_b, h_b) = padded_pair()
    grad_a, grad_b = grad(model, h_a, graph_a), grad(model, h_b, graph_b)
    leaves_a, leaves_b = jax.tree.leaves(grad_a), jax.tree.leaves(grad_b)
    assert leaves_a and len(leaves_a) == len(leaves_b)
    for ga, gb in zip(leaves_a, leaves_b):
        assert np.all(np.isfinite(ga))
        np.testing.assert_allclose(ga, gb, atol=1e-4, rtol=1e-5)
    assert any(np.any(np.asarray(g) != 0) for g in leaves_a)


@pytest.mark.parametrize("name", ATTENTION_LAYERS)
def test_jit_matches_eager_and_adds_no_state(name):
    model = LAYERS[name](nnx.Rngs(2))
    (graph, h), _ = padded_pair()
    state_before = nnx.state(model)
    with warnings.catch_warnings():
        # Sowing outside nnx.capture would warn (deprecated) and add state.
        warnings.simplefilter("error", DeprecationWarning)
        out_jit = apply(model, h, graph)
        out_eager = model(h, graph)
    np.testing.assert_allclose(out_jit, out_eager, atol=1e-5)
    assert jax.tree.structure(nnx.state(model)) == jax.tree.structure(state_before)
    assert not jax.tree.leaves(nnx.state(model, nnx.Intermediate))


@pytest.mark.parametrize("name", ATTENTION_LAYERS)
def test_attention_retrievable_and_padding_invariant(name):
    model = LAYERS[name](nnx.Rngs(3))
    (graph_a, h_a), (graph_b, h_b) = padded_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        att_a = attention_weights(model, h_a, graph_a)
    att_b = nnx.jit(attention_weights)(model, h_b, graph_b)
    assert list(att_a) == list(att_b) == [()]
    alpha_a, alpha_b = np.asarray(att_a[()]), np.asarray(att_b[()])
    assert alpha_a.shape == (BUDGET_A["n_edge"], HEADS)
    assert alpha_b.shape == (BUDGET_B["n_edge"], HEADS)
    assert np.all(alpha_a[NUM_EDGES:] == 0.0) and np.all(alpha_b[NUM_EDGES:] == 0.0)
    np.testing.assert_allclose(alpha_a[:NUM_EDGES], alpha_b[:NUM_EDGES], atol=1e-6)
    # Capturing leaves no state behind on the model.
    assert not jax.tree.leaves(nnx.state(model, nnx.Intermediate))


def real_edges(graph):
    """(sender, receiver, relation) of every real edge, in edge order."""
    mask = graph.edges["mask"]
    return list(zip(graph.senders[mask], graph.receivers[mask], graph.edges["edge_type"][mask]))


def group_sums(alpha, groups):
    sums = {}
    for a, g in zip(alpha, groups):
        sums[g] = sums.get(g, 0.0) + a
    return np.array(list(sums.values()))


def real_attention(name, seed):
    """Attention of a fresh layer on the budget-A graph, restricted to real edges."""
    (graph, h), _ = padded_pair()
    alpha = attention_weights(LAYERS[name](nnx.Rngs(seed)), h, graph)[()]
    return np.asarray(alpha)[graph.edges["mask"]], real_edges(graph)


def test_gat_attention_normalised_per_receiver_and_relation():
    alpha, edges = real_attention("gat", 4)
    groups = [(receiver, relation) for _, receiver, relation in edges]
    np.testing.assert_allclose(group_sums(alpha, groups), 1.0, atol=1e-5)


def test_hgt_attention_normalised_per_receiver():
    alpha, edges = real_attention("hgt", 5)
    groups = [receiver for _, receiver, _ in edges]
    np.testing.assert_allclose(group_sums(alpha, groups), 1.0, atol=1e-5)


def test_attention_paths_in_composite_model():
    class Stack(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([LAYERS["gat"](rngs), LAYERS["hgt"](rngs), LAYERS["rgcn"](rngs)])

        def __call__(self, h, graph):
            for layer in self.layers:
                h = jax.nn.relu(layer(h, graph))
            return h

    (graph, h), _ = padded_pair()
    att = attention_weights(Stack(nnx.Rngs(6)), h, graph)
    assert sorted(att) == [("layers", 0), ("layers", 1)]


def test_gat_matches_edge_loop_reference():
    model = LAYERS["gat"](nnx.Rngs(7))
    (graph, h), _ = padded_pair()
    out = np.asarray(apply(model, h, graph))
    h, kernel = np.asarray(h, np.float64), np.asarray(model.kernel[...], np.float64)
    a_src, a_dst = np.asarray(model.att_src[...]), np.asarray(model.att_dst[...])
    proj = np.einsum("ni,rio->rno", h, kernel).reshape(NUM_RELATIONS, len(h), HEADS, -1)
    ref = h @ np.asarray(model.root.kernel[...]) + np.asarray(model.root.bias[...])
    edges = real_edges(graph)
    for i in range(NUM_NODES):
        for r in range(NUM_RELATIONS):
            incoming = [j for j, t, rel in edges if t == i and rel == r]
            if not incoming:
                continue
            logits = (proj[r, incoming] * a_src[r]).sum(-1) + (proj[r, i] * a_dst[r]).sum(-1)
            logits = np.where(logits > 0, logits, 0.2 * logits)
            weights = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
            ref[i] += (weights[..., None] * proj[r, incoming]).sum(0).reshape(-1)
    np.testing.assert_allclose(out[:NUM_NODES], ref[:NUM_NODES], atol=1e-4)


@pytest.mark.parametrize("name", ["rgcn", "rgcn_bases"])
def test_rgcn_matches_edge_loop_reference(name):
    model = LAYERS[name](nnx.Rngs(8))
    (graph, h), _ = padded_pair()
    out = np.asarray(apply(model, h, graph))
    h, weights = np.asarray(h, np.float64), np.asarray(model.relation_kernels(), np.float64)
    ref = h @ np.asarray(model.root.kernel[...]) + np.asarray(model.root.bias[...])
    edges = real_edges(graph)
    for j, i, r in edges:
        c_ir = sum(1 for _, t, rel in edges if t == i and rel == r)
        ref[i] += h[j] @ weights[r] / c_ir
    np.testing.assert_allclose(out[:NUM_NODES], ref[:NUM_NODES], atol=1e-4)


def test_rgcn_bases_share_parameters():
    def num_params(num_relations):
        # Abstract construction: shapes only, nothing compiled or allocated.
        model = nnx.eval_shape(
            lambda: RGCN(IN_DIM, OUT_DIM, num_relations, num_bases=3, rngs=nnx.Rngs(0))
        )
        return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))

    # Only the R x B coefficients grow with the number of relations.
    assert num_params(50) - num_params(2) == 48 * 3


def test_hgt_has_no_residual_when_dims_differ():
    # Abstract (shape-only) construction and call: the branch is traced but
    # nothing new is compiled, which keeps the suite fast.
    model = nnx.eval_shape(
        lambda: HGT(IN_DIM, 12, NUM_TYPES, NUM_RELATIONS, num_heads=HEADS, rngs=nnx.Rngs(0))
    )
    assert model.skip is None
    (graph, h), _ = padded_pair()
    out = nnx.eval_shape(lambda m, x, g: m(x, g), model, h, graph)
    assert out.shape == (BUDGET_A["n_node"], 12) and out.dtype == jnp.float32


def test_gat_dropout_only_in_training():
    model = HeteroGAT(
        IN_DIM, OUT_DIM, NUM_RELATIONS, num_heads=HEADS, dropout=0.5, rngs=nnx.Rngs(9)
    )
    (graph, h), _ = padded_pair()
    train_1, train_2 = model(h, graph), model(h, graph)
    assert not np.allclose(train_1, train_2)
    assert np.all(np.asarray(train_1[NUM_NODES:]) == 0.0)
    # Sown attention is the pre-dropout distribution.
    alpha = np.asarray(attention_weights(model, h, graph)[()])
    groups = [(t, r) for _, t, r in real_edges(graph)]
    np.testing.assert_allclose(group_sums(alpha[:NUM_EDGES], groups), 1.0, atol=1e-5)
    model.eval()
    np.testing.assert_array_equal(model(h, graph), model(h, graph))


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


def test_typed_input_projection():
    proj = TypedInputProjection(FEATURE_WIDTHS, OUT_DIM, rngs=nnx.Rngs(10))
    graph = random_graph()
    graph_a = pad(graph, BUDGET_A)
    graph_b = pad(graph, BUDGET_B, scramble=True)
    # Garbage in the padded rows' features must not leak either.
    junk = np.float32(7.0) * ~graph_b.nodes["mask"][:, None]
    graph_b = graph_b._replace(
        nodes={**graph_b.nodes, "features": graph_b.nodes["features"] + junk}
    )
    out_a, out_b = np.asarray(proj(graph_a)), np.asarray(nnx.jit(lambda m, g: m(g))(proj, graph_b))
    assert out_a.shape == (BUDGET_A["n_node"], OUT_DIM)
    np.testing.assert_allclose(out_a[:NUM_NODES], out_b[:NUM_NODES], atol=1e-6)
    assert np.all(out_a[NUM_NODES:] == 0.0) and np.all(out_b[NUM_NODES:] == 0.0)

    node_type = graph.nodes["node_type"]
    embedding = np.asarray(proj.type_embedding[...])
    featureless = node_type == 2
    np.testing.assert_array_equal(out_a[:NUM_NODES][featureless], embedding[node_type[featureless]])
    # Columns beyond a type's width are ignored: fill them and nothing changes.
    filled = graph_a.nodes["features"].copy()
    for i, t in enumerate(node_type):
        filled[i, FEATURE_WIDTHS[t] :] = 5.0
    out_filled = np.asarray(proj(graph_a._replace(nodes={**graph_a.nodes, "features": filled})))
    np.testing.assert_allclose(out_filled, out_a, atol=1e-6)
    # The typed features do matter for types that have them.
    assert not np.allclose(out_a[:NUM_NODES][~featureless], embedding[node_type[~featureless]])


def test_typed_input_projection_rejects_narrow_features():
    proj = TypedInputProjection(FEATURE_WIDTHS, OUT_DIM, rngs=nnx.Rngs(0))
    graph = pad(random_graph(), BUDGET_A)
    narrow = graph._replace(nodes={**graph.nodes, "features": graph.nodes["features"][:, :4]})
    with pytest.raises(ValueError, match="feature columns"):
        proj(narrow)
