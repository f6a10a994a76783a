"""Relational SGC: message passing whose relation weights are learned, read out by kernel ridge.

`kg_ridge` (models/graph_ridge.py) represents a drug by where its node reaches in h hops of
the knowledge graph, `S^h e_d` with every edge weighing 1, and fits kernel ridge on those
neighbourhoods mixed with chemical similarity; its few hyperparameters are picked from a grid
on validation. This model is the same network with its weights learned end to end: a
simplified graph convolution (SGC; Wu et al. 2019) over the typed graph in which each relation
has a learned weight (a relation and its reverse share one), so the message passing itself
decides whether a drug's targets, its side effects or its diseases make drugs alike, and which
two- and three-hop paths carry that; learned weights for each (hop, node type) part of the
kernel, for the chemistry view and its Tanimoto power, and the ridge penalty. Everything is
trained on the closed-form leave-one-out predictions of the training ("support") drugs, so a
drug never sees its own signature (the label trick) and the loss is a held-out one; with a few
dozen parameters, there is little a few hundred training drugs can overfit.

The propagation operator is `P = D^-1/2 (A_w + I) D^-1/2`, `A_w` the relation-weighted
adjacency and `D` its (symmetrised) weighted degree. Hop h's features of a drug are the node
values `P^h e_d`, standardised node by node with the support's statistics (as `kg_ridge`
standardises them, so a rare target weighs as much as a hub). The kernel between any node a
and support drug b is then an inner product that never materialises the `[drugs, nodes]`
features of a query: `k_h(a, b) = [(P^T)^h Y_h]_a - c_h(b)`, with `Y_h` the support's
weighted, centred hop-h values; a Horner chain of transposed products sums all hops. So a
step is 2h sparse products of `[N, S]` values, and any node (a validation, test or brand-new
drug) is a query by reading one row.

Where a drug has several conditions (cell lines, doses, times), the ridge runs over the
training conditions with a product kernel `K_drug * K_cell * K_dose,time` (`conditions=True`):
the drug kernel above, a cell-line kernel from the cell nodes' input features (basal
expression) and a Gaussian kernel of the covariates, each with learned weights; a training
condition is then predicted with its whole split group (its cell line in a cold-cell split,
its drug in a cold-drug one) left out, so the loss sees what a held-out cell line sees.

With `targets=(drug type, target type)` a second readout joins the first: kernel ridge in the
linear kernel of the drugs' direct targets (their one-hop neighbours of the target type, as
indicators standardised over the support: `target_ridge`'s features) plus a nearly unpenalised
constant, so it shrinks toward the training mean where the first shrinks toward no change.
The two predict alike-scaled signatures with different errors; their mixture weight and the
second penalty are learned on the same leave-one-out loss (each readout's leave-one-out
prediction is exact, so the mixture's is too).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from perturbjax.graph.aggregate import segment_sum
from perturbjax.graph.propagate import propagate
from perturbjax.graph.schema import GraphSchema
from perturbjax.graph.topology import Topology
from perturbjax.models.kernel_ridge import (HYPER_RATE, hyper, query_rows, ridge_predict,
                                           scaled_hyper, tanimoto_similarity)


def relation_groups(schema: GraphSchema, prefix: str = "rev_") -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Per edge type, the id of its weight group (a relation and its `rev_` reverse share one),
    and each group's name."""
    names, group = [], []
    for key in schema.edge_types:
        relation = key.relation.removeprefix(prefix)
        pair = sorted((key.source, key.target))
        name = f"{pair[0]}--{relation}--{pair[1]}"
        if name not in names:
            names.append(name)
        group.append(names.index(name))
    return tuple(group), tuple(names)


class RelationalSGC(nnx.Module):
    """Kernel ridge over the support drugs in a learned relational-SGC kernel plus chemistry.

    `K = (1 - c) sum_h pi_h sum_t s_ht K_ht + c T^p`: `K_ht` the hop-h kernel over node type
    t's nodes (unit mean diagonal on the support), `T` the Tanimoto similarity of the drug
    nodes' fingerprint features. At initialisation every relation weighs 1, the hops weigh
    alike and the types by their number of informative nodes: `kg_ridge`'s 3-hop kernel.
    """

    # Node values whose spread over the support is below this are constant for the kernel.
    MIN_SD = 1e-9
    # The target readout's constant kernel, against its unit mean diagonal: the intercept's
    # eigenvalue (this times the support size) dwarfs any penalty, so it is barely shrunk.
    INTERCEPT = 10.0

    def __init__(self, schema: GraphSchema, *, hops: int = 3, conditions: bool = False,
                 num_covariates: int = 2, targets: tuple[str, str] | None = None,
                 rngs: nnx.Rngs | None = None):
        del rngs  # nothing random: the initial kernel is kg_ridge's
        if hops < 1:
            raise ValueError(f"RelationalSGC needs hops >= 1, got {hops}")
        self.target_edges = None
        if targets is not None:
            if conditions:
                raise ValueError("the relational SGC's target readout needs one condition per "
                                 "drug (consensus signatures)")
            drug_type, target_type = targets
            unknown = sorted({drug_type, target_type} - set(schema.node_types))
            if unknown:
                raise ValueError(f"the target readout's node types {unknown} are not in the "
                                 f"graph; it has {list(schema.node_types)}")
            # With no such edges (an ablation dropped them) the readout predicts the mean.
            chosen = [k.source == drug_type and k.target == target_type for k in schema.edge_types]
            self.target_edges = tuple(float(c) for c in chosen)  # per edge type: 1 = a target
            self.target_logit = scaled_hyper(0.0)  # the mixture starts half and half
            self.log_target_penalty = scaled_hyper(0.0)
        self.hops = hops
        self.edge_group, self.group_names = relation_groups(schema)
        self.log_relation_weight = scaled_hyper(0.0, (len(self.group_names),))
        self.hop_logits = scaled_hyper(0.0, (hops,))
        self.type_logits = scaled_hyper(0.0, (hops, len(schema.node_types)))
        self.chemistry_logit = scaled_hyper(0.0)
        self.log_tanimoto_power = scaled_hyper(math.log(3.0))
        self.log_penalty = scaled_hyper(math.log(0.3))
        self.conditions = conditions
        if conditions:
            # The cell-line kernel's parts (the same cell line; any two; basal similarity), its
            # sharpness, and the covariates' length scales (log10 dose, days).
            self.cell_logits = scaled_hyper(0.0, (3,))
            self.log_cell_sharpness = scaled_hyper(math.log(4.0))
            self.log_covariate_scale = scaled_hyper(0.0, (num_covariates,))

    def start_from(self, chosen: dict, hop_scales) -> None:
        """Starts from the kernel that `kg_ridge` chose on validation, exactly: its `chosen`
        (hops, chemistry_weight, tanimoto_power, alpha) and `hop_scales`, the training drugs'
        mean diagonal of each of its hop kernels (`GraphRidge.training_diagonal`; ours have
        1). Its kernel `(1 - w) g K + w T^p` (K our graph kernel of unit scale, g its scale) is
        `s ((1 - c) K + c T^p)` with `s = (1 - w) g + w` and `c = w / s`, and kernel ridge with
        kernel `s K'` and penalty a predicts as with `K'` and `a / s`. Weights it leaves out
        start at e^-5 of the others, small but able to grow."""
        hops = min(int(chosen["hops"]), self.hops)
        scales = np.asarray(hop_scales[:hops], np.float64) / hops
        hop_logits = np.log(np.maximum(scales, 1e-30))
        hop_logits = np.r_[hop_logits, np.full(self.hops - hops, hop_logits.min() - 5.0)]
        graph_scale = scales.sum()
        w = float(chosen["chemistry_weight"])
        scale = (1 - w) * graph_scale + w
        chem = w / scale
        chem_logit = math.log(chem / (1 - chem)) if w else -5.0
        # float32 arrays, as initialised: a weakly typed value would recompile the train step.
        self.hop_logits[...] = jnp.asarray(hop_logits / HYPER_RATE, jnp.float32)
        self.chemistry_logit[...] = jnp.float32(chem_logit / HYPER_RATE)
        if chosen.get("tanimoto_power"):
            self.log_tanimoto_power[...] = jnp.float32(math.log(chosen["tanimoto_power"])
                                                       / HYPER_RATE)
        self.log_penalty[...] = jnp.float32(math.log(chosen["alpha"] / scale) / HYPER_RATE)

    def report(self) -> dict:
        """The learned weights, readable: each relation group's weight (1 at initialisation,
        sorted from the heaviest), the hops' mixture, the chemistry weight, the Tanimoto power
        and the ridge penalty."""
        w = np.exp(np.asarray(hyper(self.log_relation_weight), np.float64))
        order = np.argsort(-w, kind="stable")
        return {"relation_weights": {self.group_names[i]: round(float(w[i]), 4) for i in order},
                "hop_mixture": np.round(np.asarray(jax.nn.softmax(hyper(self.hop_logits))),
                                        4).tolist(),
                "chemistry_weight": round(float(jax.nn.sigmoid(hyper(self.chemistry_logit))), 4),
                "tanimoto_power": round(float(jnp.exp(hyper(self.log_tanimoto_power))), 4),
                "penalty": float(jnp.exp(hyper(self.log_penalty)))} | self._target_report() \
            | self._context_report()

    def _target_report(self) -> dict:
        if self.target_edges is None:
            return {}
        return {"target_readout_weight": round(float(jax.nn.sigmoid(hyper(self.target_logit))), 4),
                "target_penalty": float(jnp.exp(hyper(self.log_target_penalty)))}

    def _context_report(self) -> dict:
        if not self.conditions:
            return {}
        parts = np.asarray(jax.nn.softmax(hyper(self.cell_logits)))
        return {"cell_kernel": {"same_cell": round(float(parts[0]), 4),
                                "constant": round(float(parts[1]), 4),
                                "basal_similarity": round(float(parts[2]), 4),
                                "sharpness": round(float(jnp.exp(hyper(self.log_cell_sharpness))), 4)},
                "covariate_scales": np.round(np.exp(np.asarray(
                    hyper(self.log_covariate_scale))), 4).tolist()}

    def edge_weights(self, topology: Topology) -> tuple[jax.Array, jax.Array]:
        """The normalised edge weights `w_r / sqrt(d_src d_dst)` [E] and self-loop weights
        `1 / d` [N], `d` the weighted degree (in and out averaged) plus the self-loop."""
        w = jnp.exp(hyper(self.log_relation_weight))[jnp.asarray(self.edge_group)]
        w = jnp.where(topology.edge_mask, w[topology.edge_type], 0.0)
        n = topology.num_nodes
        degree = 1.0 + 0.5 * (segment_sum(w, topology.receivers, n)
                              + segment_sum(w, topology.senders, n))
        norm = jax.lax.rsqrt(degree)
        return w * norm[topology.senders] * norm[topology.receivers], 1.0 / degree

    def graph_kernel(self, topology: Topology, support: jax.Array,
                     unlabelled: jax.Array | None = None) -> jax.Array:
        """[N, S] kernel between every node and the support drugs (flat positions [S]).

        Node values are standardised over the support drugs, or over the support and the
        `unlabelled` drugs [U] (held-out drugs, graph structure only) when given: a held-out
        drug's own neighbourhood, which support drugs barely reach, then counts in the spread
        it is scaled by, as a support drug's does in its leave-one-out prediction."""
        n, s = topology.num_nodes, support.shape[0]
        columns = support if unlabelled is None else jnp.concatenate([support, unlabelled])
        edge_w, self_w = self.edge_weights(topology)

        def step(x, transpose=False):
            return propagate(topology, x, edge_w, transpose=transpose) + self_w[:, None] * x

        node_type = topology.node_type
        num_types = self.type_logits.shape[1]
        hop_mix = jax.nn.softmax(hyper(self.hop_logits))
        type_logits = hyper(self.type_logits)
        c = columns.shape[0]
        x = jnp.zeros((n, c), jnp.float32).at[columns, jnp.arange(c)].set(1.0)
        weighted, offset = [], jnp.zeros((s,), jnp.float32)
        for h in range(self.hops):
            x = step(x)
            mean = x.mean(1)
            centred = x - mean[:, None]
            var = jnp.mean(centred * centred, 1)
            used = jax.lax.stop_gradient(var > self.MIN_SD ** 2) & topology.node_mask
            count = segment_sum(used.astype(jnp.float32), node_type, num_types)  # [T]
            present = count > 0
            logits = jnp.where(present, type_logits[h] + jnp.log(jnp.maximum(count, 1.0)), -jnp.inf)
            share = jnp.where(present, jax.nn.softmax(logits), 0.0) / jnp.maximum(count, 1.0)
            node_w = jnp.where(used, hop_mix[h] * share[node_type]
                               / jnp.where(used, var, 1.0), 0.0)
            y = node_w[:, None] * centred[:, :s]                             # [N, S]
            weighted.append(y)
            offset = offset + mean @ y
        v = weighted[-1]
        for y in reversed(weighted[:-1]):  # sum_h (P^T)^h Y_h, Horner's way
            v = y + step(v, transpose=True)
        return step(v, transpose=True) - offset[None]

    def target_kernel(self, topology: Topology, support: jax.Array) -> jax.Array:
        """[N, S] linear kernel of direct targets between every node and the support drugs:
        `sum_g (x_ag - m_g)(x_bg - m_g) / v_g`, x the target indicators, m and v their support
        mean and variance (targets no support drug varies in are left out), scaled to unit mean
        diagonal on the support. Two products through `propagate`, as in `graph_kernel`."""
        n, s = topology.num_nodes, support.shape[0]
        is_target = jnp.asarray(self.target_edges, jnp.float32)[topology.edge_type]
        w = jnp.where(topology.edge_mask, is_target, 0.0)
        x = jnp.zeros((n, s), jnp.float32).at[support, jnp.arange(s)].set(1.0)
        x = propagate(topology, x, w)                                     # [N, S] indicators
        mean = x.mean(1)
        centred = x - mean[:, None]
        var = jnp.mean(centred * centred, 1)
        used = (var > self.MIN_SD ** 2) & topology.node_mask
        y = jnp.where(used[:, None], centred / jnp.where(used, var, 1.0)[:, None], 0.0)
        k = propagate(topology, y, w, transpose=True) - (mean @ y)[None]
        return k / jnp.maximum(jnp.mean(k[support, jnp.arange(s)]), 1e-12)

    def __call__(self, topology: Topology, nodes: dict, drug: jax.Array, cell: jax.Array,
                 covariates: jax.Array, readout: jax.Array, *, support: dict | None = None,
                 support_row: jax.Array | None = None, rngs: nnx.Rngs | None = None,
                 deterministic: bool = True) -> jax.Array:
        """[B, G] signatures of the conditions of drugs at flat positions `drug` [B], over the
        support signatures' genes (`readout` is unused). `support_row` [B]: each condition's
        row in the support (-1 outside it), predicted with its group left out. Without
        `conditions` (one condition per drug) `cell` and `covariates` are unused; with it,
        `support` also holds the training conditions' "condition_drug" (index into "drug"),
        "cell", "covariates" and "groups" (see `ridge_predict`)."""
        del readout, rngs, deterministic
        if support is None:
            raise ValueError("the relational SGC model needs the support drugs (`support`)")
        s = support["drug"]
        k_all = self.graph_kernel(topology, s, support.get("unlabelled"))   # [N, S]
        k_ss, k_qs = k_all[s], k_all[drug]
        k_ss = 0.5 * (k_ss + k_ss.T)
        x = nodes["features"]
        chem = jax.nn.sigmoid(hyper(self.chemistry_logit))
        power = jnp.exp(hyper(self.log_tanimoto_power))

        def mixed(graph, x_a):
            tanimoto = tanimoto_similarity(x_a, x[s])
            return (1.0 - chem) * graph + chem * jnp.exp(power * jnp.log(jnp.maximum(tanimoto, 1e-12)))

        k_ss, k_qs = mixed(k_ss, x[s]), mixed(k_qs, x[drug])
        if self.conditions:  # drug x context kernel over the training conditions
            d, cells, cov = support["condition_drug"], support["cell"], support["covariates"]
            x_cells = x[cells]
            k_ss = k_ss[d][:, d] * self.context_kernel(x_cells, cells, cov, x_cells, cells, cov)
            k_qs = k_qs[:, d] * self.context_kernel(x[cell], cell, covariates, x_cells, cells, cov)
        rows = query_rows(support_row, drug)
        pred = ridge_predict(k_ss, k_qs, support["signature"], jnp.exp(hyper(self.log_penalty)),
                             rows, support.get("groups"))
        if self.target_edges is None:
            return pred
        k_t = self.target_kernel(topology, s) + self.INTERCEPT
        by_targets = ridge_predict(0.5 * (k_t[s] + k_t[s].T), k_t[drug], support["signature"],
                                   jnp.exp(hyper(self.log_target_penalty)), rows)
        mix = jax.nn.sigmoid(hyper(self.target_logit))
        return (1.0 - mix) * pred + mix * by_targets

    def context_kernel(self, x_a: jax.Array, cell_a: jax.Array, cov_a: jax.Array,
                       x_b: jax.Array, cell_b: jax.Array, cov_b: jax.Array) -> jax.Array:
        """[A, B] cell-line x covariate kernel between conditions a and support conditions b.

        Cell lines: `w_same [same line] + w_any + w_basal exp(gamma (rho - 1))`, rho the
        correlation of the two lines' input features standardised over the support's lines
        (features that do not vary there are left out); a line without features (all zeros:
        no basal expression measured) has only the first two parts. Covariates: a Gaussian
        kernel with a learned length scale per covariate."""
        has_a, has_b = jnp.any(x_a != 0, 1), jnp.any(x_b != 0, 1)
        weight = has_b.astype(jnp.float32)[:, None]
        count = jnp.maximum(weight.sum(), 1.0)
        mean = (weight * x_b).sum(0) / count
        var = (weight * (x_b - mean) ** 2).sum(0) / count
        scale = jnp.where(var > self.MIN_SD ** 2, jax.lax.rsqrt(jnp.where(var > 0, var, 1.0)), 0.0)

        def unit(z, has):
            u = (z - mean) * scale
            u = u * jax.lax.rsqrt(jnp.maximum(jnp.sum(u * u, 1, keepdims=True), 1e-12))
            return jnp.where(has[:, None], u, 0.0)

        rho = unit(x_a, has_a) @ unit(x_b, has_b).T
        both = has_a[:, None] & has_b[None]
        parts = jax.nn.softmax(hyper(self.cell_logits))
        sharpness = jnp.exp(hyper(self.log_cell_sharpness))
        k_cell = (parts[0] * (cell_a[:, None] == cell_b[None]) + parts[1]
                  + parts[2] * jnp.where(both, jnp.exp(sharpness * (rho - 1.0)), 0.0))
        length = jnp.exp(hyper(self.log_covariate_scale))
        gap = (cov_a[:, None, :] - cov_b[None, :, :]) / length
        return k_cell * jnp.exp(-0.5 * jnp.sum(gap * gap, -1))
