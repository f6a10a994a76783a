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

The padding budget is fixed at construction, type by type and relation by relation, so a
training run compiles its step once. `budget="bound"` is an upper bound from the graph's degrees
and the fan-outs, so every subgraph fits, but it is loose (several times the subgraphs' sizes),
and the step pays for the padding. `budget="calibrated"` (the default) samples a few
subgraphs around representative seeds first and sizes every block at the largest size seen
plus a margin: three standard deviations of the sizes seen, at least 5% of the largest, plus 16
(never above the bound). Subgraph sizes vary little between batches, so this leaves little
padding, and every padding slot costs the step as much as a real one. A later subgraph that
would still overflow a block is trimmed to fit: a type keeps its earliest-reached nodes (seeds
first, so only far nodes go) and the edges among them, a relation a random subset of its edges,
and the edges of its latest-reached senders beyond its sender budget; `sampler.trimmed` counts
what was dropped and the first trim is logged as a warning. Each relation's distinct senders
are budgeted (`Layout.active_sources`: calibrated likewise, never above min(its edge budget,
its source type's node budget), which always holds), so the step transforms only them.

Subgraphs are laid out in the blocks of `perturbjax.graph.topology.Layout`
(`sampler.layout`): type t's nodes fill the range of its node budget (in the order they were
reached, seeds first), relation r's edges the range of its edge budget, sorted by receiver; the
rest of each range is padding. The batch builder turns the padded `GraphsTuple` into a
topology on the host, `Topology.from_graphs_tuple(graph, sampler.layout, sparse=True)`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Mapping, Sequence

import jraph
import numpy as np

from perturbjax.graph.hetero import HeteroGraph
from perturbjax.graph.padding import PaddingBudget, _round_up, flat_nodes
from perturbjax.graph.schema import GraphSchema
from perturbjax.graph.topology import Layout, RelationBlock, host_sources

log = logging.getLogger(__name__)
BUDGETS = ("calibrated", "bound")


def _distinct(x: np.ndarray) -> np.ndarray:
    """`np.unique(x)` by a sort (numpy 2.4's hash-based unique is slower on edge keys)."""
    x = np.sort(x)
    return x[np.concatenate([[True], x[1:] != x[:-1]])] if len(x) else x


def _grow(seen: Sequence[np.ndarray]) -> np.ndarray:
    """A block for sizes like those `seen` (one count array per calibration subgraph): the
    largest plus three standard deviations (at least 5% of the largest) plus 16."""
    seen = np.asarray(seen, np.float64)
    largest = seen.max(axis=0)
    margin = np.maximum(3.0 * seen.std(axis=0), 0.05 * largest)
    return np.ceil(largest + margin).astype(np.int64) + 16


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
    """A sampled subgraph, numbered in the sampler's padded layout.

    Attributes:
      nodes: [n_node budget] full-graph position of the node in each slot (local id), -1 in
        padding slots.
      seeds: [s] local id of every seed, in the order the seeds were given.
      senders, receivers: [e] local ids of the sampled edges, sorted by (relation, receiver).
      edge_type: [e] relation id (position in the schema's edge types) of each edge.
    """

    nodes: np.ndarray
    seeds: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    edge_type: np.ndarray

    @property
    def num_nodes(self) -> int:
        """Real (not padding) nodes."""
        return int((self.nodes >= 0).sum())


class NeighbourSampler:
    """Samples k-hop subgraphs of one graph and pads them to a budget fixed at construction.

    Args:
      graph: the full graph (its padded layout is given by `schema`).
      schema: fixes node type and relation ids (the model is built from the same schema).
      fanouts: per hop, relation name -> fan-out (see `parse_fanouts`).
      max_seeds: node type -> most seeds of that type one subgraph can have (e.g. batch size
        drugs, batch size cell lines, every readout gene); sizes the budget.
      padding_multiple: every type's node budget and every relation's edge budget is rounded
        up to a multiple of this.
      budget: "calibrated" (blocks sized from sampled subgraphs, see the module docstring) or
        "bound" (the worst case: nothing is ever trimmed, the step is slower).
      calibration_seeds: the seed sets to calibrate on, like the run's batches (default: 16
        draws of `max_seeds` nodes of each type, uniformly at random, from a fixed seed).
    """

    def __init__(self, graph: HeteroGraph, schema: GraphSchema, fanouts: list[Mapping[str, int]],
                 max_seeds: Mapping[str, int], padding_multiple: int = 8,
                 budget: str = "calibrated",
                 calibration_seeds: Sequence[np.ndarray] | None = None):
        if padding_multiple < 1:
            raise ValueError(f"graph.padding_multiple must be a positive integer, got "
                             f"{padding_multiple}")
        if budget not in BUDGETS:
            raise ValueError(f"graph.sampling.budget is {budget!r}; expected one of {BUDGETS}")
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
        self._target_type = [schema.node_types.index(k.target) for k in schema.edge_types]
        self._local = np.full(self.num_nodes, -1, np.int64)  # scratch: full -> local id
        self._reached = np.zeros(self.num_nodes, bool)  # scratch of `sample`, all False
        self.trimmed = {"subgraphs": 0, "nodes": 0, "edges": 0}
        nodes, edges = self._bound(graph, max_seeds)
        senders = None
        if budget == "calibrated":
            nodes, edges, senders = self._calibrate(graph, max_seeds, nodes, edges,
                                                    calibration_seeds)
        self.layout = self._blocks(nodes, edges, padding_multiple, senders)
        self.budget = PaddingBudget(n_node=self.layout.num_nodes, n_edge=self.layout.num_edges,
                                    n_graph=2)
        blocks, relations = self.layout.node_blocks, self.layout.relations
        self._slot_type = np.repeat(np.arange(len(blocks), dtype=np.int32),
                                    [b - a for a, b in blocks])
        # Padding edges of relation r join the last slots of its source and target blocks
        # (`padded` moves their sender to the relation's first real one when it has one).
        sizes = [blk.edge_stop - blk.edge_start for blk in relations]
        self._pad_senders = np.repeat([blocks[blk.source_type][1] - 1 for blk in relations],
                                      sizes).astype(np.int32)
        self._pad_receivers = np.repeat([blocks[blk.target_type][1] - 1 for blk in relations],
                                        sizes).astype(np.int32)

    # ---- budget --------------------------------------------------------------------------
    def _bound(self, graph: HeteroGraph, max_seeds: Mapping[str, int]
               ) -> tuple[np.ndarray, np.ndarray]:
        """An upper bound on any subgraph's nodes of each type and edges of each relation.

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
        self._seed_counts = np.array([frontier[t] for t in types], np.int64)
        total_nodes = dict(frontier)
        total_edges = [0] * len(self.schema.edge_types)
        for hop in self.fanouts:
            new = dict.fromkeys(types, 0)
            for r, (k, fan) in enumerate(zip(self.schema.edge_types, hop)):
                if fan == 0 or frontier[k.target] == 0:
                    continue
                start = offsets[k.target]
                deg = in_degree[r][start:start + size[k.target]]
                top = np.sort(np.minimum(deg, fan))[::-1][:frontier[k.target]]
                edges = int(top.sum())
                total_edges[r] += edges
                new[k.source] += edges
            frontier = {t: min(new[t], size[t] - total_nodes[t]) for t in types}
            total_nodes = {t: total_nodes[t] + frontier[t] for t in types}
        return (np.array([total_nodes[t] for t in types], np.int64),
                np.array(total_edges, np.int64))

    def _calibrate(self, graph: HeteroGraph, max_seeds: Mapping[str, int], nodes: np.ndarray,
                   edges: np.ndarray, seed_sets: Sequence[np.ndarray] | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Blocks at the largest of subgraphs sampled around `seed_sets` plus a margin (`_grow`),
        never above the bound (`nodes`, `edges`) nor below a type's seed count; the same for
        each relation's distinct senders."""
        rng = np.random.default_rng(0)
        if seed_sets is None:
            offsets = graph.node_offsets()
            seed_sets = [np.concatenate([offsets[t] + rng.choice(graph.nodes[t].count,
                                                                 min(k, graph.nodes[t].count),
                                                                 replace=False)
                                         for t, k in max_seeds.items() if k > 0]
                                        or [np.zeros(0, np.int64)]) for _ in range(16)]
        self.layout = self._blocks(nodes, edges, 1)  # the bound's blocks, to sample into
        seen_nodes, seen_edges, seen_senders = [], [], []
        for seeds in seed_sets:
            sub = self.sample(np.asarray(seeds, np.int64), rng)
            real = sub.nodes[sub.nodes >= 0]
            seen_nodes.append(np.bincount(self.node_type[real], minlength=len(nodes)))
            seen_edges.append(np.bincount(sub.edge_type, minlength=len(edges)))
            pairs = np.unique(sub.edge_type.astype(np.int64) * self.num_nodes + sub.senders)
            seen_senders.append(np.bincount(pairs // self.num_nodes, minlength=len(edges)))
        return (np.maximum(np.minimum(_grow(seen_nodes), nodes), self._seed_counts),
                np.minimum(_grow(seen_edges), edges), _grow(seen_senders))

    def _blocks(self, nodes: np.ndarray, edges: np.ndarray, multiple: int,
                senders: np.ndarray | None = None) -> Layout:
        """Per-type node and per-relation edge budgets laid out in blocks, each rounded up to
        `multiple`; each relation's distinct senders are budgeted at min(edge budget, source
        type's node budget), which always holds, or at `senders` where that is smaller."""
        node_sizes = [_round_up(int(n), multiple) for n in nodes]
        node_ends = np.cumsum(node_sizes)
        node_blocks = tuple(zip([0, *map(int, node_ends[:-1])], map(int, node_ends)))
        edge_sizes = [_round_up(int(e), multiple) for e in edges]
        edge_ends = np.cumsum(edge_sizes)
        type_id = {t: i for i, t in enumerate(self.schema.node_types)}
        relations = tuple(RelationBlock(int(a), int(b), type_id[k.source], type_id[k.target])
                          for a, b, k in zip([0, *edge_ends[:-1]], edge_ends,
                                             self.schema.edge_types))
        sources = [min(e, node_sizes[blk.source_type]) for e, blk in zip(edge_sizes, relations)]
        if senders is not None:
            sources = np.minimum(sources, senders)
        return Layout(node_blocks, relations, tuple(int(a) for a in sources))

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
                # Only nodes of a relation's target type receive its edges.
                frontier_type = self.node_type[frontier]
                of_type = {t: frontier[frontier_type == t] for t in np.unique(frontier_type)}
                for r, fan in enumerate(hop):
                    mine = of_type.get(self._target_type[r])
                    if fan == 0 or mine is None:
                        continue
                    indptr = self._indptr[r]
                    start = indptr[mine]
                    deg = indptr[mine + 1] - start
                    has = deg > 0
                    if not has.any():
                        continue
                    start, deg = start[has, None], deg[has, None]
                    slots = np.arange(fan)
                    # Every edge of a node with deg <= fan; fan draws with replacement otherwise.
                    draws = (rng.random((len(deg), fan)) * deg).astype(np.int64)
                    offset = np.sort(np.where(deg <= fan, slots, draws), axis=1)
                    keep = (slots < deg) | (deg > fan)
                    # A repeated draw is the same edge: drop repeats within each row (rows'
                    # positions never overlap; a row-wise sort is cheaper than np.unique).
                    keep[:, 1:] &= offset[:, 1:] != offset[:, :-1]
                    pos = (start + offset)[keep]
                    hop_senders.append(self._senders[r][pos])
                    receivers.append(self._receivers[r][pos])
                    edge_type.append(np.full(len(pos), r, np.int32))
                if not hop_senders:
                    break
                senders.extend(hop_senders)
                reached = self._reached  # scratch flags: the distinct senders, in id order
                reached[np.concatenate(hop_senders)] = True
                candidates = np.flatnonzero(reached)
                reached[candidates] = False
                frontier = candidates[local[candidates] < 0]
                local[frontier] = np.arange(count, count + len(frontier))
                count += len(frontier)
                nodes.append(frontier)
            # Renumber into the layout: type t's nodes, in the order reached, fill its block.
            found = np.concatenate(nodes)
            types = self.node_type[found]
            by_type = np.argsort(types, kind="stable")
            counts = np.bincount(types, minlength=len(self.layout.node_blocks))
            first = np.concatenate([[0], np.cumsum(counts)[:-1]])
            rank = np.empty(len(found), np.int64)  # place of each node among its type's
            rank[by_type] = np.arange(len(found)) - first[types[by_type]]
            sizes = np.diff(self.layout.node_blocks, axis=1)[:, 0]
            cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
            senders, receivers, edge_type = cat(senders), cat(receivers), cat(edge_type)
            trimmed_nodes = trimmed_edges = 0
            if (counts > sizes).any():  # keep each type's earliest-reached nodes
                fits = rank < sizes[types]
                local[found[~fits]] = -1
                trimmed_nodes = int((~fits).sum())
                found, types, rank = found[fits], types[fits], rank[fits]
                keep = (local[senders] >= 0) & (local[receivers] >= 0)
                trimmed_edges = int((~keep).sum())
                senders, receivers, edge_type = senders[keep], receivers[keep], edge_type[keep]
            budget = np.array([b.edge_stop - b.edge_start for b in self.layout.relations])
            over = np.flatnonzero(np.bincount(edge_type, minlength=len(budget)) > budget)
            if len(over):  # a random subset of each overflowing relation's edges
                keep = np.ones(len(edge_type), bool)
                for r in over:
                    mine = np.flatnonzero(edge_type == r)
                    keep[rng.choice(mine, len(mine) - budget[r], replace=False)] = False
                trimmed_edges += int((~keep).sum())
                senders, receivers, edge_type = senders[keep], receivers[keep], edge_type[keep]
            # Each relation's distinct senders fit its source rows: edges from the
            # latest-reached senders beyond them go.
            if len(edge_type):
                key = edge_type.astype(np.int64) * self.num_nodes + local[senders]
                pairs = _distinct(key)  # (relation, sender in the order reached)
                pair_rel = pairs // self.num_nodes
                place = np.arange(len(pairs)) - np.searchsorted(pair_rel, pair_rel)
                rows = np.asarray(self.layout.active_sources)[pair_rel]
                if (place >= rows).any():
                    dropped = np.isin(key, pairs[place >= rows])
                    trimmed_edges += int(dropped.sum())
                    senders, receivers, edge_type = (senders[~dropped], receivers[~dropped],
                                                     edge_type[~dropped])
            if trimmed_nodes or trimmed_edges:
                self._trimmed(trimmed_nodes, trimmed_edges)
            starts = np.array([a for a, _ in self.layout.node_blocks], np.int64)
            slot = starts[types] + rank
            local[found] = slot
            slots = np.full(self.layout.num_nodes, -1, np.int64)
            slots[slot] = found
            s, t, r = local[senders], local[receivers], edge_type
            # By (relation, receiver, sender): one argsort of a combined key (an edge appears
            # once) is twice as fast as np.lexsort of the three.
            slots_n = self.layout.num_nodes
            order = np.argsort((r.astype(np.int64) * slots_n + t) * slots_n + s)
            return Subgraph(nodes=slots, seeds=local[seeds].astype(np.int32),
                            senders=s[order].astype(np.int32), receivers=t[order].astype(np.int32),
                            edge_type=r[order].astype(np.int32))
        finally:
            local[np.concatenate(nodes)] = -1  # the scratch array is clean for the next call

    def _trimmed(self, nodes: int, edges: int) -> None:
        if not self.trimmed["subgraphs"]:
            log.warning("a sampled subgraph overflowed the calibrated budget and was trimmed "
                        "(%d far nodes, %d edges dropped); sampler.trimmed counts every trim, "
                        "graph.sampling.budget='bound' never trims", nodes, edges)
        self.trimmed["subgraphs"] += 1
        self.trimmed["nodes"] += nodes
        self.trimmed["edges"] += edges

    def padded(self, sub: Subgraph) -> jraph.GraphsTuple:
        """`sub` as a `GraphsTuple` in the sampler's layout, padding masked in every block.

        Raises:
          ValueError: the subgraph exceeds the budget (a bug: the budget is an upper bound).
        """
        layout = self.layout
        real = sub.nodes >= 0
        if len(sub.nodes) != layout.num_nodes:
            raise ValueError(f"subgraph of {len(sub.nodes)} slots is not in this sampler's layout")
        counts = np.bincount(sub.edge_type, minlength=len(layout.relations))
        budget = np.array([blk.edge_stop - blk.edge_start for blk in layout.relations])
        if (counts > budget).any():
            raise ValueError(f"subgraph edges per relation {counts.tolist()} exceed the budget "
                             f"{budget.tolist()}")
        features = np.zeros((layout.num_nodes, self.features.shape[1]), np.float32)
        features[real] = self.features[sub.nodes[real]]
        # Edge k of relation r goes to slot (block start of r) + (its rank within r).
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        starts = np.array([blk.edge_start for blk in layout.relations], np.int64)
        pos = starts[sub.edge_type] + np.arange(len(sub.edge_type)) - first[sub.edge_type]
        senders, receivers = self._pad_senders.copy(), self._pad_receivers.copy()
        senders[pos], receivers[pos] = sub.senders, sub.receivers
        edge_mask = np.zeros(layout.num_edges, bool)
        edge_mask[pos] = True
        edge_type = np.repeat(np.arange(len(layout.relations), dtype=np.int32), budget)
        # A relation's padding edges send from its first real edge's sender, so they add no
        # row to its relation-source space (its budget holds its real senders).
        fill = ~edge_mask & (counts > 0)[edge_type]
        senders[fill] = senders[starts[edge_type[fill]]]
        n, e = int(real.sum()), len(pos)
        edges = {"edge_type": edge_type, "mask": edge_mask}
        globals_ = None
        if layout.active_sources is not None:
            # Each relation's distinct senders, compacted here on the host: a sort inside the
            # step costs more than all the edge gathers of a subgraph (XLA's CPU sort is slow).
            source_index, edges["source_row"] = host_sources(layout, senders, edge_type)
            globals_ = {"source_index": source_index[None]}
        return jraph.GraphsTuple(
            nodes={"features": features, "node_type": self._slot_type.copy(), "mask": real,
                   "id": np.where(real, sub.nodes, 0).astype(np.int32)},
            edges=edges, senders=senders, receivers=receivers,
            n_node=np.array([n, layout.num_nodes - n], np.int32),
            n_edge=np.array([e, layout.num_edges - e], np.int32), globals=globals_)
