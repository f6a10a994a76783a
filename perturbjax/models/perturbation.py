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

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from perturbjax.graph.padding import GraphSchema
from perturbjax.graph.propagate import propagate, symmetric_norm_weights
from perturbjax.graph.topology import Topology
from perturbjax.models.layers import HGT, RGCN, HeteroGAT, TypedInputProjection

ENCODERS = ("hetero_gat", "rgcn", "hgt")


def make_layer(name: str, schema: GraphSchema, dim: int, *, heads: int, bases: int | None,
               rngs: nnx.Rngs) -> nnx.Module:
    num_relations = len(schema.edge_types)
    if name == "hetero_gat":
        return HeteroGAT(dim, dim, num_relations, num_heads=heads, rngs=rngs)
    if name == "rgcn":
        return RGCN(dim, dim, num_relations, num_bases=bases, rngs=rngs)
    if name == "hgt":
        return HGT(dim, dim, len(schema.node_types), num_relations, num_heads=heads, rngs=rngs)
    raise ValueError(f"unknown encoder {name!r}; expected one of {ENCODERS}")


class KGEncoder(nnx.Module):
    """Typed input projection, then residual message-passing blocks (layer -> GELU -> LayerNorm).

    Returns every block's output side by side (jumping knowledge): a drug's k-hop and a gene's
    j-hop views then meet directly in the decoder, which is how "a target's perturbation reaches
    genes j + k steps away" becomes a bilinear score.
    """

    def __init__(self, schema: GraphSchema, *, layer: str, hidden: int, num_layers: int,
                 heads: int, bases: int | None, dropout: float, rngs: nnx.Rngs,
                 embedded_types: tuple[str, ...] = (), num_nodes: int = 0):
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
        self.layers = nnx.List([make_layer(layer, schema, hidden, heads=heads, bases=bases, rngs=rngs)
                                for _ in range(num_layers)])
        self.norms = nnx.List([nnx.LayerNorm(hidden, rngs=rngs) for _ in range(num_layers)])
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, topology: Topology, nodes: dict, *, rngs: nnx.Rngs | None = None,
                 deterministic: bool = True) -> jax.Array:
        """Embeds every node: `nodes` holds "features" `[N, F]` and "id" `[N]` (the node's
        position in the full graph, which learned node vectors index)."""
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
_glorot_views = nnx.initializers.glorot_uniform(in_axis=-2, out_axis=-1, batch_axis=0)


HYPER_RATE = 30.0


def scaled_hyper(value: float, shape: tuple = ()) -> nnx.Param:
    """A kernel hyperparameter initialised to `value`, stored divided by HYPER_RATE (read it
    with `hyper`): Adam moves a parameter by about the learning rate a step, far too slowly for
    log-scale hyperparameters next to network weights. A float32 array, not a weakly typed
    scalar, whose first update would change its type and recompile the train step."""
    return nnx.Param(jnp.full(shape, value / HYPER_RATE, jnp.float32))


def hyper(param: nnx.Param) -> jax.Array:
    return param[...] * HYPER_RATE


def tanimoto_similarity(x_a: jax.Array, x_b: jax.Array) -> jax.Array:
    """[n_a, n_b] Tanimoto similarity of binary fingerprints (0 where both are empty)."""
    dot = x_a @ x_b.T
    union = jnp.sum(x_a * x_a, 1)[:, None] + jnp.sum(x_b * x_b, 1)[None] - dot
    return jnp.where(union > 0, dot / jnp.where(union > 0, union, 1.0), 0.0)


def leave_out_groups(labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """`ridge_predict`'s groups of support rows with equal `labels` [S] (host-side, numpy):
    member matrices [n_groups, size] (-1 padded), groups bucketed by size to powers of two so
    that one large group (a common scaffold) does not pad every other to its size."""
    _, group, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    rows = np.split(np.argsort(group, kind="stable"), np.cumsum(sizes)[:-1])
    width = 1 << np.ceil(np.log2(sizes)).astype(int)
    buckets = []
    for w in np.unique(width):
        members = np.full((int((width == w).sum()), int(w)), -1, np.int32)
        for i, g in enumerate(np.flatnonzero(width == w)):
            members[i, :sizes[g]] = rows[g]
        buckets.append(members)
    return tuple(buckets)


def query_rows(support_row: jax.Array | None, query: jax.Array) -> jax.Array:
    """The queries' support rows, -1 (not in the support) for all when none are given."""
    return jnp.full(query.shape[0], -1, jnp.int32) if support_row is None else support_row


def ridge_predict(k_ss: jax.Array, k_qs: jax.Array, y_support: jax.Array, penalty: jax.Array,
                  query_support_index: jax.Array, groups: tuple | None = None) -> jax.Array:
    """[B, G] kernel ridge predictions of B queries from the support's signatures [S, G]: a
    query that is support row i (`query_support_index`, else -1) gets its closed-form
    leave-one-out prediction `y_i - alpha_i / [(K + lambda I)^-1]_ii`, any other `k(q, S) alpha`.

    With `groups` (member matrices of groups of support rows, -1 padded: `leave_out_groups`),
    a support row is predicted with its whole group left out, as a split holds out a whole cell
    line or scaffold: the residual of group g is `([(K + lambda I)^-1]_gg)^-1 alpha_g` (the block
    form of the same identity).
    """
    n = k_ss.shape[0]
    chol = jnp.linalg.cholesky(k_ss + penalty * jnp.eye(n))
    inverse = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(n))
    alpha = inverse @ y_support                                          # [S, G]
    if groups is None:
        residual = alpha / jnp.diagonal(inverse)[:, None]
    else:
        residual = jnp.zeros_like(alpha)
        for members in groups:
            real = members >= 0
            m = jnp.maximum(members, 0)
            both = real[:, :, None] & real[:, None, :]
            block = jnp.where(both, inverse[m[:, :, None], m[:, None, :]],
                              jnp.eye(members.shape[1]))
            by_group = jnp.einsum("gij,gjk->gik", jnp.linalg.inv(block),
                                  jnp.where(real[..., None], alpha[m], 0.0))
            residual = residual.at[jnp.where(real, members, n)].set(by_group, mode="drop")
    row = jnp.maximum(query_support_index, 0)
    return jnp.where((query_support_index >= 0)[:, None], y_support[row] - residual[row],
                     k_qs @ alpha)


class KernelRidgeReadout(nnx.Module):
    """Kernel ridge over the training ("support") drugs in a learned kernel of their embeddings.

    One kernel per view of the encoder (its input projection and each block's output: the
    drug's own features, then what 1, 2, ... hops bring), mixed with learned weights:
    `K = sum_v w_v exp(s_v (cos(P_v h_a, P_v h_b) - 1))`, keys centred on the support's mean so
    that what every drug shares does not make them all alike; and one more view, the Tanimoto
    similarity of the drug nodes' raw input features (fingerprints) raised to a learned power,
    which no projection to a few dozen dimensions keeps as sharp. A learned sharpness s_v (a high
    one keeps only close neighbours, as a high Tanimoto power does) and a learned penalty. This
    is deep kernel learning (Wilson et al. 2016) with a graph encoder: kernel ridge's
    closed-form solve does what a few hundred training drugs cannot teach a free decoder, and
    the encoder only has to say which drugs are alike.

    A support drug is predicted from the other support drugs (the closed-form leave-one-out
    prediction `y_i - alpha_i / [(K + lambda I)^-1]_ii`), so training never shows a drug its
    own signature (the label trick) and the loss is a held-out one; a drug outside the support
    (validation, test, new) gets `k(q, S) alpha`. Signatures are regressed raw, so a drug
    unlike every support drug is predicted to change little.
    """

    def __init__(self, view_width: int, num_views: int, dim: int, *, rngs: nnx.Rngs):
        self.keys = nnx.Param(_glorot_views(rngs.params(), (num_views, view_width, dim)))
        self.log_sharpness = scaled_hyper(math.log(8.0), (num_views,))
        self.log_tanimoto_power = scaled_hyper(math.log(4.0))
        self.view_logits = scaled_hyper(0.0, (num_views + 1,))  # the last: the Tanimoto view
        self.log_penalty = scaled_hyper(math.log(0.3))

    def _keys(self, h: jax.Array, centre: jax.Array) -> jax.Array:
        """Unit keys [V, n, dim] of embeddings [n, V * view_width]."""
        v, width, _ = self.keys.shape
        k = jnp.einsum("nvw,vwd->vnd", h.reshape(h.shape[0], v, width), self.keys[...])
        k = k - centre
        return k / jnp.sqrt(jnp.sum(k * k, -1, keepdims=True) + 1e-12)

    def kernel(self, a: jax.Array, b: jax.Array, x_a: jax.Array, x_b: jax.Array) -> jax.Array:
        """[n_a, n_b] kernel of unit keys [V, n, dim] and raw features [n, F]."""
        sharpness = jnp.exp(hyper(self.log_sharpness))[:, None, None]
        mix = jax.nn.softmax(hyper(self.view_logits))
        views = jnp.exp(sharpness * (jnp.einsum("vad,vbd->vab", a, b) - 1.0))
        power = jnp.exp(hyper(self.log_tanimoto_power))
        chem = jnp.exp(power * jnp.log(jnp.maximum(tanimoto_similarity(x_a, x_b), 1e-12)))
        return jnp.einsum("v,vab->ab", mix[:-1], views) + mix[-1] * chem

    def __call__(self, h_query: jax.Array, h_support: jax.Array, x_query: jax.Array,
                 x_support: jax.Array, y_support: jax.Array,
                 query_support_index: jax.Array) -> jax.Array:
        """[B, G] predictions for B queries from their embeddings h and input features x;
        `query_support_index[b]` is query b's row in the support (it is then predicted
        leave-one-out) or -1."""
        v, width, _ = self.keys.shape
        centre = jnp.einsum("vw,vwd->vd", h_support.reshape(-1, v, width).mean(0),
                            self.keys[...])[:, None]
        q, s = self._keys(h_query, centre), self._keys(h_support, centre)
        return ridge_predict(self.kernel(s, s, x_support, x_support),
                             self.kernel(q, s, x_query, x_support), y_support,
                             jnp.exp(hyper(self.log_penalty)), query_support_index)


class PerturbationModel(nnx.Module):
    """Predicts [B, G] differential expression for B conditions over G readout genes."""

    def __init__(self, schema: GraphSchema, num_readout: int, *, layer: str = "hetero_gat",
                 hidden: int = 64, num_layers: int = 2, heads: int = 4, bases: int | None = None,
                 dropout: float = 0.0, num_covariates: int = 2, channels: int = 8,
                 steps: int = 3, readout_embedding: bool = False,
                 embedded_types: tuple[str, ...] = (), num_nodes: int = 0,
                 decoder: str = "bilinear", kernel_dim: int = 64, rngs: nnx.Rngs):
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; expected one of {DECODERS}")
        self.encoder = KGEncoder(schema, layer=layer, hidden=hidden, num_layers=num_layers,
                                 heads=heads, bases=bases, dropout=dropout, rngs=rngs,
                                 embedded_types=embedded_types, num_nodes=num_nodes)
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
        """Args: the graph's topology and node inputs (see `KGEncoder`), node positions (in the
        topology's numbering) of each condition's drug [B] and cell line [B], covariates
        [B, num_covariates], readout genes [G]; for the kernel-ridge decoder, `support`: the
        training drugs' positions "drug" [S] and their signatures "signature" [S, G], and
        `support_row` [B], each condition's row in the support (-1 outside it; default all)."""
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
