"""The compiled CPU kernels (perturbjax/graph/kernels) against their XLA fallbacks."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from perturbjax.graph import kernels
from perturbjax.graph.aggregate import segment_softmax


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
