"""k-hop neighbour sampling with per-relation fan-outs, padded to a frozen budget.

For graphs too large for a full-graph step (PrimeKG: 129k nodes, 8.1M edges), each batch trains
on the subgraph around its seed nodes (the batch's drugs and cell lines and the readout genes):

    hop 1: for every seed v and every edge type r into v's type, up to fanouts[0][r] of v's
           incoming r-edges; their senders are the hop-1 nodes;
    hop 2: the same around the hop-1 nodes not seen before, with fanouts[1][r]; and so on.

With as many hops as message-passing layers, every seed's output depends only on sampled edges
into its receptive field (GraphSAGE's scheme). Neighbours are drawn with replacement and then
deduplicated, so a node with more than f incoming r-edges keeps between 1 and f distinct ones
(in expectation close to f when its degree is much larger than f) and a node with at most f keeps
all of them. Everything is vectorised in numpy over the frontier, one CSR (incoming edges sorted
by receiver) per edge type.

The padding budget is an upper bound computed once from the graph's degrees and the fan-outs
(`budget`), so every subgraph fits and a training run compiles its step once. The padded
`GraphsTuple` has `padding.py`'s layout, with local node numbering: seeds first, in the order
given (repeats merged), then hop-1 nodes, hop-2 nodes, ...
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jraph
import numpy as np

from perturbjax.graph.hetero import HeteroGraph
from perturbjax.graph.padding import GraphSchema, PaddingBudget, _round_up, flat_nodes


def parse_fanouts(fanouts: Sequence[int], relation_fanouts: Sequence[str],
                  relations: Sequence[str]) -> list[dict[str, int]]:
    """Per-hop, per-relation fan-outs from a default per hop and "relation=f1,f2,..." overrides.

    Args:
      fanouts: the fan-out of every relation at each hop (its length is the number of hops).
      relation_fanouts: entries "relation=f1,...,fk" (k = the number of hops) for relations
        that differ; 0 leaves a relation out of sampling at that hop.
      relations: the graph's relation names (an override naming another is an error).

    Raises:
      ValueError: no hops, a negative fan-out, a malformed entry or an unknown relation.
    """
    hops = len(fanouts)
    if hops == 0:
        raise ValueError("sampling needs at least one hop: graph.sampling.fanouts is empty")
    out = [{r: int(f) for r in relations} for f in fanouts]
    for entry in relation_fanouts:
        relation, sep, values = str(entry).rpartition("=")
        try:
            per_hop = [int(v) for v in values.split(",")]
        except ValueError:
            per_hop = []
        if not sep or len(per_hop) != hops:
            raise ValueError(f"graph.sampling.relation_fanouts entry {entry!r} is not "
                             f"'relation=f1,...,f{hops}' ({hops} hops)")
        if relation not in relations:
            raise ValueError(f"graph.sampling.relation_fanouts names {relation!r}, which is not a "
                             f"relation of the graph; relations are {sorted(set(relations))}")
        for hop, f in enumerate(per_hop):
            out[hop][relation] = f
    if any(f < 0 for hop in out for f in hop.values()):
        raise ValueError(f"fan-outs must be >= 0, got {fanouts} and {list(relation_fanouts)}")
    return out


@dataclasses.dataclass(frozen=True)
class Subgraph:
    """A sampled subgraph in the flat numbering of the full graph.

    Attributes:
      nodes: [n] full-graph positions of the subgraph's nodes; position in this array is the
        node's local id (seeds first).
      seeds: [s] local id of every seed, in the order the seeds were given.
      senders, receivers: [e] local ids of the sampled edges.
      edge_type: [e] relation id (position in the schema's edge types) of each edge.
    """

    nodes: np.ndarray
    seeds: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    edge_type: np.ndarray


class NeighbourSampler:
    """Samples k-hop subgraphs of one graph and pads them to a budget fixed at construction.

    Args:
      graph: the full graph (its padded layout is given by `schema`).
      schema: fixes node type and relation ids (the model is built from the same schema).
      fanouts: per hop, relation name -> fan-out (see `parse_fanouts`).
      max_seeds: node type -> most seeds of that type one subgraph can have (e.g. batch size
        drugs, batch size cell lines, every readout gene); sizes the budget.
      padding_multiple: budgets are rounded up to a multiple of this.
    """

    def __init__(self, graph: HeteroGraph, schema: GraphSchema, fanouts: list[Mapping[str, int]],
                 max_seeds: Mapping[str, int], padding_multiple: int = 256):
        self.schema = schema
        offsets = graph.node_offsets()
        self.num_nodes = graph.num_nodes
        self.fanouts = [[hop[k.relation] for k in schema.edge_types] for hop in fanouts]
        self.features, self.node_type = flat_nodes(graph, schema)
        # One CSR of incoming edges per edge type: indptr over all nodes (flat numbering).
        self._indptr, self._senders, self._receivers = [], [], []
        for k in schema.edge_types:
            es = graph.edges[k]
            receivers = es.receivers.astype(np.int64) + offsets[k.target]
            order = np.argsort(receivers, kind="stable")
            counts = np.bincount(receivers, minlength=self.num_nodes)
            self._indptr.append(np.concatenate([[0], np.cumsum(counts)]))
            self._senders.append((es.senders.astype(np.int64) + offsets[k.source])[order])
            self._receivers.append(receivers[order])
        self.budget = self._budget(graph, max_seeds, padding_multiple)
        self._local = np.full(self.num_nodes, -1, np.int64)  # scratch: full -> local id

    # ---- budget --------------------------------------------------------------------------
    def _budget(self, graph: HeteroGraph, max_seeds: Mapping[str, int], multiple: int
                ) -> PaddingBudget:
        """An upper bound on any subgraph's nodes and edges, type by type and hop by hop.

        Per edge type r into type t, k frontier nodes of type t send at most the sum of the k
        largest min(in-degree, fan-out) values, and at most r's edge count; each hop's new
        nodes of a type are at most the edges leaving that type and the type's node count.
        """
        types = self.schema.node_types
        unknown = set(max_seeds) - set(types)
        if unknown:
            raise ValueError(f"max_seeds names unknown node types {sorted(unknown)}")
        size = {t: graph.nodes[t].count for t in types}
        offsets = graph.node_offsets()
        in_degree = [np.diff(indptr) for indptr in self._indptr]
        frontier = {t: min(int(max_seeds.get(t, 0)), size[t]) for t in types}
        total_nodes, total_edges = dict(frontier), 0
        for hop in self.fanouts:
            new = dict.fromkeys(types, 0)
            for r, (k, fan) in enumerate(zip(self.schema.edge_types, hop)):
                if fan == 0 or frontier[k.target] == 0:
                    continue
                start = offsets[k.target]
                deg = in_degree[r][start:start + size[k.target]]
                top = np.sort(np.minimum(deg, fan))[::-1][:frontier[k.target]]
                edges = int(top.sum())
                total_edges += edges
                new[k.source] += edges
            frontier = {t: min(new[t], size[t] - total_nodes[t]) for t in types}
            total_nodes = {t: total_nodes[t] + frontier[t] for t in types}
        return PaddingBudget(n_node=_round_up(sum(total_nodes.values()) + 1, multiple),
                             n_edge=_round_up(max(total_edges, 1), multiple), n_graph=2)

    # ---- sampling ------------------------------------------------------------------------
    def sample(self, seeds: np.ndarray, rng: np.random.Generator) -> Subgraph:
        """The k-hop subgraph around `seeds` (full-graph node positions; repeats allowed)."""
        seeds = np.asarray(seeds, np.int64)
        local = self._local
        unique, first = np.unique(seeds, return_index=True)
        frontier = unique[np.argsort(first)]  # seeds in the order given, repeats merged
        local[frontier] = np.arange(len(frontier))
        nodes, count = [frontier], len(frontier)
        senders, receivers, edge_type = [], [], []
        try:
            for hop in self.fanouts:
                hop_senders = []
                for r, fan in enumerate(hop):
                    indptr = self._indptr[r]
                    start, deg = indptr[frontier], indptr[frontier + 1] - indptr[frontier]
                    has = deg > 0
                    if fan == 0 or not has.any():
                        continue
                    start, deg = start[has, None], deg[has, None]
                    slots = np.arange(fan)
                    # Every edge of a node with deg <= fan; fan draws with replacement otherwise.
                    draws = (rng.random((len(deg), fan)) * deg).astype(np.int64)
                    offset = np.where(deg <= fan, slots, draws)
                    keep = (slots < deg) | (deg > fan)
                    pos = np.unique((start + offset)[keep])  # a repeated draw is the same edge
                    hop_senders.append(self._senders[r][pos])
                    receivers.append(self._receivers[r][pos])
                    edge_type.append(np.full(len(pos), r, np.int32))
                if not hop_senders:
                    break
                senders.extend(hop_senders)
                candidates = np.unique(np.concatenate(hop_senders))
                frontier = candidates[local[candidates] < 0]
                local[frontier] = np.arange(count, count + len(frontier))
                count += len(frontier)
                nodes.append(frontier)
            cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
            return Subgraph(nodes=np.concatenate(nodes), seeds=local[seeds],
                            senders=local[cat(senders)].astype(np.int32),
                            receivers=local[cat(receivers)].astype(np.int32),
                            edge_type=cat(edge_type).astype(np.int32))
        finally:
            local[np.concatenate(nodes)] = -1  # the scratch array is clean for the next call

    def padded(self, sub: Subgraph) -> jraph.GraphsTuple:
        """`sub` as a `GraphsTuple` padded to the budget (padding edges join the last node).

        Raises:
          ValueError: the subgraph exceeds the budget (a bug: the budget is an upper bound).
        """
        b = self.budget
        n, e = len(sub.nodes), len(sub.senders)
        if n + 1 > b.n_node or e > b.n_edge:
            raise ValueError(f"subgraph with {n} nodes and {e} edges exceeds the budget {b}")
        features = np.zeros((b.n_node, self.features.shape[1]), np.float32)
        features[:n] = self.features[sub.nodes]
        node_type = np.zeros(b.n_node, np.int32)
        node_type[:n] = self.node_type[sub.nodes]
        ids = np.zeros(b.n_node, np.int32)
        ids[:n] = sub.nodes
        pad_node = b.n_node - 1
        senders = np.full(b.n_edge, pad_node, np.int32)
        receivers = np.full(b.n_edge, pad_node, np.int32)
        senders[:e], receivers[:e] = sub.senders, sub.receivers
        edge_type = np.zeros(b.n_edge, np.int32)
        edge_type[:e] = sub.edge_type
        return jraph.GraphsTuple(
            nodes={"features": features, "node_type": node_type, "mask": np.arange(b.n_node) < n,
                   "id": ids},
            edges={"edge_type": edge_type, "mask": np.arange(b.n_edge) < e},
            senders=senders, receivers=receivers,
            n_node=np.array([n, b.n_node - n], np.int32), n_edge=np.array([e, b.n_edge - e], np.int32),
            globals=None)
