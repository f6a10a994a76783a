"""Heterogeneous message-passing layers (Flax NNX) over a `Topology`.

Every layer takes node values `h` of shape `[N, d]` or `[N, B, d]` (B samples sharing one
graph) and a `perturbjax.graph.topology.Topology`, and moves values along edges only through
`perturbjax.graph.propagate`, whose backend (sparse products or segment ops) the topology
selects. Padding is honoured only through the topology's masks: padded edges carry weight 0 and
never enter a softmax, padded nodes output exactly 0.

No layer projects every node with every relation's weight: relation r transforms only the nodes
of its source type (a static block of the flat numbering), into relation-source space, and
scores that depend on the receiver alone are folded into a per-node projection before they are
gathered per edge.

Attention coefficients of :class:`HeteroGAT` and :class:`HGT` are recorded (in the topology's
edge order) as ``nnx.Intermediate`` only inside ``nnx.capture``; use :func:`attention_weights`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from perturbjax.graph.propagate import (edge_softmax, project_sources, project_targets,
                                       propagate, relation_mean_weights)
from perturbjax.graph.topology import Topology

ATTENTION = "attention"

# Stacked kernels [..., in, out]: leading axes index relations/types/heads, so
# each slice gets the fan-in/fan-out of a single matrix.
_glorot = nnx.initializers.glorot_uniform(in_axis=-2, out_axis=-1, batch_axis=0)
_glorot_per_head = nnx.initializers.glorot_uniform(in_axis=-2, out_axis=-1, batch_axis=(0, 1))


def mask_nodes(x: jax.Array, node_mask: jax.Array) -> jax.Array:
    """Zeroes padded nodes' rows of `[N, ...]` values."""
    return jnp.where(node_mask.reshape(node_mask.shape + (1,) * (x.ndim - 1)), x, 0.0)


def _check_relations(layer: str, expected: int, topology: Topology) -> None:
    if topology.num_relations != expected:
        raise ValueError(f"{layer} was built for {expected} relations but the topology has "
                         f"{topology.num_relations}")


def _sow_attention(module: nnx.Module, alpha: jax.Array) -> None:
    """Records ``alpha`` as an ``nnx.Intermediate``, but only under ``nnx.capture``.

    Outside a capture, ``Module.sow`` is deprecated and would attach a new
    Intermediate variable to the module, changing its state under
    ``nnx.jit``/``nnx.split``. ``nnx.capture`` marks the modules it collects
    from with ``__captures__`` (the attribute ``sow`` itself checks), so that
    marker is the test. Only the last call is kept, not a tuple of calls.
    """
    if hasattr(module, "__captures__"):
        module.sow(
            nnx.Intermediate, ATTENTION, alpha, init_fn=lambda: None, reduce_fn=lambda _, new: new
        )


def attention_weights(model: nnx.Module, *args: Any, **kwargs: Any) -> dict[tuple, jax.Array]:
    """Runs ``model(*args, **kwargs)`` and returns the attention of every layer.

    Works for a single layer (``attention_weights(gat, h, graph)``) or any
    model containing attention layers; may be wrapped in ``nnx.jit``.

    Returns:
      ``{module path: alpha}`` with ``alpha`` float32 ``[E, heads]``, 0 on padded
      edges. The path is the layer's position in ``model`` as in
      ``nnx.iter_modules`` (``()`` when ``model`` is the layer itself).
    """
    _, captured = nnx.capture(model, nnx.Intermediate)(*args, **kwargs)
    return {
        path[:-1]: var.get_value()
        for path, var in nnx.to_flat_state(captured)
        if path[-1] == ATTENTION
    }


def _check_positive(**dims: int) -> None:
    for name, value in dims.items():
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


def _check_heads(out_dim: int, num_heads: int) -> None:
    if out_dim % num_heads:
        raise ValueError(
            f"out_dim ({out_dim}) must be divisible by num_heads ({num_heads}): "
            "heads are concatenated to form the output"
        )


class HeteroGAT(nnx.Module):
    """Relation-wise multi-head GAT, summed over relations, plus a root term.

    For each relation ``r`` and head: ``alpha_ij = softmax_{j in N_r(i)}
    LeakyReLU(a_src_r . W_r h_j + a_dst_r . W_r h_i)``; node ``i`` receives
    ``W_0 h_i + b + sum_r sum_j alpha_ij W_r h_j`` with heads concatenated. No
    output activation: the caller chooses it. ``W_r h_j`` is computed only for
    the nodes of r's source type; ``a_dst_r . W_r h_i`` as ``h_i . (W_r a_dst_r)``.

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

    def __call__(self, h: jax.Array, topology: Topology) -> jax.Array:
        num_relations, in_dim, out_dim = self.kernel.shape
        _check_relations("HeteroGAT", num_relations, topology)
        heads = self.num_heads
        kernel = self.kernel[...]
        # Receiver- and sender-side scores fold into the kernels: a . (W_r h) = h . (W_r a).
        w_src = jnp.einsum("rihc,rhc->rih", kernel.reshape(num_relations, in_dim, heads, -1),
                           self.att_src[...])
        w_dst = jnp.einsum("rihc,rhc->rih", kernel.reshape(num_relations, in_dim, heads, -1),
                           self.att_dst[...])

        x, score_src = project_sources(topology, h, kernel, w_src)
        x = x.reshape(x.shape[:-1] + (heads, -1))
        score_dst = project_targets(topology, h, w_dst)
        logits = jax.nn.leaky_relu(score_src[topology.src_index] + score_dst[topology.group],
                                   self.negative_slope)
        alpha = edge_softmax(topology, logits, by="relation")
        _sow_attention(self, alpha)
        alpha = self.dropout(alpha)
        agg = propagate(topology, x, alpha, source="relation")
        agg = agg.reshape(agg.shape[:-2] + (out_dim,))
        return mask_nodes(agg + self.root(h), topology.node_mask)


class RGCN(nnx.Module):
    """R-GCN layer (Schlichtkrull et al. 2018).

    ``h_i' = W_0 h_i + b + sum_r (1 / c_ir) sum_{j in N_r(i)} W_r h_j`` with
    ``c_ir`` the number of real in-edges of ``i`` of relation ``r``. With
    ``num_bases`` the relation weights share bases, ``W_r = sum_b a_rb V_b``,
    which keeps the parameter count independent of ``R``. ``W_r`` transforms
    only the nodes of r's source type.

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

    def __call__(self, h: jax.Array, topology: Topology) -> jax.Array:
        _check_relations("RGCN", self.num_relations, topology)
        (x,) = project_sources(topology, h, self.relation_kernels())
        # Weights 1/c_ir make the sum over a (relation, receiver) group its mean.
        agg = propagate(topology, x, relation_mean_weights(topology), source="relation")
        return mask_nodes(agg + self.root(h), topology.node_mask)


class TypedLinear(nnx.Module):
    """Affine map with a separate weight per node type, applied block by block."""

    def __init__(self, num_types: int, in_dim: int, out_dim: int, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(_glorot(rngs.params(), (num_types, in_dim, out_dim)))
        self.bias = nnx.Param(jnp.zeros((num_types, out_dim)))

    def __call__(self, x: jax.Array, topology: Topology) -> jax.Array:
        kernel, bias = self.kernel[...], self.bias[...]
        return topology.per_type(x, lambda t, xt: xt @ kernel[t] + bias[t])


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
        self.key = TypedLinear(num_node_types, in_dim, out_dim, rngs=rngs)
        self.query = TypedLinear(num_node_types, in_dim, out_dim, rngs=rngs)
        self.value = TypedLinear(num_node_types, in_dim, out_dim, rngs=rngs)
        rel_shape = (num_relations, num_heads, head_dim, head_dim)
        self.w_att = nnx.Param(_glorot_per_head(rngs.params(), rel_shape))
        self.w_msg = nnx.Param(_glorot_per_head(rngs.params(), rel_shape))
        self.prior = nnx.Param(jnp.ones((num_relations, num_heads)))
        self.out = TypedLinear(num_node_types, out_dim, out_dim, rngs=rngs)
        self.skip = nnx.Param(jnp.ones((num_node_types,))) if in_dim == out_dim else None

    def __call__(self, h: jax.Array, topology: Topology) -> jax.Array:
        _check_relations("HGT", self.prior.shape[0], topology)
        split = lambda x: x.reshape(x.shape[:-1] + (self.num_heads, -1))  # noqa: E731
        k = split(self.key(h, topology))
        q = split(self.query(h, topology))
        v = split(self.value(h, topology))
        w_att, w_msg = self.w_att[...], self.w_msg[...]
        # Per-head relation maps as block-diagonal [H*C, H*D] kernels, so that they take the
        # same path as every relation transform (H times the FLOPs of per-head products).
        def block_diagonal(w):
            r, nh, c, d = w.shape
            eye = jnp.eye(nh, dtype=w.dtype)
            return jnp.einsum("rhcd,hg->rhcgd", w, eye).reshape(r, nh * c, nh * d)

        flat = lambda x: x.reshape(x.shape[:-2] + (-1,))  # noqa: E731
        (k_rel,) = project_sources(topology, flat(k), block_diagonal(w_att))
        (v_rel,) = project_sources(topology, flat(v), block_diagonal(w_msg))
        k_rel, v_rel = split(k_rel), split(v_rel)
        head_dim = k.shape[-1]
        prior = self.prior[...][topology.edge_type]  # [E, H]
        prior = prior.reshape(prior.shape[:1] + (1,) * (h.ndim - 2) + prior.shape[1:])
        logits = (k_rel[topology.src_index] * q[topology.receivers]).sum(-1)
        alpha = edge_softmax(topology, logits * prior / math.sqrt(head_dim), by="receiver")
        _sow_attention(self, alpha)
        agg = propagate(topology, v_rel, alpha, source="relation")
        agg = agg.reshape(agg.shape[:-2] + (-1,))
        out = self.out(jax.nn.gelu(agg), topology)
        if self.skip is not None:
            gate = jax.nn.sigmoid(self.skip[...][topology.node_type])
            gate = gate.reshape(gate.shape + (1,) * (h.ndim - 1))
            out = gate * out + (1.0 - gate) * h
        return mask_nodes(out, topology.node_mask)


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

    def __call__(self, features: jax.Array, topology: Topology) -> jax.Array:
        """Returns float32 ``[N, out_dim]`` initial node states (0 on padding) from
        ``features`` ``[N, F_max]`` (each type's columns left-aligned)."""
        if features.shape[1] < max(self.feature_widths):
            raise ValueError(
                f"graph has {features.shape[1]} feature columns but a node type "
                f"needs {max(self.feature_widths)}"
            )
        if topology.layout.num_nodes and len(topology.layout.node_blocks) != len(self.linears):
            raise ValueError(f"TypedInputProjection was built for {len(self.linears)} node types "
                             f"but the topology has {len(topology.layout.node_blocks)}")
        embedding = self.type_embedding[...]

        def project(t, x):
            out = jnp.broadcast_to(embedding[t], (x.shape[0], embedding.shape[1]))
            if self.linears[t] is not None:
                out = out + self.linears[t](x[:, :self.feature_widths[t]])
            return out

        return mask_nodes(topology.per_type(features, project), topology.node_mask)
