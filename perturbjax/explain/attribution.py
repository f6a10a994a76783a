"""Edge attributions of one prediction, their sums per relation, and the KG paths they support.

Edge attributions are integrated gradients (Sundararajan et al. 2017) over the edges' message
scales (`Topology.edge_scale`, which every layer's messages pass through `propagate`): for
output gene g and edge e,

    IG_g(e) = integral_0^1 d y_g(a * 1) / d s_e da    (from no messages, s = 0, to the graph, s = 1)

approximated by the midpoint rule over `steps` points. They add up to y_g(1) - y_g(0), which
the report checks ("completeness").

Paths. The model's prediction for (drug, gene) combines the drug's and the gene's embeddings,
each built from its own neighbourhood, so a path joining them may use edges in either direction.
An edge's weight for gene g is |IG_g| summed over the edges joining the same two nodes (any
relation, either direction); a path's score is its weakest edge's weight (a chain is as strong
as its weakest link, which does not favour short or long paths). Paths of 1 to 3 edges between
the drug and the gene are enumerated exactly.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp


def integrated_gradients(forward, args, num_edges: int, outputs: np.ndarray, steps: int = 16,
                         progress=None) -> np.ndarray:
    """[len(outputs), E] integrated gradients of `forward(*args, scale)[outputs]` with respect
    to the edge scales (baseline 0, input 1).

    One reverse pass per integration point for all the outputs together: `jax.jacrev`, the
    backward pass vmapped over the outputs' unit cotangents (the CPU kernels fold that batch
    into their columns)."""
    outputs = jnp.asarray(outputs)

    @jax.jit
    def grads(args, scale):
        return jax.jacrev(lambda s: forward(*args, s)[outputs])(scale)

    total = np.zeros((len(outputs), num_edges), np.float64)
    points = (np.arange(steps) + 0.5) / steps
    for a in (progress(points) if progress else points):
        total += np.asarray(grads(args, jnp.full(num_edges, a, jnp.float32)), np.float64)
    return (total / steps).astype(np.float32)


@dataclasses.dataclass
class RelationImportance:
    """Per relation: summed |IG| share over the explained genes, signed IG sum, the occlusion
    effect (norm of the change of the explained genes' predictions when the relation's edges
    carry no messages), and the mean attention on its edges into the explained nodes (NaN for
    models without attention)."""

    relation: list[str]
    edges: np.ndarray
    ig_share: np.ndarray
    ig_signed: np.ndarray
    occlusion: np.ndarray
    attention: np.ndarray


def relation_importance(relations: list[str], edge_type: np.ndarray, ig: np.ndarray,
                        occlusion: np.ndarray, attention: np.ndarray | None = None
                        ) -> RelationImportance:
    r = len(relations)
    magnitude = np.bincount(edge_type, weights=np.abs(ig).sum(0), minlength=r)
    signed = np.bincount(edge_type, weights=ig.sum(0), minlength=r)
    return RelationImportance(list(relations), np.bincount(edge_type, minlength=r),
                              magnitude / max(magnitude.sum(), 1e-30), signed,
                              np.asarray(occlusion, float),
                              np.full(r, np.nan) if attention is None else attention)


def mean_attention_into(alpha: np.ndarray, receivers: np.ndarray, edge_type: np.ndarray,
                        nodes: np.ndarray, num_relations: int) -> np.ndarray:
    """Per relation, the mean attention coefficient (over heads and edges) of its edges into
    `nodes`; NaN where none."""
    into = np.isin(receivers, nodes)
    a = alpha.reshape(len(alpha), -1).mean(1)
    total = np.bincount(edge_type[into], weights=a[into], minlength=num_relations)
    count = np.bincount(edge_type[into], minlength=num_relations)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclasses.dataclass(frozen=True)
class Path:
    nodes: tuple[int, ...]       # flat node ids, drug first
    relations: tuple[str, ...]   # the strongest relation of each step (as stored, with its
    forward: tuple[bool, ...]    # direction: True when the edge points along the path)
    score: float                 # the weakest step's weight


def top_paths(senders: np.ndarray, receivers: np.ndarray, relation_of_edge: list[str],
              weights: np.ndarray, source: int, target: int, num_nodes: int, k: int = 5,
              max_length: int = 3) -> list[Path]:
    """The k best paths of 1..max_length (at most 3) edges from `source` to `target` over the
    edges with weight > 0, scored by their weakest step (see the module docstring)."""
    if not 1 <= max_length <= 3:
        raise ValueError(f"max_length is {max_length}; paths of 1 to 3 edges are enumerated")
    keep = weights > 0
    u = np.concatenate([senders[keep], receivers[keep]])
    v = np.concatenate([receivers[keep], senders[keep]])
    w = np.concatenate([weights[keep], weights[keep]])
    pair = sp.csr_matrix((w, (u, v)), shape=(num_nodes, num_nodes))  # summed per node pair
    pair.sum_duplicates()
    best_edge = _strongest_edges(senders[keep], receivers[keep], weights[keep],
                                 np.flatnonzero(keep))

    def step(a: int, b: int) -> tuple[str, bool]:
        e, forward = best_edge[(a, b)] if (a, b) in best_edge else (best_edge[(b, a)][0], False)
        return relation_of_edge[e], forward

    found: list[tuple[float, float, tuple[int, ...]]] = []
    direct = pair[source, target]
    if direct > 0:
        found.append((direct, direct, (source, target)))
    row_s = pair.getrow(source)
    a_nodes, a_w = row_s.indices, row_s.data
    if max_length >= 2:
        col_t = pair.getrow(target)
        t_w = dict(zip(col_t.indices.tolist(), col_t.data.tolist()))
        for a, wa in zip(a_nodes.tolist(), a_w.tolist()):
            if a not in (source, target) and a in t_w:
                found.append((min(wa, t_w[a]), wa + t_w[a], (source, a, target)))
    if max_length >= 3 and len(a_nodes):
        col_t = pair.getrow(target)
        b_nodes, b_w = col_t.indices, col_t.data
        mid = pair[a_nodes][:, b_nodes].tocoo()  # edges a - b
        for i, j, wab in zip(mid.row.tolist(), mid.col.tolist(), mid.data.tolist()):
            a, b = int(a_nodes[i]), int(b_nodes[j])
            if len({source, a, b, target}) < 4:
                continue
            found.append((min(a_w[i], wab, b_w[j]), a_w[i] + wab + b_w[j], (source, a, b, target)))
    found.sort(key=lambda x: (-x[0], -x[1]))
    out = []
    for score, _, nodes in found[:k]:
        steps = [step(a, b) for a, b in zip(nodes[:-1], nodes[1:])]
        out.append(Path(nodes, tuple(s[0] for s in steps), tuple(s[1] for s in steps),
                        float(score)))
    return out


def _strongest_edges(senders, receivers, weights, edge_ids) -> dict:
    """(sender, receiver) -> (the edge id of the heaviest edge between them, True)."""
    order = np.argsort(weights, kind="stable")  # later (heavier) entries overwrite
    return {(int(senders[i]), int(receivers[i])): (int(edge_ids[i]), True) for i in order}


def all_paths(senders: np.ndarray, receivers: np.ndarray, source: int, target: int,
              num_nodes: int, length: int) -> list[tuple[int, ...]]:
    """Every simple path of exactly `length` (1 to 3) edges between two nodes, edges taken in
    either direction: the candidates a random path of that length would be drawn from."""
    ones = np.ones(2 * len(senders))
    adj = sp.csr_matrix((ones, (np.r_[senders, receivers], np.r_[receivers, senders])),
                        shape=(num_nodes, num_nodes))
    adj.sum_duplicates()
    ns = set(adj.getrow(source).indices.tolist()) - {source}
    nt = set(adj.getrow(target).indices.tolist()) - {target}
    if length == 1:
        return [(source, target)] if target in ns else []
    if length == 2:
        return [(source, a, target) for a in sorted(ns & nt)]
    a_nodes, b_nodes = np.array(sorted(ns - {target})), np.array(sorted(nt - {source}))
    if not len(a_nodes) or not len(b_nodes):
        return []
    mid = adj[a_nodes][:, b_nodes].tocoo()
    return [(source, int(a_nodes[i]), int(b_nodes[j]), target)
            for i, j in zip(mid.row, mid.col) if a_nodes[i] != b_nodes[j]]
