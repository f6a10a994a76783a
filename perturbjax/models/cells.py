"""Classifiers of cell text-omic signalling graphs: many samples on one shared graph.

A batch is node values `[N, B, F]` (B samples, each the same graph with its own expression) and
one `Topology`, so every layer moves `[N, B, d]` through `propagate` and touches each edge once
per batch (the sparse backend multiplies `B * d`-wide rows). The same layers run on B disjoint
copies padded into one graph (values `[B * N + pad, 1, d]`, pooled per copy), which is what the
batching benchmark compares against.

Inputs fuse, per node and sample, the omic value with the node's text embeddings (the same for
every sample, so projected once per node) and optionally a learned vector per node:
`h0[n, b] = W_x x[n, b] + W_t text[n] + e[n] + c`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from perturbjax.graph.aggregate import segment_softmax
from perturbjax.graph.propagate import edge_softmax, propagate
from perturbjax.graph.topology import Topology

READOUTS = ("genes", "mean", "attention")


def _node_mask(topology: Topology, h: jax.Array) -> jax.Array:
    return topology.node_mask.reshape((-1,) + (1,) * (h.ndim - 1))


def gcn_weights(topology: Topology) -> tuple[jax.Array, jax.Array]:
    """GCN's symmetric normalisation with self-loops over all relations (Kipf & Welling 2017):
    per edge `1 / sqrt(d_src d_dst)` and per node the self-loop weight `1 / d`, with
    `d = in-degree + 1` counting real edges only (PyG's `gcn_norm` on in-degrees)."""
    ones = topology.edge_mask.astype(jnp.float32)
    deg = jax.ops.segment_sum(ones, topology.receivers, topology.num_nodes) + 1.0
    inv = jax.lax.rsqrt(deg)
    return ones * inv[topology.senders] * inv[topology.receivers], 1.0 / deg


class GCNLayer(nnx.Module):
    """`h' = W (sum_j A_ij h_j + h_i / d_i) + b` with GCN's normalised adjacency `A`."""

    def __init__(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(in_dim, out_dim, rngs=rngs)

    def aggregate(self, h: jax.Array, topology: Topology) -> jax.Array:
        """The linear part, `A h` (any trailing shape)."""
        w, self_w = gcn_weights(topology)
        return propagate(topology, h, w) + h * self_w.reshape((-1,) + (1,) * (h.ndim - 1))

    def transform(self, agg: jax.Array) -> jax.Array:
        return self.linear(agg)

    def __call__(self, h: jax.Array, topology: Topology) -> jax.Array:
        # aggregate, then transform: d_in <= d_out moves fewer bytes
        return self.transform(self.aggregate(h, topology))


class GINLayer(nnx.Module):
    """GIN (Xu et al. 2019): `h' = MLP((1 + eps) h_i + sum_j h_j)`, eps learned."""

    def __init__(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs):
        self.eps = nnx.Param(jnp.zeros(()))
        self.mlp1 = nnx.Linear(in_dim, out_dim, rngs=rngs)
        self.mlp2 = nnx.Linear(out_dim, out_dim, rngs=rngs)

    def aggregate(self, h: jax.Array, topology: Topology) -> jax.Array:
        """The linear part, `(1 + eps) h_i + sum_j h_j` (any trailing shape)."""
        return propagate(topology, h) + (1.0 + self.eps[...]) * h

    def transform(self, agg: jax.Array) -> jax.Array:
        return self.mlp2(jax.nn.relu(self.mlp1(agg)))

    def __call__(self, h: jax.Array, topology: Topology) -> jax.Array:
        return self.transform(self.aggregate(h, topology))


class GATLayer(nnx.Module):
    """GATv1 (Velickovic et al. 2018) over each node's in-edges, per sample and head:
    `alpha_ij = softmax_j LeakyReLU(a_s . W h_j + a_d . W h_i)`, `h'_i = sum_j alpha_ij W h_j`
    (heads concatenated), plus a root term `W_0 h_i`."""

    def __init__(self, in_dim: int, out_dim: int, heads: int, *, rngs: nnx.Rngs):
        if out_dim % heads:
            raise ValueError(f"GAT width {out_dim} is not divisible by {heads} heads")
        self.heads = heads
        self.linear = nnx.Linear(in_dim, out_dim, use_bias=False, rngs=rngs)
        init = nnx.initializers.glorot_uniform()
        self.att_src = nnx.Param(init(rngs.params(), (heads, out_dim // heads)))
        self.att_dst = nnx.Param(init(rngs.params(), (heads, out_dim // heads)))
        self.root = nnx.Linear(in_dim, out_dim, rngs=rngs)

    def __call__(self, h: jax.Array, topology: Topology) -> jax.Array:
        x = self.linear(h)
        x = x.reshape(x.shape[:-1] + (self.heads, -1))  # [N, S, H, C]
        s_src = jnp.sum(x * self.att_src[...], -1)  # [N, S, H]
        s_dst = jnp.sum(x * self.att_dst[...], -1)
        logits = jax.nn.leaky_relu(s_src[topology.senders] + s_dst[topology.receivers], 0.2)
        alpha = edge_softmax(topology, logits, by="receiver")  # [E, S, H]
        out = propagate(topology, x, alpha)
        return out.reshape(out.shape[:-2] + (-1,)) + self.root(h)


class TransformerLayer(nnx.Module):
    """Graph transformer convolution (Shi et al. 2021, PyG's `TransformerConv`): multi-head
    scaled dot-product attention of each node over its in-neighbours, plus a skip projection:
    `h'_i = W_s h_i + sum_j softmax_j(q_i . k_j / sqrt(C)) v_j`. The scores are per-edge dot
    products, `[E, S, H]` after an `[E, S, H, C]` gather: for graphs of moderate size."""

    def __init__(self, in_dim: int, out_dim: int, heads: int, *, rngs: nnx.Rngs):
        if out_dim % heads:
            raise ValueError(f"transformer width {out_dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nnx.Linear(in_dim, 3 * out_dim, rngs=rngs)
        self.skip = nnx.Linear(in_dim, out_dim, rngs=rngs)

    def __call__(self, h: jax.Array, topology: Topology) -> jax.Array:
        q, k, v = jnp.split(self.qkv(h), 3, axis=-1)
        shape = q.shape[:-1] + (self.heads, -1)
        q, k, v = q.reshape(shape), k.reshape(shape), v.reshape(shape)
        scores = jnp.sum(q[topology.receivers] * k[topology.senders], -1) / math.sqrt(q.shape[-1])
        alpha = edge_softmax(topology, scores, by="receiver")
        out = propagate(topology, v, alpha)
        return out.reshape(out.shape[:-2] + (-1,)) + self.skip(h)


CELL_LAYERS: dict[str, Callable[[int, int, int, nnx.Rngs], nnx.Module]] = {
    "gcn": lambda in_dim, out_dim, heads, rngs: GCNLayer(in_dim, out_dim, rngs=rngs),
    "gat": lambda in_dim, out_dim, heads, rngs: GATLayer(in_dim, out_dim, heads, rngs=rngs),
    "gin": lambda in_dim, out_dim, heads, rngs: GINLayer(in_dim, out_dim, rngs=rngs),
    "transformer": lambda in_dim, out_dim, heads, rngs: TransformerLayer(in_dim, out_dim, heads,
                                                                         rngs=rngs),
}
"""The cell-graph layers, by `config.model.name`: ``make(in_dim, out_dim, heads, rngs)``."""


class CellGraphClassifier(nnx.Module):
    """Fused omic + text node inputs, `num_layers` message-passing layers (ReLU, dropout,
    residual when widths match), a masked readout per sample, and a linear class head.

    Args:
      text_dim: width of the node text features (0: none).
      num_nodes: N; with `node_embedding` > 0 a learned vector of that width per node (only for
        graphs whose nodes are the same in every split, as here: genes).
      layer: a key of `CELL_LAYERS`.
      readout: "genes" (a gene-level head: each node's state is scored per class, `h_n W`,
        and weighed by a learned per-node, per-class weight `g[n, k]`, so a logit is the sum of
        per-node contributions, exactly: `node_contributions`; it keeps which gene carries which
        value, which pooling loses), "mean" (a linear head over mean-pooled nodes, contributions
        also exact) or "attention" (gated attention pooling).
    """

    def __init__(self, num_classes: int, *, text_dim: int, num_nodes: int, layer: str = "gcn",
                 hidden: int = 32, num_layers: int = 2, heads: int = 2, dropout: float = 0.1,
                 readout: str = "mean", node_embedding: int = 0, rngs: nnx.Rngs):
        if readout not in READOUTS:
            raise ValueError(f"readout {readout!r}; expected one of {READOUTS}")
        self.readout = readout
        self.value_in = nnx.Linear(1, hidden, rngs=rngs)
        self.text_in = nnx.Linear(text_dim, hidden, use_bias=False, rngs=rngs) if text_dim else None
        self.embedding = (nnx.Embed(num_nodes, hidden, rngs=rngs) if node_embedding else None)
        if layer not in CELL_LAYERS:
            raise ValueError(f"unknown cell-graph layer {layer!r}; expected one of "
                             f"{tuple(CELL_LAYERS)}")
        self.layers = nnx.List([CELL_LAYERS[layer](hidden, hidden, heads, rngs)
                                for _ in range(num_layers)])
        self.gate = nnx.Linear(hidden, 1, rngs=rngs) if readout == "attention" else None
        self.head = nnx.Linear(hidden, num_classes, rngs=rngs)
        self.gene_weight = (nnx.Param(nnx.initializers.normal(num_nodes ** -0.5)(
            rngs.params(), (num_nodes, num_classes))) if readout == "genes" else None)
        self.dropout = nnx.Dropout(dropout)

    def node_states(self, values: jax.Array, text: jax.Array | None, topology: Topology,
                    *, rngs: nnx.Rngs | None = None, deterministic: bool = True,
                    split_input: bool = True) -> jax.Array:
        """`[N, S, hidden]` node states from omic values `[N, S]` (S samples on the graph).

        The input is `h0[n, s] = x[n, s] w_v + k[n]`, `k` the per-node part (bias, text, node
        vector), the same for every sample. A first layer whose aggregation is linear (GCN,
        GIN) aggregates the two parts apart, `A h0 = (A x) w_v + A k`: one scalar per sample
        and node, and `k` once per batch instead of once per sample (`split_input=False`
        aggregates `h0` itself; the same numbers)."""
        mask = topology.node_mask
        x = jnp.where(mask[:, None], values, 0.0)
        width = self.value_in.kernel.shape[1]
        k = jnp.broadcast_to(self.value_in.bias[...], (x.shape[0], width))
        if self.text_in is not None:
            k = k + self.text_in(text)
        if self.embedding is not None:
            k = k + self.embedding(self._node_ids(x))
        k = jnp.where(mask[:, None], k, 0.0)
        w_v = self.value_in.kernel[...][0]
        h = x[..., None] * w_v + k[:, None, :]
        for i, layer in enumerate(self.layers):
            if i == 0 and split_input and hasattr(layer, "aggregate"):
                agg = layer.aggregate(x, topology)[..., None] * w_v \
                    + layer.aggregate(k, topology)[:, None, :]
                out = jax.nn.relu(layer.transform(agg))
            else:
                out = jax.nn.relu(layer(h, topology))
            out = self.dropout(out, rngs=rngs, deterministic=deterministic)
            h = jnp.where(_node_mask(topology, out), out + h, 0.0)
        return h

    def _node_ids(self, h: jax.Array) -> jax.Array:
        """Each row's node of the graph: its row, or on disjoint copies laid end to end, its
        row modulo N (padding rows beyond the copies are masked)."""
        n = (self.embedding.num_embeddings if self.embedding is not None
             else self.gene_weight.shape[0])
        return jnp.arange(h.shape[0]) % n

    def pool(self, h: jax.Array, topology: Topology, node_graph: jax.Array,
             num_graphs: int) -> jax.Array:
        """`[G, S, hidden]`: each graph's (node_graph ids) real nodes pooled, per sample."""
        mask = topology.node_mask
        if self.readout == "mean":
            total = jax.ops.segment_sum(jnp.where(_node_mask(topology, h), h, 0.0), node_graph,
                                        num_graphs)
            count = jax.ops.segment_sum(mask.astype(jnp.float32), node_graph, num_graphs)
            return total / jnp.maximum(count, 1.0)[:, None, None]
        gate = segment_softmax(self.gate(h)[..., 0], node_graph, num_graphs, mask)  # [N, S]
        return jax.ops.segment_sum(gate[..., None] * h, node_graph, num_graphs)

    def __call__(self, values: jax.Array, text: jax.Array | None, topology: Topology, *,
                 node_graph: jax.Array | None = None, num_graphs: int = 1,
                 rngs: nnx.Rngs | None = None, deterministic: bool = True,
                 split_input: bool = True) -> jax.Array:
        """Class logits `[G * S, K]`: shared graph (`num_graphs` 1, values `[N, B]`) -> `[B, K]`;
        disjoint copies (`node_graph` their ids, values `[N_total, 1]`) -> `[G, K]`."""
        h = self.node_states(values, text, topology, rngs=rngs, deterministic=deterministic,
                             split_input=split_input)
        if node_graph is None:
            node_graph = jnp.zeros(h.shape[0], jnp.int32)
        if self.readout == "genes":
            logits = jax.ops.segment_sum(self._gene_terms(h, topology), node_graph, num_graphs)
            return logits.reshape(-1, logits.shape[-1]) + self.head.bias[...]
        pooled = self.pool(h, topology, node_graph, num_graphs)
        return self.head(pooled.reshape(-1, pooled.shape[-1]))

    def _gene_terms(self, h: jax.Array, topology: Topology) -> jax.Array:
        """`[N, S, K]` per-node contributions of the gene-level head (0 on padding)."""
        terms = (h @ self.head.kernel[...]) * self.gene_weight[...][self._node_ids(h)][:, None]
        return jnp.where(_node_mask(topology, terms), terms, 0.0)

    def node_contributions(self, values: jax.Array, text: jax.Array | None,
                           topology: Topology) -> jax.Array:
        """`[B, N, K]` each node's share of each class logit on a shared graph (the logits are
        their sum plus the head's bias), for the "genes" and "mean" readouts: a gene-level view."""
        h = self.node_states(values, text, topology)
        if self.readout == "genes":
            return jnp.moveaxis(self._gene_terms(h, topology), 1, 0)
        if self.readout != "mean":
            raise ValueError("node contributions are exact only for the genes and mean readouts")
        count = jnp.maximum(jnp.sum(topology.node_mask), 1)
        per_node = jnp.where(_node_mask(topology, h), h, 0.0) @ self.head.kernel[...] / count
        return jnp.moveaxis(per_node, 1, 0)
