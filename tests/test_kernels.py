"""The compiled CPU kernels (perturbjax/graph/kernels) against their XLA fallbacks."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from perturbjax.graph import kernels
from perturbjax.graph.aggregate import segment_softmax


def random_operands(seed=0, n=50, s=70, e=400, k=3, f=5):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, k, f), dtype=np.float32),
            rng.standard_normal((s, k, f), dtype=np.float32),
            rng.integers(0, n, e).astype(np.int32), rng.integers(0, s, e).astype(np.int32))


def reference(g, x, rows, cols):
    return np.einsum("ekf,ekf->ek", g[rows], x[cols])


def test_edge_dots_kernel_is_built_and_matches_the_reference_under_jit():
    # CI machines have a C++ compiler: a silent fallback there would hide a broken kernel.
    assert kernels.available()
    for seed, e in ((0, 400), (1, 300_000)):  # small (one thread) and split over threads
        g, x, rows, cols = random_operands(seed, e=e)
        out = jax.jit(kernels.edge_dots)(g, x, rows, cols)
        np.testing.assert_allclose(np.asarray(out), reference(g, x, rows, cols), rtol=1e-5,
                                   atol=1e-5)
    assert kernels.edge_dots(*random_operands(e=0)).shape == (0, 3)


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


def test_without_a_compiler_edge_dots_falls_back_to_xla_with_one_warning(tmp_path, monkeypatch,
                                                                         caplog):
    monkeypatch.setenv("PERTURBJAX_KERNEL_CACHE", str(tmp_path))  # nothing cached there
    monkeypatch.setenv("CXX", "/bin/false")
    kernels.available.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="perturbjax.graph.kernels"):
            g, x, rows, cols = random_operands(2)
            out = kernels.edge_dots(g, x, rows, cols)
            kernels.edge_dots(g, x, rows, cols)
        assert not kernels.available()
        assert sum("unavailable" in r.message for r in caplog.records) == 1
        np.testing.assert_allclose(np.asarray(out), reference(g, x, rows, cols), rtol=1e-5,
                                   atol=1e-5)
        assert list(tmp_path.iterdir()) == []  # the failed build left nothing behind
    finally:
        kernels.available.cache_clear()


def test_kernels_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("PERTURBJAX_KERNELS", "0")
    kernels.available.cache_clear()
    try:
        assert not kernels.available()
        g, x, rows, cols = random_operands(3)
        np.testing.assert_allclose(np.asarray(kernels.edge_dots(g, x, rows, cols)),
                                   reference(g, x, rows, cols), rtol=1e-5, atol=1e-5)
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
