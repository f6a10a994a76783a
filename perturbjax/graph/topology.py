"""Device-side graph structure, built once and kept apart from the node values.

A `Topology` is the structure every message-passing layer reads: which edges join which nodes,
by which relation, which entries are padding, and (for fixed graphs) the compressed sparse rows
the sparse backend of `perturbjax.graph.propagate` multiplies with. Node values are passed to the
layers separately and may be `[N, d]` or `[N, B, d]` (B samples sharing the graph), as in
GraphCast's typed graphs, whose structure is built once while the features change per call.

The layout is blocked and static (`Layout`, part of the pytree's structure, so jit sees plain
integers):

  * nodes are numbered type by type (types in `GraphSchema.node_types` order); type t owns the
    contiguous range `node_blocks[t]`, which may end in padding nodes (mask False);
  * edges are sorted by (relation, receiver); relation r owns the contiguous edge range
    `relations[r]`, which may end in padding edges (mask False) into the last node of the
    target block, so receivers stay sorted;
  * "relation-source space" holds the rows a relation transforms (`W_r h_j`), which
    `src_index` points each edge at. A whole graph lists each relation's distinct senders
    (`Topology.sources`, relation by relation): nothing that sends no edge is transformed; a
    sampled subgraph does the same within the sampler's per-relation budgets, compacted on the
    host (`host_sources`). Without such budgets a padded graph holds one row per (source node, relation
    leaving its type): type by type, node by node, then relation (`Layout.source_row`), so one
    matrix product per type, `h_t @ [W_r1 | W_r2 | ...]`, gives that type's rows as they stand;
  * "relation-target space" stacks each relation's target block: `group` numbers the
    (relation, receiver) pairs, the softmax / mean groups of relation-wise layers, and is sorted.

A full graph is laid out exactly (no padding); a sampled subgraph is padded to the sampler's
frozen per-type and per-relation budgets (`perturbjax.graph.sampling`), and the batch builder
turns its padded `jraph.GraphsTuple` into a topology with `Topology.from_graphs_tuple`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from perturbjax.graph.hetero import HeteroGraph
from perturbjax.graph.schema import GraphSchema


class RelationBlock(NamedTuple):
    """Static facts of one relation: its edge range and the node types it joins."""

    edge_start: int
    edge_stop: int
    source_type: int
    target_type: int


@dataclasses.dataclass(frozen=True)
class Layout:
    """The static (hashable) part of a topology: block ranges, all plain Python integers.

    Attributes:
      node_blocks: per node type, its `(start, stop)` in the flat numbering; the blocks tile
        `[0, num_nodes)` in type order.
      relations: per relation id, its `RelationBlock`; edge ranges tile `[0, num_edges)`.
      active_sources: None, or per relation the number of distinct nodes that send one of its
        edges; relation-source space then holds just those rows, relation by relation (see
        `Topology.sources`).
    """

    node_blocks: tuple[tuple[int, int], ...]
    relations: tuple[RelationBlock, ...]
    active_sources: tuple[int, ...] | None = None

    @property
    def num_nodes(self) -> int:
        return self.node_blocks[-1][1] if self.node_blocks else 0

    @property
    def num_edges(self) -> int:
        return self.relations[-1].edge_stop if self.relations else 0

    def source_range(self, r: int) -> tuple[int, int]:
        return self.node_blocks[self.relations[r].source_type]

    def target_range(self, r: int) -> tuple[int, int]:
        return self.node_blocks[self.relations[r].target_type]

    # Derived tables are cached on the instance (outside the dataclass fields, so equality and
    # hashing are unchanged): the host builds a sampled batch's topology from them every step.
    @functools.cached_property
    def target_offsets(self) -> tuple[int, ...]:
        """Start of each relation's rows in relation-target space (and its size, last)."""
        sizes = [b - a for a, b in (self.target_range(r) for r in range(len(self.relations)))]
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]))

    def source_relations(self, t: int) -> tuple[int, ...]:
        """The relations whose source type is `t`, in relation order."""
        return self._relations_by_source.get(t, ())

    @functools.cached_property
    def _relations_by_source(self) -> dict[int, tuple[int, ...]]:
        by_source: dict[int, list[int]] = {}
        for r, blk in enumerate(self.relations):
            by_source.setdefault(blk.source_type, []).append(r)
        return {t: tuple(rels) for t, rels in by_source.items()}

    @functools.cached_property
    def source_type_offsets(self) -> tuple[int, ...]:
        """Start of each node type's rows in relation-source space (and its size, last): type t
        owns `n_t * m_t` rows, m_t = len(source_relations(t))."""
        sizes = [(b - a) * len(self.source_relations(t))
                 for t, (a, b) in enumerate(self.node_blocks)]
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]))

    def source_row(self, r: int, local: np.ndarray | jax.Array):
        """Row in relation-source space of the source node `local` (id within its type's block)
        of relation r: type-major, node-major, then r's place among its type's relations."""
        t = self.relations[r].source_type
        rels = self.source_relations(t)
        return self.source_type_offsets[t] + local * len(rels) + rels.index(r)

    @functools.cached_property
    def active_offsets(self) -> tuple[int, ...]:
        """With `active_sources`: start of each relation's rows in relation-source space."""
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.active_sources,
                                                                      dtype=np.int64)]))

    @property
    def num_sources(self) -> int:
        if self.active_sources is not None:
            return self.active_offsets[-1]
        return self.source_type_offsets[-1]

    @property
    def num_groups(self) -> int:
        return self.target_offsets[-1]

    def validate(self) -> None:
        """Raises ValueError unless the blocks tile their ranges and relations join known types."""
        start = 0
        for t, (a, b) in enumerate(self.node_blocks):
            if a != start or b < a:
                raise ValueError(f"node block {t} is {(a, b)}; expected to start at {start}")
            start = b
        start = 0
        for r, blk in enumerate(self.relations):
            if blk.edge_start != start or blk.edge_stop < blk.edge_start:
                raise ValueError(f"relation {r}'s edge range {blk[:2]} does not start at {start}")
            for t in (blk.source_type, blk.target_type):
                if not 0 <= t < len(self.node_blocks):
                    raise ValueError(f"relation {r} names node type {t}, not one of the layout's")
            start = blk.edge_stop


class CSR(NamedTuple):
    """One compressed-sparse-row pattern over the topology's edges.

    Row i's entries are `indices[indptr[i]:indptr[i + 1]]`; entry k holds edge `order[k]`, so an
    edge weight `w` (edge order) becomes the matrix data `w[order]`.
    """

    indptr: jax.Array
    indices: jax.Array
    order: jax.Array


class SourceRows(NamedTuple):
    """The active rows of relation-source space: `index[s]` is the node of row s (relation by
    relation, each relation's distinct senders ascending); `gather_t` is the CSR pattern of the
    transposed selection (rows = nodes), the backward product of gathering them, or None (a
    padded subgraph's, compacted inside the step: its backward is a scatter-add)."""

    index: jax.Array
    gather_t: CSR | None


class SparseIndex(NamedTuple):
    """What the sparse backend multiplies with: rows are receivers, columns are sources.

    `node`: columns are sender node ids (messages from node values `[N, ...]`); `relation`:
    columns are rows of relation-source space (messages from per-relation transformed sources
    `[S, ...]`). Each comes with its transpose (rows = sources, columns = receivers), which is
    the backward product.
    """

    node: CSR
    node_t: CSR
    relation: CSR
    relation_t: CSR


def _csr(rows: np.ndarray, cols: np.ndarray, num_rows: int,
         order: np.ndarray | None = None) -> CSR:
    """The CSR pattern of entries (rows, cols) in row order; `order`: their stable sort by
    row, when the caller has it (two patterns over the same rows share it)."""
    if order is None:
        order = np.argsort(rows, kind="stable").astype(np.int32)
    counts = np.bincount(rows, minlength=num_rows)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return CSR(indptr=indptr, indices=cols[order].astype(np.int32), order=order)


def host_sources(layout: Layout, senders: np.ndarray, edge_type: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each relation's distinct senders, compacted into its `layout.active_sources[r]` rows of
    relation-source space, and every edge's row: `(index [S], row [E])`, int32.

    Unused rows hold node 0 and receive no edge. Padding edges count as senders too: the
    sampler has them send from their relation's first real sender (or, when it has none, from
    the last slot of its source block), so they need no row of their own.

    Raises:
      ValueError: a relation has more distinct senders than its budget (a sampler bug: it trims
        subgraphs to the budgets).
    """
    n, off = layout.num_nodes, np.asarray(layout.active_offsets, np.int64)
    distinct, edge_pair = np.unique(edge_type.astype(np.int64) * n + senders, return_inverse=True)
    rel = distinct // n
    first = np.searchsorted(rel, np.arange(len(layout.relations)))  # first pair of each relation
    row = off[rel] + np.arange(len(distinct)) - first[rel]
    over = row >= off[rel + 1]
    if over.any():
        r = int(rel[over][0])
        raise ValueError(f"relation {r} has {int((rel == r).sum())} distinct senders, above its "
                         f"budget of {layout.active_sources[r]}")
    index = np.zeros(layout.num_sources, np.int32)
    index[row] = distinct % n
    return index, row[edge_pair].astype(np.int32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Topology:
    """The graph structure on the device (a pytree; `layout` is static).

    Attributes:
      senders, receivers: int32 `[E]` flat node ids, edges sorted by (relation, receiver).
      edge_type: int32 `[E]` relation id of each edge.
      edge_mask: bool `[E]`, False on padding edges.
      node_type: int32 `[N]`; node_mask: bool `[N]`, False on padding nodes.
      src_index: int32 `[E]` row of each edge's source in relation-source space.
      group: int32 `[E]` (relation, receiver) pair of each edge in relation-target space (sorted).
      sparse: the CSR patterns of the sparse backend, or None (segment backend).
      sources: the rows of relation-source space when the layout has `active_sources` (each
        relation's distinct senders: a relation transforms only nodes that send it something;
        a whole graph's exactly, a sampled subgraph's within its budgets); None otherwise, when
        relation-source space holds every node of each relation's source type.
      layout: the static block layout.
      edge_scale: None, or float `[E]` factors every edge's message is multiplied by inside
        `propagate` (after attention or degree weights): a differentiable mask, the input of
        edge attributions (`perturbjax.explain`); 1 everywhere leaves every layer unchanged.
    """

    senders: jax.Array
    receivers: jax.Array
    edge_type: jax.Array
    edge_mask: jax.Array
    node_type: jax.Array
    node_mask: jax.Array
    src_index: jax.Array
    group: jax.Array
    sparse: SparseIndex | None
    sources: SourceRows | None
    layout: Layout = dataclasses.field(metadata=dict(static=True))
    edge_scale: jax.Array | None = None

    @property
    def num_nodes(self) -> int:
        return self.layout.num_nodes

    @property
    def num_edges(self) -> int:
        return self.layout.num_edges

    @property
    def num_relations(self) -> int:
        return len(self.layout.relations)

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def build(cls, graph: HeteroGraph, schema: GraphSchema | None = None, *,
              sparse: bool = True) -> "Topology":
        """The exact (unpadded) topology of a whole graph, with numpy arrays (host side).

        Args:
          graph: the heterogeneous graph.
          schema: fixes node type and relation ids (defaults to the graph's own); relations of
            the schema that the graph lacks get empty edge ranges.
          sparse: also build the CSR patterns of the sparse backend.
        """
        schema = schema or GraphSchema.of(graph)
        if tuple(graph.node_types) != schema.node_types:
            raise ValueError(f"graph node types {graph.node_types} differ from the schema's "
                             f"{schema.node_types}")
        unknown = set(graph.edge_types) - set(schema.edge_types)
        if unknown:
            raise ValueError(f"edge types {sorted(map(str, unknown))} are not in the schema")
        offsets = graph.node_offsets()
        type_id = {t: i for i, t in enumerate(schema.node_types)}
        node_blocks = tuple((offsets[t], offsets[t] + graph.nodes[t].count)
                            for t in schema.node_types)
        senders, receivers, blocks, start = [], [], [], 0
        for k in schema.edge_types:
            es = graph.edges.get(k)
            s = np.zeros(0, np.int64) if es is None else es.senders.astype(np.int64)
            t = np.zeros(0, np.int64) if es is None else es.receivers.astype(np.int64)
            order = np.lexsort((s, t))  # by receiver, then sender: deterministic
            senders.append(s[order] + offsets[k.source])
            receivers.append(t[order] + offsets[k.target])
            blocks.append(RelationBlock(start, start + len(s), type_id[k.source],
                                        type_id[k.target]))
            start += len(s)
        def cat(xs):
            return np.concatenate(xs).astype(np.int32) if xs else np.zeros(0, np.int32)
        active = [np.unique(x) for x in senders]
        layout = Layout(node_blocks, tuple(blocks), tuple(len(a) for a in active))
        num_nodes = layout.num_nodes
        node_type = np.zeros(num_nodes, np.int32)
        for t, (a, b) in enumerate(node_blocks):
            node_type[a:b] = t
        return cls.from_arrays(layout, cat(senders), cat(receivers),
                               np.ones(layout.num_edges, bool), node_type,
                               np.ones(num_nodes, bool), sparse=sparse, sources=cat(active))

    @classmethod
    def from_arrays(cls, layout: Layout, senders, receivers, edge_mask, node_type, node_mask,
                    *, sparse: bool = False, sources: np.ndarray | None = None,
                    source_rows: tuple | None = None) -> "Topology":
        """A topology from flat arrays already in `layout` (numpy, host side, when `sparse` or
        `sources`; jax arrays inside a jitted step otherwise). With `layout.active_sources`,
        either `sources` lists each relation's distinct senders, relation by relation (a whole
        graph), or `source_rows` is `host_sources`'s `(index, row)` (a sampled subgraph,
        compacted by `sampler.padded`)."""
        xp = np if isinstance(senders, np.ndarray) else jnp
        edge_type, src_base, src_mult, dst_base = (np.zeros(layout.num_edges, np.int32)
                                                   for _ in range(4))
        dst_off = layout.target_offsets
        for r, blk in enumerate(layout.relations):
            sl = slice(blk.edge_start, blk.edge_stop)
            edge_type[sl] = r
            m = len(layout.source_relations(blk.source_type))
            # row = (sender - start of its block) * m + row of the block's first node for r
            src_mult[sl] = m
            src_base[sl] = layout.source_row(r, 0) - layout.source_range(r)[0] * m
            dst_base[sl] = dst_off[r] - layout.target_range(r)[0]
        src_index = (senders * xp.asarray(src_mult) + xp.asarray(src_base)).astype(xp.int32)
        group = (receivers + xp.asarray(dst_base)).astype(xp.int32)
        rows = None
        given = (sources is not None) + (source_rows is not None)
        if given != (layout.active_sources is not None):
            raise ValueError("a layout has active_sources exactly when sources or source_rows "
                             "(one of them) are given")
        if source_rows is not None:
            index, src_index = source_rows
            rows = SourceRows(index=index, gather_t=None)
        elif sources is not None:
            off = layout.active_offsets
            src_index = np.zeros(layout.num_edges, np.int32)
            for r, blk in enumerate(layout.relations):
                sl = slice(blk.edge_start, blk.edge_stop)
                mine = sources[off[r]:off[r + 1]]
                src_index[sl] = off[r] + np.searchsorted(mine, senders[sl])
            rows = SourceRows(index=sources.astype(np.int32),
                              gather_t=_csr(sources, np.arange(len(sources)), layout.num_nodes))
        index = None
        if sparse:
            if xp is not np:
                raise ValueError("the sparse index is built on the host: pass numpy arrays")
            n, s = layout.num_nodes, layout.num_sources
            # Padding edges carry weight 0 (propagate masks the weights), so they may stay in.
            by_receiver = np.argsort(receivers, kind="stable").astype(np.int32)
            index = SparseIndex(node=_csr(receivers, senders, n, by_receiver),
                                node_t=_csr(senders, receivers, n),
                                relation=_csr(receivers, src_index, n, by_receiver),
                                relation_t=_csr(src_index, receivers, s))
        return cls(senders=senders.astype(xp.int32), receivers=receivers.astype(xp.int32),
                   edge_type=xp.asarray(edge_type), edge_mask=edge_mask.astype(bool),
                   node_type=node_type.astype(xp.int32), node_mask=node_mask.astype(bool),
                   src_index=src_index, group=group, sparse=index, sources=rows, layout=layout)

    @classmethod
    def from_graphs_tuple(cls, graph: jraph.GraphsTuple, layout: Layout, *,
                          sparse: bool = False) -> "Topology":
        """The topology of a padded graph that is laid out in `layout`'s blocks (the sampler's
        subgraphs). The task builds it on the host with `sparse=True` for every batch (numpy's
        sorts take milliseconds; inside the step XLA's CPU sort costs more than the sparse
        products save); on device arrays inside a step it is the segment backend's. With
        `layout.active_sources` (the sampler's per-relation source budgets) each relation
        transforms only its distinct senders, which `sampler.padded` compacted
        (`host_sources`)."""
        source_rows = None
        if layout.active_sources is not None:
            source_rows = (graph.globals["source_index"][0], graph.edges["source_row"])
        return cls.from_arrays(layout, graph.senders, graph.receivers, graph.edges["mask"],
                               graph.nodes["node_type"], graph.nodes["mask"],
                               source_rows=source_rows, sparse=sparse)

    def to_device(self) -> "Topology":
        return jax.tree.map(jnp.asarray, self)

    def with_edge_scale(self, scale: jax.Array | None) -> "Topology":
        """The same topology with every edge's message scaled by `scale` `[E]` (see
        `edge_scale`)."""
        return dataclasses.replace(self, edge_scale=scale)

    # ---- helpers layers share ---------------------------------------------------------------
    # Blocks are cut with one `jnp.split`, never with a slice per relation: the gradient of a
    # split is a concatenation, while each slice's gradient would be zero-padded to all N rows
    # and summed (R full-size buffers per layer).
    def split_types(self, values: jax.Array) -> list[jax.Array]:
        """`values` `[N, ...]` cut into the node types' blocks."""
        return jnp.split(values, [b for _, b in self.layout.node_blocks[:-1]], axis=0)

    def per_type(self, values: jax.Array, fn) -> jax.Array:
        """`fn(t, values[block of t])` for every node type, concatenated back in node order."""
        return _stack([fn(t, x) for t, x in enumerate(self.split_types(values))])

    def per_source_type(self, values: jax.Array, fn):
        """Values in relation-source space: `fn(t, relations, values[block of t])` for every node
        type t that some relation leaves, returning `[n_t, len(relations), ...]` (or a tuple of
        such arrays), reshaped and stacked type after type."""
        blocks, parts = self.split_types(values), []
        for t, x in enumerate(blocks):
            rels = self.layout.source_relations(t)
            if rels:
                out = fn(t, rels, x)
                parts.append(jax.tree.map(lambda y: y.reshape((-1,) + y.shape[2:]), out))
        return _stack(parts)


def _stack(parts: list):
    if not parts:
        raise ValueError("the topology has no relations")
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *parts)
