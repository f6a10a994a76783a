"""Mask-aware segment aggregation: the single reduction interface of all layers.

The segment backend of `perturbjax.graph.propagate` and its edge softmax reduce
edge values onto segments (receivers, or (relation, receiver) pairs) through
these three functions, so that padding semantics and numerics live in one place.

Conventions shared by all functions:
  * ``data``/``logits`` have a leading edge axis ``E``; trailing axes (e.g.
    heads, channels) are carried through.
  * ``mask`` is an optional bool ``[E]``; masked-out edges contribute nothing,
    whatever their values or segment ids (padding edges may hold garbage).
  * Accumulation is float32 (half-precision inputs are cast up first) because
    summing thousands of bf16 messages loses most of their mantissa.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from perturbjax.graph import kernels


def _broadcast_mask(mask: jax.Array | None, like: jax.Array) -> jax.Array:
    """Reshapes an edge mask ``[E]`` to broadcast against ``like`` ``[E, ...]``."""
    if mask is None:
        return jnp.ones(like.shape[:1] + (1,) * (like.ndim - 1), bool)
    mask = jnp.asarray(mask, bool)
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def segment_sum(
    data: jax.Array,
    segment_ids: jax.Array,
    num_segments: int,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Sums edge values per segment in float32.

    Args:
      data: ``[E, ...]`` edge values.
      segment_ids: int ``[E]`` segment of each edge.
      num_segments: static number of segments ``S``.
      mask: optional bool ``[E]``; False edges are ignored.

    Returns:
      float32 ``[S, ...]``; empty segments are 0.
    """
    data = jnp.asarray(data, jnp.float32)
    # `where` rather than multiplication so NaN/inf on padding edges cannot leak.
    data = jnp.where(_broadcast_mask(mask, data), data, 0.0)
    return jax.ops.segment_sum(data, segment_ids, num_segments)


def segment_mean(
    data: jax.Array,
    segment_ids: jax.Array,
    num_segments: int,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Averages edge values per segment over real edges (0 for empty segments).

    Args and Returns as for :func:`segment_sum`.
    """
    total = segment_sum(data, segment_ids, num_segments, mask)
    ones = jnp.ones(segment_ids.shape, jnp.float32)
    count = segment_sum(ones, segment_ids, num_segments, mask)
    count = count.reshape(count.shape + (1,) * (total.ndim - 1))
    return total / jnp.maximum(count, 1.0)


def segment_softmax(
    logits: jax.Array,
    segment_ids: jax.Array,
    num_segments: int,
    mask: jax.Array | None = None,
    *,
    indices_are_sorted: bool = False,
) -> jax.Array:
    """Numerically stable softmax over the edges that share a segment.

    Args:
      logits: ``[E]`` or ``[E, H]`` edge scores (one softmax per head).
      segment_ids: int ``[E]`` segment of each edge.
      num_segments: static number of segments ``S``.
      mask: optional bool ``[E]``; False edges get weight exactly 0 and do not
        enter any normaliser.
      indices_are_sorted: promise that ``segment_ids`` ascend (faster reductions, and on CPU
        the compiled one-pass kernel of `perturbjax.graph.kernels`).

    Returns:
      float32 weights shaped like ``logits``; they sum to 1 over the real edges
      of each non-empty segment. Values and gradients stay finite for empty
      or fully masked segments.
    """
    logits = jnp.asarray(logits, jnp.float32)
    if indices_are_sorted and kernels.enabled():  # one pass per segment, compiled
        edge_mask = jnp.ones(logits.shape[:1], bool) if mask is None else jnp.asarray(mask, bool)
        flat = logits.reshape(logits.shape[0], -1)
        return kernels.sorted_segment_softmax(flat, jnp.asarray(segment_ids, jnp.int32),
                                              edge_mask).reshape(logits.shape)
    valid = _broadcast_mask(mask, logits)
    seg_max = jax.ops.segment_max(jnp.where(valid, logits, -jnp.inf), segment_ids, num_segments,
                               indices_are_sorted=indices_are_sorted)
    # Softmax is shift invariant, so the max needs no gradient; empty segments
    # give -inf, which must not reach the subtraction.
    seg_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(seg_max), seg_max, 0.0))
    # Masked rows are zeroed both before and after exp: a single outer `where`
    # would still let an overflowing exp on a padding edge poison the gradient.
    shifted = jnp.where(valid, logits - seg_max[segment_ids], 0.0)
    unnorm = jnp.where(valid, jnp.exp(shifted), 0.0)
    denom = jax.ops.segment_sum(unnorm, segment_ids, num_segments,
                                indices_are_sorted=indices_are_sorted)
    # A segment with any real edge has denom >= 1 (its max contributes exp(0));
    # only empty segments need guarding against 0/0.
    denom = jnp.where(denom > 0.0, denom, 1.0)
    return unnorm / denom[segment_ids]
