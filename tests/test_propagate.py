"""Tests for the topology and `propagate`: both backends against an edge loop, their gradients
(edge weights included), padding, shared-topology batches, and compile-once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphs import padded_topology, random_hetero_graph
from perturbjax.graph import kernels
from perturbjax.graph.propagate import (edge_softmax, propagate, relation_mean_weights,
                                        symmetric_norm_weights)
from perturbjax.graph.schema import GraphSchema
from perturbjax.graph.topology import Topology

BACKENDS = [True, False]  # sparse products, segment ops


def loop_propagate(topo, values, weight, source):
    """out[i] = sum over real edges e into i of w_e * values[src(e)], in float64."""
    cols = np.asarray(topo.senders if source == "node" else topo.src_index)
    out = np.zeros((topo.num_nodes,) + values.shape[1:])
    for e in np.flatnonzero(np.asarray(topo.edge_mask)):
        w = np.asarray(weight[e], np.float64)
        w = w.reshape(w.shape + (1,) * (values.ndim - 1 - w.ndim))
        out[int(topo.receivers[e])] += w * np.asarray(values[cols[e]], np.float64)
    return out


def test_build_sorts_edges_by_relation_then_receiver_and_keeps_every_edge():
    graph = random_hetero_graph()
    topo = Topology.build(graph)
    schema = GraphSchema.of(graph)
    offsets = graph.node_offsets()
    assert topo.layout.num_nodes == graph.num_nodes and topo.layout.num_edges == graph.num_edges
    for r, (k, blk) in enumerate(zip(schema.edge_types, topo.layout.relations)):
        sl = slice(blk.edge_start, blk.edge_stop)
        es = graph.edges[k]
        assert (topo.edge_type[sl] == r).all()
        got = sorted(zip(topo.senders[sl] - offsets[k.source],
                         topo.receivers[sl] - offsets[k.target]))
        assert got == sorted(zip(es.senders.tolist(), es.receivers.tolist()))
        assert (np.diff(topo.receivers[sl]) >= 0).all()
        a, b = topo.layout.source_range(r)
        assert ((topo.senders[sl] >= a) & (topo.senders[sl] < b)).all()
    assert (np.diff(topo.group) >= 0).all()  # (relation, receiver) groups ascend
    # A whole graph's relation-source rows are each relation's distinct senders, and each edge
    # reads its sender's row of its relation.
    off, index = topo.layout.active_offsets, topo.sources.index
    for r, k in enumerate(schema.edge_types):
        mine = index[off[r]:off[r + 1]]
        assert mine.tolist() == sorted(set((graph.edges[k].senders + offsets[k.source]).tolist()))
    assert (index[topo.src_index] == topo.senders).all()
    for r, blk in enumerate(topo.layout.relations):
        sl = slice(blk.edge_start, blk.edge_stop)
        assert ((topo.src_index[sl] >= off[r]) & (topo.src_index[sl] < off[r + 1])).all()


def test_padded_layout_rows_are_every_source_node_of_every_relation():
    topo, _ = padded_topology(random_hetero_graph())
    assert topo.sources is None
    rows = {}
    for t, (a, b) in enumerate(topo.layout.node_blocks):
        for r in topo.layout.source_relations(t):
            for local in range(b - a):
                rows[(a + local, r)] = topo.layout.source_row(r, local)
    assert sorted(rows.values()) == list(range(topo.layout.num_sources))
    for e in range(topo.num_edges):
        assert topo.src_index[e] == rows[(int(topo.senders[e]), int(topo.edge_type[e]))]


@pytest.mark.parametrize("sparse", BACKENDS)
@pytest.mark.parametrize("source", ["node", "relation"])
@pytest.mark.parametrize("shape,weight_shape", [((4,), None), ((4,), ()), ((2, 3), (2,)),
                                                 ((3, 2, 4), (3, 2)), ((3, 2, 4), (1, 2))])
def test_propagate_matches_edge_loop(sparse, source, shape, weight_shape):
    topo, _ = padded_topology(random_hetero_graph(1), sparse=sparse)
    rng = np.random.default_rng(0)
    rows = topo.num_nodes if source == "node" else topo.layout.num_sources
    values = rng.normal(size=(rows,) + shape).astype(np.float32)
    if weight_shape is None:
        weight, ref_weight = None, np.ones(topo.num_edges)
    else:
        weight = rng.normal(size=(topo.num_edges,) + weight_shape).astype(np.float32)
        # Padding edges may hold anything: propagate must zero them.
        weight[~np.asarray(topo.edge_mask)] = np.nan
        ref_weight = weight
    out = propagate(topo.to_device(), jnp.asarray(values),
                    None if weight is None else jnp.asarray(weight), source=source)
    ref = loop_propagate(topo, values, ref_weight, source)
    assert out.dtype == jnp.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("sparse", BACKENDS)
def test_transposed_propagate_is_the_adjoint_and_its_gradients_match(sparse):
    graph = random_hetero_graph(3)
    topo = padded_topology(graph, sparse=sparse)[0].to_device()
    rng = np.random.default_rng(2)
    weight = rng.normal(size=topo.num_edges).astype(np.float32)
    weight[~np.asarray(topo.edge_mask)] = np.nan
    x = jnp.asarray(rng.normal(size=(topo.num_nodes, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(topo.num_nodes, 3)), jnp.float32)
    w = jnp.asarray(weight)
    # <A x, y> = <x, A^T y> for every column.
    forward = jnp.sum(propagate(topo, x, w) * y, 0)
    backward = jnp.sum(x * propagate(topo, y, w, transpose=True), 0)
    np.testing.assert_allclose(forward, backward, rtol=1e-5, atol=1e-5)
    # Gradients (the edge weights' too) against the other backend's.
    other = padded_topology(graph, sparse=not sparse)[0].to_device()

    def loss(t, w, x):
        return jnp.sum(jnp.sin(propagate(t, x, w, transpose=True)) * y)

    w0 = jnp.where(topo.edge_mask, w, 0.5)
    got = jax.grad(loss, argnums=(1, 2))(topo, w0, x)
    ref = jax.grad(loss, argnums=(1, 2))(other, w0, x)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="transpose=True"):
        propagate(topo, x, w, transpose=True, reduce="mean")


@pytest.fixture(params=["kernels", "xla"])
def cpu_ops(request, monkeypatch):
    """The sparse backend with its compiled CPU kernels, or with them switched off (XLA ops)."""
    if request.param == "xla":
        monkeypatch.setenv("PERTURBJAX_KERNELS", "0")
    else:  # whatever the environment says
        monkeypatch.delenv("PERTURBJAX_KERNELS", raising=False)
    kernels.available.cache_clear()
    yield request.param
    kernels.available.cache_clear()


@pytest.mark.parametrize("sparse", BACKENDS)
def test_gradients_match_between_backends_and_finite_differences(sparse, cpu_ops):
    assert kernels.enabled() == (cpu_ops == "kernels")
    graph = random_hetero_graph(2)
    topo = padded_topology(graph, sparse=sparse)[0].to_device()
    rng = np.random.default_rng(1)
    values = jnp.asarray(rng.normal(size=(topo.layout.num_sources, 2, 3)), jnp.float32)
    weight = jnp.asarray(rng.normal(size=(topo.num_edges, 2)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(topo.num_nodes, 2, 3)), jnp.float32)

    def loss(w, x):
        return jnp.sum(jnp.sin(propagate(topo, x, w, source="relation")) * target)

    gw, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(weight, values)
    # Against the other backend's (plain autodiff of segment ops) gradients.
    other = padded_topology(graph, sparse=not sparse)[0].to_device()
    gw2, gx2 = jax.grad(lambda w, x: jnp.sum(jnp.sin(propagate(other, x, w, source="relation"))
                                             * target), argnums=(0, 1))(weight, values)
    np.testing.assert_allclose(gw, gw2, atol=1e-5)
    np.testing.assert_allclose(gx, gx2, atol=1e-5)
    assert np.all(np.asarray(gw)[~np.asarray(topo.edge_mask)] == 0.0)
    # And a central finite difference along a random direction, in float64 terms.
    dw = jnp.asarray(rng.normal(size=weight.shape), jnp.float32)
    eps = 1e-2
    fd = (loss(weight + eps * dw, values) - loss(weight - eps * dw, values)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.sum(gw * dw)), float(fd), rtol=2e-2, atol=1e-3)


def test_mean_and_softmax_helpers():
    topo, _ = padded_topology(random_hetero_graph(3))
    topo = topo.to_device()
    mask = np.asarray(topo.edge_mask)
    groups, receivers = np.asarray(topo.group), np.asarray(topo.receivers)
    w = np.asarray(relation_mean_weights(topo))
    for g in np.unique(groups[mask]):
        np.testing.assert_allclose(w[(groups == g) & mask].sum(), 1.0, rtol=1e-6)
    assert (w[~mask] == 0).all()
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(topo.num_edges, 2)), jnp.float32)
    for by, ids in (("relation", groups), ("receiver", receivers)):
        alpha = np.asarray(edge_softmax(topo, logits, by=by))
        for g in np.unique(ids[mask]):
            np.testing.assert_allclose(alpha[(ids == g) & mask].sum(0), 1.0, rtol=1e-5)
        assert (alpha[~mask] == 0).all()
    norm = np.asarray(symmetric_norm_weights(topo))
    assert np.isfinite(norm).all() and (norm[mask] > 0).all() and (norm[mask] <= 1).all()
    out = propagate(topo, jnp.ones((topo.num_nodes, 1)), reduce="mean")
    has_edges = np.bincount(receivers[mask], minlength=topo.num_nodes) > 0
    np.testing.assert_allclose(np.asarray(out)[:, 0], has_edges.astype(float), atol=1e-6)


def test_shared_topology_batch_is_one_compilation_and_matches_per_sample():
    topo = Topology.build(random_hetero_graph(4)).to_device()
    rng = np.random.default_rng(2)
    weight = jnp.asarray(rng.random((topo.num_edges, 3)), jnp.float32)  # e.g. per head
    step = jax.jit(lambda t, x, w: propagate(t, x, w))
    batch = jnp.asarray(rng.normal(size=(topo.num_nodes, 3, 5, 2)), jnp.float32)
    out = step(topo, batch, weight)
    for b in range(5):
        np.testing.assert_allclose(out[:, :, b], step(topo, batch[:, :, b], weight), atol=1e-6)
    step(topo, batch + 1.0, weight * 2.0)  # new values, same shapes: no new compilation
    assert step._cache_size() == 2  # the batch and the per-sample shapes, nothing else


def test_bad_arguments_name_the_problem():
    topo = Topology.build(random_hetero_graph()).to_device()
    with pytest.raises(ValueError, match="needs"):
        propagate(topo, jnp.ones((topo.num_nodes + 1, 2)))
    with pytest.raises(ValueError, match="do not fit"):
        propagate(topo, jnp.ones((topo.num_nodes, 2)), jnp.ones((topo.num_edges, 3, 2)))
    with pytest.raises(ValueError, match="expected"):
        propagate(topo, jnp.ones((topo.num_nodes, 2)), reduce="max")


def test_the_graph_package_exports_the_seam_lazily():
    import importlib
    import subprocess
    import sys

    import perturbjax.graph as graph

    importlib.import_module("perturbjax.graph.propagate")  # binds the submodule's name
    assert graph.propagate is propagate and graph.Topology is Topology  # the function, still
    code = ("import sys, perturbjax.graph.hetero; print('jax' in sys.modules); "
            "from perturbjax.graph import propagate; print(callable(propagate))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
