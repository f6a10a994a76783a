"""`propagate`: the one seam through which every layer moves values along edges.

    out[i] = sum over edges e into i of  w_e * values[src(e)]        (reduce="sum")

`src(e)` is the edge's sender (`source="node"`, values `[N, ...]`) or its row in
relation-source space (`source="relation"`, values `[S, ...]`: each relation's transformed
source nodes, see `perturbjax.graph.topology`). The edge weight `w` is anything per edge, and
optionally per leading value axis (heads, samples): attention coefficients, degree norms and
attribution masks all take this path, and its gradient is exact.

Two backends, chosen by the data layout (whether the topology carries a sparse index), never by
the model:

  * sparse products (a topology with a sparse index: full graphs, shared-topology batches, and
    sampled batches whose index the batch builder made on the host): `A(w) @ X` for every
    weight column, with a custom derivative whose reverse mode is the transposed product
    `A(w)^T @ G` plus the per-edge dots `<G[receiver], X[source]>` for the weights. On CPU one
    compiled kernel does all columns in one pass, and its backward does both in one pass
    (`perturbjax.graph.kernels.csr_products`); elsewhere `jax.experimental.sparse` multiplies
    column by column. Neither direction materialises an `[E, F]` message array, and the dots
    are skipped when the weights are constants. BCSR's own autodiff is not used: it was much
    slower. The derivative is a custom JVP with a linear tangent, so forward mode (jacfwd),
    higher derivatives and vmap (which folds the batch into the products' columns) work too.
  * segment ops (a topology without one, e.g. a padded graph turned into a topology inside the
    step): gather the messages, weight them, and `segment_sum` them onto receivers.

Both accumulate in float32 and give padding edges weight exactly 0.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse
from jax.interpreters import ad

from perturbjax.graph.aggregate import segment_softmax, segment_sum
from perturbjax.graph.kernels import (batch_first, bind_sequential, csr_products, csr_products_bwd,
                                      fold, is_zero, linear_primitive, match_variance, take_rows,
                                      unfold, variance, variance_of_aval)
from perturbjax.graph.kernels import enabled as kernels_enabled
from perturbjax.graph.topology import CSR, Topology

REDUCTIONS = ("sum", "mean")
SOURCES = ("node", "relation")


def _csr_product(data: jax.Array, csr: CSR, x: jax.Array) -> jax.Array:
    rows = csr.indptr.shape[0] - 1
    if data.shape[0] == 0:
        return jnp.zeros((rows, x.shape[1]), jnp.float32)
    matrix = jsparse.BCSR((data, csr.indices, csr.indptr), shape=(rows, x.shape[0]))
    return matrix @ x


def _products(w, csr, x, kernels: bool):
    """`[n, K, F]`: the CSR product of every weight column k, data `w[csr.order, k]`: one pass
    over the entries for all columns (`csr_products`), else one BCSR product per column."""
    if kernels:
        return csr_products(w, x, csr.indptr, csr.indices, csr.order, csr.indptr.shape[0] - 1)
    data = w[csr.order]
    return jnp.stack([_csr_product(data[:, k], csr, x[:, k]) for k in range(x.shape[1])],
                     axis=1)


# ---- sparse products: A(w) @ x -------------------------------------------------------------
# A custom JVP whose tangent, A(dw) @ x + A(w) @ dx, is a linear primitive (`_spmm_tangent`,
# see `perturbjax.graph.kernels.linear_primitive`): forward mode evaluates it with the
# products; reverse mode transposes it into the backward product A(w)^T @ g and the per-edge
# dots <g[receiver], x[source]> (one fused kernel pass on CPU), what a custom VJP would run; a
# vmap folds the batch into the products' columns.
@jax.custom_jvp
def _spmm(w, x, fwd, bwd, rows, cols):
    """`A_k @ x[:, k]` for every column k of `w` `[E, K]` (x `[S, K, F]`), for the matrices with
    `A_k[rows[e], cols[e]] = w[e, k]`; `fwd` / `bwd` are the CSR pattern and its transpose's
    (entries in CSR order, `order` mapping back to edges)."""
    return match_variance(_products(w, fwd, x, kernels_enabled()), variance(w) | variance(x))


def _spmm_jvp(primals, tangents):
    w, x, fwd, bwd, rows, cols = primals
    dw, dx = tangents[:2]
    out = _spmm(w, x, fwd, bwd, rows, cols)
    # Symbolic zeros: weights that nothing differentiates (degree norms) need no per-edge dots
    # in reverse mode, and values that are constants (input features) no backward product.
    lin = [jnp.asarray(t, jnp.float32) for t in (dw, dx) if not is_zero(t)]
    if not lin:
        return out, jnp.zeros_like(out)
    return out, _spmm_tangent.bind(w, x, *fwd, *bwd, rows, cols, *lin, has_dw=not is_zero(dw),
                                   has_dx=not is_zero(dx), kernels=kernels_enabled())


_spmm.defjvp(_spmm_jvp, symbolic_zeros=True)
# _spmm_tangent's operands before its tangents: w, x, fwd and bwd (3 each), rows, cols.
_NON_LINEAR = 10


def _spmm_parts(operands, has_dw, has_dx):
    w, x, fi, fx, fo, bi, bx, bo, rows, cols, *lin = operands
    dw = lin.pop(0) if has_dw else None
    dx = lin.pop(0) if has_dx else None
    return w, x, CSR(fi, fx, fo), CSR(bi, bx, bo), rows, cols, dw, dx


def _spmm_tangent_impl(*operands, has_dw, has_dx, kernels):
    """`A(dw) @ x + A(w) @ dx` (the terms whose tangent is present)."""
    w, x, fwd, _, _, _, dw, dx = _spmm_parts(operands, has_dw, has_dx)
    terms = ([_products(dw, fwd, x, kernels)] if has_dw else []) + \
            ([_products(w, fwd, dx, kernels)] if has_dx else [])
    like = frozenset().union(*(variance(a) for a in (w, x, dw, dx) if a is not None))
    return match_variance(sum(terms[1:], terms[0]), like)


def _spmm_tangent_shape(w, x, fwd_indptr, *_, has_dw, has_dx, kernels):
    return (fwd_indptr.shape[0] - 1,) + x.shape[1:]


def _spmm_tangent_transpose(ct, *operands, has_dw, has_dx, kernels):
    w, x, _, bwd, rows, cols, dw, dx = _spmm_parts(operands, has_dw, has_dx)
    need_dw = has_dw and ad.is_undefined_primal(dw)
    need_dx = has_dx and ad.is_undefined_primal(dx)
    ct_dw = ct_dx = None
    if not is_zero(ct) and need_dw and kernels:  # dx and the weights' gradient in one pass
        ct_dx, ct_dw = csr_products_bwd(w, ct, x, bwd.indptr, bwd.indices, bwd.order)
    elif not is_zero(ct):
        if need_dx:
            ct_dx = _products(w, bwd, ct, kernels)
        if need_dw:
            ct_dw = jnp.sum(ct[rows] * x[cols], axis=-1)
    out = [None] * _NON_LINEAR
    if has_dw:
        out.append(None if ct_dw is None or not need_dw
                   else match_variance(ct_dw, variance_of_aval(dw.aval)))
    if has_dx:
        out.append(None if ct_dx is None or not need_dx
                   else match_variance(ct_dx, variance_of_aval(dx.aval)))
    return out


def _spmm_tangent_jvp(primals, tangents, *, has_dw, has_dx, kernels):
    # The tangent A(a) @ x + A(w) @ b is bilinear in (w, x) and (a, b): its own tangent is
    # A(da) @ x + A(w) @ db  +  A(dw) @ b + A(a) @ dx, two more of the same primitive.
    w, x, fwd, bwd, rows, cols, a, b = _spmm_parts(primals, has_dw, has_dx)
    tw, tx, _, _, _, _, ta, tb = _spmm_parts(tangents, has_dw, has_dx)
    pattern = (*fwd, *bwd, rows, cols)
    out = _spmm_tangent.bind(*primals, has_dw=has_dw, has_dx=has_dx, kernels=kernels)
    terms = []
    # A(da) @ x + A(w) @ db: the primitive itself, on the tangents of its tangent operands.
    use = [has_dw and not is_zero(ta), has_dx and not is_zero(tb)]
    if any(use):
        terms.append(_spmm_tangent.bind(
            w, x, *pattern, *[ad.instantiate_zeros(t) for t, u in zip((ta, tb), use) if u],
            has_dw=use[0], has_dx=use[1], kernels=kernels))
    # A(dw) @ b + A(a) @ dx: the primitive with (a, b) in the places of (w, x).
    use = [has_dx and not is_zero(tw), has_dw and not is_zero(tx)]
    if any(use):
        terms.append(_spmm_tangent.bind(
            a if has_dw else w, b if has_dx else x, *pattern,
            *[ad.instantiate_zeros(t) for t, u in zip((tw, tx), use) if u],
            has_dw=use[0], has_dx=use[1], kernels=kernels))
    return out, (sum(terms[1:], terms[0]) if terms else jnp.zeros_like(out))


def _spmm_tangent_batch(args, dims, *, has_dw, has_dx, kernels):
    w, x, *_, dw, dx = _spmm_parts(args, has_dw, has_dx)
    dw_dim = dims[_NON_LINEAR] if has_dw else None
    dx_dim = dims[-1] if has_dx else None
    if any(d is not None for d in dims[2:_NON_LINEAR]):
        return bind_sequential(_spmm_tangent, args, dims, has_dw=has_dw, has_dx=has_dx,
                               kernels=kernels)
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)

    weights_batched = dims[0] is not None or dw_dim is not None
    if weights_batched and not kernels:  # the XLA products take one column per product
        return bind_sequential(_spmm_tangent, args, dims, has_dw=has_dw, has_dx=has_dx,
                               kernels=kernels)
    # The batch in the value columns F when the weights are shared, else in the columns K.
    axis = 1 if weights_batched else 2
    new = list(args)
    new[1] = fold(batch_first(x, dims[1], size), axis)
    if has_dx:
        new[-1] = fold(batch_first(dx, dx_dim, size), axis)
    if weights_batched:
        new[0] = fold(batch_first(w, dims[0], size), 1)
        if has_dw:
            new[_NON_LINEAR] = fold(batch_first(dw, dw_dim, size), 1)
    out = _spmm_tangent.bind(*new, has_dw=has_dw, has_dx=has_dx, kernels=kernels)
    return unfold(out, axis, size), axis


_spmm_tangent = linear_primitive(
    "perturbjax_spmm_tangent", _spmm_tangent_impl, _spmm_tangent_shape,
    jvp=_spmm_tangent_jvp, transpose=_spmm_tangent_transpose, batch=_spmm_tangent_batch)


# ---- row gather with a sparse-product transpose --------------------------------------------
@jax.custom_jvp
def _gather_rows(x, index, gather_t):
    """`x[index]`, whose reverse-mode derivative is a CSR product (`gather_t`: the transposed
    selection), not a scatter-add: XLA's CPU scatter is slow (and its gather waits on every
    cache miss)."""
    return _take(x, index)


def _take(x, index):
    flat = take_rows(x.reshape(x.shape[0], -1), index)
    return flat.reshape(index.shape + x.shape[1:])


def _gather_rows_jvp(primals, tangents):
    x, index, gather_t = primals
    dx = tangents[0]
    flat = dx.reshape(dx.shape[0], -1).astype(jnp.float32)
    t = _gather_tangent.bind(index, *gather_t, flat, kernels=kernels_enabled())
    return _gather_rows(x, index, gather_t), t.reshape(index.shape + x.shape[1:]).astype(dx.dtype)


_gather_rows.defjvp(_gather_rows_jvp)


def _gather_tangent_impl(index, indptr, indices, order, dx, *, kernels):
    return take_rows(dx, index) if kernels else dx[index]


def _gather_tangent_transpose(ct, index, indptr, indices, order, dx, *, kernels):
    if is_zero(ct):
        return None, None, None, None, None
    ones = jnp.ones(index.shape + (1,), jnp.float32)
    out = _products(ones, CSR(indptr, indices, order), ct[:, None, :], kernels)[:, 0]
    return None, None, None, None, match_variance(out, variance_of_aval(dx.aval))


def _gather_tangent_jvp(primals, tangents, *, kernels):
    out = _gather_tangent.bind(*primals, kernels=kernels)
    t = tangents[-1]
    return out, (jnp.zeros_like(out) if is_zero(t)
                 else _gather_tangent.bind(*primals[:-1], t, kernels=kernels))


def _gather_tangent_batch(args, dims, *, kernels):
    if any(d is not None for d in dims[:-1]):
        return bind_sequential(_gather_tangent, args, dims, kernels=kernels)
    dx = jnp.moveaxis(args[-1], dims[-1], 0)  # the batch in the columns: [n, B * W]
    out = _gather_tangent.bind(*args[:-1], fold(dx, 1), kernels=kernels)
    return unfold(out, 1, dx.shape[0]), 1


_gather_tangent = linear_primitive(
    "perturbjax_gather_tangent", _gather_tangent_impl,
    lambda index, indptr, indices, order, dx, kernels: (index.shape[0], dx.shape[1]),
    jvp=_gather_tangent_jvp, transpose=_gather_tangent_transpose, batch=_gather_tangent_batch)


def project_sources(topology: Topology, values: jax.Array, *kernels: jax.Array
                    ) -> list[jax.Array]:
    """Per-relation linear maps of the relations' source nodes, in relation-source space.

    Args:
      topology: the graph structure.
      values: node values `[N, ..., in]`.
      kernels: each `[R, in, out_k]`: relation r maps its source nodes by `kernels[r]`.

    Returns:
      one array `[S, ..., out_k]` per kernel. When the topology lists the nodes that send each
      relation something (`topology.sources`: a whole graph, or a sampled subgraph within its
      per-relation budgets), only those rows are transformed; otherwise every node of each
      source type, one matmul per type for all the relations leaving it.
    """
    if topology.sources is None:
        def by_type(t, rels, x):
            idx = np.asarray(rels)
            return tuple(_project(x, k[idx]) for k in kernels)

        return list(topology.per_source_type(values, by_type))
    src = topology.sources
    rows = (values[src.index] if src.gather_t is None
            else _gather_rows(values, src.index, src.gather_t))
    # One matmul per relation for all the kernels side by side, with the kernels cut by a split
    # (whose gradient is a concatenation, not one zero-padded [R, in, out] buffer per relation).
    widths = [k.shape[-1] for k in kernels]
    stacked = jnp.concatenate(kernels, axis=-1) if len(kernels) > 1 else kernels[0]
    parts = jnp.split(rows, topology.layout.active_offsets[1:-1], axis=0)
    per_relation = jnp.split(stacked, stacked.shape[0], axis=0)
    out = jnp.concatenate([part @ k[0] for part, k in zip(parts, per_relation)], axis=0)
    return jnp.split(out, np.cumsum(widths)[:-1].tolist(), axis=-1)


def project_targets(topology: Topology, values: jax.Array, kernel: jax.Array) -> jax.Array:
    """Per-relation linear maps of the relations' target nodes, in relation-target space.

    Args:
      topology: the graph structure.
      values: node values `[N, ..., in]`.
      kernel: `[R, in, out]`: relation r maps its target type's nodes by `kernel[r]`.

    Returns:
      `[G, ..., out]`, rows numbered like `topology.group`. One matmul per target type, for all
      the relations into it side by side, so each node block is read once.
    """
    layout = topology.layout
    blocks = topology.split_types(values)
    per_relation: list = [None] * len(layout.relations)
    for t, x in enumerate(blocks):
        rels = [r for r, blk in enumerate(layout.relations) if blk.target_type == t]
        if rels:
            y = _project(x, kernel[np.asarray(rels)])  # [n_t, m, ..., out]
            for r, part in zip(rels, jnp.split(y, len(rels), axis=1)):
                per_relation[r] = part[:, 0]
    if not per_relation:
        raise ValueError("the topology has no relations")
    return jnp.concatenate(per_relation, axis=0)


def _project(hs: jax.Array, kernels: jax.Array) -> jax.Array:
    """`hs @ kernels[q]` for every q, as `[n, m, ..., out]` from `hs` `[n, ..., in]` and
    `kernels` `[m, in, out]`: one matmul with the kernels side by side, so the backward pass
    multiplies the output gradient as it lies instead of transposing it."""
    m, i, o = kernels.shape
    x = hs @ jnp.transpose(kernels, (1, 0, 2)).reshape(i, m * o)
    return jnp.moveaxis(x.reshape(hs.shape[:-1] + (m, o)), -2, 1)


def _weight_columns(values: jax.Array, weight: jax.Array | None, num_edges: int):
    """Brings values `[S, *rest]` and weights `[E, *p]` (p broadcasting against the leading
    axes of `rest`) to `[S, K, F]` and `[E, K]`: K weight columns, F values per column."""
    if weight is None:
        return values.reshape(values.shape[0], 1, -1), jnp.ones((num_edges, 1), jnp.float32), \
            values.shape[1:]
    p, rest = weight.shape[1:], values.shape[1:]
    if weight.shape[0] != num_edges or len(p) > len(rest):
        raise ValueError(f"edge weights of shape {weight.shape} do not fit {num_edges} edges and "
                         f"values of shape {values.shape} (expected [E] or "
                         f"[E, *leading value axes])")
    q = jnp.broadcast_shapes(p, rest[:len(p)])
    tail = rest[len(p):]
    values = jnp.broadcast_to(values, values.shape[:1] + q + tail)
    weight = jnp.broadcast_to(weight, (num_edges,) + q)
    k = math.prod(q)
    return (values.reshape(values.shape[0], k, -1), weight.reshape(num_edges, k), q + tail)


def propagate(topology: Topology, values: jax.Array, edge_weight: jax.Array | None = None, *,
              source: str = "node", reduce: str = "sum", transpose: bool = False) -> jax.Array:
    """Sums (or averages) weighted messages onto receivers.

    Args:
      topology: the graph structure; its `sparse` index selects the sparse backend.
      values: `[N, ...]` node values (`source="node"`) or `[S, ...]` rows of relation-source
        space (`source="relation"`); any dtype, accumulated in float32.
      edge_weight: None (every real edge weighs 1), `[E]`, or `[E, *p]` with `p` broadcasting
        against the leading axes of `values.shape[1:]` (e.g. `[E, H]` for values `[S, H, C]`,
        `[E, B, H]` for values `[S, B, H, C]`). Padding edges are zeroed whatever they hold.
      source: where messages come from, "node" or "relation".
      reduce: "sum", or "mean" over each receiver's real in-edges (0 where there are none).
      transpose: messages against the edges' direction, from receivers onto senders (`A^T x`;
        source="node", reduce="sum" only): the adjoint of the forward product, which kernels
        written as `<A^h x, y>` need.

    Returns:
      float32 `[N, ...]`, the trailing shape of `values` (broadcast against the weights).
    """
    if source not in SOURCES or reduce not in REDUCTIONS:
        raise ValueError(f"propagate(source={source!r}, reduce={reduce!r}); expected source in "
                         f"{SOURCES} and reduce in {REDUCTIONS}")
    if transpose and (source, reduce) != ("node", "sum"):
        raise ValueError(f"propagate(transpose=True) needs source='node' and reduce='sum', got "
                         f"{source!r} and {reduce!r}")
    layout = topology.layout
    expected = layout.num_nodes if source == "node" else layout.num_sources
    if values.shape[0] != expected:
        raise ValueError(f"values have {values.shape[0]} rows; source={source!r} needs {expected}")
    cols = topology.senders if source == "node" else topology.src_index
    x, w, out_tail = _weight_columns(jnp.asarray(values, jnp.float32), edge_weight,
                                     layout.num_edges)
    w = jnp.where(topology.edge_mask[:, None], jnp.asarray(w, jnp.float32), 0.0)
    if topology.edge_scale is not None:  # an attribution mask (Topology.edge_scale)
        w = w * jnp.asarray(topology.edge_scale, jnp.float32)[:, None]
    n = layout.num_nodes
    if topology.sparse is not None:
        fwd, bwd = ((topology.sparse.node, topology.sparse.node_t) if source == "node"
                    else (topology.sparse.relation, topology.sparse.relation_t))
        rows = topology.receivers
        if transpose:
            fwd, bwd, rows, cols = bwd, fwd, cols, rows
        out = _spmm(w, x, fwd, bwd, rows, cols)
    elif transpose:
        out = segment_sum(w[..., None] * x[topology.receivers], topology.senders, n)
    else:
        out = segment_sum(w[..., None] * x[cols], topology.receivers, n)
    if reduce == "mean":
        count = segment_sum(jnp.ones(layout.num_edges), topology.receivers, n, topology.edge_mask)
        out = out / jnp.maximum(count, 1.0)[:, None, None]
    return out.reshape((n,) + out_tail)


def edge_softmax(topology: Topology, logits: jax.Array, *, by: str = "relation") -> jax.Array:
    """Softmax of edge scores `[E, ...]` over each (relation, receiver) group (`by="relation"`,
    relation-wise attention) or over all of a receiver's in-edges (`by="receiver"`); 0 on
    padding edges."""
    if by == "relation":
        return segment_softmax(logits, topology.group, topology.layout.num_groups,
                               topology.edge_mask, indices_are_sorted=True)
    if by == "receiver":
        return segment_softmax(logits, topology.receivers, topology.num_nodes, topology.edge_mask)
    raise ValueError(f"edge_softmax(by={by!r}); expected 'relation' or 'receiver'")


def relation_mean_weights(topology: Topology) -> jax.Array:
    """Per-edge `1 / c_ir`, c_ir the number of real in-edges of the edge's receiver i of its
    relation r: with these weights `propagate` averages within each (relation, receiver)."""
    ones = topology.edge_mask.astype(jnp.float32)
    count = jax.ops.segment_sum(ones, topology.group, topology.layout.num_groups,
                                indices_are_sorted=True)
    return ones / jnp.maximum(count[topology.group], 1.0)


def symmetric_norm_weights(topology: Topology) -> jax.Array:
    """Per-edge `1 / sqrt(out-degree(sender) * in-degree(receiver))` within the edge's relation,
    counting real edges only (GCN's normalisation, per relation)."""
    ones = topology.edge_mask.astype(jnp.float32)
    n, rel = topology.num_nodes, topology.edge_type
    out_deg = jax.ops.segment_sum(ones, rel * n + topology.senders, n * topology.num_relations)
    in_deg = jax.ops.segment_sum(ones, topology.group, topology.layout.num_groups,
                                 indices_are_sorted=True)
    return jax.lax.rsqrt(jnp.maximum(out_deg[rel * n + topology.senders]
                                     * in_deg[topology.group], 1.0))
