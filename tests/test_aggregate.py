"""Tests for the mask-aware segment aggregation primitives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perturbjax.graph.aggregate import segment_mean, segment_softmax, segment_sum

NUM_EDGES = 60
# More segments than ids drawn below, so the last segments are always empty.
NUM_SEGMENTS = 12


@pytest.fixture
def edges():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, NUM_SEGMENTS - 3, NUM_EDGES).astype(np.int32)
    data = rng.normal(size=(NUM_EDGES, 3)).astype(np.float32)
    logits = (3.0 * rng.normal(size=(NUM_EDGES, 2))).astype(np.float32)
    mask = rng.random(NUM_EDGES) < 0.7
    return ids, data, logits, mask


def reference_sum(data, ids, mask):
    out = np.zeros((NUM_SEGMENTS,) + data.shape[1:], np.float64)
    for d, i, m in zip(data, ids, mask):
        if m:
            out[i] += d
    return out


def reference_mean(data, ids, mask):
    count = np.bincount(ids[mask], minlength=NUM_SEGMENTS).reshape(-1, *([1] * (data.ndim - 1)))
    return reference_sum(data, ids, mask) / np.maximum(count, 1)


def reference_softmax(logits, ids, mask):
    out = np.zeros(logits.shape, np.float64)
    for s in range(NUM_SEGMENTS):
        sel = (ids == s) & mask
        if sel.any():
            e = np.exp(logits[sel] - logits[sel].max(axis=0))
            out[sel] = e / e.sum(axis=0)
    return out


def corrupt_masked(x, ids, mask, rng):
    """Puts NaN/inf/huge values and random segment ids on the masked-out edges."""
    x = x.copy()
    bad = np.array([np.nan, np.inf, -np.inf, 1e30], np.float32)
    x[~mask] = rng.choice(bad, size=x[~mask].shape)
    ids = ids.copy()
    ids[~mask] = rng.integers(0, NUM_SEGMENTS, (~mask).sum())
    return x, ids


@pytest.mark.parametrize("masked", [False, True])
def test_sum_and_mean_match_numpy(edges, masked):
    ids, data, _, mask = edges
    mask = mask if masked else np.ones_like(mask)
    got_sum = segment_sum(data, ids, NUM_SEGMENTS, mask if masked else None)
    got_mean = segment_mean(data, ids, NUM_SEGMENTS, mask if masked else None)
    assert got_sum.dtype == got_mean.dtype == jnp.float32
    np.testing.assert_allclose(got_sum, reference_sum(data, ids, mask), atol=1e-5)
    np.testing.assert_allclose(got_mean, reference_mean(data, ids, mask), atol=1e-5)
    # Empty segments: exactly zero, not NaN.
    assert np.all(np.asarray(got_mean)[-3:] == 0.0)


@pytest.mark.parametrize("heads", [False, True])
def test_softmax_matches_numpy_and_normalises(edges, heads):
    ids, _, logits, mask = edges
    logits = logits if heads else logits[:, 0]
    alpha = np.asarray(segment_softmax(logits, ids, NUM_SEGMENTS, mask))
    assert alpha.shape == logits.shape and alpha.dtype == np.float32
    np.testing.assert_allclose(alpha, reference_softmax(logits, ids, mask), atol=1e-6)
    assert np.all(alpha[~mask] == 0.0)
    sums = reference_sum(alpha.reshape(NUM_EDGES, -1), ids, mask)
    non_empty = np.bincount(ids[mask], minlength=NUM_SEGMENTS) > 0
    np.testing.assert_allclose(sums[non_empty], 1.0, atol=1e-6)
    np.testing.assert_array_equal(sums[~non_empty], 0.0)


def test_softmax_is_stable_for_large_logits():
    ids = np.zeros(3, np.int32)
    alpha = segment_softmax(np.array([1000.0, 1000.0, -1000.0], np.float32), ids, 1)
    np.testing.assert_allclose(alpha, [0.5, 0.5, 0.0], atol=1e-7)


def test_masked_edges_have_no_effect(edges):
    ids, data, logits, mask = edges
    rng = np.random.default_rng(1)
    bad_data, bad_ids = corrupt_masked(data, ids, mask, rng)
    bad_logits, _ = corrupt_masked(logits, ids, mask, rng)
    for fn in (segment_sum, segment_mean):
        np.testing.assert_array_equal(
            fn(bad_data, bad_ids, NUM_SEGMENTS, mask), fn(data, ids, NUM_SEGMENTS, mask)
        )
    np.testing.assert_array_equal(
        segment_softmax(bad_logits, bad_ids, NUM_SEGMENTS, mask),
        segment_softmax(logits, ids, NUM_SEGMENTS, mask),
    )


def test_softmax_gradients_finite_with_empty_and_masked_segments(edges):
    ids, _, logits, mask = edges
    # Segment 0 is made fully masked, on top of the always-empty last segments.
    mask = mask & (ids != 0)
    bad_logits, _ = corrupt_masked(logits, ids, mask, np.random.default_rng(2))
    weights = np.random.default_rng(3).normal(size=logits.shape).astype(np.float32)

    def loss(x):
        return jnp.sum(segment_softmax(x, ids, NUM_SEGMENTS, mask) * weights)

    value, grad = jax.value_and_grad(loss)(jnp.asarray(bad_logits))
    assert np.isfinite(value)
    grad = np.asarray(grad)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[~mask] == 0.0)
    clean_grad = np.asarray(jax.grad(loss)(jnp.asarray(logits)))
    np.testing.assert_allclose(grad[mask], clean_grad[mask], atol=1e-6)


def test_all_masked_gives_zeros():
    ids = np.zeros(4, np.int32)
    mask = np.zeros(4, bool)
    x = np.ones((4, 2), np.float32)
    for fn in (segment_sum, segment_mean, segment_softmax):
        out = np.asarray(fn(x, ids, 2, mask))
        assert np.all(out == 0.0)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_accumulates_in_float32(dtype):
    # 1 + 2048 * 2**-10: in bf16/f16 each increment below the ulp of the running
    # sum would be rounded away; float32 keeps them all.
    num = 2049
    data = jnp.concatenate([jnp.ones(1), jnp.full(num - 1, 2.0**-10)]).astype(dtype)
    ids = jnp.zeros(num, jnp.int32)
    total = segment_sum(data, ids, 1)
    assert total.dtype == jnp.float32
    assert float(total[0]) == 3.0
    mean = segment_mean(data[:, None], ids, 1)
    assert mean.dtype == jnp.float32
    np.testing.assert_allclose(mean[0, 0], 3.0 / num, rtol=1e-6)
    assert segment_softmax(data, ids, 1).dtype == jnp.float32


def test_jittable(edges):
    ids, data, logits, mask = edges
    fn = jax.jit(
        lambda d, logit, i, m: (
            segment_sum(d, i, NUM_SEGMENTS, m),
            segment_mean(d, i, NUM_SEGMENTS, m),
            segment_softmax(logit, i, NUM_SEGMENTS, m),
        )
    )
    for got, ref in zip(fn(data, logits, ids, mask), (
        reference_sum(data, ids, mask),
        reference_mean(data, ids, mask),
        reference_softmax(logits, ids, mask),
    )):
        np.testing.assert_allclose(got, ref, atol=1e-5)
