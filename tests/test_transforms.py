"""JAX's transformations through the message-passing ops (perturbjax/graph/kernels, propagate):
vmap, jacrev, jacfwd, grad of grad and a vmapped training step, with the compiled CPU kernels on
and off. Each result is compared with the unbatched calls and with plain autodiff of XLA ops
(the segment backend with the kernels off), so the kernels never change what a program does."""

import contextlib
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphs import random_hetero_graph
from perturbjax.graph import kernels
from perturbjax.graph.propagate import edge_softmax, project_sources, propagate
from perturbjax.graph.topology import SourceRows, Topology

TOL = {"rtol": 2e-5, "atol": 2e-5}  # float32, sums of a few dozen terms in another order


@pytest.fixture(params=["kernels", "xla"])
def cpu_ops(request, monkeypatch):
    """The compiled CPU kernels, or the same ops as XLA ops (`PERTURBJAX_KERNELS=0`), whatever
    the environment says."""
    if request.param == "xla":
        monkeypatch.setenv("PERTURBJAX_KERNELS", "0")
    else:
        monkeypatch.delenv("PERTURBJAX_KERNELS", raising=False)
    kernels.available.cache_clear()
    assert kernels.enabled() == (request.param == "kernels")
    yield request.param
    kernels.available.cache_clear()


@contextlib.contextmanager
def xla_ops():
    """The kernels switched off for a while (as `PERTURBJAX_KERNELS=0` does)."""
    saved = os.environ.get("PERTURBJAX_KERNELS")
    os.environ["PERTURBJAX_KERNELS"] = "0"
    kernels.available.cache_clear()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["PERTURBJAX_KERNELS"]
        else:
            os.environ["PERTURBJAX_KERNELS"] = saved
        kernels.available.cache_clear()


GRAPH = random_hetero_graph(1, max_edges=12)


@functools.cache
def topologies():
    """The graph with a sparse index (every kernel: products, row gather, softmax), and the same
    structure without one and with a plain row gather (segment sums; softmax kernel only)."""
    sparse = Topology.build(GRAPH).to_device()
    plain = Topology.build(GRAPH, sparse=False).to_device()
    return {"sparse": sparse,
            "segment": dataclasses.replace(plain, sources=SourceRows(plain.sources.index, None))}


def model(topo, x, w, logits, kernel, scale):
    """Every op with a compiled kernel: softmax over sorted groups, the relation-source row
    gather, products from nodes and from relation sources, the transposed product."""
    t = topo.with_edge_scale(scale)
    alpha = edge_softmax(t, logits)                                         # [E, 2]
    src, = project_sources(t, x, kernel)                                    # [S, 6]
    h = propagate(t, jnp.tanh(src).reshape(-1, 2, 3), alpha, source="relation")
    y = propagate(t, h.reshape(-1, 6), w, reduce="mean")
    return jnp.sin(y + propagate(t, x[:, :1], w, transpose=True))          # [N, 6]


def inputs(seed=0):
    """Node values [N, 4], edge weights [E], attention logits [E, 2], per-relation kernels
    [R, 4, 6] and edge scales [E]."""
    topo = topologies()["sparse"]
    rng = np.random.default_rng(seed)
    n, e, r = topo.num_nodes, topo.num_edges, topo.num_relations
    arrays = (rng.normal(size=(n, 4)), rng.normal(size=e), rng.normal(size=(e, 2)),
              rng.normal(size=(r, 4, 6)) / 2, rng.uniform(0.5, 1.5, e))
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


_REFERENCE = {}


def check(name, cpu_ops, transform, segment=False, **tol):
    """`jax.jit(transform(topology))()` on the sparse topology (and, with `segment` and the
    kernels on, on the segment one, whose softmax is a kernel) against the same on the segment
    topology with XLA ops only: plain autodiff, computed once per test."""
    if name not in _REFERENCE:
        with xla_ops():
            _REFERENCE[name] = jax.jit(transform(topologies()["segment"]))()
    for kind in ("sparse", "segment") if segment and cpu_ops == "kernels" else ("sparse",):
        got = jax.jit(transform(topologies()[kind]))()
        close(got, _REFERENCE[name], **tol)
    return got


def close(got, want, **tol):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **(tol or TOL))


BATCH = [inputs(seed) for seed in (1, 2, 3)]
STACKED = [jnp.stack(b) for b in zip(*BATCH)]


def test_vmap_over_node_values_edge_weights_and_scales_gives_the_unbatched_results(cpu_ops):
    args = inputs()
    axes_list = [(0, None, None, None, None),    # node values
                 (None, 0, 0, None, None),       # edge weights and attention logits
                 (None, None, None, None, 0),    # edge scales (attribution masks)
                 (0, 0, 0, 0, 0)]                # everything

    def transform(topo):
        def run():
            out = []
            for axes in axes_list:
                call = [s if a == 0 else x for s, a, x in zip(STACKED, axes, args)]
                batched = jax.vmap(lambda *a: model(topo, *a), in_axes=axes)(*call)
                one_by_one = jnp.stack([model(topo, *[c[b] if a == 0 else c
                                                     for c, a in zip(call, axes)])
                                        for b in range(3)])
                out.append((batched, one_by_one))
            return out
        return run

    for batched, one_by_one in check("vmap", cpu_ops, transform):
        close(batched, one_by_one)


def test_jacrev_and_jacfwd_match_plain_autodiff(cpu_ops):
    args = inputs()

    def transform(topo):
        def out(*a):
            return model(topo, *a)[:4]  # a few outputs keep the Jacobians small

        return lambda: (jax.jacrev(out, range(5))(*args), jax.jacfwd(out, range(5))(*args))

    rev, fwd = check("jacobians", cpu_ops, transform, segment=True)
    close(rev, fwd)


def test_second_order_derivatives_match_plain_autodiff(cpu_ops):
    args = inputs()
    probe = jnp.asarray(np.random.default_rng(9).normal(size=(len(args[0]), 6)), jnp.float32)

    def transform(topo):
        def loss(*a):
            return jnp.sum(model(topo, *a) * probe)

        def grad_of_grad():  # reverse over reverse
            return jax.grad(lambda *a: sum(jnp.sum(jnp.cos(g))
                                           for g in jax.grad(loss, range(5))(*a)), range(5))(*args)

        def hvp():  # forward over reverse
            return jax.jvp(jax.grad(loss, range(5)), args, args)[1]

        def hessian():  # jacfwd of jacrev, in the edge weights
            return jax.hessian(lambda w: loss(args[0], w, *args[2:]))(args[1])

        return lambda: (grad_of_grad(), hvp(), hessian())

    check("second order", cpu_ops, transform, rtol=1e-4, atol=1e-4)


def test_vmapped_training_step_over_seeds_matches_one_step_per_seed(cpu_ops):
    """`jax.vmap` of an SGD step over an ensemble's parameters (seeds), and per-example
    gradients (`jax.vmap(jax.grad(...))` over node values), against one call per element."""
    x, w, _, _, scale = inputs()
    target = jnp.asarray(np.random.default_rng(4).normal(size=(len(x), 6)), jnp.float32)
    seeds = [{"logits": b[2], "kernel": b[3]} for b in BATCH]
    ensemble = jax.tree.map(lambda *p: jnp.stack(p), *seeds)

    def transform(topo):
        def loss(params, x):
            out = model(topo, x, w, params["logits"], params["kernel"], scale)
            return jnp.mean((out - target) ** 2)

        def sgd(params):
            value, grads = jax.value_and_grad(loss)(params, x)
            return value, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

        def run():
            one_by_one = [sgd(p) for p in seeds]
            examples = STACKED[0]
            per_example = jax.vmap(jax.grad(loss), (None, 0))(seeds[0], examples)
            return ((jax.vmap(sgd)(ensemble), jax.tree.map(lambda *a: jnp.stack(a), *one_by_one)),
                    (per_example, jax.tree.map(lambda *a: jnp.stack(a), *[
                        jax.grad(loss)(seeds[0], e) for e in examples])))
        return run

    for batched, one_by_one in check("training step", cpu_ops, transform):
        close(batched, one_by_one)


# ---- the kernels themselves ---------------------------------------------------------------
@pytest.fixture
def compiled(monkeypatch):
    """The compiled kernels on, even where the environment switches them off."""
    monkeypatch.delenv("PERTURBJAX_KERNELS", raising=False)
    kernels.available.cache_clear()
    assert kernels.enabled()  # CI machines have a C++ compiler
    yield
    kernels.available.cache_clear()


RNG = np.random.default_rng(0)
AXES = [(0, None), (None, 0), (0, 0)]


def pick(arrays, axes):
    """The batched arrays where `axes` says 0, their first element elsewhere."""
    return [a if ax == 0 else a[0] for a, ax in zip(arrays, axes)]


def test_take_rows_under_vmap_and_autodiff(compiled):
    """Batched values, indices or both: one call with the batch folded into the rows."""
    x = jnp.asarray(RNG.normal(size=(3, 7, 2)), jnp.float32)
    index = jnp.asarray(RNG.integers(0, 7, (3, 5)), jnp.int32)

    @jax.jit
    def run():
        out = [jax.vmap(kernels.take_rows, axes)(*pick((x, index), axes)) for axes in AXES]
        return out, jax.jacfwd(kernels.take_rows)(x[0], index[0])

    batched, jac = run()
    for out, axes in zip(batched, AXES):
        for b in range(3):
            v, i = pick((x, index), axes)
            np.testing.assert_array_equal(out[b], (v[b] if axes[0] == 0 else v)[
                i[b] if axes[1] == 0 else i])
    close(jac, jax.jacrev(lambda v: v[index[0]])(x[0]))


# A CSR pattern of 4 rows over 6 columns, entries in random edge order, and its transpose.
ROWS = np.array([0, 0, 1, 3, 3, 3, 2, 1])
COLS = np.array([1, 5, 0, 2, 2, 4, 3, 1])


def pattern(rows, cols, n):
    order = np.argsort(rows, kind="stable").astype(np.int32)
    indptr = np.searchsorted(rows[order], np.arange(n + 1)).astype(np.int32)
    return jnp.asarray(indptr), jnp.asarray(cols[order], jnp.int32), jnp.asarray(order)


def test_csr_products_under_vmap_and_autodiff(compiled):
    """Batched values (batch in the columns F), weights (in K), patterns (sequential)."""
    fwd, bwd = pattern(ROWS, COLS, 4), pattern(COLS, ROWS, 6)
    w = jnp.asarray(RNG.normal(size=(3, 8, 2)), jnp.float32)
    v = jnp.asarray(RNG.normal(size=(3, 6, 2, 3)), jnp.float32)
    g = jnp.asarray(RNG.normal(size=(3, 4, 2, 3)), jnp.float32)

    def product(w, v, *p):
        return kernels.csr_products(w, v, *(p or fwd), 4)

    def product_reference(w, v):
        return kernels.csr_products_reference(w, v, *fwd, 4)

    def backward(w, g, v):
        return kernels.csr_products_bwd(w, g, v, *bwd)

    def backward_reference(w, g, v):
        return kernels.csr_products_bwd_reference(w, g, v, *bwd)

    @jax.jit
    def run():
        out = [(jax.vmap(product, axes)(*pick((w, v), axes)),
                jax.vmap(product_reference, axes)(*pick((w, v), axes))) for axes in AXES]
        stacked = tuple(jnp.stack([p] * 3) for p in fwd)  # a vmap over graphs
        out.append((jax.vmap(product)(w, v, *stacked), jax.vmap(product_reference)(w, v)))
        for axes in [(None, 0, None), (0, 0, 0), (None, None, 0)]:
            a = pick((w, g, v), axes)
            out.append((jax.vmap(backward, axes)(*a), jax.vmap(backward_reference, axes)(*a)))
        jac = jax.jacrev(product_reference, (0, 1))(w[0], v[0])
        out += [(jax.jacfwd(product, (0, 1))(w[0], v[0]), jac),
                (jax.jacrev(product, (0, 1))(w[0], v[0]), jac),
                (jax.jacfwd(backward, (0, 1, 2))(w[0], g[0], v[0]),
                 jax.jacrev(backward_reference, (0, 1, 2))(w[0], g[0], v[0]))]
        return out

    for got, want in run():
        close(got, want)


def test_sorted_segment_softmax_under_vmap_and_autodiff(compiled):
    """Batched logits (batch in the heads), masks (sequential); its Jacobian is the softmax's."""
    ids = jnp.asarray([0, 0, 1, 1, 1, 3, 4, 4], jnp.int32)
    masks = jnp.asarray(RNG.random((3, 8)) > 0.3)
    logits = jnp.asarray(RNG.normal(size=(3, 8, 2)), jnp.float32)

    def softmax(lg, m):
        return kernels.sorted_segment_softmax(lg, ids, m)

    @jax.jit
    def run():
        batched = [jax.vmap(softmax, axes)(*pick((logits, masks), axes)) for axes in AXES]
        one = [[softmax(*[a[b] if ax == 0 else a for a, ax in zip(pick((logits, masks), axes),
                                                                   axes)]) for b in range(3)]
               for axes in AXES]
        return (batched, one, jax.jacfwd(softmax)(logits[0], masks[0]),
                jax.jacrev(softmax)(logits[0], masks[0]), softmax(logits[0], masks[0]))

    batched, one, jac, jac_rev, alpha = run()
    for out, singles in zip(batched, one):
        close(out, jnp.stack(singles))
    close(jac, jac_rev)
    # d alpha_e / d l_f = alpha_e (delta_ef - alpha_f) within a group, between real edges.
    same = (np.asarray(ids)[:, None] == np.asarray(ids)[None]) & np.asarray(masks[0])[None]
    for h in range(2):
        a = np.asarray(alpha)[:, h]
        want = np.where(same, a[:, None] * (np.eye(8) - a[None]), 0.0)
        np.testing.assert_allclose(np.asarray(jac)[:, h, :, h], want, atol=1e-6)
