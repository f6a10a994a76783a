"""Random heterogeneous graphs and padded topologies for the message-passing tests."""

import numpy as np

from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet
from perturbjax.graph.schema import GraphSchema
from perturbjax.graph.topology import Layout, RelationBlock, Topology

FEATURE_WIDTHS = {"a": 5, "b": 3, "c": 0}
RELATIONS = [("a", "x", "b"), ("b", "y", "a"), ("b", "z", "b"), ("c", "w", "a"),
             ("a", "v", "c"), ("c", "u", "c")]


def random_hetero_graph(seed=0, counts=(9, 13, 6), max_edges=30) -> HeteroGraph:
    """Three node types (one featureless), six relations with repeated edges and isolated nodes."""
    rng = np.random.default_rng(seed)
    counts = dict(zip(FEATURE_WIDTHS, counts))
    nodes = {t: NodeSet(np.array([f"{t}{i}" for i in range(n)]),
                        {"f": rng.normal(size=(n, FEATURE_WIDTHS[t]))} if FEATURE_WIDTHS[t] else {})
             for t, n in counts.items()}
    edges = {}
    for s, r, d in RELATIONS:
        m = int(rng.integers(1, max_edges))
        edges[EdgeType(s, r, d)] = EdgeSet(rng.integers(0, counts[s], m),
                                           rng.integers(0, counts[d], m))
    return HeteroGraph(nodes, edges)


def padded_topology(graph: HeteroGraph, seed=0, extra_nodes=3, extra_edges=4, sparse=False):
    """The graph laid out with padding at the end of every node and edge block (as the sampler
    pads), padding edges joining random nodes of their blocks (receivers kept sorted).

    Returns (topology, slots): `slots[i]` is the padded position of flat node i.
    """
    rng = np.random.default_rng(seed)
    schema = GraphSchema.of(graph)
    exact = Topology.build(graph, schema, sparse=False)
    starts, blocks, slots = 0, [], np.zeros(graph.num_nodes, np.int64)
    for a, b in exact.layout.node_blocks:
        slots[a:b] = starts + np.arange(b - a)
        blocks.append((starts, starts + b - a + extra_nodes))
        starts += b - a + extra_nodes
    senders, receivers, mask, relations, start = [], [], [], [], 0
    for r, blk in enumerate(exact.layout.relations):
        sl = slice(blk.edge_start, blk.edge_stop)
        s_lo, s_hi = blocks[blk.source_type]
        t_hi = blocks[blk.target_type][1]
        senders += [slots[exact.senders[sl]], rng.integers(s_lo, s_hi, extra_edges)]
        receivers += [slots[exact.receivers[sl]], np.full(extra_edges, t_hi - 1)]
        mask += [np.ones(blk.edge_stop - blk.edge_start, bool), np.zeros(extra_edges, bool)]
        n = blk.edge_stop - blk.edge_start + extra_edges
        relations.append(RelationBlock(start, start + n, blk.source_type, blk.target_type))
        start += n
    layout = Layout(tuple(blocks), tuple(relations))
    node_type = np.repeat(np.arange(len(blocks)), [b - a for a, b in blocks])
    node_mask = np.zeros(layout.num_nodes, bool)
    node_mask[slots] = True
    cat = np.concatenate
    return Topology.from_arrays(layout, cat(senders), cat(receivers), cat(mask), node_type,
                                node_mask, sparse=sparse), slots
