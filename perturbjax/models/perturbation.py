"""Knowledge-graph perturbation model: KG encoder -> (drug, cell, dose, time) x gene decoder.

The encoder embeds every KG node. The decoder factorises a condition's response of gene g as

    y[g] = scale(drug, cell, dose, time) * effect(drug, g) * gain(cell, g) + shift(cell, g) + b[g]

with bilinear drug x gene and cell x gene terms over graph embeddings: a drug's effect reaches
genes through the graph, the cell line modulates it gene by gene, and dose and time scale its
size (a dose-response curve). Genes, drugs and cell lines are all KG nodes.

`decoder="kernel_ridge"` replaces that decoder by `KernelRidgeReadout`: a condition's signature
is kernel ridge regression on the training conditions' measured signatures, in a kernel of the
encoder's drug embeddings, so the graph network learns which drugs should count as alike.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from perturbjax.graph.propagate import propagate, symmetric_norm_weights
from perturbjax.graph.schema import GraphSchema
from perturbjax.graph.topology import Topology
from perturbjax.models.kernel_ridge import KernelRidgeReadout, query_rows
from perturbjax.models.layers import TypedInputProjection

# `make(schema, dim, rngs)` -> a layer `(h [N, ..., dim], topology) -> [N, ..., dim]`
# (`perturbjax.models.registry.layer_factory` makes one from a registered layer's name).
LayerFactory = Callable[[GraphSchema, int, nnx.Rngs], nnx.Module]


class KGEncoder(nnx.Module):
    """Typed input projection, then residual message-passing blocks (layer -> GELU -> LayerNorm).

    Returns every block's output side by side (jumping knowledge): a drug's k-hop and a gene's
    j-hop views then meet directly in the decoder, which is how "a target's perturbation reaches
    genes j + k steps away" becomes a bilinear score.

    Args:
      schema: the graph's node types, feature widths and edge types.
      layer: ``make(schema, hidden, rngs)`` -> one message-passing layer (`LayerFactory`).
      hidden: node embedding width.
      num_layers: message-passing blocks.
      dropout: dropout rate on each block's update (training only).
      rngs: parameter RNGs.
      embedded_types: node types given a learned vector per node.
      num_nodes: size of the node id range those vectors are indexed by (needed with
        `embedded_types`).

    Shapes:
      returns ``[N, hidden * (num_layers + 1)]``, 0 on padded nodes.
    """

    def __init__(self, schema: GraphSchema, *, layer: LayerFactory, hidden: int, num_layers: int,
                 dropout: float, rngs: nnx.Rngs, embedded_types: tuple[str, ...] = (),
                 num_nodes: int = 0):
        self.input = TypedInputProjection(schema.feature_widths, hidden, rngs=rngs)
        # A learned vector per node of the `embedded_types` (e.g. genes, which Hetionet gives no
        # features): without it, featureless nodes of one type differ only by their
        # neighbourhood's shape, so a drug cannot tell which genes it targets. Types whose nodes
        # are held out (drugs in a cold-drug split) must not be embedded this way.
        unknown = set(embedded_types) - set(schema.node_types)
        if unknown:
            raise ValueError(f"embedded_types {sorted(unknown)} are not node types {schema.node_types}")
        if embedded_types and num_nodes <= 0:
            raise ValueError("embedded_types needs num_nodes, the size of the node id range")
        self.embedded = tuple(t in embedded_types for t in schema.node_types)
        self.node_embedding = (nnx.Param(nnx.initializers.normal(stddev=0.1)(
            rngs.params(), (num_nodes, hidden))) if embedded_types else None)
        self.layers = nnx.List([layer(schema, hidden, rngs) for _ in range(num_layers)])
        self.norms = nnx.List([nnx.LayerNorm(hidden, rngs=rngs) for _ in range(num_layers)])
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, topology: Topology, nodes: dict, *, rngs: nnx.Rngs | None = None,
                 deterministic: bool = True) -> jax.Array:
        """Embeds every node.

        Args:
          topology: the graph structure.
          nodes: "features" ``[N, F]`` (each type's columns left-aligned) and "id" ``[N]`` (the
            node's position in the full graph, which learned node vectors index).
          rngs: dropout RNGs (training).
          deterministic: no dropout when True.

        Returns:
          float32 ``[N, hidden * (num_layers + 1)]``: the input projection and every block's
          output, side by side.
        """
        mask = topology.node_mask[:, None]
        h = self.input(nodes["features"], topology)
        if self.node_embedding is not None:
            embedded = jnp.array(self.embedded, jnp.float32)[topology.node_type]
            embedded = embedded * topology.node_mask
            h = h + self.node_embedding[...][nodes["id"]] * embedded[:, None]
        views = [h]
        for layer, norm in zip(self.layers, self.norms):
            update = nnx.gelu(layer(h, topology))
            update = self.dropout(update, rngs=rngs, deterministic=deterministic)
            h = norm(h + update) * mask  # padded nodes stay exactly zero
            views.append(h)
        return jnp.concatenate(views, axis=-1)


class SignalPropagation(nnx.Module):
    """Spreads each condition's drug signal through the KG, one hop per step.

    A C-channel signal starts at the condition's drug node (a projection of its embedding) and
    moves along every edge type scaled per relation and channel (then mixed across channels),
    degree-normalised, gated per edge by the two endpoints' embeddings, and added up (linear, so the effects of several
    targets superpose). What reaches each readout gene after every step is read out. This is the
    part that carries "inhibiting a target perturbs its interaction partners and pathway
    co-members" to drugs whose targets no training drug hit; the per-step signals are also what
    a path-level explanation reads.
    """

    def __init__(self, num_relations: int, width: int, *, channels: int, steps: int,
                 rngs: nnx.Rngs):
        self.inject = nnx.Linear(width, channels, rngs=rngs)
        self.relation_scales = nnx.Param(
            nnx.initializers.normal(stddev=1.0)(rngs.params(), (num_relations, channels)))
        self.mix = nnx.Linear(channels, channels, use_bias=False, rngs=rngs)
        self.gate = nnx.Linear(2 * width, num_relations, rngs=rngs)
        self.readout = nnx.Linear(width, channels * (steps + 1), rngs=rngs)
        self.steps, self.channels = steps, channels

    def __call__(self, h: jax.Array, topology: Topology, drug: jax.Array,
                 readout: jax.Array) -> jax.Array:
        n, batch = h.shape[0], drug.shape[0]
        rel = topology.edge_type
        # The gate reads both endpoints: a linear map of [h_s, h_t] is h_s A + h_t B, so each
        # node is projected once and only the edge's own relation column is gathered.
        width = h.shape[1]
        kernel = self.gate.kernel[...]
        gate_src, gate_dst = h @ kernel[:width], h @ kernel[width:]
        logit = (gate_src[topology.senders, rel] + gate_dst[topology.receivers, rel]
                 + self.gate.bias[...][rel])
        weight = (symmetric_norm_weights(topology) * jax.nn.sigmoid(logit))[:, None] \
            * self.relation_scales[...][rel]                                # [E, C]

        # Channel-major signal [N, C, B]: the per-channel edge weights then index the leading
        # value axis, so `propagate` runs one product per channel over all B conditions.
        signal = jnp.zeros((n, self.channels, batch), jnp.float32)
        signal = signal.at[drug, :, jnp.arange(batch)].set(self.inject(h[drug]))
        mix = self.mix.kernel[...]
        reached = [signal[readout]]
        for _ in range(self.steps):
            moved = propagate(topology, signal, weight)
            signal = signal + jnp.einsum("ncb,cd->ndb", moved, mix)
            reached.append(signal[readout])
        reached = jnp.concatenate(reached, axis=1)                          # [G, C*(steps+1), B]
        return jnp.einsum("gkb,gk->bg", reached, self.readout(h[readout]))


DECODERS = ("bilinear", "kernel_ridge")


class PerturbationModel(nnx.Module):
    """Predicts [B, G] differential expression for B conditions over G readout genes.

    Args:
      schema: the graph's node types, feature widths and edge types.
      num_readout: G, the readout genes.
      layer: the encoder's message-passing layer (`LayerFactory`; the registry's
        `layer_factory(name, config)` makes one).
      hidden, num_layers, dropout, embedded_types, num_nodes: the encoder's (`KGEncoder`).
      num_covariates: width of a condition's covariates (dose, time).
      channels: width of the drug signal `SignalPropagation` spreads.
      steps: its hops (0: no signal propagation).
      readout_embedding: a free vector per readout gene.
      decoder: "bilinear" or "kernel_ridge" (`KernelRidgeReadout`).
      kernel_dim: width of the kernel-ridge decoder's drug keys.
      rngs: parameter RNGs.
    """

    def __init__(self, schema: GraphSchema, num_readout: int, *, layer: LayerFactory,
                 hidden: int = 64, num_layers: int = 2, dropout: float = 0.0,
                 num_covariates: int = 2, channels: int = 8,
                 steps: int = 3, readout_embedding: bool = False,
                 embedded_types: tuple[str, ...] = (), num_nodes: int = 0,
                 decoder: str = "bilinear", kernel_dim: int = 64, rngs: nnx.Rngs):
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; expected one of {DECODERS}")
        self.encoder = KGEncoder(schema, layer=layer, hidden=hidden, num_layers=num_layers,
                                 dropout=dropout, rngs=rngs, embedded_types=embedded_types,
                                 num_nodes=num_nodes)
        width = hidden * (num_layers + 1)  # the encoder's jumping-knowledge output
        self.hidden = hidden
        self.kernel_readout = (KernelRidgeReadout(hidden, num_layers + 1, kernel_dim,
                                                  rngs=rngs)
                               if decoder == "kernel_ridge" else None)
        if self.kernel_readout is not None:
            return  # the bilinear decoder's parts are not built
        self.drug_key = nnx.Linear(width, hidden, rngs=rngs)
        self.gene_key = nnx.Linear(width, 2 * hidden, rngs=rngs)
        self.cell_key = nnx.Linear(width, 2 * hidden, rngs=rngs)
        self.scale = nnx.Sequential(
            nnx.Linear(2 * width + num_covariates, hidden, rngs=rngs), nnx.gelu,
            nnx.Linear(hidden, 1, rngs=rngs))
        # steps=0 leaves propagation out.
        self.propagation = (SignalPropagation(len(schema.edge_types), width, channels=channels,
                                              steps=steps, rngs=rngs) if steps else None)
        self.gene_bias = nnx.Param(jnp.zeros((num_readout,)))
        # A free vector per readout gene, for graphs whose gene nodes carry no features: the
        # readout genes are the same in every split, so this is per-gene capacity like a
        # regression's output weights, not a view of held-out drugs.
        self.readout_embedding = (nnx.Param(jnp.zeros((num_readout, 2 * hidden)))
                                  if readout_embedding else None)

    def __call__(self, topology: Topology, nodes: dict, drug: jax.Array, cell: jax.Array,
                 covariates: jax.Array, readout: jax.Array, *, support: dict | None = None,
                 support_row: jax.Array | None = None, rngs: nnx.Rngs | None = None,
                 deterministic: bool = True) -> jax.Array:
        """Predicts the conditions' signatures.

        Args:
          topology, nodes: the graph and its node inputs (see `KGEncoder.__call__`).
          drug: ``[B]`` each condition's drug node (position in the topology's numbering).
          cell: ``[B]`` each condition's cell-line node.
          covariates: ``[B, num_covariates]``.
          readout: ``[G]`` the readout genes' nodes.
          support: kernel-ridge decoder only: the training drugs' nodes "drug" ``[S]`` and
            their signatures "signature" ``[S, G]``.
          support_row: kernel-ridge decoder only: ``[B]`` each condition's row in the support
            (it is then predicted leave-one-out), -1 outside it; default all -1.
          rngs: dropout RNGs (training).
          deterministic: no dropout when True.

        Returns:
          float32 ``[B, G]`` predicted differential expression.

        Raises:
          ValueError: the kernel-ridge decoder without `support`.
        """
        h = self.encoder(topology, nodes, rngs=rngs, deterministic=deterministic)
        if self.kernel_readout is not None:
            if support is None:
                raise ValueError("the kernel-ridge decoder needs the support drugs (`support`)")
            x = nodes["features"]
            return self.kernel_readout(h[drug], h[support["drug"]], x[drug], x[support["drug"]],
                                       support["signature"], query_rows(support_row, drug))
        h_drug, h_cell = h[drug], h[cell]
        gene_key = self.gene_key(h[readout])
        if self.readout_embedding is not None:
            gene_key = gene_key + self.readout_embedding[...]
        gene_effect, gene_context = jnp.split(gene_key, 2, axis=-1)
        cell_gain, cell_shift = jnp.split(self.cell_key(h_cell), 2, axis=-1)
        norm = jnp.sqrt(self.hidden)
        effect = self.drug_key(h_drug) @ gene_effect.T / norm            # [B, G] drug x gene
        if self.propagation is not None:
            effect = effect + self.propagation(h, topology, drug, readout)  # [B, G] along KG paths
        gain = 1.0 + (cell_gain @ gene_context.T) / norm                # [B, G] cell x gene
        shift = (cell_shift @ gene_context.T) / norm                    # [B, G] cell x gene
        scale = nnx.softplus(self.scale(jnp.concatenate([h_drug, h_cell, covariates], -1)))
        return scale * effect * gain + shift + self.gene_bias[...]
