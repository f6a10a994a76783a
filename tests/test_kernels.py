"""The compiled CPU kernels (perturbjax/graph/kernels) against their XLA fallbacks."""

import logging
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perturbjax.graph import kernels
from perturbjax.graph.aggregate import segment_softmax


@pytest.fixture(autouse=True)
def compiled(monkeypatch):
    """These tests are about the kernels: on, even where `PERTURBJAX_KERNELS=0` switches them
    off for the rest of the suite (tests that switch them off do it themselves)."""
    monkeypatch.delenv("PERTURBJAX_KERNELS", raising=False)
    kernels.available.cache_clear()
    yield
    kernels.available.cache_clear()


def test_take_rows_kernel_equals_indexing_under_jit():
    assert kernels.available()
    rng = np.random.default_rng(4)
    for n, m, shape in ((30, 7, (3,)), (5_000, 400_000, (4, 2)), (3, 0, (2,))):
        x = rng.standard_normal((n,) + shape, dtype=np.float32)
        index = rng.integers(0, n, m).astype(np.int32)
        np.testing.assert_array_equal(np.asarray(jax.jit(kernels.take_rows)(x, index)), x[index])
    # Other dtypes, and 2-D index arrays, are plain indexing.
    ints = np.arange(12).reshape(6, 2)
    np.testing.assert_array_equal(np.asarray(kernels.take_rows(jnp.asarray(ints), np.array([5, 0]))),
                                  ints[[5, 0]])


def random_csr(rng, n, s, e, k, f):
    """A CSR pattern of n rows over s columns with e entries in random edge order, edge
    weights [e, k] and values [s, k, f]."""
    rows = np.sort(rng.integers(1, max(n - 1, 2), e)).astype(np.int32)  # rows 0, n-1 empty
    cols = rng.integers(0, s, e).astype(np.int32)
    order = rng.permutation(e).astype(np.int32)  # entry p holds edge order[p]
    indptr = np.searchsorted(rows, np.arange(n + 1)).astype(np.int32)
    return (rows, cols, order, indptr, rng.standard_normal((e, k), dtype=np.float32),
            rng.standard_normal((s, k, f), dtype=np.float32))


# 1 thread, 2, none; (k, f) = (4, 16), (1, 64) and (8, 8) run the fixed-width loops.
SIZES = ((9, 11, 40, 2, 3), (3_000, 2_000, 300_000, 4, 16), (6, 5, 0, 1, 4),
         (500, 400, 20_000, 1, 64), (50, 40, 2_000, 8, 8))


def test_csr_products_kernel_matches_a_dense_product_under_jit():
    # CI machines have a C++ compiler: a silent fallback there would hide a broken kernel.
    assert kernels.available()
    rng = np.random.default_rng(5)
    for n, s, e, k, f in SIZES:
        rows, cols, order, indptr, w, x = random_csr(rng, n, s, e, k, f)
        out = jax.jit(kernels.csr_products, static_argnums=5)(w, x, indptr, cols, order, n)
        dense = np.zeros((k, n, s), np.float64)
        np.add.at(dense, (slice(None), rows, cols), w[order].T)
        np.testing.assert_allclose(np.asarray(out), np.einsum("kns,skf->nkf", dense, x),
                                   rtol=1e-4, atol=1e-4)


def test_csr_products_backward_gives_the_transposed_product_and_the_edge_dots():
    assert kernels.available()
    rng = np.random.default_rng(6)
    for n, s, e, k, f in SIZES:
        # The transposed pattern: rows are the sources (s of them), columns the n receivers.
        rows, cols, order, indptr, w, g = random_csr(rng, s, n, e, k, f)  # g: [n, k, f]
        x = rng.standard_normal((s, k, f), dtype=np.float32)
        dx, dw = jax.jit(kernels.csr_products_bwd)(w, g, x, indptr, cols, order)
        dense = np.zeros((k, s, n), np.float64)
        np.add.at(dense, (slice(None), rows, cols), w[order].T)
        np.testing.assert_allclose(np.asarray(dx), np.einsum("ksn,nkf->skf", dense, g),
                                   rtol=1e-4, atol=1e-4)
        dots = np.zeros((e, k), np.float32)
        dots[order] = np.einsum("pkf,pkf->pk", x[rows], g[cols])
        np.testing.assert_allclose(np.asarray(dw), dots, rtol=1e-4, atol=1e-4)


def test_without_a_compiler_kernels_fall_back_to_xla_with_one_warning(tmp_path, monkeypatch,
                                                                      caplog):
    monkeypatch.setenv("PERTURBJAX_KERNEL_CACHE", str(tmp_path))  # nothing cached there
    monkeypatch.setenv("CXX", "/bin/false")
    kernels.available.cache_clear()
    try:
        x, index = np.arange(12, dtype=np.float32).reshape(6, 2), np.array([5, 0, 5], np.int32)
        with caplog.at_level(logging.WARNING, logger="perturbjax.graph.kernels"):
            out = kernels.take_rows(jnp.asarray(x), index)
            kernels.take_rows(jnp.asarray(x), index)
        assert not kernels.available()
        assert sum("unavailable" in r.message for r in caplog.records) == 1
        np.testing.assert_array_equal(np.asarray(out), x[index])
        assert list(tmp_path.iterdir()) == []  # the failed build left nothing behind
    finally:
        kernels.available.cache_clear()


def test_kernels_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("PERTURBJAX_KERNELS", "0")
    kernels.available.cache_clear()
    try:
        assert not kernels.available() and not kernels.enabled()
    finally:
        kernels.available.cache_clear()


def xla_softmax(logits, ids, num, mask):
    """aggregate.segment_softmax's XLA path (the kernels switched off)."""
    kernels.available.cache_clear()
    os.environ["PERTURBJAX_KERNELS"] = "0"
    try:
        return segment_softmax(logits, ids, num, mask, indices_are_sorted=True)
    finally:
        del os.environ["PERTURBJAX_KERNELS"]
        kernels.available.cache_clear()


def test_sorted_segment_softmax_kernel_matches_xla_values_and_gradients():
    assert kernels.enabled()
    rng = np.random.default_rng(4)
    for e, h in ((500, 4), (200_000, 2)):
        ids = np.sort(rng.integers(0, e // 3, e)).astype(np.int32)  # some segments empty
        mask = rng.random(e) > 0.2
        logits = rng.standard_normal((e, h)).astype(np.float32) * 5
        logits[~mask] = np.nan  # padding may hold garbage
        probe = rng.standard_normal((e, h)).astype(np.float32)

        def loss(fn, lg):
            return jnp.sum(fn(lg) * probe)

        def fast(lg):
            return segment_softmax(lg, ids, e // 3, mask, indices_are_sorted=True)

        def slow(lg):
            return xla_softmax(lg, ids, e // 3, mask)

        a, b = jax.jit(fast)(logits), slow(logits)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        assert (np.asarray(a)[~mask] == 0).all()
        ga = jax.jit(jax.grad(lambda lg: loss(fast, lg)))(logits)
        gb = jax.grad(lambda lg: loss(slow, lg))(logits)
        np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=1e-4, atol=1e-5)
        # A non-finite gradient arriving at a padding edge stays there.
        probe[~mask] = np.inf
        assert np.isfinite(np.asarray(jax.grad(lambda lg: loss(fast, lg))(logits))).all()
    # [E] logits (one head) keep their shape.
    one = segment_softmax(jnp.zeros(6), jnp.array([0, 0, 1, 1, 1, 3]), 4,
                          indices_are_sorted=True)
    np.testing.assert_allclose(np.asarray(one), [0.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 1.0], rtol=1e-6)


# Inside shard_map, the gradient of a replicated edge weight (attention, not pcast to varying)
# is the sum over the devices, as with XLA ops: the FFI calls' results are marked invariant, so
# the backward kernel's weight gradient must be marked varying before it is summed.
SHARD_MAP_SCRIPT = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    sys.path.insert(0, sys.argv[1])
    from graphs import random_hetero_graph
    from perturbjax.graph import kernels
    from perturbjax.graph.propagate import edge_softmax, propagate
    from perturbjax.graph.topology import Topology

    assert jax.device_count() == 2 and kernels.enabled()
    topo = Topology.build(random_hetero_graph(1)).to_device()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, topo.num_nodes, 2, 3)), jnp.float32)
    logits = jnp.asarray(rng.normal(size=(topo.num_edges, 2)), jnp.float32)

    def loss(logits, x):
        return jnp.sum(jnp.sin(propagate(topo, x, edge_softmax(topo, logits))))

    mesh = Mesh(np.array(jax.devices()), ("data",))
    step = jax.jit(jax.shard_map(lambda lg, x: jax.grad(loss)(lg, x[0]), mesh=mesh,
                                 in_specs=(P(), P("data")), out_specs=P()))
    want = jax.grad(loss)(logits, x[0]) + jax.grad(loss)(logits, x[1])
    np.testing.assert_allclose(step(logits, x), want, rtol=1e-5, atol=1e-5)
""")


def test_gradient_of_a_replicated_weight_inside_shard_map_is_summed_over_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env.pop("PERTURBJAX_KERNELS", None)
    done = subprocess.run([sys.executable, "-c", SHARD_MAP_SCRIPT, os.path.dirname(__file__)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
