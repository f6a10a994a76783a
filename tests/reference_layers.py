"""Reference implementation: the message-passing layers as they were before `propagate`.

Kept verbatim (from perturbjax/models/layers.py at commit 4875464, less the helpers it shares
with today's layers) so that the rebuilt layers
can be checked against them, outputs and gradients, on random heterogeneous graphs.

Original docstring: heterogeneous message-passing layers (Flax NNX) over padded ``jraph`` graphs.

All layers share one contract (see ``perturbjax.graph.padding``):
``nodes = {"features", "node_type", "mask"}``, ``edges = {"edge_type",
"mask"}``, messages flow ``senders -> receivers``. Padding is honoured only
through the masks: padded edges send nothing and never enter a softmax, padded
nodes output exactly 0. Every reduction goes through
:mod:`perturbjax.graph.aggregate`, which accumulates in float32.

Per-relation projections are computed for all nodes at once (``[R, N, ...]``)
and gathered per edge at flat index ``relation * N + node``; the same flat
index identifies (relation, receiver) softmax/mean groups. This is simple and
fast for graphs of a few 10k nodes.

Attention coefficients of :class:`HeteroGAT` and :class:`HGT` are recorded as
``nnx.Intermediate`` only inside ``nnx.capture``; use :func:`attention_weights`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jraph
from flax import nnx

from perturbjax.graph.aggregate import segment_mean, segment_softmax, segment_sum
# The attention hook, checks and initialisers are shared with the rebuilt layers; only the maths
# below is the old one.
from perturbjax.models.layers import (
    _check_heads,
    _check_positive,
    _glorot,
    _glorot_per_head,
    _sow_attention,
)


class _Graph(NamedTuple):
    node_type: jax.Array
    node_mask: jax.Array
    edge_type: jax.Array
    edge_mask: jax.Array
    senders: jax.Array
    receivers: jax.Array


def _unpack(graph: jraph.GraphsTuple) -> _Graph:
    return _Graph(
        node_type=graph.nodes["node_type"],
        node_mask=graph.nodes["mask"],
        edge_type=graph.edges["edge_type"],
        edge_mask=graph.edges["mask"],
        senders=graph.senders,
        receivers=graph.receivers,
    )


def _relation_index(edge_type: jax.Array, node: jax.Array, num_nodes: int) -> jax.Array:
    """Flat index of (relation, node) pairs into ``[R * N, ...]`` arrays."""
    return edge_type * num_nodes + node


def _gather_relation(per_relation: jax.Array, index: jax.Array) -> jax.Array:
    """Gathers rows of a ``[R, N, ...]`` array at flat (relation, node) indices."""
    return per_relation.reshape((-1,) + per_relation.shape[2:])[index]


def _mask_nodes(x: jax.Array, node_mask: jax.Array) -> jax.Array:
    return jnp.where(node_mask[:, None], x, 0.0)


class HeteroGAT(nnx.Module):
    """Relation-wise multi-head GAT, summed over relations, plus a root term.

    For each relation ``r`` and head: ``alpha_ij = softmax_{j in N_r(i)}
    LeakyReLU(a_src_r . W_r h_j + a_dst_r . W_r h_i)``; node ``i`` receives
    ``W_0 h_i + b + sum_r sum_j alpha_ij W_r h_j`` with heads concatenated. No
    output activation: the caller chooses it.

    Args:
      in_dim: input node state width.
      out_dim: output width, ``num_heads * head_dim``.
      num_relations: number of edge types ``R``.
      num_heads: attention heads.
      negative_slope: LeakyReLU slope of the attention logits.
      dropout: dropout rate on attention coefficients (training mode only).
      rngs: parameter and dropout RNGs.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_relations: int,
        *,
        num_heads: int = 4,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        _check_positive(
            in_dim=in_dim, out_dim=out_dim, num_relations=num_relations, num_heads=num_heads
        )
        _check_heads(out_dim, num_heads)
        self.num_heads = num_heads
        self.negative_slope = negative_slope
        head_dim = out_dim // num_heads
        self.kernel = nnx.Param(_glorot(rngs.params(), (num_relations, in_dim, out_dim)))
        self.att_src = nnx.Param(_glorot(rngs.params(), (num_relations, num_heads, head_dim)))
        self.att_dst = nnx.Param(_glorot(rngs.params(), (num_relations, num_heads, head_dim)))
        self.root = nnx.Linear(in_dim, out_dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, h: jax.Array, graph: jraph.GraphsTuple) -> jax.Array:
        g = _unpack(graph)
        num_nodes = h.shape[0]
        num_relations, _, out_dim = self.kernel.shape
        proj = jnp.einsum("ni,rio->rno", h, self.kernel[...])
        proj = proj.reshape(num_relations, num_nodes, self.num_heads, -1)
        # Score nodes once per relation, then gather: cheaper than per-edge dots.
        score_src = jnp.einsum("rnhc,rhc->rnh", proj, self.att_src[...])
        score_dst = jnp.einsum("rnhc,rhc->rnh", proj, self.att_dst[...])
        src = _relation_index(g.edge_type, g.senders, num_nodes)
        dst = _relation_index(g.edge_type, g.receivers, num_nodes)
        logits = jax.nn.leaky_relu(
            _gather_relation(score_src, src) + _gather_relation(score_dst, dst),
            self.negative_slope,
        )
        alpha = segment_softmax(logits, dst, num_relations * num_nodes, g.edge_mask)
        _sow_attention(self, alpha)
        alpha = self.dropout(alpha)
        messages = _gather_relation(proj, src) * alpha[..., None]
        # Receiver (not relation*N + receiver) segments sum over relations too.
        agg = segment_sum(messages.reshape(-1, out_dim), g.receivers, num_nodes, g.edge_mask)
        return _mask_nodes(agg + self.root(h), g.node_mask)


class RGCN(nnx.Module):
    """R-GCN layer (Schlichtkrull et al. 2018).

    ``h_i' = W_0 h_i + b + sum_r (1 / c_ir) sum_{j in N_r(i)} W_r h_j`` with
    ``c_ir`` the number of real in-edges of ``i`` of relation ``r``. With
    ``num_bases`` the relation weights share bases, ``W_r = sum_b a_rb V_b``,
    which keeps the parameter count independent of ``R``.

    Args:
      in_dim: input node state width.
      out_dim: output width.
      num_relations: number of edge types ``R``.
      num_bases: number of shared bases ``B``; None learns each ``W_r`` freely.
      rngs: parameter RNGs.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_relations: int,
        *,
        num_bases: int | None = None,
        rngs: nnx.Rngs,
    ):
        _check_positive(in_dim=in_dim, out_dim=out_dim, num_relations=num_relations)
        if num_bases is None:
            self.kernel = nnx.Param(_glorot(rngs.params(), (num_relations, in_dim, out_dim)))
            self.coeff = None
        else:
            _check_positive(num_bases=num_bases)
            self.kernel = nnx.Param(_glorot(rngs.params(), (num_bases, in_dim, out_dim)))
            # Var(W_r) = B * Var(a) * Var(V): std B**-0.5 gives W_r glorot scale.
            coeff_init = nnx.initializers.normal(stddev=num_bases**-0.5)
            self.coeff = nnx.Param(coeff_init(rngs.params(), (num_relations, num_bases)))
        self.num_relations = num_relations
        self.root = nnx.Linear(in_dim, out_dim, rngs=rngs)

    def relation_kernels(self) -> jax.Array:
        """The per-relation weights ``W_r``, ``[R, in_dim, out_dim]``."""
        if self.coeff is None:
            return self.kernel[...]
        return jnp.einsum("rb,bio->rio", self.coeff[...], self.kernel[...])

    def __call__(self, h: jax.Array, graph: jraph.GraphsTuple) -> jax.Array:
        g = _unpack(graph)
        num_nodes = h.shape[0]
        proj = jnp.einsum("ni,rio->rno", h, self.relation_kernels())
        messages = _gather_relation(proj, _relation_index(g.edge_type, g.senders, num_nodes))
        dst = _relation_index(g.edge_type, g.receivers, num_nodes)
        # Mean over the (relation, receiver) group is exactly the 1/c_ir norm.
        per_relation = segment_mean(messages, dst, self.num_relations * num_nodes, g.edge_mask)
        agg = per_relation.reshape(self.num_relations, num_nodes, -1).sum(axis=0)
        return _mask_nodes(agg + self.root(h), g.node_mask)


class _TypedLinear(nnx.Module):
    """Affine map with a separate weight per node type."""

    def __init__(self, num_types: int, in_dim: int, out_dim: int, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(_glorot(rngs.params(), (num_types, in_dim, out_dim)))
        self.bias = nnx.Param(jnp.zeros((num_types, out_dim)))

    def __call__(self, x: jax.Array, node_type: jax.Array) -> jax.Array:
        # Projecting every node with every type's weight costs T x the FLOPs but
        # avoids materialising a per-node [N, in, out] weight gather.
        proj = jnp.einsum("ni,tio->nto", x, self.kernel[...]) + self.bias[...]
        return jnp.take_along_axis(proj, node_type[:, None, None], axis=1)[:, 0]


class HGT(nnx.Module):
    """Heterogeneous Graph Transformer layer (Hu et al. 2020).

    Node-type-specific K/Q/V maps; for an edge ``s -r-> t`` and head ``k``:
    ``logit = (K_s W_att_rk) . Q_t * mu_rk / sqrt(d)`` and message
    ``V_s W_msg_rk``. The softmax runs over all incoming edges of ``t``
    (across relations). The aggregate passes GELU and a type-specific output
    map; when ``in_dim == out_dim`` it is mixed with the input through a learned
    per-type gate ``sigmoid(skip_t)``, otherwise there is no residual.

    Args:
      in_dim: input node state width.
      out_dim: output width, ``num_heads * head_dim``.
      num_node_types: number of node types ``T``.
      num_relations: number of edge types ``R``.
      num_heads: attention heads.
      rngs: parameter RNGs.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_node_types: int,
        num_relations: int,
        *,
        num_heads: int = 4,
        rngs: nnx.Rngs,
    ):
        _check_positive(
            in_dim=in_dim,
            out_dim=out_dim,
            num_node_types=num_node_types,
            num_relations=num_relations,
            num_heads=num_heads,
        )
        _check_heads(out_dim, num_heads)
        self.num_heads = num_heads
        head_dim = out_dim // num_heads
        self.key = _TypedLinear(num_node_types, in_dim, out_dim, rngs=rngs)
        self.query = _TypedLinear(num_node_types, in_dim, out_dim, rngs=rngs)
        self.value = _TypedLinear(num_node_types, in_dim, out_dim, rngs=rngs)
        rel_shape = (num_relations, num_heads, head_dim, head_dim)
        self.w_att = nnx.Param(_glorot_per_head(rngs.params(), rel_shape))
        self.w_msg = nnx.Param(_glorot_per_head(rngs.params(), rel_shape))
        self.prior = nnx.Param(jnp.ones((num_relations, num_heads)))
        self.out = _TypedLinear(num_node_types, out_dim, out_dim, rngs=rngs)
        self.skip = nnx.Param(jnp.ones((num_node_types,))) if in_dim == out_dim else None

    def __call__(self, h: jax.Array, graph: jraph.GraphsTuple) -> jax.Array:
        g = _unpack(graph)
        num_nodes = h.shape[0]
        heads = (num_nodes, self.num_heads, -1)
        k = self.key(h, g.node_type).reshape(heads)
        q = self.query(h, g.node_type).reshape(heads)
        v = self.value(h, g.node_type).reshape(heads)
        src = _relation_index(g.edge_type, g.senders, num_nodes)
        k_rel = _gather_relation(jnp.einsum("nhc,rhcd->rnhd", k, self.w_att[...]), src)
        v_rel = _gather_relation(jnp.einsum("nhc,rhcd->rnhd", v, self.w_msg[...]), src)
        head_dim = k.shape[-1]
        scale = self.prior[...][g.edge_type] / math.sqrt(head_dim)
        logits = (k_rel * q[g.receivers]).sum(-1) * scale
        alpha = segment_softmax(logits, g.receivers, num_nodes, g.edge_mask)
        _sow_attention(self, alpha)
        messages = (v_rel * alpha[..., None]).reshape(alpha.shape[0], -1)
        agg = segment_sum(messages, g.receivers, num_nodes, g.edge_mask)
        out = self.out(jax.nn.gelu(agg), g.node_type)
        if self.skip is not None:
            gate = jax.nn.sigmoid(self.skip[...][g.node_type])[:, None]
            out = gate * out + (1.0 - gate) * h
        return _mask_nodes(out, g.node_mask)


class TypedInputProjection(nnx.Module):
    """Maps heterogeneous raw node features to a shared hidden width.

    Node type ``t`` reads its ``feature_widths[t]`` left-aligned feature columns
    through its own bias-free linear map (the type embedding already acts as a
    per-type bias); every type adds a learned type embedding, which is all a
    featureless type (width 0) gets.

    Args:
      feature_widths: feature width of each node type (0 = no features).
      out_dim: output width.
      rngs: parameter RNGs.
    """

    def __init__(self, feature_widths: Sequence[int], out_dim: int, *, rngs: nnx.Rngs):
        _check_positive(num_node_types=len(feature_widths), out_dim=out_dim)
        if any(w < 0 for w in feature_widths):
            raise ValueError(f"feature_widths must be non-negative, got {list(feature_widths)}")
        self.feature_widths = tuple(int(w) for w in feature_widths)
        self.linears = nnx.List(
            [
                nnx.Linear(w, out_dim, use_bias=False, rngs=rngs) if w else None
                for w in self.feature_widths
            ]
        )
        self.type_embedding = nnx.Param(
            nnx.initializers.normal(stddev=1.0)(rngs.params(), (len(feature_widths), out_dim))
        )

    def __call__(self, graph: jraph.GraphsTuple) -> jax.Array:
        """Returns float32 ``[N, out_dim]`` initial node states (0 on padding)."""
        features = graph.nodes["features"]
        node_type = graph.nodes["node_type"]
        if features.shape[1] < max(self.feature_widths):
            raise ValueError(
                f"graph has {features.shape[1]} feature columns but a node type "
                f"needs {max(self.feature_widths)}"
            )
        out = self.type_embedding[...][node_type]
        for t, (width, linear) in enumerate(zip(self.feature_widths, self.linears)):
            if linear is not None:
                out = out + jnp.where((node_type == t)[:, None], linear(features[:, :width]), 0.0)
        return _mask_nodes(out, graph.nodes["mask"])
