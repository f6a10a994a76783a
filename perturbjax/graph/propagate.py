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
    weight column, with a custom VJP whose backward is the transposed product `A(w)^T @ G` plus
    the per-edge dots `<G[receiver], X[source]>` for the weights. On CPU one compiled kernel
    does all columns in one pass, and its backward does both in one pass
    (`perturbjax.graph.kernels.csr_products`); elsewhere `jax.experimental.sparse` multiplies
    column by column. Neither direction materialises an `[E, F]` message array, and the dots
    are skipped when the weights are constants. BCSR's own autodiff is not used: it was much
    slower.
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

from perturbjax.graph.aggregate import segment_softmax, segment_sum
from perturbjax.graph.kernels import (csr_products, csr_products_bwd, match_variance, take_rows,
                                     variance)
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


def _products(w, csr, x):
    """`[n, K, F]`: the CSR product of every weight column k, data `w[csr.order, k]`: one pass
    over the entries for all columns (`csr_products`), else one BCSR product per column."""
    if kernels_enabled():
        return csr_products(w, x, csr.indptr, csr.indices, csr.order, csr.indptr.shape[0] - 1)
    data = take_rows(w, csr.order)
    return jnp.stack([_csr_product(data[:, k], csr, x[:, k]) for k in range(x.shape[1])],
                     axis=1)


@jax.custom_vjp
def _spmm(w, x, fwd, bwd, rows, cols):
    """`A_k @ x[:, k]` for every column k of `w` `[E, K]` (x `[S, K, F]`), for the matrices with
    `A_k[rows[e], cols[e]] = w[e, k]`; `fwd` / `bwd` are the CSR pattern and its transpose's
    (entries in CSR order, `order` mapping back to edges)."""
    return match_variance(_products(w, fwd, x), variance(w) | variance(x))


def _spmm_fwd(w, x, fwd, bwd, rows, cols):
    # Symbolic zeros: each argument comes as (value, perturbed). Weights that nothing
    # differentiates (degree norms) need no per-edge dots: rows and cols are kept only for them.
    need_dw = w.perturbed
    w, x, fwd, bwd, rows, cols = jax.tree.map(
        lambda a: a.value, (w, x, fwd, bwd, rows, cols),
        is_leaf=lambda a: isinstance(a, jax.custom_derivatives.CustomVJPPrimal))
    res = (w, x, bwd, rows if need_dw else None, cols if need_dw else None)
    return _spmm(w, x, fwd, bwd, rows, cols), res


def _spmm_bwd(res, g):
    w, x, bwd, rows, cols = res
    if isinstance(g, jax.custom_derivatives.SymbolicZero):
        return None, None, None, None, None, None
    if rows is not None and kernels_enabled():  # dx and the weights' gradient in one pass
        dx, dw = csr_products_bwd(w, g, x, bwd.indptr, bwd.indices, bwd.order)
        return dw, dx, None, None, None, None
    dx = match_variance(_products(w, bwd, g), variance(x))
    dw = None if rows is None else match_variance(jnp.sum(g[rows] * x[cols], axis=-1),
                                                  variance(w))
    return dw, dx, None, None, None, None


_spmm.defvjp(_spmm_fwd, _spmm_bwd, symbolic_zeros=True)


@jax.custom_vjp
def _gather_rows(x, index, gather_t):
    """`x[index]`, whose gradient is a CSR product (`gather_t`: the transposed selection), not
    a scatter-add: XLA's CPU scatter is slow (and its gather waits on every cache miss)."""
    return _take(x, index)


def _take(x, index):
    flat = take_rows(x.reshape(x.shape[0], -1), index)
    return flat.reshape(index.shape + x.shape[1:])


def _gather_rows_fwd(x, index, gather_t):
    return _take(x, index), (x, index, gather_t)  # x is kept for its type only (the caller holds it)


def _gather_rows_bwd(res, g):
    x, index, gather_t = res
    flat = g.reshape(g.shape[0], 1, -1).astype(jnp.float32)
    ones = jnp.ones(index.shape + (1,), jnp.float32)
    dx = _products(ones, gather_t, flat).reshape(x.shape).astype(x.dtype)
    return match_variance(dx, variance(x)), None, None


_gather_rows.defvjp(_gather_rows_fwd, _gather_rows_bwd)


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
